"""sympy as the exact reference.

The program is scalarised into a straight-line list of symbolic definitions (t_k = small expression
of input symbols and earlier t's): every array element gets a symbol, every op is lowered to sympy
on numpy object arrays. Derivatives are exact: each definition's partial derivatives are symbolic
(sympy's differentiation rules, with a fast path for sums and products), and the reverse sweep
composes them into symbolic adjoint definitions. One lambdify call turns definitions and adjoints
into a single function, evaluated with mpmath at high precision (50 digits). Keeping the
definitions small is what makes this fast: differentiating the fully expanded expression of
sum(tanh(W @ x)) for a 32x32 W takes sympy about 18 s; this takes well under a second.

Bounded cost: every long loop (lowering, the reverse sweep, printing the generated code, rows
and columns of the evaluation, the elementary functions it calls) checks two deadlines: the
request's total (deadline.checkpoint: OutOfTime ends the check) and sympy's own share of it
(budget.sympy_seconds, over every sample point: past it sympy checks a sample, or skips, and
says so). At 50 digits an elementary function of a huge argument costs time in proportion to
its magnitude (sin(exp(exp(17))) ran for minutes), so arguments beyond 2^ARGUMENT_BITS are
refused at that point with a reason, never computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np
import sympy as sp
from crossgrad.engine import OPS
from sympy.printing.pycode import MpmathPrinter

from .. import caches, deadline
from ..compare import SourceValues
from ..derivatives import Derivatives, Point
from ..ir import IRNode, Program, evaluate
from ..language import apply_index
from ..model import ReferenceStatus
from . import SYMPY_SAMPLED_MAX_SCALAR_OPS, estimate_scalar_ops

PRECISION_DIGITS = 50
# Cancellation loses the digits by which the values it subtracts exceed the result: 50 digits
# took exp(120) - exp(120) + x's gradient for 0 (so did the engine's float64: it passed), and
# (x + 1)(x + 1) - (x - 1)(x - 1) at 1e100 for 0 too. So every evaluation also returns the
# largest magnitude among its intermediate values, and where they exceed its results by more
# than PRECISION_DIGITS - SETTLED_DIGITS digits it is done again with enough digits to keep
# SETTLED_DIGITS. Past MAX_DIGITS (values of 10^350 and more, far past float64's range: a
# sigmoid or softmax of 2e4 holds exp(2e4) ~ 10^8686) the result at MAX_DIGITS is taken where it
# agrees with the first to float64's precision, and sympy gives up where it does not.
SETTLED_DIGITS = 30
MAX_DIGITS = 400


class SympyUnavailable(Exception):
    """sympy cannot (or may not, within its budget) check this request; the message says why."""


class OutOfShare(SympyUnavailable):
    """sympy's share of the request's time ran out (the request's own budget may go on)."""


_budget = threading.local()  # sympy's own deadline (its share of the request) in this thread


def _check_deadline() -> None:
    """The request's deadline first (OutOfTime, Cancelled), then sympy's share of it."""
    deadline.checkpoint()
    if time.monotonic() > getattr(_budget, "deadline", math.inf):
        raise OutOfShare("the symbolic stage ran out of its time budget")


@contextmanager
def share_until(until: float) -> Iterator[None]:
    """sympy's own deadline (its share of the request's time, which its loops check: past it,
    OutOfShare) for the block, in this thread."""
    _budget.deadline = until
    try:
        yield
    finally:
        _budget.deadline = math.inf


# ---------------------------------------------------------------- lowering to object arrays


def _obj(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray) and x.dtype == object:
        return x
    arr = np.empty(np.shape(x), dtype=object)
    if arr.ndim == 0:
        arr[()] = x
    else:
        arr[...] = x
    return arr


def _from_list(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _map(fn: Callable[..., Any], *xs: Any) -> np.ndarray:
    calls = 0

    def checked(*args: Any) -> Any:  # a large elementwise op must not outrun the time budget
        nonlocal calls
        calls += 1
        if calls % 256 == 0:
            _check_deadline()
        return fn(*args)

    return _obj(np.frompyfunc(checked, len(xs), 1)(*(_obj(x) for x in xs)))


_building = threading.local()  # the straight-line program being built in this thread


@contextmanager
def _building_in(line: StraightLine) -> Iterator[None]:
    """Lowerings in the block name their shared intermediates in `line` (see _named)."""
    _building.line = line
    try:
        yield
    finally:
        _building.line = None


def _named(value: Any) -> Any:
    """An intermediate of one op's lowering as definitions of its own (a mean that every entry
    of var uses, say): inlined, it would make the op's expressions, and their derivatives,
    quadratic in size."""
    line = getattr(_building, "line", None)
    return value if line is None else line.define(value)


def _reduce(x: np.ndarray, axis: Any, keepdims: bool, combine: Callable[[list], Any]) -> np.ndarray:
    nd = x.ndim
    if axis is None:
        axes = tuple(range(nd))
    else:  # a 0-d tensor accepts axis 0 or -1, which reduce nothing
        axes = tuple(a % nd for a in ((axis,) if isinstance(axis, int) else axis)) if nd else ()
    kept = [a for a in range(nd) if a not in axes]
    moved = np.transpose(x, kept + list(axes))
    # explicit sizes: with an empty tensor, reshape cannot infer a -1
    rows = moved.reshape(math.prod(x.shape[a] for a in kept), math.prod(x.shape[a] for a in axes))
    out = _from_list([combine(list(r)) for r in rows]).reshape(tuple(x.shape[a] for a in kept))
    if keepdims:
        out = out.reshape(tuple(1 if a in axes else d for a, d in enumerate(x.shape)))
    return out


def _count(x: np.ndarray, axis: Any) -> int:
    if axis is None or x.ndim == 0:
        return x.size
    axes = (axis,) if isinstance(axis, int) else axis
    return math.prod(x.shape[a] for a in axes)


def _add(items: list) -> Any:
    return sp.Add(*items)


def _pairwise(fn: Any, items: list) -> Any:
    """max or min of many items as a balanced tree of two-argument ones: sympy's own n-argument
    Max compares every pair of its arguments (quadratic, minutes for a few dozen)."""
    while len(items) > 1:
        pairs = [
            fn(*items[i : i + 2]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)
        ]
        items = list(_named(_from_list(pairs)))
    return items[0]


def _max(items: list) -> Any:
    return _pairwise(sp.Max, items)


def _min(items: list) -> Any:
    return _pairwise(sp.Min, items)


def _logsumexp(items: list) -> Any:
    return sp.log(sp.Add(*[sp.exp(i) for i in items]))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3 = np.broadcast_to(a2, batch + a2.shape[-2:]).reshape(-1, *a2.shape[-2:])
    b3 = np.broadcast_to(b2, batch + b2.shape[-2:]).reshape(-1, *b2.shape[-2:])
    n, k, m = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    out = np.empty((a3.shape[0], n, m), dtype=object)
    for p in range(a3.shape[0]):
        for i in range(n):
            _check_deadline()
            for j in range(m):
                out[p, i, j] = sp.Add(*[a3[p, i, t] * b3[p, t, j] for t in range(k)])
    out = out.reshape(batch + (n, m))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return _obj(out)


def _softmax_parts(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    e = _named(_map(sp.exp, x))
    total = _named(_reduce(e, axis, True, _add))
    return e, total


def _losses(loss: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        return loss
    total = _reduce(loss, None, False, _add)
    return total / loss.size if reduction == "mean" else total


def _nll(logp: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    t = np.asarray(target).astype(int)
    return _losses(_from_list([-logp[i, t[i]] for i in range(len(t))]), reduction)


def _pad(x: np.ndarray, pad: Sequence[int], value: float) -> np.ndarray:
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    return _obj(np.pad(x, widths, constant_values=_number(value)))


def _split(x: np.ndarray, sections: Any, axis: int) -> tuple[np.ndarray, ...]:
    sizes = [s[axis] for s in OPS["split"].shape_rule("split", x.shape, sections, axis)]
    return tuple(_obj(p) for p in np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _number(v: Any) -> Any:
    """Python numbers as exact sympy numbers (floats keep their binary value exactly)."""
    if isinstance(v, bool):
        return sp.true if v else sp.false
    if isinstance(v, int):
        return sp.Integer(v)
    if math.isinf(v):  # masked_fill(s, mask, -inf): sympy's -oo absorbs every term it meets,
        # and its derivatives are not the limits (-oo + x has derivative 0): JAX judges instead
        raise SympyUnavailable(
            "an infinite constant (as masked_fill's -inf): sympy's infinity absorbs the terms it meets"
        )
    return sp.Float(v, PRECISION_DIGITS) if v != int(v) else sp.Integer(int(v))


class RoundHalfEven(sp.Function):
    """numpy's round: piecewise constant, so its derivative is 0 (as torch and JAX say)."""

    def fdiff(self, argindex: int = 1) -> Any:
        return sp.S.Zero


class ZeroGradSign(sp.Function):
    """sign with torch's derivative 0 (sympy's own sign differentiates to a DiracDelta)."""

    def fdiff(self, argindex: int = 1) -> Any:
        return sp.S.Zero


class ZeroGradFloor(sp.Function):
    def fdiff(self, argindex: int = 1) -> Any:
        return sp.S.Zero


ARGUMENT_BITS = 2048
"""Largest magnitude (in bits) of an argument of exp, sin and their kin at 50 digits. Measured:
mpmath's sin and exp take 0.2-0.3 ms at 2^2048 (10^616, far past float64's 10^308), 2 to 5 ms at
2^16000, 20 to 50 ms at 2^64000 and minutes at exp(exp(17)) ~ 2^(3.5e7)."""
EXPONENT_BITS = 1100
"""Largest magnitude of an exponent in x ** y: an integral y takes the exact power path, 10 ms
at 2^1100, 0.34 s at 2^4096 and 12 s at 2^16000 (measured)."""


def _too_large(what: str, bits: int) -> SympyUnavailable:
    return SympyUnavailable(
        f"at this point {what} is about 2^{bits} (10^{int(bits * math.log10(2))}): far past "
        f"float64's range, and too large to evaluate at {PRECISION_DIGITS} digits in bounded time"
    )


_ticks = 0


def _tick() -> None:
    """Check the deadlines every 64 elementary functions evaluated."""
    global _ticks
    _ticks += 1
    if not _ticks & 63:
        _check_deadline()


def _bits(x: Any) -> int:
    m = mpmath.mag(x) if x else 0
    return int(m) if mpmath.isfinite(m) else 0  # inf and nan: mpmath answers those at once


def _guarded(name: str) -> Callable[[Any], Any]:
    fn = getattr(mpmath, name)

    def guarded(x: Any) -> Any:
        _tick()
        if _bits(x) > ARGUMENT_BITS:
            raise _too_large(f"the argument of {name}", _bits(x))
        return fn(x)

    guarded.__name__ = name
    return guarded


def _pow(x: Any, y: Any) -> Any:
    """x ** y for an exponent that is not a small integer constant."""
    _tick()
    ybits = _bits(y)
    if ybits > EXPONENT_BITS:
        raise _too_large("an exponent", ybits)
    if ybits + max(_bits(x), 1).bit_length() > ARGUMENT_BITS:  # exp(y log x) of a huge argument
        raise _too_large("the logarithm of a power", ybits + max(_bits(x), 1).bit_length())
    return x**y


def _magnitude(*values: Any) -> tuple[int, int]:
    """The largest and the smallest nonzero magnitude (in bits) among values: compiled
    functions' last result."""
    bits = [_bits(v) for v in values if v]
    return max(bits, default=0), min(bits, default=0)


_NUMERIC_FUNCTIONS: dict[str, Any] = {
    "RoundHalfEven": lambda v: _round_half_even(v),
    "ZeroGradSign": lambda v: mpmath.sign(v),
    "ZeroGradFloor": lambda v: mpmath.floor(v),
    "_pow": _pow,
    "_magnitude": _magnitude,
    **{_: _guarded(_) for _ in ("exp", "sin", "cos", "tan", "sinh", "cosh", "cot", "sec", "csc")},
}


class _Printer(MpmathPrinter):
    """sympy's mpmath printer, checking the deadlines as it goes (printing the code is most of
    lambdify's time: 8.5 of 13 s for an 80,000-operation program) and printing a power whose
    exponent is not an integer constant as a call to _pow, which refuses huge ones."""

    def __init__(self) -> None:
        super().__init__(
            {
                "fully_qualified_modules": False,
                "inline": True,
                "allow_unknown_functions": True,
                "user_functions": {k: k for k in _NUMERIC_FUNCTIONS},
            }
        )
        self._printed = 0

    def _print(self, expr: Any, **kwargs: Any) -> str:
        self._printed += 1
        if not self._printed & 511:
            _check_deadline()
        return super()._print(expr, **kwargs)

    def _print_Pow(self, expr: Any, rational: bool = False) -> str:
        e = expr.exp
        if e.is_Integer or e == sp.S.Half or e == -sp.S.Half:
            return super()._print_Pow(expr, rational=rational)
        return f"_pow({self._print(expr.base)}, {self._print(e)})"


def _round_half_even(v: Any) -> Any:
    f = mpmath.floor(v)
    diff = v - f
    if diff > 0.5 or (diff == 0.5 and int(f) % 2 == 1):
        return f + 1
    return f


def _sigmoid(v: Any) -> Any:
    return 1 / (1 + sp.exp(-v))


_GELU_K = sp.sqrt(2 / sp.pi)


def _gelu(v: Any, approximate: str) -> Any:
    if approximate == "tanh":
        return sp.Rational(1, 2) * v * (1 + sp.tanh(_GELU_K * (v + sp.Float("0.044715", 30) * v**3)))
    return sp.Rational(1, 2) * v * (1 + sp.erf(v / sp.sqrt(2)))


def _softplus(v: Any, beta: float, threshold: float) -> Any:
    b, t = _number(beta), _number(threshold)
    return sp.Piecewise((v, b * v > t), (sp.log(1 + sp.exp(b * v)) / b, True))


def _clamp(v: Any, lo: Any, hi: Any) -> Any:
    if lo is not None:
        v = sp.Max(v, _number(lo))
    if hi is not None:
        v = sp.Min(v, _number(hi))
    return v


def _tied_extreme(extreme: Callable[[list], Any]) -> Callable[[list], Any]:
    """The largest (smallest) item, written so that its exact derivative is torch's: shared
    evenly among the items tied at it. The items equal to M = max(items), summed and divided by
    their count C, are M; Piecewise's conditions are not differentiated, so d/d item_i is
    [item_i == M] / C (sympy's own Max would give Heaviside(0) = 1/2 at each pairwise tie: 1/4,
    1/4, 1/2 for three), and the second derivative is 0, as torch's."""

    def combine(items: list) -> Any:
        items = list(_named(_from_list(items)))
        m = extreme(items)
        on = [sp.Piecewise((sp.S.One, sp.Eq(i, m)), (sp.S.Zero, True)) for i in items]
        count = _named(_obj(sp.Add(*on)))[()]
        return sp.Add(*[sp.Piecewise((i, sp.Eq(i, m)), (sp.S.Zero, True)) for i in items]) / count

    return combine


def _norm(x: np.ndarray, ord: float, axis: Any, keepdims: bool) -> np.ndarray:
    if math.isinf(ord):  # the largest (smallest) |x|, ties sharing the gradient, as torch
        return _reduce(_map(sp.Abs, x), axis, keepdims, _tied_extreme(_max if ord > 0 else _min))
    if ord == 2:
        return _map(sp.sqrt, _reduce(_obj(x * x), axis, keepdims, _add))
    p = _number(ord)
    return _map(lambda s: s ** (1 / p), _reduce(_map(lambda v: sp.Abs(v) ** p, x), axis, keepdims, _add))


def _var(x: np.ndarray, axis: Any, keepdims: bool, correction: int) -> np.ndarray:
    n = _count(x, axis)
    mean = _named(_obj(_reduce(x, axis, True, _add) / n))
    dev = _obj((x - mean) ** 2)
    return _reduce(dev, axis, keepdims, _add) / (n - correction)


def _shape(op: str, x: np.ndarray, a: dict[str, Any]) -> Any:
    return OPS[op].shape_rule(op, x.shape, **a)


def _piecewise(cond: Any, a: Any, b: Any) -> Any:
    if cond is sp.true or cond is True:
        return a
    if cond is sp.false or cond is False:
        return b
    return sp.Piecewise((a, cond), (b, True))


def _rel(fn: Callable[[Any, Any], Any]) -> Callable[[list, dict], np.ndarray]:
    return lambda o, a: _map(fn, o[0], o[1])


L = Callable[[list[Any], dict[str, Any]], Any]
LOWERING: dict[str, L] = {
    "add": lambda o, a: _obj(o[0] + o[1]),
    "sub": lambda o, a: _obj(o[0] - o[1]),
    "mul": lambda o, a: _obj(o[0] * o[1]),
    "div": lambda o, a: _obj(o[0] / o[1]),
    "neg": lambda o, a: _obj(-o[0]),
    "pow": lambda o, a: _map(lambda v: v ** _number(a["exponent"]), o[0]),
    "pow_tensor": lambda o, a: _map(lambda v, w: v**w, o[0], o[1]),
    "rpow": lambda o, a: _map(lambda v: _number(a["base"]) ** v, o[0]),
    "rsub": lambda o, a: _obj(_number(a["other"]) - o[0]),
    "maximum": lambda o, a: _map(sp.Max, o[0], o[1]),
    "minimum": lambda o, a: _map(sp.Min, o[0], o[1]),
    "abs": lambda o, a: _map(sp.Abs, o[0]),
    "exp": lambda o, a: _map(sp.exp, o[0]),
    "log": lambda o, a: _map(sp.log, o[0]),
    "log1p": lambda o, a: _map(lambda v: sp.log(1 + v), o[0]),
    "expm1": lambda o, a: _map(lambda v: sp.exp(v) - 1, o[0]),
    "sqrt": lambda o, a: _map(sp.sqrt, o[0]),
    "reciprocal": lambda o, a: _map(lambda v: 1 / v, o[0]),
    "sin": lambda o, a: _map(sp.sin, o[0]),
    "cos": lambda o, a: _map(sp.cos, o[0]),
    "tan": lambda o, a: _map(sp.tan, o[0]),
    "tanh": lambda o, a: _map(sp.tanh, o[0]),
    "sigmoid": lambda o, a: _map(_sigmoid, o[0]),
    "relu": lambda o, a: _map(lambda v: sp.Max(v, 0), o[0]),
    "leaky_relu": lambda o, a: _map(
        lambda v: sp.Piecewise((v, v > 0), (_number(a["negative_slope"]) * v, True)), o[0]
    ),
    "softplus": lambda o, a: _map(lambda v: _softplus(v, a["beta"], a["threshold"]), o[0]),
    "silu": lambda o, a: _map(lambda v: v * _sigmoid(v), o[0]),
    "gelu": lambda o, a: _map(lambda v: _gelu(v, a["approximate"]), o[0]),
    "clamp": lambda o, a: _map(lambda v: _clamp(v, a["min"], a["max"]), o[0]),
    "sign": lambda o, a: _map(ZeroGradSign, o[0]),
    "floor": lambda o, a: _map(ZeroGradFloor, o[0]),
    "round": lambda o, a: _map(RoundHalfEven, o[0]),
    "sum": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], _add),
    "mean": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], _add) / _count(o[0], a["axis"]),
    "prod": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], lambda i: sp.Mul(*i)),
    "max": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], _max),
    "min": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], _min),
    "amax": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], _max),
    "amin": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], _min),
    "logsumexp": lambda o, a: _reduce(o[0], a["axis"], a["keepdims"], _logsumexp),
    "var": lambda o, a: _var(o[0], a["axis"], a["keepdims"], a["correction"]),
    "std": lambda o, a: _map(sp.sqrt, _named(_var(o[0], a["axis"], a["keepdims"], a["correction"]))),
    "norm": lambda o, a: _norm(o[0], a["ord"], a["axis"], a["keepdims"]),
    "matmul": lambda o, a: _matmul(o[0], o[1]),
    "dot": lambda o, a: _matmul(o[0], o[1]),
    "outer": lambda o, a: _matmul(o[0].reshape(-1, 1), o[1].reshape(1, -1)),
    "reshape": lambda o, a: o[0].reshape(_shape("reshape", o[0], a)),
    "flatten": lambda o, a: o[0].reshape(_shape("flatten", o[0], a)),
    "squeeze": lambda o, a: o[0].reshape(_shape("squeeze", o[0], a)),
    "unsqueeze": lambda o, a: o[0].reshape(_shape("unsqueeze", o[0], a)),
    "transpose": lambda o, a: np.swapaxes(o[0], a["dim0"], a["dim1"]) if o[0].ndim else o[0],
    "permute": lambda o, a: np.transpose(o[0], a["dims"]),
    "expand": lambda o, a: _obj(np.broadcast_to(o[0], _shape("expand", o[0], a))),
    "broadcast_to": lambda o, a: _obj(np.broadcast_to(o[0], _shape("broadcast_to", o[0], a))),
    "concat": lambda o, a: _obj(np.concatenate(o, axis=a["axis"])),
    "stack": lambda o, a: _obj(np.stack(o, axis=a["axis"])),
    "split": lambda o, a: _split(o[0], a["sections"], a["axis"]),
    "getitem": lambda o, a: _obj(apply_index(o[0], a["index"])),
    "flip": lambda o, a: _obj(np.flip(o[0], a["axis"])),
    "pad": lambda o, a: _pad(o[0], a["pad"], a["value"]),
    "where": lambda o, a: _map(_piecewise, o[0], o[1], o[2]),
    "masked_fill": lambda o, a: _map(lambda v, m: _piecewise(m, _number(a["value"]), v), o[0], o[1]),
    "clone": lambda o, a: o[0],
    "softmax": lambda o, a: (lambda e, t: _obj(e / t))(*_softmax_parts(o[0], a["axis"])),
    "log_softmax": lambda o, a: (lambda e, t: _obj(o[0] - _map(sp.log, t)))(
        *_softmax_parts(o[0], a["axis"])
    ),
    "mse_loss": lambda o, a: _losses(_obj((o[0] - o[1]) ** 2), a["reduction"]),
    "nll_loss": lambda o, a: _nll(o[0], o[1], a["reduction"]),
    "cross_entropy": lambda o, a: _nll(
        LOWERING["log_softmax"]([o[0]], {"axis": 1}), o[1], a["reduction"]
    ),
    "binary_cross_entropy_with_logits": lambda o, a: _losses(
        _map(lambda x, y: sp.log(1 + sp.exp(x)) - x * y, o[0], o[1]), a["reduction"]
    ),
    "lt": _rel(lambda x, y: sp.Lt(x, y)),
    "le": _rel(lambda x, y: sp.Le(x, y)),
    "gt": _rel(lambda x, y: sp.Gt(x, y)),
    "ge": _rel(lambda x, y: sp.Ge(x, y)),
    "eq": _rel(lambda x, y: sp.Eq(x, y)),
    "ne": _rel(lambda x, y: sp.Ne(x, y)),
    "argmax": None,
    "argmin": None,
}
"""How sympy evaluates each op of the table (None: not expressible symbolically)."""


# ---------------------------------------------------------------- the straight-line program


def _is_leaf(e: Any) -> bool:
    return e.is_Atom or isinstance(e, sp.logic.boolalg.Boolean)


def input_symbols(position: int, shape: tuple[int, ...]) -> np.ndarray:
    """One real symbol per entry of the input at `position`. Internal names (_in0_1_2) cannot
    clash with each other or with names in the generated code; people see display_names()."""
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = sp.Symbol("_".join([f"_in{position}", *map(str, idx)]), real=True)
    return out


def display_names(line: StraightLine) -> dict[Any, Any]:
    """Input symbols -> symbols named like a_0 or W_1_2 (row-major indices), for text."""
    shown = {}
    for name, symbols in line.inputs.items():
        for idx in np.ndindex(*symbols.shape):
            shown[symbols[idx]] = sp.Symbol("_".join([name, *map(str, idx)]), real=True)
    return shown


@dataclass
class StraightLine:
    """Definitions t = expr in evaluation order; inputs and outputs as object arrays."""

    inputs: dict[str, np.ndarray]
    defs: list[tuple[sp.Symbol, Any]] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)
    max_defs: int = 200_000

    def define(self, value: Any) -> Any:
        """Give every compound element its own symbol, so later expressions stay small."""
        if isinstance(value, tuple):
            return tuple(self.define(v) for v in value)
        _check_deadline()
        # _obj: numpy turns 0-d object results into bare sympy objects. Contiguous, so that
        # reshape(-1) is a view and the replacements below land in `value`.
        value = _obj(value)
        if not value.flags.c_contiguous:
            value = value.copy()
        flat = value.reshape(-1)
        for k, e in enumerate(flat):
            if not _is_leaf(e):
                flat[k] = self._symbol_for(self._narrow(e))
        return value

    def _symbol_for(self, e: Any) -> Any:
        if len(self.defs) >= self.max_defs:
            raise SympyUnavailable(f"the program has more than {self.max_defs} scalar operations")
        t = sp.Symbol(f"_t{len(self.defs)}", real=True)
        self.defs.append((t, e))
        return t

    def _narrow(self, e: Any) -> Any:
        """A sum, product, max or min of very many terms as a tree of smaller definitions: the
        code generated from one with thousands of terms would be too deep for Python."""
        if len(e.args) <= _WIDE or not (e.is_Add or e.is_Mul or isinstance(e, (sp.Max, sp.Min))):
            return e
        parts = [
            self._symbol_for(self._narrow(e.func(*e.args[i : i + _WIDE])))
            for i in range(0, len(e.args), _WIDE)
        ]
        return self._narrow(e.func(*parts))


_WIDE = 64


def build(
    program: Program,
    numbers: dict[str, np.ndarray],
    symbolic: dict[str, np.ndarray | None],
    max_defs: int = 200_000,
) -> StraightLine:
    """Scalarise the program. Inputs named in `symbolic` get symbols (only where their mask is
    True, when a mask is given: the other entries are exact numbers); all other inputs enter as
    exact numbers from `numbers` (integer targets stay integer arrays)."""
    inputs: dict[str, np.ndarray] = {}
    env_inputs: dict[str, Any] = {}
    for name, nid in program.inputs:
        node = program.node(nid)
        if node.dtype == "int64":
            env_inputs[name] = np.asarray(numbers[name])
            continue
        if name in symbolic:
            syms = input_symbols(nid, node.shape)
            mask = symbolic[name]
            if mask is not None:
                syms = np.where(mask, syms, _numbers(numbers[name]))
            inputs[name] = syms
            env_inputs[name] = syms
        else:
            env_inputs[name] = _numbers(numbers[name])
    line = StraightLine(inputs, max_defs=max_defs)

    def apply(node: IRNode, operands: list[Any]) -> Any:
        lower = LOWERING[node.op]
        if lower is None:
            raise SympyUnavailable(f"{node.op} has no symbolic form")
        return line.define(lower(operands, node.attr_dict))

    with _building_in(line):
        env = evaluate(program, env_inputs, apply)
    line.outputs = [env[i] for _, i in program.outputs]
    return line


def build_op(
    op: str, operands: Sequence[Any], attrs: dict[str, Any], symbolic: Sequence[int]
) -> tuple[StraightLine, list[sp.Symbol], list[Any]]:
    """One op alone, scalarised: the operands at the positions in `symbolic` (arrays) get one
    symbol per entry; boolean arrays and numbers enter as exact values, anything else (an
    integer target) as it is. The line, its symbols in order, and every result entry (flat)."""
    lower = LOWERING.get(op)
    if lower is None:
        raise SympyUnavailable(f"{op} has no symbolic form")
    objs: list[Any] = []
    syms: list[sp.Symbol] = []
    for k, v in enumerate(operands):
        if k in symbolic:
            objs.append(input_symbols(k, np.shape(v)))
            syms.extend(objs[-1].reshape(-1))
        elif isinstance(v, np.ndarray) and v.dtype == bool:
            objs.append(_map(_number, v))
        elif isinstance(v, (int, float)):  # a literal: exact (where() may return it as is)
            objs.append(_number(v))
        else:
            objs.append(v)
    line = StraightLine({})
    with _building_in(line):
        result = line.define(lower(objs, attrs))
    outs = result if isinstance(result, tuple) else (result,)
    return line, syms, [e for o in outs for e in _obj(o).reshape(-1)]


def _numbers(values: np.ndarray) -> np.ndarray:
    out = np.empty(np.shape(values), dtype=object)
    for idx in np.ndindex(*out.shape):
        out[idx] = _number(float(np.asarray(values)[idx]))
    return out


# ---------------------------------------------------------------- exact partial derivatives


_DUMMIES = [sp.Symbol(f"_d{i}", real=True) for i in range(8)]
Memo = dict[Any, dict[int, Any]]
"""Derivatives already taken, by pattern (an expression with its symbols renamed _DUMMIES in
order) and the position of the dummy they are taken with respect to."""


def _partials(e: Any, wrt: set, memo: Memo) -> dict[Any, Any]:
    """d e / d s for every symbol s of `wrt` in e, in one pass: sums and products directly,
    anything else by sympy.diff once per pattern (an elementwise op's entries are one expression
    of different symbols, tanh(x_0), tanh(x_1), ..., and sympy.diff costs milliseconds a call)."""
    if e.is_Symbol:
        return {e: sp.S.One} if e in wrt else {}
    if e.is_Add or e.is_Mul:
        acc: dict[Any, list] = {}
        args = e.args
        for k, term in enumerate(args):
            for s, d in _partials(term, wrt, memo).items():
                acc.setdefault(s, []).append(d if e.is_Add else sp.Mul(*args[:k], d, *args[k + 1 :]))
        return {s: sp.Add(*ds) for s, ds in acc.items()}
    free = sorted(e.free_symbols, key=str)
    if len(free) > len(_DUMMIES):
        return {s: _diff(e, s) for s in free if s in wrt}
    pattern = e.xreplace(dict(zip(free, _DUMMIES)))
    known = memo.setdefault(pattern, {})
    back = dict(zip(_DUMMIES, free))
    out = {}
    for i, s in enumerate(free):
        if s in wrt:
            if i not in known:
                known[i] = _diff(pattern, _DUMMIES[i])
            out[s] = known[i].xreplace(back)
    return out


def _diff(e: Any, s: Any) -> Any:
    """sympy.diff, with the derivatives of piecewise-constant parts (Derivative, DiracDelta)
    zero, as they are almost everywhere, and Heaviside written as a Piecewise of the same values
    (printing Heaviside for mpmath takes 0.1 s a call: a clamp took 1.3 s to compile)."""
    d = sp.diff(e, s)
    if d.has(sp.Derivative, sp.DiracDelta):
        d = d.replace(lambda z: isinstance(z, (sp.Derivative, sp.DiracDelta)), lambda z: 0)
    if d.has(sp.Heaviside):
        d = d.replace(lambda z: isinstance(z, sp.Heaviside), _step)
    return sp.sympify(d)


def _step(h: Any) -> Any:
    at0 = h.args[1] if len(h.args) > 1 else sp.S.Half
    return sp.Piecewise((sp.S.One, h.args[0] > 0), (sp.S.Zero, h.args[0] < 0), (at0, True))


def reverse_sweep(
    defs: list[tuple[sp.Symbol, Any]],
    outputs: Sequence[Any],
    seeds: Sequence[Any],
    wrt: Sequence[sp.Symbol],
    prefix: str,
    memo: Memo | None = None,
) -> tuple[list[tuple[sp.Symbol, Any]], list[Any]]:
    """Symbolic reverse mode over straight-line definitions: returns the adjoint definitions and,
    for each symbol of `wrt`, the expression of sum_i seed_i * d output_i / d symbol. `memo`:
    derivatives taken by an earlier sweep over the same definitions (kept there)."""
    memo = {} if memo is None else memo
    differentiable = {t for t, _ in defs} | set(wrt)
    adj: dict[Any, list] = {}
    for out, seed in zip(outputs, seeds):
        if out in differentiable:
            adj.setdefault(out, []).append(seed)
    adjoint_defs: list[tuple[sp.Symbol, Any]] = []
    for t, e in reversed(defs):
        terms = adj.pop(t, None)
        if not terms:
            continue
        _check_deadline()
        a = sp.Symbol(f"{prefix}{len(adjoint_defs)}", real=True)
        adjoint_defs.append((a, sp.Add(*terms)))
        for s, d in _partials(e, differentiable, memo).items():
            if d != 0:
                adj.setdefault(s, []).append(a * d)
    return adjoint_defs, [sp.Add(*adj.get(s, [])) for s in wrt]


def reverse_sweep_again(
    defs: list[tuple[sp.Symbol, Any]], grads: Sequence[Any], wrt: Sequence[sp.Symbol], memo: Memo
) -> tuple[list[sp.Symbol], list[tuple[sp.Symbol, Any]], list[Any]]:
    """The reverse sweep of <grads, w> (grads: a first sweep's results over `defs`), for new
    direction symbols w: a Hessian-vector product, or the VJP of a VJP. Returns w, every
    definition in order (those of `defs` first) and d<grads, w>/d s for each s of `wrt`."""
    named = [sp.Symbol(f"_g{k}", real=True) for k in range(len(grads))]
    dirs = [sp.Symbol(f"_w{k}", real=True) for k in range(len(grads))]
    second = defs + list(zip(named, grads))
    hdefs, results = reverse_sweep(second, named, dirs, wrt, "_h", memo)
    return dirs, second + hdefs, results


# ---------------------------------------------------------------- numbers at high precision


def compile_function(
    args: Sequence[sp.Symbol], defs: list[tuple[sp.Symbol, Any]], results: Sequence[Any]
) -> Callable[..., list[Any]]:
    """One python function computing every definition in order and returning `results` and,
    last, the largest and smallest magnitudes among the arguments and definitions (_settled and
    _rounded use them): sympy's lambdify with our definitions as its common subexpressions."""
    magnitude = sp.Function("_magnitude")(*args, *(symbol for symbol, _ in defs))
    try:
        return sp.lambdify(
            list(args),
            [*results, magnitude],
            modules=[_NUMERIC_FUNCTIONS, "mpmath"],
            printer=_Printer(),
            cse=lambda exprs: (defs, exprs),
            docstring_limit=0,
        )
    except (KeyError, SyntaxError, RecursionError) as exc:
        # e.g. a constant division by zero leaves sympy's complex infinity, which has no code
        raise SympyUnavailable(f"sympy cannot generate code for this program ({exc!r})") from None


def evaluate_numeric(
    fn: Callable[..., list[Any]], values: Sequence[float], bits: int | None = None
) -> list[float]:
    """Call a compiled function at `values` (float64, converted exactly) with 50 digits; or,
    `bits` given, with every operation rounded to that many bits (53: float64, 24: float32), the
    exact formula computed in that precision. The results as floats (a complex result, outside
    the real domain, is nan)."""
    # mpmath's precision is process-wide: two threads evaluating at once would race (one in
    # 1,399 concurrent checks computed its "exact" values at float64 precision).
    wait = min(deadline.remaining(), getattr(_budget, "deadline", math.inf) - time.monotonic())
    if not _MPMATH_LOCK.acquire(timeout=max(0.0, min(wait, 3600.0))):
        _check_deadline()
        raise SympyUnavailable("another check held mpmath for all of this one's time budget")
    try:
        args = [mpmath.mpf(float(v)) for v in values]
        if bits is not None:
            return _rounded(fn, args, bits)
        return _settled(fn, args)
    except (ZeroDivisionError, ValueError, OverflowError, TypeError) as exc:
        if isinstance(exc, ZeroDivisionError):
            why = "a division by zero"  # (mpmath's has no message: it read "ZeroDivisionError: ")
        else:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise SympyUnavailable(
            f"sympy cannot evaluate at this point ({why}): a derivative is infinite or undefined here"
        ) from None
    finally:
        _MPMATH_LOCK.release()


def _rounded(fn: Callable[..., list[Any]], args: list[Any], bits: int) -> list[float]:
    """fn's results with every operation rounded to `bits`; nan where an intermediate value went
    past that float's range (mpmath's exponent has no limit: the formula "computed in float64"
    held exp(800)'s 1e347, lost exp(800) - exp(800) + x's 1 without overflowing, and a claim of
    that 0 was excused as float64's own answer) or below its normal numbers."""
    with mpmath.workprec(bits):
        *results, (largest, smallest) = fn(*args)
    # past float64's range, 2^-1022 (normal) to 2^1024, the float computation overflows or loses
    # bits to underflow, as mpmath does not (float32's own range is not used: its blocks may hold
    # float64 values that float32 rounding reaches, whose range is float64's)
    if largest > 1024 or smallest < -1021:
        return [math.nan] * len(results)
    return [_real(v) for v in results]


def _settled(fn: Callable[..., list[Any]], args: list[Any]) -> list[float]:
    """fn's results to SETTLED_DIGITS past the cancellation among its intermediate values."""
    with mpmath.workdps(PRECISION_DIGITS):
        *results, (largest, _) = fn(*args)
    first = [_real(v) for v in results]
    scale = max((_bits(v) for v in results if v), default=0)
    lost = math.ceil(max(0, largest - scale) * math.log10(2))
    digits = SETTLED_DIGITS + lost + 10
    if digits <= PRECISION_DIGITS:
        return first
    _check_deadline()
    with mpmath.workdps(min(digits, MAX_DIGITS)):
        again = [_real(v) for v in fn(*args)[:-1]]
    if digits <= MAX_DIGITS or _agree(first, again):
        return again
    raise SympyUnavailable(
        f"values here exceed the results by about 10^{lost}: their differences did not settle "
        f"within {MAX_DIGITS} digits"
    )


def _agree(before: list[float], now: list[float]) -> bool:
    """Equal as floats, or within 1e-20 of the largest (where a zero's residue lies)."""
    finite = [abs(v) for v in now if math.isfinite(v)]
    floor = 1e-20 * max(finite, default=0.0)
    return all(
        a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= floor for a, b in zip(before, now)
    )


_MPMATH_LOCK = threading.Lock()


def _real(v: Any) -> float:
    if isinstance(v, mpmath.mpc):
        return float(v.real) if v.imag == 0 else float("nan")
    return float(v)


# ---------------------------------------------------------------- derivatives at a point


@dataclass
class Compiled:
    """A program's symbolic derivatives, compiled once and reused at every point."""

    entries: list[tuple[str, int]]  # (input, flat index) of each differentiated entry
    wrt: list[sp.Symbol]  # their symbols
    seeds: list[sp.Symbol]  # one per output entry (the cotangent)
    vjp: Callable[..., list[Any]]  # (wrt values, seeds) -> outputs..., gradient entries...
    n_outputs: int
    hvp: Callable[..., list[Any]] | None = None  # (wrt values, seeds, directions) -> H v
    text: list[dict[str, str]] = field(default_factory=list)
    defs: int = 0  # definitions in the generated code (its size)
    note: str = "all entries, exact"  # what the status says about it
    sampled_entries: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)


_CACHE = caches.register("sympy", 64)  # compiled derivatives, by program, inputs and sample
CACHE_MAX_DEFS = 100_000
"""Compiled code of more definitions is not kept: a cache entry holds its generated code (tens of
MB for the largest programs), and 64 of those would dwarf everything else a worker keeps."""


def _flat_symbols(line: StraightLine, wrt: Sequence[str]) -> list[tuple[str, int, sp.Symbol]]:
    """(input, flat index, symbol) for every symbolic entry, in order."""
    return [
        (n, k, e)
        for n in wrt
        for k, e in enumerate(line.inputs[n].reshape(-1))
        if isinstance(e, sp.Symbol)
    ]


def compile_program(
    program: Program,
    wrt: Sequence[str],
    numbers: dict[str, np.ndarray],
    symbolic: dict[str, np.ndarray | None],
    hessian: bool,
    max_defs: int,
    text_max_ops: int,
) -> Compiled:
    line = build(program, numbers, symbolic, max_defs)
    flat = _flat_symbols(line, wrt)
    syms = [s for _, _, s in flat]
    outs = [e for o in line.outputs for e in _obj(o).reshape(-1)]
    seeds = [sp.Symbol(f"_v{k}", real=True) for k in range(len(outs))]
    memo: Memo = {}
    adefs, grads = reverse_sweep(line.defs, outs, seeds, syms, "_a", memo)
    vjp = compile_function(syms + seeds, line.defs + adefs, outs + grads)
    compiled = Compiled([(n, k) for n, k, _ in flat], syms, seeds, vjp, len(outs))
    compiled.defs = len(line.defs) + len(adefs)
    if hessian:
        dirs, defs, hv = reverse_sweep_again(line.defs + adefs, grads, syms, memo)
        compiled.hvp = compile_function(syms + seeds + dirs, defs, hv)
        compiled.defs = len(defs)
    if len(line.defs) <= text_max_ops:
        compiled.text = symbolic_text(line, outs, syms, program.output_names)
    return compiled


TEXT_MAX_OPS = 200  # the derivatives as text are not shown for an output too long to read
# expanded (bounded by sizes, not by the clock: the same request gives the same report)
TEXT_MAX_NODES = 4 * TEXT_MAX_OPS  # expression-tree nodes of a definition once expanded


def symbolic_text(
    line: StraightLine, outs: list[Any], syms: list[sp.Symbol], names: Sequence[str], limit: int = 16
) -> list[dict[str, str]]:
    """d output_i / d input_j as text and LaTeX, for small programs (the definitions expanded),
    the first `limit` entries. Nothing when an expanded definition would be large: expanding is
    one sympy call that no deadline reaches (8 nested gelu expand to 3^8 copies of x: sympy ran
    for minutes)."""
    if not _expands_small(line.defs):
        return []
    full: dict[Any, Any] = {}
    for t, e in line.defs:
        full[t] = e.xreplace(full)
    shown = display_names(line)
    entries = []
    out_names = _entry_names(line, names)
    for name, o in zip(out_names, outs):
        expr = o.xreplace(full) if isinstance(o, sp.Basic) else o
        if isinstance(expr, sp.Basic) and sp.count_ops(expr) > TEXT_MAX_OPS:
            return entries
        for s in syms:
            _check_deadline()
            d = sp.diff(expr, s).xreplace(shown)
            entries.append({"entry": f"d {name}/d {shown[s]}", "text": sp.sstr(d), "latex": sp.latex(d)})
            if len(entries) >= limit:
                return entries
    return entries


def _expands_small(defs: list[tuple[sp.Symbol, Any]]) -> bool:
    """Whether every definition, with the earlier ones substituted in, stays within
    TEXT_MAX_NODES expression-tree nodes (counted without building it)."""
    size: dict[Any, int] = {}
    for t, e in defs:
        n = 0
        for node in sp.preorder_traversal(e):
            n += size.get(node, 1)
            if n > TEXT_MAX_NODES:
                return False
        size[t] = n
    return True


def _entry_names(line: StraightLine, names: Sequence[str]) -> list[str]:
    out = []
    for name, o in zip(names, line.outputs):
        shape = np.shape(o)
        out.extend("_".join([name, *map(str, idx)]) if idx else name for idx in np.ndindex(*shape))
    return out


def cached_compile(key: Any, build_fn: Callable[[], Compiled]) -> tuple[Compiled, bool]:
    """The compiled derivatives for key, built and kept (when not too large) on a miss."""
    hit = _CACHE.get(key)
    if hit is not None:
        return hit, True
    compiled = build_fn()
    if compiled.defs <= CACHE_MAX_DEFS:
        _CACHE.put(key, compiled)
    return compiled, False


@dataclass
class Session:
    """One request's use of sympy, shared by its points: sympy's share of the request's time
    (budget.sympy_seconds, spent over every point, not at each) and what it compiled."""

    seconds: float
    used: float = 0.0
    exact: Compiled | None = None  # compiled at the first point, evaluated at every point
    inexact: str = ""  # why the exact derivatives are not possible (then each point samples)
    failed: str = ""  # why sympy cannot check this request at all (then every point says so)

    def left(self) -> float:
        return max(0.0, self.seconds - self.used)


def derivatives(
    point: Point, budget: Any, seed: int, session: Session | None = None
) -> tuple[Derivatives, ReferenceStatus]:
    """sympy's exact values and derivatives at a point, within sympy's share of the request's
    time (a session shares it among the request's points). The exact derivatives are compiled
    once and evaluated at each point; over the size budget, or when they do not compile in
    time, a seeded sample of gradient entries is checked instead (compiled at each point, as
    the other entries enter as that point's exact numbers), and the status says which."""
    session = session if session is not None else Session(budget.sympy_seconds)
    start = time.monotonic()
    until = start + session.left()
    try:
        if session.failed:
            raise SympyUnavailable(session.failed)
        if session.used > 0 and session.left() <= 0:
            raise SympyUnavailable(
                f"sympy's share of the request's time ({session.seconds:g} s) went to earlier points"
            )
        compiled = session.exact
        if compiled is None:
            ran_out = _ran_out_key(point, budget)
            before = _ran_out.get(ran_out)
            if before is not None and session.seconds <= before:
                session.failed = (
                    f"it ran out of a {before:g} s share on this program before (give "
                    "budget.sympy_seconds more to try again)"
                )
                raise SympyUnavailable(session.failed)
            try:
                compiled = _compile(point, budget, seed, until, session)
            except SympyUnavailable as exc:
                if session.exact is None and not session.inexact:
                    session.failed = str(exc)  # nothing compiled: no later point will do better
                if isinstance(exc, OutOfShare) and session.used == 0:  # its whole share: remembered
                    _remember_ran_out(ran_out, session.seconds)
                raise
        _budget.deadline = until
        derivs, partly = _evaluate(compiled, point, budget, seed)
        note = f"{compiled.note}; {partly}" if partly else compiled.note
        status = ReferenceStatus(
            "sympy", True, note, dict(compiled.sampled_entries), list(compiled.text)
        )
        return derivs, status
    finally:
        _budget.deadline = math.inf
        session.used += time.monotonic() - start


# Programs whose symbolic derivatives did not build within sympy's whole share, with that share:
# a check of the same program with no more time skips sympy at once (a 5.5k-parameter MLP spent
# its 10 s on every check, then was judged by JAX anyway).
_ran_out: OrderedDict[Any, float] = OrderedDict()
_ran_out_lock = threading.Lock()
RAN_OUT_MEMORY = 256


def _ran_out_key(point: Point, budget: Any) -> Any:
    return (point.program.cache_key, tuple(point.wrt), point.checks, budget.sympy_max_scalar_ops,
            budget.sympy_sample_entries, budget.hessian_max_inputs)  # fmt: skip


def _remember_ran_out(key: Any, seconds: float) -> None:
    if not key[0]:  # a program built by hand has no key to know it by
        return
    with _ran_out_lock:
        _ran_out[key] = max(seconds, _ran_out.get(key, 0.0))
        _ran_out.move_to_end(key)
        while len(_ran_out) > RAN_OUT_MEMORY:
            _ran_out.popitem(last=False)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name, value in arrays.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def _compile(point: Point, budget: Any, seed: int, until: float, session: Session) -> Compiled:
    """The exact derivatives when the program is small enough and they compile in time (in
    half of what is left, when a sample could follow), else those of a seeded sample."""
    program, wrt = point.program, point.wrt
    estimate = estimate_scalar_ops(program)
    total = sum(int(np.size(point.values[n])) for n in wrt)
    hessian = "hessian" in point.checks and total <= budget.hessian_max_inputs
    fixed = _digest(point.fixed)
    samplable = total > budget.sympy_sample_entries and estimate <= SYMPY_SAMPLED_MAX_SCALAR_OPS
    if not session.inexact and estimate <= budget.sympy_max_scalar_ops:
        now = time.monotonic()
        _budget.deadline = now + (until - now) / 2 if samplable else until
        key = (program.cache_key, tuple(wrt), fixed, hessian)
        try:
            session.exact, _ = cached_compile(
                key,
                lambda: compile_program(
                    program,
                    wrt,
                    point.values,
                    dict.fromkeys(wrt),
                    hessian,
                    budget.sympy_max_scalar_ops * 4,
                    budget.symbolic_text_max_ops,
                ),
            )
            return session.exact
        except SympyUnavailable as exc:
            if not samplable:
                raise
            session.inexact = f"{exc}; so"
    elif estimate > SYMPY_SAMPLED_MAX_SCALAR_OPS:
        raise SympyUnavailable(
            f"too large for sympy even on a sample of entries (about {estimate} scalar "
            f"operations; a sample still evaluates the rest as exact numbers, and past "
            f"{SYMPY_SAMPLED_MAX_SCALAR_OPS} that alone is too long)"
        )
    elif not session.inexact:
        session.inexact = (
            f"over budget (about {estimate} scalar operations, budget {budget.sympy_max_scalar_ops})"
        )
    _budget.deadline = until
    k = min(budget.sympy_sample_entries, total)
    key = ("sampled", program.cache_key, tuple(wrt), _digest(point.values), seed, k)
    compiled, _ = cached_compile(key, lambda: _sampled(point, budget, seed, k))
    no_hessian = "no Hessian when sampling; " if "hessian" in point.checks else ""
    return dataclasses.replace(compiled, note=f"{no_hessian}{session.inexact}: {compiled.note}")


def _sampled(point: Point, budget: Any, seed: int, k: int) -> Compiled:
    """Symbols for a seeded sample of the gradient's entries only; the rest are exact numbers."""
    sizes = [int(np.size(point.values[n])) for n in point.wrt]
    total = sum(sizes)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
    symbolic, start, sampled = {}, 0, {}
    for n, size in zip(point.wrt, sizes):
        mask = np.zeros(size, bool)
        mask[chosen[(chosen >= start) & (chosen < start + size)] - start] = True
        symbolic[n] = mask.reshape(point.shape(n))
        sampled[n] = [
            tuple(int(i) for i in np.unravel_index(f, point.shape(n))) for f in np.flatnonzero(mask)
        ]
        start += size
    compiled = compile_program(
        point.program,
        point.wrt,
        point.values,
        symbolic,
        False,
        budget.sympy_max_scalar_ops * 4,
        0,
    )
    compiled.sampled_entries = sampled
    compiled.note = f"checked {k} of {total} gradient entries, chosen with seed {seed}"
    return compiled


def rounded(point: Point, budget: Any, seed: int, session: Session, bits: int) -> Derivatives | None:
    """The exact formula computed with every operation rounded to `bits` (53: float64, 24:
    float32) at this point: how far rounding alone takes the exact derivatives there. None when
    sympy has no exact formula for the request (sampled, or failed)."""
    if session.exact is None:
        return None
    return _evaluate(session.exact, point, budget, seed, bits)[0]


def _evaluate(
    c: Compiled, point: Point, budget: Any, seed: int, bits: int | None = None
) -> tuple[Derivatives, str]:
    """The values and derivatives at the point, and what was left out (Jacobian rows or Hessian
    columns past sympy's share of the time: those done are kept, the rest left unchecked)."""
    args = [float(np.asarray(point.values[n]).reshape(-1)[k]) for n, k in c.entries]
    n_out = c.n_outputs

    def run(seeds: list[float]) -> list[float]:
        return evaluate_numeric(c.vjp, args + seeds, bits)

    def per_input(flat_values: list[float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Gradient entries (in c.entries order) as arrays per input, with what was computed."""
        out = {n: (np.zeros(point.shape(n)), np.zeros(point.shape(n), bool)) for n in point.wrt}
        for (name, k), v in zip(c.entries, flat_values):
            out[name][0].reshape(-1)[k] = v
            out[name][1].reshape(-1)[k] = True
        return {n: (point.masked(n, a), ch) for n, (a, ch) in out.items()}

    cot = [float(v) for c_ in point.cotangents for v in np.ravel(c_)]
    res = run(cot)
    d = Derivatives()
    start = 0
    for name, shape in point.output_shapes():
        size = math.prod(shape)
        d.values[name] = np.array(res[start : start + size]).reshape(shape)
        start += size
    if "vjp" in point.checks:
        d.vjp = {
            n: SourceValues(a, None if ch.all() else ch) for n, (a, ch) in per_input(res[n_out:]).items()
        }
    partly = []
    if "jacobian" in point.checks:
        d.jacobian, left = _jacobian(
            point, n_out, budget, seed, lambda unit: per_input(run(unit)[n_out:])
        )
        if left:
            partly.append(f"its time ran out with {left} Jacobian rows to go (left unchecked)")
    if "hessian" in point.checks and c.hvp is not None:
        d.hessian, left = _hessian(c, point, args, n_out, bits)
        if left:
            partly.append(f"its time ran out with {left} Hessian columns to go (left unchecked)")
    return d, "; ".join(partly)


def _jacobian(
    point: Point,
    n_out: int,
    budget: Any,
    seed: int,
    row: Callable[[list[float]], dict[str, tuple[np.ndarray, np.ndarray]]],
) -> tuple[dict[tuple[str, str], SourceValues], int]:
    """Row i of the Jacobian is the VJP with the i-th unit cotangent (a seeded sample of rows
    when there are more than the budget allows); and how many rows sympy's share of the time
    left out."""
    rows = np.arange(n_out)
    if n_out > budget.sympy_max_jacobian_rows:
        rows = np.sort(
            np.random.default_rng(seed).choice(n_out, budget.sympy_max_jacobian_rows, replace=False)
        )
    blocks, starts, start = {}, [], 0
    for oname, oshape in point.output_shapes():
        for n in point.wrt:
            full = oshape + point.shape(n)
            blocks[(oname, n)] = SourceValues(np.zeros(full), np.zeros(full, bool))
        starts.append((oname, oshape, start))
        start += math.prod(oshape)
    done = 0
    try:
        for i in rows:
            _check_deadline()
            oname, oshape, first = next(o for o in reversed(starts) if o[2] <= i)
            unit = [0.0] * n_out
            unit[i] = 1.0
            idx = np.unravel_index(i - first, oshape)
            for n, (a, ch) in row(unit).items():
                blocks[(oname, n)].values[idx] = a
                blocks[(oname, n)].checked[idx] = ch
            done += 1
    except OutOfShare:
        if not done:
            raise
    for sv in blocks.values():
        if sv.checked.all():
            sv.checked = None
    return blocks, len(rows) - done


def _hessian(
    c: Compiled, point: Point, args: list[float], n_out: int, bits: int | None = None
) -> tuple[dict[tuple[str, str], SourceValues], int]:
    """Column j of the Hessian (of output entry 0) is the Hessian-vector product with unit j;
    and how many columns sympy's share of the time left out."""
    seeds = [1.0] + [0.0] * (n_out - 1)
    m = len(c.entries)
    h, checked = np.zeros((m, m)), np.zeros((m, m), bool)
    done = 0
    try:
        for j in range(m):
            _check_deadline()
            unit = [0.0] * m
            unit[j] = 1.0
            h[:, j] = evaluate_numeric(c.hvp, args + seeds + unit, bits)
            checked[:, j] = True
            done += 1
    except OutOfShare:
        if not done:
            raise
    offsets = np.cumsum([0] + [int(np.size(point.values[n])) for n in point.wrt])
    blocks = {}
    for a, n in enumerate(point.wrt):
        for b, k in enumerate(point.wrt):
            rows, cols = slice(offsets[a], offsets[a + 1]), slice(offsets[b], offsets[b + 1])
            shape = point.shape(n) + point.shape(k)
            part = checked[rows, cols]
            blocks[(n, k)] = SourceValues(
                h[rows, cols].reshape(shape), None if part.all() else part.reshape(shape)
            )
    return blocks, m - done
