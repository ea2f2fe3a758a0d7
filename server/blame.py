"""Blame: when the engine's derivatives are wrong, find the node whose VJP rule is wrong.

Each node of the program is checked alone, at the operand values the engine's forward pass saved:
its op is re-run by the engine on fresh leaves holding those values, and what the engine's rule
gives is compared with a reference's derivatives of the same op at the same values:

- first order: the VJP with one random cotangent, and with the cotangent the node received in
  the request's VJP when the caller gives it (a rule wrong for all ones alone passed the rest);
- batched: BATCH_COTANGENTS random cotangents at once through is_grads_batched (the path the
  engine's jacobian takes), compared row by row;
- create_graph: the VJP taken with create_graph=True (its values), then differentiated again:
  the gradient of <VJP, w> for a random w, with respect to the operands and to the cotangent
  (the VJP of the VJP);
- each of these with every float operand requiring grad and, when the request froze some of the
  node's operands (they did not require grad in the engine's forward pass), with those operands
  frozen as in the request: a rule may take another path when an operand needs no gradient.
  Integer and boolean operands, and numbers, are constants.

The reference, per node: sympy (exact) when the node is small (SYMPY_MAX_COST) and its symbolic
derivatives build within SYMPY_NODE_SECONDS (and blame's SYMPY_TOTAL_SECONDS): every float operand
gets one symbol per entry, the op is lowered by sympy_backend.LOWERING, differentiated by a
reverse sweep (twice, for create_graph), compiled once per op, attributes, shapes and constant
operands (kept for later points and requests), and evaluated at the saved values with 50-digit
mpmath.
Otherwise JAX in float64 (float32 operands and cotangents cast to float64 first: handing JAX a
float32 cotangent for a result it promoted to float64 was a ValueError out of check()), and JAX
also where sympy cannot evaluate at a point. The blame's detail names the reference that judged,
and find_culprits' `checks` says what was checked, with which reference, for how many nodes.

Kinks: at a node whose operands sit on a non-differentiable point (kinks.find_kinks), the
reference is evaluated with the kinked operand entries shifted to each side (kinks.sides, as
kink_sides turns them into shifts of the node's operands), at two distances (to tell a
converging one-sided derivative from a diverging one). Entries where the sides agree with the
reference at the point are judged exactly; at the others the engine's value must lie within the
range the one-sided derivatives span (plus the tolerance; infinite or NaN where a one-sided
derivative diverges). Entries the sides could not cover (past a cap on how many sides are tried,
or where every side is undefined) are left unverified, never called wrong.

A rule that returns a gradient of the wrong shape (the engine raises) is blamed with its node,
line and column. Tolerances follow the dtype each quantity is computed in (float32 operands or
results: float32 tolerances). Floating point is not a wrong rule: an entry where the engine
equals JAX computing the same op in the engine's dtypes (float32 overflow), or is off the exact
value by no more than a correct computation in that precision is near this point (_spread: an
ill-conditioned std), is not held against the rule.

A node whose only fault is the VJP of its VJP, when that VJP is made of an op blamed on its own
account (tanh's VJP multiplies: differentiating it runs mul's rule), is not blamed; the culprit's
detail names it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from crossgrad import engine as cg

from . import deadline, kinks
from .backends import engine as engine_backend
from .backends import jax_backend, sympy_backend
from .compare import Tolerance, close
from .deadline import Cancelled, OutOfTime
from .ir import IRNode, Ref
from .kinks import BALLS, Kink, Sides, find_kinks
from .model import Blame
from .verdict import hull_misfit

BATCH_COTANGENTS = 4
"""Cotangents pushed at once through the batched path (rows of a Jacobian)."""
SYMPY_MAX_COST = 1_200
"""sympy takes a node when its float operand entries plus its result entries (times the length
of each dot product, for matmul, dot and outer) are at most this many: sympy builds, compiles
and evaluates about 500 such scalar operations a second (elementwise tanh, softmax), so this
keeps a node's exact reference to a few seconds at most, and which reference judges a node a
matter of its size, not of the machine's load."""
SYMPY_NODE_SECONDS = 3.0
"""A safety net on top of SYMPY_MAX_COST: sympy's time for one node; past it, JAX judges it."""
SYMPY_TOTAL_SECONDS = 10.0
"""sympy's time over one blame; past it, JAX judges the remaining nodes."""
TIE_SIDES_CAP = 16
"""At most this many tied entries of a max/min reduction (or of a norm's largest or smallest
magnitudes, for ord = inf or -inf) are moved in turn."""
DELTA = 1e-4
"""Shift of a kinked entry, relative to its magnitude (or to its operand's, at 0)..."""
DELTA_RATIO = 1e-4
"""...and the second, nearer shift, as a fraction of the first."""
DIVERGING = 1.25
"""A one-sided derivative diverges when, nearer the kink, its magnitude grows by this factor."""

CONDITION_ULPS = 4
"""Operands moved by this many rounding errors (relative) to measure a point's conditioning..."""
CONDITION_POINTS = 4
"""...at this many seeded points..."""
CONDITION_MARGIN = 4.0
"""...and an engine this many times that far from the exact value is floating point, not a rule."""

_FATAL = (OutOfTime, Cancelled, MemoryError)
_EXACT = "sympy"


class Culprits(list):
    """find_culprits' answer: the blamed nodes (Blame, in program order), and in `checks` what
    was checked, in words (for the report, above all when no node is found)."""

    checks: str = ""


# ---------------------------------------------------------------- kinks: the sides of each op


def _float(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def _delta(x: np.ndarray, op: str = "") -> np.ndarray:
    """DELTA times each entry's magnitude (at 0: the operand's largest finite magnitude, or 1)."""
    x = np.asarray(x, np.float64)
    a = np.abs(np.where(np.isfinite(x), x, 0.0))
    scale = float(a.max()) if a.size and a.max() > 0 else 1.0
    return DELTA * np.where(a > 0, a, scale)


def _sides(node: IRNode, operands: list[Any], entries: np.ndarray | None) -> Sides | None:
    return kinks.sides(Kink(node, {}, entries), operands, _delta, TIE_SIDES_CAP)


def kink_sides(
    node: IRNode, operands: list[Any], entries: np.ndarray | None
) -> list[list[np.ndarray | None]]:
    """The sides from which to approach the kinks of `node` at these operand values: kinks.sides
    (DELTA away, relative to each entry's magnitude; at most TIE_SIDES_CAP tied entries), every
    group on its t-th alternative at once (Sides.turns), so that no side sees the op exactly at
    its kink. Each side is a list with one item per operand: a shift array (shaped like the
    operand, float64) to add to it, or None to leave it as it is; the caller scales the shifts
    to come nearer (they are linear in DELTA). The range spanned by the derivatives on the sides,
    per entry, is the admissible (generalized) gradient there; a side that leaves the op's domain
    is not taken.

    `entries`: for the elementwise ops, the kinked entries as kinks.find_kinks gives them (over the
    operands broadcast together); None when find_kinks did not flag the node (then only the
    reductions, whose kinked rows kinks.sides finds, have sides). An empty list: no kink (judge
    exactly). kink_beyond_cap names the kinked entries no side moves."""
    return _kink(node, operands, entries)[0]


def _kink(
    node: IRNode, operands: list[Any], entries: np.ndarray | None
) -> tuple[list[list[np.ndarray | None]], bool]:
    """kink_sides, and whether they are the alternatives of a single complete group, whose
    convex hull is the generalized gradient (a tie of max: _judge's one_hull)."""
    found = _sides(node, operands, entries)
    if found is None:
        return [], False
    return found.turns(len(operands)), found.hull and found.complete and len(found.moves) == 1


def kink_beyond_cap(node: IRNode, operands: list[Any]) -> np.ndarray | None:
    """The entries of operand 0 (and so of its gradient) at a kink of a reduction that
    kink_sides leaves unmoved (past the caps: a tie among more than TIE_SIDES_CAP entries, a zero
    vector or equal entries longer than kinks.MAX_GROUP; several zeros of a norm with ord < 0 or
    -inf, where the one that decides is not defined): unverified, never judged. None: none."""
    found = _sides(node, operands, None)
    return None if found is None else found.beyond


# ---------------------------------------------------------------- references for one node


@dataclass
class _Node:
    """One node under blame: its operands as the engine saved them, and as float64."""

    node: IRNode
    operands: list[Any]
    wide: list[Any]  # float operands as float64 arrays; everything else as given
    floats: list[int]  # which operands are float tensors (differentiable)
    frozen: set[int]  # float operands that did not require grad in the request
    names: list[str]  # how the detail calls each operand
    out_shapes: list[tuple[int, ...]] = field(default_factory=list)
    out_dtypes: list[Any] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(int(np.size(self.operands[k])) for k in self.floats)


class _SympyRef:
    """The node's exact derivatives: one symbol per float operand entry, the op lowered by
    sympy_backend.LOWERING, reverse sweeps for the VJP and for the VJP of the VJP."""

    def __init__(self, nd: _Node) -> None:
        line, syms, flat = sympy_backend.build_op(nd.node.op, nd.operands, nd.node.attr_dict, nd.floats)
        seeds = [sp.Symbol(f"_v{i}", real=True) for i in range(len(flat))]
        memo: sympy_backend.Memo = {}
        adefs, grads = sympy_backend.reverse_sweep(line.defs, flat, seeds, syms, "_a", memo)
        self.first_fn = sympy_backend.compile_function(syms + seeds, line.defs + adefs, grads)
        ws, defs, hv = sympy_backend.reverse_sweep_again(line.defs + adefs, grads, syms + seeds, memo)
        self.second_fn = sympy_backend.compile_function(syms + seeds + ws, defs, hv)
        self.floats = list(nd.floats)
        self.in_shapes = [np.shape(nd.operands[k]) for k in nd.floats]
        self.out_shapes = list(nd.out_shapes)

    def _args(self, xs: list[Any], cots: Sequence[np.ndarray]) -> list[float]:
        values = [np.asarray(xs[k], np.float64).reshape(-1) for k in self.floats]
        values += [np.asarray(c, np.float64).reshape(-1) for c in cots]
        return np.concatenate(values).tolist() if values else []

    def _split(self, flat: list[float], shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        out, start = [], 0
        for shape in shapes:
            size = math.prod(shape)
            out.append(np.array(flat[start : start + size], np.float64).reshape(shape))
            start += size
        return out

    def first(
        self, xs: list[Any], cots: Sequence[np.ndarray], bits: int | None = None
    ) -> list[np.ndarray]:
        flat = sympy_backend.evaluate_numeric(self.first_fn, self._args(xs, cots), bits)
        return self._split(flat, self.in_shapes)

    def second(
        self,
        xs: list[Any],
        cots: Sequence[np.ndarray],
        ws: Sequence[np.ndarray],
        bits: int | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        wflat = [np.asarray(w, np.float64).reshape(-1) for w in ws]
        args = self._args(xs, cots) + np.concatenate(wflat or [np.zeros(0)]).tolist()
        flat = sympy_backend.evaluate_numeric(self.second_fn, args, bits)
        shapes = self.in_shapes + self.out_shapes
        parts = self._split(flat, shapes)
        return parts[: len(self.floats)], parts[len(self.floats) :]


class _JaxRef:
    """JAX's derivatives of the node's op: in float64 (float operands and cotangents cast), or,
    `native`, in the dtypes the engine computed in (to tell a floating-point effect)."""

    def __init__(self, nd: _Node, native: bool = False) -> None:
        self.nd = nd
        self.native = native
        self.constants = [
            jnp.asarray(v) if isinstance(v, np.ndarray) and k not in nd.floats else v
            for k, v in enumerate(nd.operands)
        ]

    def _f(self, *xs: Any) -> tuple[Any, ...]:
        full = list(self.constants)
        for k, x in zip(self.nd.floats, xs):
            full[k] = x
        result = jax_backend.LOWERING[self.nd.node.op](full, self.nd.node.attr_dict)
        return result if isinstance(result, tuple) else (result,)

    def _primals(self, xs: list[Any]) -> list[Any]:
        if self.native:  # the values given, in the engine's dtypes
            return [
                jnp.asarray(np.asarray(xs[k]).astype(self.nd.operands[k].dtype)) for k in self.nd.floats
            ]
        return [jnp.asarray(np.asarray(xs[k], np.float64)) for k in self.nd.floats]

    @staticmethod
    def _cots(cots: Sequence[np.ndarray], outs: Sequence[Any]) -> tuple[Any, ...]:
        # each cotangent in the dtype JAX computed that result in (a float32 cotangent for a
        # result JAX promoted to float64 is a ValueError out of jax.vjp)
        return tuple(jnp.asarray(np.asarray(c), dtype=o.dtype) for c, o in zip(cots, outs))

    def first(self, xs: list[Any], cots: Sequence[np.ndarray]) -> list[np.ndarray]:
        outs, pullback = jax.vjp(self._f, *self._primals(xs))
        return [np.asarray(g, np.float64) for g in pullback(self._cots(cots, outs))]

    def second(
        self, xs: list[Any], cots: Sequence[np.ndarray], ws: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        primals = self._primals(xs)
        outs = jax.eval_shape(self._f, *primals)
        cs = self._cots(cots, outs)
        wj = [jnp.asarray(np.asarray(w), dtype=p.dtype) for w, p in zip(ws, primals)]

        def inner(ps: list[Any], cs: tuple[Any, ...]) -> Any:
            _, pullback = jax.vjp(self._f, *ps)
            return sum(jnp.sum(g * w) for g, w in zip(pullback(cs), wj))

        gx, gv = jax.grad(inner, argnums=(0, 1))(primals, cs)
        return [np.asarray(g, np.float64) for g in gx], [np.asarray(g, np.float64) for g in gv]


class _Reference:
    """sympy where it can (exact), JAX elsewhere; remembers which judged."""

    def __init__(self, nd: _Node, budget: _SympyBudget) -> None:
        self.nd = nd
        self.jax = _JaxRef(nd)
        self.sympy: _SympyRef | None = None
        self.why = ""  # why JAX judges (some or all of) this node
        self.used: set[str] = set()
        self.budget = budget
        reason = _too_large(nd)
        if reason:
            self.why = reason
        elif budget.left() <= 0:
            self.why = f"sympy's {SYMPY_TOTAL_SECONDS:g} s for blame went to earlier nodes"
        else:
            self.sympy = self._sympy(nd)

    def _sympy(self, nd: _Node) -> _SympyRef | None:
        """The node's compiled exact derivatives, built once per op, attributes, shapes and
        constant operands (every sample point of a request, every request of a program, uses
        them again; the values enter only when they are evaluated)."""
        key = _sympy_key(nd)
        with _COMPILED_LOCK:
            known = _COMPILED.get(key)
            if known is not None:
                _COMPILED.move_to_end(key)
        if isinstance(known, str):
            self.why = known
            return None
        if known is not None:
            return known
        with self.budget.share():
            try:
                built: _SympyRef | str = _SympyRef(nd)
            except _FATAL:
                raise
            except sympy_backend.OutOfShare:  # time: another try may fit; not remembered
                self.why = f"sympy ran out of its time for this node ({SYMPY_NODE_SECONDS:g} s)"
                return None
            except sympy_backend.SympyUnavailable as exc:
                built = f"sympy: {exc}"
            except Exception as exc:  # sympy cannot express or compile it: JAX judges
                built = f"sympy cannot build it ({type(exc).__name__}: {str(exc)[:80]})"
        with _COMPILED_LOCK:
            _COMPILED[key] = built
            while len(_COMPILED) > COMPILED_NODES:
                _COMPILED.popitem(last=False)
        if isinstance(built, str):
            self.why = built
            return None
        return built

    def _call(self, name: str, *args: Any) -> Any:
        if self.sympy is not None:
            with self.budget.share():
                try:
                    result = getattr(self.sympy, name)(*args)
                    self.used.add(_EXACT)
                    return result
                except _FATAL:
                    raise
                except sympy_backend.OutOfShare:
                    self.sympy = None
                    self.why = f"sympy ran out of its time for this node ({SYMPY_NODE_SECONDS:g} s)"
                except Exception:  # not at this point (an infinite derivative): JAX says there
                    if not self.why:
                        self.why = "sympy could not evaluate at some points"
        self.used.add("JAX")
        return getattr(self.jax, name)(*args)

    def first(self, xs: list[Any], cots: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._call("first", xs, cots)

    def second(
        self, xs: list[Any], cots: Sequence[np.ndarray], ws: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return self._call("second", xs, cots, ws)

    def rounded(self, name: str, *args: Any) -> Any:
        """sympy's formula computed in the node's precision (None without sympy): what a
        straightforward float implementation gets, for _spread."""
        if self.sympy is None:
            return None
        bits = 24 if _narrow(self.nd) else 53
        with self.budget.share():
            try:
                return getattr(self.sympy, name)(*args, bits=bits)
            except _FATAL:
                raise
            except Exception:
                return None

    def describe(self) -> str:
        if self.used == {_EXACT}:
            return "sympy (exact)"
        if _EXACT in self.used:
            return f"sympy (exact), and JAX (float64) where {self.why or 'sympy could not'}"
        return f"JAX (float64; {self.why})" if self.why else "JAX (float64)"


COMPILED_NODES = 256
"""Nodes whose compiled exact derivatives blame keeps (at most SYMPY_MAX_COST scalar operations
each: a few hundred kB of generated code at most)."""
_COMPILED: OrderedDict[Any, Any] = OrderedDict()  # _sympy_key -> _SympyRef, or why not
_COMPILED_LOCK = threading.Lock()


def _sympy_key(nd: _Node) -> tuple[Any, ...]:
    """What a node's symbolic derivatives depend on: op, attributes, the float operands' shapes
    and the other operands' values (a where's condition, a target, a number)."""
    parts: list[Any] = []
    for k, v in enumerate(nd.operands):
        if k in nd.floats:
            parts.append(("float", v.shape))
        elif isinstance(v, np.ndarray):
            parts.append(("array", v.dtype.str, v.shape, v.tobytes()))
        else:
            parts.append(("number", type(v).__name__, repr(v)))
    return (nd.node.op, repr(nd.node.attrs), tuple(parts), tuple(nd.out_shapes))


class _SympyBudget:
    """sympy's time over one blame (SYMPY_TOTAL_SECONDS) and for each node."""

    def __init__(self) -> None:
        self.used = 0.0
        self.node_until = math.inf

    def left(self) -> float:
        return SYMPY_TOTAL_SECONDS - self.used

    def start_node(self) -> None:
        self.node_until = time.monotonic() + SYMPY_NODE_SECONDS

    @contextmanager
    def share(self) -> Iterator[None]:
        """sympy's deadline (sympy_backend's own, which its loops check) for the block."""
        start = time.monotonic()
        try:
            with sympy_backend.share_until(min(self.node_until, start + max(0.0, self.left()))):
                yield
        finally:
            self.used += time.monotonic() - start


def _too_large(nd: _Node) -> str:
    """Why sympy does not take this node (empty: it does)."""
    out = sum(math.prod(shape) for shape in nd.out_shapes)
    inner = 1
    if nd.node.op in ("matmul", "dot"):
        first = np.shape(nd.operands[0])
        inner = first[-1] if first else 1
    cost = nd.entries + out * inner
    if cost > SYMPY_MAX_COST:
        return f"too large for sympy ({cost} scalar operations, at most {SYMPY_MAX_COST})"
    return ""


# ---------------------------------------------------------------- judging one quantity


@dataclass
class _Finding:
    check: str  # which check found it (a batch's row, a create_graph part)
    detail: str
    error: float
    kind: str = ""  # the check, as find_culprits lists them


@dataclass
class _Item:
    """One array to judge: the engine's, what it is, its tolerance, entries left unverified."""

    engine: np.ndarray
    what: str
    tol: Tolerance
    skip: np.ndarray | None = None


def _limits(
    near: list[np.ndarray], nearer: list[np.ndarray], tol: Tolerance
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per entry, the range [lo, hi] the one-sided derivatives span (a side diverging: to
    infinity), and whether any side was defined there."""
    shape = near[0].shape if near else ()
    lo, hi = np.full(shape, np.inf), np.full(shape, -np.inf)
    any_side = np.zeros(shape, bool)
    with np.errstate(invalid="ignore", over="ignore"):
        for v1, v2 in zip(near, nearer):
            ok = ~np.isnan(v2)
            v1 = np.where(np.isnan(v1), v2, v1)
            grows = ok & ((np.abs(v2) > DIVERGING * np.abs(v1) + tol.atol) | np.isinf(v2))
            spread = np.where(grows, 0.0, np.abs(v1 - v2))
            s_lo = np.where(grows & (v2 < 0), -np.inf, np.minimum(v2 - spread, np.where(grows, v1, v2)))
            s_hi = np.where(grows & (v2 > 0), np.inf, np.maximum(v2 + spread, np.where(grows, v1, v2)))
            lo = np.where(ok, np.minimum(lo, s_lo), lo)
            hi = np.where(ok, np.maximum(hi, s_hi), hi)
            any_side |= ok
    return lo, hi, any_side


def _judge(
    check: str,
    items: list[_Item],
    evaluate: Callable[[list[Any]], list[np.ndarray]],
    nd: _Node,
    sides: list[list[np.ndarray | None]],
    excuse: Callable[[list[Any]], list[np.ndarray] | None] | None,
    rounded: Callable[[list[Any]], list[np.ndarray] | None] | None,
    ref: _Reference,
    stats: _Stats | None,
    second_order: bool = False,
    one_hull: bool = False,
) -> _Finding | None:
    """Compare each item with the reference at the node's operands: exactly where the sides of
    its kinks (if any) agree with the point itself, within the range the one-sided derivatives
    span where they do not. An entry where the engine equals JAX computing the same op in the
    engine's dtypes (finite, at a kink) is floating point, not a wrong rule. Second order
    (`second_order`): where a one-sided derivative diverges, or at a norm's or std's kink, a
    value outside the range is left unverified (see below). The worst finding, or None; `stats`
    (when given) counts the entries judged at kinks and those left unverified. `one_hull`: the
    sides are the alternatives of a single kinked group whose convex hull is the generalized
    gradient (a tie of max): the values inside their ranges entry by entry must also be one
    convex combination of them (three tied entries given 1/4 each are each in [0, 1])."""
    center = evaluate(nd.wide)
    in_hull: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (engine, sides, scale)
    near: list[list[np.ndarray]] = []
    nearer: list[list[np.ndarray]] = []
    for side in sides:
        deadline.checkpoint()
        near.append(evaluate(_shifted(nd.wide, side, 1.0)))
        nearer.append(evaluate(_shifted(nd.wide, side, DELTA_RATIO)))
    worst: _Finding | None = None
    native: list[np.ndarray] | None = None
    spread: list[np.ndarray] | None = None
    partial = any(item.skip is not None for item in items)  # some kinked entries not moved
    for i, item in enumerate(items):
        e = np.asarray(item.engine, np.float64)
        c = np.asarray(center[i], np.float64)
        if e.shape != c.shape:
            return _Finding(
                check, f"{item.what}: a gradient of shape {e.shape}, expected {c.shape}", math.inf
            )
        judged = np.ones(e.shape, bool) if item.skip is None else ~np.broadcast_to(item.skip, e.shape)
        unverified = ~judged
        exact = judged
        ranged = bad_range = np.zeros(e.shape, bool)
        lo = hi = c
        if sides:
            v1 = [np.asarray(n[i], np.float64) for n in near]
            v2 = [np.asarray(n[i], np.float64) for n in nearer]
            moved = np.zeros(e.shape, bool)
            for a, b in zip(v1, v2):
                moved |= ~close(a, c, item.tol) | ~close(b, c, item.tol)
            lo, hi, any_side = _limits(v1, v2, item.tol)
            exact = judged & ~moved
            unverified = unverified | (judged & moved & ~any_side)
            ranged = judged & moved & any_side
            with np.errstate(invalid="ignore", over="ignore"):
                inside = (e >= lo - (item.tol.atol + item.tol.rtol * np.abs(lo))) & (
                    e <= hi + (item.tol.atol + item.tol.rtol * np.abs(hi))
                )
            unbounded = (lo == -np.inf) | (hi == np.inf)
            nonfinite_ok = (np.isposinf(e) & (hi == np.inf)) | (np.isneginf(e) & (lo == -np.inf))
            nonfinite_ok |= np.isnan(e) & unbounded
            bad_range = ranged & ~np.where(np.isfinite(e), inside, nonfinite_ok)
            fit = ranged & ~bad_range & np.isfinite(e)
            if one_hull and not second_order and fit.any():
                # the tolerance at the largest admissible value, as verdict's fit (at a
                # tie's entry whose value is 0, atol alone made the system unsolvably wide)
                largest = np.max(np.abs(np.stack([c[fit], lo[fit], hi[fit]])), axis=0)
                scale = item.tol.atol + item.tol.rtol * np.nan_to_num(largest, posinf=0.0)
                in_hull.append((e[fit], np.stack([v[fit] for v in v2]), scale))
            if second_order:
                # the first derivative there is itself a convention (diverging one-sided slopes),
                # or the sides span only part of the generalized gradient (a ball for norm and
                # std, which <VJP, w> sees whole): outside the span is not proof of a wrong rule
                loose = unbounded | (nd.node.op in BALLS) | partial
                unverified = unverified | (bad_range & loose)
                bad_range = bad_range & ~loose
        wrong = exact & ~close(e, c, item.tol)
        if (wrong.any() or bad_range.any()) and excuse is not None:
            if native is None:
                native = excuse(nd.wide) or []
            if i < len(native):
                same = close(e, native[i], item.tol)
                wrong = wrong & ~same
                bad_range = bad_range & ~(same & np.isfinite(native[i]))
        if second_order and partial and item.skip is None:
            # <VJP, w> with respect to a cotangent mixes kinked entries, some never moved
            unverified = unverified | wrong
            wrong = np.zeros(e.shape, bool)
        if wrong.any():
            if spread is None:
                spread = _spread(evaluate, [excuse, rounded], nd, center)
            with np.errstate(invalid="ignore", over="ignore"):
                wrong = wrong & ~(np.abs(e - c) <= CONDITION_MARGIN * spread[i] + item.tol.atol)
        if stats is not None:
            stats.unverified += int(unverified.sum())
            stats.kink_entries += int(ranged.sum())
        bad = wrong | bad_range
        if not bad.any():
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            dist = np.where(wrong, np.abs(e - c), np.maximum(lo - e, e - hi))
        dist = np.where(bad, np.nan_to_num(dist, nan=np.inf, posinf=np.inf), -1.0)
        idx = np.unravel_index(int(np.argmax(dist)), e.shape)
        if wrong[idx]:
            said = f"{ref.describe()} {float(c[idx]):.10g}"
        else:
            said = (
                "outside the range the one-sided derivatives span at this kink, "
                f"[{float(lo[idx]):.10g}, {float(hi[idx]):.10g}] ({ref.describe()})"
            )
        at = tuple(int(j) for j in idx)
        detail = f"{item.what}, entry {at}: engine {float(e[idx]):.10g}, {said}"
        if worst is None or float(dist[idx]) > worst.error:
            worst = _Finding(check, detail, float(dist[idx]))
    if worst is None and in_hull:
        worst = _outside_hull(check, in_hull, ref)
    return worst


def _outside_hull(
    check: str, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], ref: _Reference
) -> _Finding | None:
    """A finding when the engine's values at a single kinked group (every item's, together)
    are no convex combination of the group's one-sided derivatives."""
    value = np.concatenate([p[0] for p in parts])
    sides = np.concatenate([p[1] for p in parts], axis=1)
    fit = hull_misfit(np.zeros_like(value), [sides], value, np.concatenate([p[2] for p in parts]))
    if fit is None or not fit[0].any():  # (blame names a node only where the miss is sure)
        return None
    shown = ", ".join(f"{v:.6g}" for v in value[:6]) + (", ..." if value.size > 6 else "")
    return _Finding(
        check,
        f"the values at this kink, [{shown}], are each within the one-sided derivatives' range "
        "but no convex combination of them (the shares of tied entries must add up to the "
        f"whole) ({ref.describe()})",
        float(np.abs(value - sides.mean(axis=0)).max()),
    )


def _spread(
    evaluate: Callable[[list[Any]], list[np.ndarray]],
    floats: list[Callable[[list[Any]], list[np.ndarray] | None] | None],
    nd: _Node,
    center: list[np.ndarray],
) -> list[np.ndarray]:
    """Per entry, how far from the exact value a correct computation in the node's dtype may
    land near this point: the largest of how far the exact reference moves when the float
    operands move by CONDITION_ULPS rounding errors (at CONDITION_POINTS seeded points), and how
    far each of `floats` (the same derivative computed in the node's precision: JAX in the
    engine's dtypes, sympy's formula rounded to float64 or float32) is from the exact value,
    there and at the point. At an ill-conditioned point (std of [1 + 1e-12, 1, 1]) rounding
    alone makes errors of 1e-4, and torch makes them too; a wrong rule is off by more."""
    eps = float(np.finfo(np.float32 if _narrow(nd) else np.float64).eps) * CONDITION_ULPS
    rng = np.random.default_rng(0)
    out = [np.zeros(np.shape(c)) for c in center]

    def widen(values: list[np.ndarray] | None, exact: list[np.ndarray]) -> None:
        for o, v, c in zip(out, values or [], exact):
            with np.errstate(invalid="ignore", over="ignore"):
                d = np.abs(np.asarray(v, np.float64) - c)
            o[...] = np.fmax(o, np.where(np.isfinite(d), d, 0.0))

    floats = [f for f in floats if f is not None]
    for f in floats:
        widen(f(nd.wide), center)
    for _ in range(CONDITION_POINTS):
        deadline.checkpoint()
        xs = [
            x * (1 + eps * rng.uniform(-1, 1, np.shape(x))) if k in nd.floats else x
            for k, x in enumerate(nd.wide)
        ]
        exact = [np.asarray(v, np.float64) for v in evaluate(xs)]
        widen(exact, center)
        for f in floats:
            widen(f(xs), exact)
    return out


def _narrow(nd: _Node) -> bool:
    """Whether the node computes in float32 (a float32 operand or result)."""
    return any(np.dtype(d) == np.float32 for d in nd.out_dtypes) or any(
        nd.operands[k].dtype == np.float32 for k in nd.floats
    )


def _shifted(xs: list[Any], side: list[np.ndarray | None], scale: float) -> list[Any]:
    return [x if s is None else np.asarray(x, np.float64) + scale * s for x, s in zip(xs, side)]


# ---------------------------------------------------------------- the engine on one node


class _RuleRaised(Exception):
    """The engine raised while running the node's rule (a wrong shape, a wrong count...)."""


def _forward(nd: _Node, diff: Sequence[int]) -> tuple[list[Any], tuple[Any, ...]]:
    leaves = []
    for k, v in enumerate(nd.operands):
        if isinstance(v, np.ndarray):
            leaves.append(cg.tensor(v.copy(), requires_grad=k in diff))
        else:
            leaves.append(v)
    with cg.enable_grad():
        out = engine_backend.LOWERING[nd.node.op](leaves, nd.node.attr_dict)
    return leaves, out if isinstance(out, tuple) else (out,)


def _backward(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except _FATAL:
        raise
    except Exception as exc:  # the rule under test failed: that is the finding
        raise _RuleRaised(f"{type(exc).__name__}: {exc}") from None


def _grad(outs: Sequence[Any], inputs: Sequence[Any], cots: Sequence[Any], **kw: Any) -> list[Any]:
    live = [k for k, o in enumerate(outs) if o.requires_grad]
    if not live:
        return [cg.zeros(*i.shape, dtype=i.dtype) for i in inputs]
    return list(
        cg.grad(
            [outs[k] for k in live],
            list(inputs),
            [cots[k] for k in live],
            allow_unused=True,
            materialize_grads=True,
            **kw,
        )
    )


def _engine_first(nd: _Node, diff: list[int], cots: list[np.ndarray]) -> list[np.ndarray]:
    leaves, outs = _forward(nd, diff)
    gs = _backward(lambda: _grad(outs, [leaves[k] for k in diff], [cg.tensor(c) for c in cots]))
    return [g.data for g in gs]


def _engine_batched(nd: _Node, diff: list[int], rows: list[np.ndarray]) -> list[np.ndarray]:
    leaves, outs = _forward(nd, diff)
    gs = _backward(
        lambda: _grad(
            outs, [leaves[k] for k in diff], [cg.tensor(r) for r in rows], is_grads_batched=True
        )
    )
    return [g.data for g in gs]


def _engine_create_graph(
    nd: _Node, diff: list[int], cots: list[np.ndarray], ws: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], set[str]]:
    """The VJP under create_graph; the gradient of <VJP, w> with respect to the operands in
    `diff` and to the cotangents (the VJP's own graph pulled back with w as its cotangent: no op
    of blame's own enters it); and the ops that VJP's graph is made of."""
    leaves, outs = _forward(nd, diff)
    vs = [cg.tensor(c, requires_grad=True) for c in cots]
    xs = [leaves[k] for k in diff]
    gs = _backward(lambda: _grad(outs, xs, vs, create_graph=True))
    live = [j for j, g in enumerate(gs) if g.requires_grad]
    if not live:
        second = [np.zeros(t.shape, t.dtype) for t in xs + vs]
    else:
        result = _backward(
            lambda: cg.grad(
                [gs[j] for j in live],
                xs + vs,
                [cg.tensor(ws[j]) for j in live],
                allow_unused=True,
                materialize_grads=True,
            )
        )
        second = [r.data for r in result]
    return [g.data for g in gs], second[: len(xs)], second[len(xs) :], _ops_of(gs, outs)


def _ops_of(gs: Sequence[Any], outs: Sequence[Any]) -> set[str]:
    """The ops of the graph that computed gs (the VJP under create_graph), not the forward's (a
    composite's inner nodes, cross_entropy's log_softmax, are the forward's too)."""

    def walk(starts: list[Any], stop: set[int]) -> dict[int, Any]:
        seen: dict[int, Any] = {}
        stack = list(starts)
        while stack:
            fn = stack.pop()
            if fn is None or id(fn) in seen or id(fn) in stop:
                continue
            seen[id(fn)] = fn
            stack.extend(child for child, _ in getattr(fn, "next_functions", ()))
        return seen

    forward = walk([o.grad_fn for o in outs], set())
    vjp = walk([g.grad_fn for g in gs], set(forward))
    return {fn.impl.spec.name for fn in vjp.values() if getattr(fn, "impl", None) is not None}


# ---------------------------------------------------------------- checking one node


@dataclass
class _Stats:
    checked: int = 0
    with_frozen: int = 0
    with_received: int = 0  # nodes checked with the cotangent the request's VJP gave them
    at_kinks: int = 0
    kink_entries: int = 0
    unverified: int = 0
    by: dict[str, int] = field(default_factory=dict)
    why_jax: list[str] = field(default_factory=list)
    skipped: int = 0
    failed: list[str] = field(default_factory=list)  # nodes blame could not check, and why


def _tol(dtypes: Sequence[Any], overrides: tuple[float | None, float | None]) -> Tolerance:
    narrow = any(np.dtype(d) == np.float32 for d in dtypes if d is not None)
    return Tolerance.for_dtype("float32" if narrow else "float64", *overrides)


@dataclass
class _Outcome:
    findings: list[_Finding]  # at most one per check, in the order the checks ran
    vjp_ops: set[str] = field(default_factory=set)  # the ops its create_graph VJP is made of


def _check(
    nd: _Node,
    sides: list[list[np.ndarray | None]],
    skip: np.ndarray | None,
    rng: np.random.Generator,
    overrides: tuple[float | None, float | None],
    ref: _Reference,
    stats: _Stats,
    received: list[np.ndarray | None] | None = None,
    one_hull: bool = False,
) -> _Outcome:
    """Every check of one node, in each configuration of frozen operands; and with the
    cotangent it received in the request's VJP, when given."""
    shapes, dtypes = nd.out_shapes, nd.out_dtypes
    cot = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    rows = [rng.standard_normal((BATCH_COTANGENTS, *s)).astype(d) for s, d in zip(shapes, dtypes)]
    ws = {
        k: rng.standard_normal(np.shape(nd.operands[k])).astype(nd.operands[k].dtype) for k in nd.floats
    }
    cot64 = [np.asarray(c, np.float64) for c in cot]
    row64 = [[np.asarray(x[r], np.float64) for x in rows] for r in range(BATCH_COTANGENTS)]
    memo: dict[Any, Any] = {}

    def memoized(key: Any, fn: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        """The reference at operand values xs, computed once per configuration-free key (the
        reference's derivatives with respect to an operand do not depend on which others are
        frozen)."""

        def get(xs: list[Any]) -> Any:
            k = (key, _fingerprint(xs))
            if k not in memo:
                deadline.checkpoint()
                memo[k] = fn(xs)
            return memo[k]

        return get

    first = memoized("first", lambda xs: ref.first(xs, cot64))
    row_first = [
        memoized(("row", r), lambda xs, r=r: ref.first(xs, row64[r])) for r in range(BATCH_COTANGENTS)
    ]
    native = _JaxRef(nd, native=True)
    outcome = _Outcome([])
    seen: set[str] = set()

    def found(check: str, f: _Finding | None) -> None:
        if f is not None and check not in seen:
            seen.add(check)
            f.kind = check
            outcome.findings.append(f)

    configs = [("", list(nd.floats))]
    frozen_diff = [k for k in nd.floats if k not in nd.frozen]
    if nd.frozen and frozen_diff:
        names = ", ".join(nd.names[k] for k in sorted(nd.frozen))
        configs.append((f" (with {names} frozen, as in the request)", frozen_diff))
    for tag, diff in configs:
        deadline.checkpoint()
        counting = stats if not tag else None  # entries are counted once per node

        def sel(values: list[np.ndarray], diff: list[int] = diff) -> list[np.ndarray]:
            return [values[nd.floats.index(k)] for k in diff]

        def items(
            values: list[np.ndarray], what: str = "gradient of", diff: list[int] = diff
        ) -> list[_Item]:
            return [
                _Item(
                    v,
                    f"{what} {nd.names[k]}",
                    _tol([nd.operands[k].dtype, *dtypes], overrides),
                    skip if k == 0 else None,
                )
                for v, k in zip(values, diff)
            ]

        def in_float(cs: list[np.ndarray], sel: Callable[..., Any] = sel) -> tuple[Any, Any]:
            """The first-order derivative computed in the node's precision: by JAX in the
            engine's dtypes, and by sympy's formula rounded (see _spread)."""

            def rounded(xs: list[Any]) -> Any:
                values = ref.rounded("first", xs, cs)
                return None if values is None else sel(values)

            return (lambda xs: _quiet(lambda: sel(native.first(xs, cs)))), rounded

        def judge(
            label: str,
            its: list[_Item],
            evaluate: Callable[..., Any],
            floats: tuple[Any, Any],
            n: Any = None,
            second_order: bool = False,
        ) -> Any:
            excuse, rounded = floats
            return _judge(
                label, its, evaluate, nd, sides, excuse, rounded, ref, n, second_order, one_hull
            )

        def first_order(
            label: str,
            cots: list[Any],
            cots64: list[Any],
            exact: Any,
            n: Any = None,
            diff: list[int] = diff,
        ) -> None:
            """The engine's VJP with the cotangents cots, judged against exact(operands)."""
            try:
                got = _engine_first(nd, diff, cots)
                f = judge(label, items(got), lambda xs, sel=sel: sel(exact(xs)), in_float(cots64), n)
                found(label, f)
            except _RuleRaised as exc:
                found(label, _Finding(label, f"the engine raised {exc}", math.inf))

        # (a) first order, one random cotangent
        first_order(f"first order{tag}", cot, cot64, first, counting)
        # (a') the cotangent the request gave it: a rule wrong for that one alone (a fast path
        # for all ones) passed every seeded check
        if received is not None and not tag:
            given = [
                np.zeros(s, d) if g is None else np.asarray(g, d)
                for g, s, d in zip(received, shapes, dtypes)
            ]
            given64 = [np.asarray(g, np.float64) for g in given]
            exact = memoized("received", lambda xs, c=given64: ref.first(xs, c))
            first_order("the cotangent it received in the request", given, given64, exact)
        # (b) several cotangents at once, as a Jacobian pushes them, row by row
        label = f"{BATCH_COTANGENTS} batched cotangents{tag}"
        try:
            got = _engine_batched(nd, diff, rows)
            for g, k in zip(got, diff):
                want = (BATCH_COTANGENTS, *np.shape(nd.operands[k]))
                if g.shape != want:
                    raise _RuleRaised(
                        f"returned batched gradients of {nd.names[k]} of shape {g.shape}, "
                        f"expected {want}"
                    )
            for r in range(BATCH_COTANGENTS):
                f = judge(
                    f"{label}, row {r}",
                    items([g[r] for g in got]),
                    lambda xs, sel=sel, r=r: sel(row_first[r](xs)),
                    in_float(row64[r]),
                )
                if f is not None:
                    found(label, f)
                    break
        except _RuleRaised as exc:
            found(label, _Finding(label, f"the engine raised {exc}", math.inf))
        # (c) create_graph: the VJP's values, then the VJP of the VJP
        label = f"create_graph{tag}"
        try:
            values, second_x, second_v, ops = _engine_create_graph(nd, diff, cot, [ws[k] for k in diff])
            outcome.vjp_ops |= ops
            f = judge(
                f"{label}, the VJP's values",
                items(values),
                lambda xs, sel=sel: sel(first(xs)),
                in_float(cot64),
            )
            if f is None:
                w64 = [
                    np.asarray(ws[k], np.float64) if k in diff else np.zeros(ws[k].shape)
                    for k in nd.floats
                ]
                wn = [ws[k] if k in diff else np.zeros_like(ws[k]) for k in nd.floats]

                def second(xs: list[Any], sel: Callable[..., Any] = sel, w64: Any = w64) -> Any:
                    gx, gv = ref.second(xs, cot64, w64)
                    return [*sel(gx), *gv]

                def native_second(xs: list[Any], sel: Callable[..., Any] = sel, wn: Any = wn) -> Any:
                    gx, gv = native.second(xs, cot64, wn)
                    return [*sel(gx), *gv]

                def rounded_second(xs: list[Any], sel: Callable[..., Any] = sel, w64: Any = w64) -> Any:
                    values = ref.rounded("second", xs, cot64, w64)
                    return None if values is None else [*sel(values[0]), *values[1]]

                its = items(second_x, "d<VJP, w>/d") + [
                    _Item(v, f"d<VJP, w>/d cotangent {j}", _tol([dtypes[j]], overrides))
                    for j, v in enumerate(second_v)
                ]
                f = judge(
                    f"{label}, the VJP of the VJP",
                    its,
                    memoized(("second", tuple(diff)), second),
                    (lambda xs, f=native_second: _quiet(lambda: f(xs)), rounded_second),
                    second_order=True,
                )
            found(label, f)
        except _RuleRaised as exc:
            found(label, _Finding(label, f"the engine raised {exc}", math.inf))
    return outcome


def _fingerprint(xs: list[Any]) -> tuple[Any, ...]:
    """Operand values as a key: float arrays by content, constants (the same objects) by id."""
    return tuple((x.shape, x.tobytes()) if _float(x) else id(x) for x in xs)


def _quiet(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except _FATAL:
        raise
    except Exception:
        return None


# ---------------------------------------------------------------- every node


def _overrides(tol: Tolerance | None, rtol: float | None, atol: float | None) -> tuple[Any, Any]:
    """The request's own tolerances: given, or read from an old caller's `tol` when it is not one
    of the dtype defaults."""
    if rtol is not None or atol is not None or tol is None:
        return rtol, atol
    defaults = [Tolerance.for_dtype(d) for d in ("float64", "float32")]
    if any(tol.rtol == d.rtol and tol.atol == d.atol for d in defaults):
        return None, None
    return tol.rtol, tol.atol


def _values(x: Any) -> Any:
    if isinstance(x, cg.Tensor):
        return x.data
    return x


def find_culprits(
    nodes: list[IRNode],
    engine_values: dict[int, Any],
    skip: set[int] | None = None,
    tol: Tolerance | None = None,
    seed: int = 0,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    received: dict[int, list[np.ndarray | None]] | None = None,
) -> Culprits:
    """Every node whose own VJP rule is wrong, in program order, each checked alone (see the
    module's docstring), as a Culprits list whose `checks` says what was checked. received: the
    cotangent each node got in the request's VJP, checked too (engine_backend.received_cotangents).

    nodes: the program's IR nodes; engine_values: the engine's tensor for every node id (its
    forward pass, as engine_backend.run left it). rtol, atol: the request's own tolerances (None:
    the defaults of each quantity's dtype). `skip` and `tol` are the old call's: kink nodes are now
    checked against their one-sided derivatives (skip is ignored), and `tol` counts only when it
    is not a dtype default (then it is the request's own tolerance)."""
    del skip  # kinks are judged by admissibility now, not skipped
    overrides = _overrides(tol, rtol, atol)
    rng = np.random.default_rng(seed)
    by_id = {n.id: n for n in nodes}
    stats = _Stats()
    budget = _SympyBudget()
    blamed: list[tuple[Blame, _Outcome]] = []
    for node in nodes:
        deadline.checkpoint()
        if node.op in ("input", "take"):
            continue
        value = engine_values.get(node.id)
        grad_fn = getattr(value[0] if isinstance(value, tuple) else value, "grad_fn", None)
        if grad_fn is None:
            continue
        nd = _prepare(node, engine_values, by_id)
        if nd is None:
            stats.skipped += 1
            continue
        kinked = find_kinks([node], {node.id: nd.wide})
        entries = kinked[0].entries if kinked else None
        sides, one_hull = _kink(node, nd.wide, entries) if nd.floats else ([], False)
        skip_mask = kink_beyond_cap(node, nd.wide)
        budget.start_node()
        ref = _Reference(nd, budget)
        try:
            outcome = _check(
                nd, sides, skip_mask, rng, overrides, ref, stats, (received or {}).get(node.id), one_hull
            )
        except _FATAL:
            raise
        except Exception as exc:  # blame's own harness failed on this node: say so, go on
            where = f" at {node.pos}" if node.pos else ""
            stats.failed.append(f"{grad_fn.name()}{where} ({type(exc).__name__}: {str(exc)[:100]})")
            continue
        stats.checked += 1
        stats.with_frozen += bool(nd.frozen)
        stats.with_received += node.id in (received or {})
        stats.at_kinks += bool(sides) or skip_mask is not None
        if _EXACT in ref.used:
            stats.by[_EXACT] = stats.by.get(_EXACT, 0) + 1
        elif ref.used:
            stats.by["JAX"] = stats.by.get("JAX", 0) + 1
            stats.why_jax.append(ref.why)
        if outcome.findings:
            first, *others = outcome.findings
            detail = f"{first.check}: {first.detail}"
            if others:
                detail += f"; also wrong in: {'; '.join(f.kind for f in others)}"
            if ref.used and ref.describe() not in detail:
                detail += f" (reference: {ref.describe()})"
            parts = _engine_nodes(grad_fn)
            if len(parts) > 1:  # checked as one rule: which part is wrong is not known
                detail += f"; {node.op} runs as {' and '.join(parts)}: one of their rules is wrong"
            blame = Blame(grad_fn.name(), node.op, node.id, node.pos, node.text, first.error, detail)
            blamed.append((blame, outcome))
    culprits = Culprits(_primary(blamed))
    culprits.checks = _describe(stats)
    return culprits


_SECOND_ORDER = ", the VJP of the VJP"
MAX_PARTS = 64  # engine nodes of one op of the program listed (composites have a few)


def _engine_nodes(grad_fn: Any) -> list[str]:
    """The engine nodes one op of the program runs as: its result's and those under it that no
    other op of the program made (cross_entropy: NllLossBackward0 and LogSoftmaxBackward0)."""
    names, todo, seen = [], [grad_fn], set()
    while todo and len(seen) < MAX_PARTS:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        names.append(fn.name())
        todo += [
            c
            for c, _ in fn.next_functions
            if c is not None
            and not isinstance(c, cg.AccumulateGrad)
            and c.metadata.get("ir_node") is None
        ]
    return names


def _primary(blamed: list[tuple[Blame, _Outcome]]) -> list[Blame]:
    """The culprits, without a node whose only fault is the VJP of its VJP when that VJP is made
    of an op blamed on its own account (differentiating tanh's VJP runs mul's rule: a wrong mul
    shows there too); the node that was dropped is named in the culprit's detail."""
    primary = {
        b.op
        for b, o in blamed
        if any(_SECOND_ORDER not in f.check or "raised" in f.detail for f in o.findings)
    }
    kept: list[Blame] = []
    echoes: dict[str, list[str]] = {}
    for b, o in blamed:
        second_only = all(_SECOND_ORDER in f.check and "raised" not in f.detail for f in o.findings)
        through = sorted(op for op in o.vjp_ops & primary if op != b.op)
        if second_only and through:
            where = f" at {b.position}" if b.position else ""
            for op in through:
                echoes.setdefault(op, []).append(f"{b.node_name}{where}")
            continue
        kept.append(b)
    for b in kept:
        if b.op in echoes:
            b.detail += (
                f"; this rule also runs in the create_graph path of {', '.join(echoes[b.op])}, "
                "which is off for that reason"
            )
    return kept


def _prepare(node: IRNode, values: dict[int, Any], by_id: dict[int, IRNode]) -> _Node | None:
    """The node's operands as the engine's forward pass left them (None: an operand is a whole
    multi-output value, which no op of the table takes)."""
    operands, frozen, names, floats = [], set(), [], []
    for k, arg in enumerate(node.args):
        if isinstance(arg, Ref):
            v = values.get(arg.id)
            if v is None or isinstance(v, tuple):
                return None
            source = by_id.get(arg.id)
            label = (source.name or source.text) if source is not None else ""
            names.append(f"operand {k} ({label})" if label else f"operand {k}")
            data = _values(v)
            if _float(data):
                floats.append(k)
                if not v.requires_grad:
                    frozen.add(k)
            operands.append(data)
        else:
            names.append(f"operand {k} ({arg!r})")
            operands.append(arg)
    wide = [np.asarray(v, np.float64) if k in floats else v for k, v in enumerate(operands)]
    out = values[node.id]
    outs = out if isinstance(out, tuple) else (out,)
    return _Node(
        node,
        operands,
        wide,
        floats,
        frozen,
        names,
        [tuple(o.shape) for o in outs],
        [o.dtype for o in outs],
    )


def _describe(s: _Stats) -> str:
    if not s.checked:
        failed = f" (blame itself failed on: {'; '.join(s.failed)})" if s.failed else ""
        return f"no node with a gradient to check{failed}"
    nodes = f"{s.checked} node{'s' if s.checked != 1 else ''}"
    text = (
        f"each of {nodes} checked alone at its saved operands: first order"
        + (
            f" (a random cotangent, and for {s.with_received} the one it received in the request)"
            if s.with_received
            else ""
        )
        + ", "
        f"{BATCH_COTANGENTS} batched cotangents, create_graph (the VJP of its VJP), "
        "every float operand requiring grad"
    )
    if s.with_frozen:
        text += f", and frozen operands as in the request ({s.with_frozen} with some)"
    if s.at_kinks:
        text += (
            f"; {s.at_kinks} at kinks, against their one-sided derivatives "
            f"({s.kink_entries} gradient entries judged by the admissible range)"
        )
    if s.unverified:
        text += (
            f"; {s.unverified} gradient entries at kinks left unverified (past the caps on "
            "sides, or undefined on every side)"
        )
    refs = [f"sympy for {s.by[_EXACT]}"] if s.by.get(_EXACT) else []
    if s.by.get("JAX"):
        why = f" ({s.why_jax[0]})" if len(set(s.why_jax)) == 1 else ""
        refs.append(f"JAX for {s.by['JAX']}{why}")
    if refs:
        text += f"; reference: {', '.join(refs)}"
    if s.skipped:
        text += f"; {s.skipped} not checked (an operand is a multi-output value)"
    if s.failed:
        text += f"; not checked, blame itself failed: {'; '.join(s.failed)}"
    return text
