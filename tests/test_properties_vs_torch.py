"""Property-based tests of the engine against PyTorch (float64) as the oracle.

CASES maps every op of the table to (engine function, torch function, generator). A generator gets the
shape of the op's primary operand and draws the op's other operands and attributes (broadcasting
partners, axes with negative values and keepdims, indices, pad widths...); the primary operand's values
come from the domain the generator names (positive for log and sqrt, nonzero for divisors, ...), drawn
from a seeded generator so that ties and zeros have probability zero.

Per op, the engine and torch get the same numpy inputs and must agree on:
  - the forward values,
  - the gradients of every float operand (backward with a random cotangent unless the output is a
    scalar),
  - second derivatives: grad(create_graph=True) with a cotangent that itself requires grad, then grad of
    <first gradients, random weights> with respect to the inputs and the cotangent,
  - the root grad_fn name, where the engine claims torch's name (Call.same_name).
Random programs chain a few ops (domains kept by smooth adapters such as x*x + 0.5, earlier results
reused to make fan-out) and are checked the same way. Explicit tests pin PyTorch's conventions at kinks.

More examples: CROSSGRAD_EXAMPLES=500 pytest tests/test_properties_vs_torch.py; long programs: -m slow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from crossgrad import engine as cg
from crossgrad.engine import OPS
from hypothesis import assume, given, reject, settings
from hypothesis import strategies as st

# Singular points (edges, var with correction >= n) warn in numpy and torch alike.
pytestmark = pytest.mark.filterwarnings(
    "ignore::RuntimeWarning", "ignore:.*degrees of freedom is <= 0:UserWarning"
)

Shape = tuple[int, ...]
Draw = Callable[[st.SearchStrategy[Any]], Any]

EXAMPLES = int(os.environ.get("CROSSGRAD_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None)
RTOL = 1e-10  # forward values and first derivatives
RTOL_2ND = 1e-8  # second derivatives
ATOL = 1e-12  # scaled by the largest expected magnitude (sums in a different order cancel differently)


# ---------------------------------------------------------------- values and shapes

DOMAINS: dict[str, Callable[[np.random.Generator, Shape], Any]] = {
    "real": lambda rng, s: rng.uniform(-2, 2, s),
    "positive": lambda rng, s: rng.uniform(0.5, 2, s),
    "nonzero": lambda rng, s: rng.choice([-1.0, 1.0], s) * rng.uniform(0.5, 2, s),
    "bounded": lambda rng, s: rng.uniform(-1, 1, s),  # tan: away from its poles
    "unit": lambda rng, s: rng.uniform(0, 1, s),  # probabilities (binary cross-entropy targets)
    "coarse": lambda rng, s: rng.integers(-2, 3, s),  # ties on purpose: comparisons, argmax
}
"""Where an operand's values come from, by name."""

ADAPTERS: dict[str, Callable[[Any, Any], Any]] = {
    "real": lambda lib, x: x,
    "positive": lambda lib, x: x * x + 0.5,
    "nonzero": lambda lib, x: x * x + 0.5,
    "bounded": lambda lib, x: lib.tanh(x),
    "unit": lambda lib, x: lib.sigmoid(x),
}
"""Inside a program: maps any real value into a domain, with the same ops in the engine and torch."""


def values(draw: Draw, shape: Shape, domain: str = "real") -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return np.asarray(DOMAINS[domain](rng, shape), dtype=np.float64)


def mask(draw: Draw, shape: Shape) -> np.ndarray:
    return np.asarray(values(draw, shape) > 0)


def shapes(min_dims: int = 0, max_dims: int = 4) -> st.SearchStrategy[Shape]:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=4)


def broadcastable(draw: Draw, shape: Shape) -> Shape:
    """A shape that broadcasts against `shape` (either side may be the larger one)."""
    return draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=4, min_side=1, max_side=4))


def broadcasts_to(draw: Draw, shape: Shape) -> Shape:
    """A shape that broadcasts to exactly `shape` (leading dims dropped, some dims set to 1)."""
    rest = shape[draw(st.integers(0, len(shape))) :]
    return tuple(1 if draw(st.booleans()) else d for d in rest)


def axis(draw: Draw, ndim: int, multi: bool = True, none: bool = True) -> Any:
    """None, one axis or a tuple of distinct axes, each in its positive or negative spelling."""
    n = max(ndim, 1)  # as in torch, a 0-d tensor takes dim 0 or -1
    kinds = ["int"] + ["tuple"] * multi + ["none"] * none
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    dims = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    signed = tuple(d - n if draw(st.booleans()) else d for d in dims)
    return signed[0] if kind == "int" else signed


def dim(draw: Draw, ndim: int) -> int:
    return axis(draw, ndim, multi=False, none=False)


def normalized(axes: Any, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    return tuple(sorted(a % max(ndim, 1) for a in ((axes,) if isinstance(axes, int) else axes)))


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Call:
    """One application of an op to a primary operand of a given shape."""

    others: tuple[np.ndarray, ...] = ()  # float arrays are differentiated; int/bool are constants
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = "real"  # where the primary operand's values must lie
    same_name: bool = True  # torch records the node name the engine claims


@dataclass(frozen=True)
class Case:
    engine: Callable[..., Any]  # (primary, *others, **attrs) -> Tensor | tuple[Tensor, ...]
    torch: Callable[..., Any]  # the same in torch
    draw: Callable[[Draw, Shape], Call] = lambda draw, shape: Call()
    ndims: tuple[int, int] = (0, 6)  # primary operand's ndim range (single-op tests draw up to 4)
    reuse: bool = False  # others are unconstrained reals: a program may pass earlier results

    def accepts(self, shape: Shape) -> bool:
        return self.ndims[0] <= len(shape) <= self.ndims[1]


def unary(engine: Callable, torch_fn: Callable, domain: str = "real", **attrs: Any) -> Case:
    """An elementwise op; attrs maps each attribute to a strategy."""
    return Case(
        engine,
        torch_fn,
        lambda draw, shape: Call(attrs={k: draw(v) for k, v in attrs.items()}, domain=domain),
    )


def binary(engine: Callable, torch_fn: Callable, domain: str = "real", other: str = "real") -> Case:
    """A broadcasting op of two tensors."""
    return Case(
        engine,
        torch_fn,
        lambda draw, shape: Call((values(draw, broadcastable(draw, shape), other),), domain=domain),
        reuse=other == "real",
    )


def comparison(engine: Callable, torch_fn: Callable) -> Case:
    return Case(
        engine,
        torch_fn,
        lambda draw, shape: Call((values(draw, broadcastable(draw, shape), "coarse"),), domain="coarse"),
    )


def torch_spelling(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn called with the engine's attribute names (axis, keepdims) in torch's (dim, keepdim)."""
    names = {"axis": "dim", "keepdims": "keepdim"}
    return lambda *xs, **attrs: fn(*xs, **{names.get(k, k): v for k, v in attrs.items()})


def _dims(axes: Any, ndim: int) -> Any:
    """torch's spelling of an axis attribute for ops that need explicit dims (amax, logsumexp)."""
    if axes is None:
        return tuple(range(ndim))
    return (axes,) if isinstance(axes, int) else axes


def reduction(
    engine: Callable,
    torch_fn: Callable,
    full: Callable | None = None,
    multi: bool = True,
    keepdim_all: bool = True,
    valid: Callable[[Shape, dict[str, Any]], bool] | None = None,
    **extra: st.SearchStrategy[Any],
) -> Case:
    """A reduction with axis (None, an int or, with multi, a tuple) and keepdims.

    torch_fn(x, axis, keepdims, **extra) computes it in torch; full(x, **extra), if given, is torch's
    full reduction (a node of its own name), used when axis is None and not keepdims. keepdim_all:
    torch has a single call for all axes with keepdim (else that case is a reshape: names differ)."""

    def draw(draw: Draw, shape: Shape) -> Call:
        ax, keep = axis(draw, len(shape), multi), draw(st.booleans())
        attrs = {"axis": ax, "keepdims": keep} | {k: draw(v) for k, v in extra.items()}
        assume(valid is None or valid(shape, attrs))
        return Call(attrs=attrs, same_name=keepdim_all or ax is not None or not keep)

    def on_torch(x: torch.Tensor, axis: Any, keepdims: bool, **kw: Any) -> torch.Tensor:
        if full is not None and axis is None and not keepdims:
            return full(x, **kw)
        return torch_fn(x, axis, keepdims, **kw)

    return Case(engine, on_torch, draw)


def _spread_defined(shape: Shape, attrs: dict[str, Any]) -> bool:
    """var and std are smooth only over more entries than the correction, and std only where it
    is not 0 (a single entry): elsewhere torch's answers are conventions, and not even consistent
    between its calls with and without dims."""
    axes = normalized(attrs["axis"], len(shape)) if attrs["axis"] is not None else range(len(shape))
    count = math.prod(shape[a] for a in axes) if shape else 1
    return count > max(1, attrs["correction"])


def _all_axes(torch_fn: Callable) -> Callable:
    """torch_fn(x, dim, keepdim) for one dim; over all axes: the full reduction, then a reshape."""

    def on_torch(x: torch.Tensor, axis: Any, keepdims: bool) -> torch.Tensor:
        if axis is None:
            out = torch_fn(x)
            return out.reshape((1,) * x.ndim) if keepdims else out
        for a in reversed(normalized(axis, x.ndim)):  # prod: one axis at a time, the last first
            x = torch_fn(x, a, keepdims)
        return x

    return on_torch


def _torch_extremum(torch_fn: Callable) -> Callable:
    """torch.max/min along a dim return (values, indices)."""
    return lambda x, *dim: torch_fn(x, *dim) if not dim else torch_fn(x, *dim).values


def _pow_draw(draw: Draw, shape: Shape) -> Call:
    p = draw(st.sampled_from([0.0, 1.0, 2.0, 3.0, -1.0, -2.0, 0.5, 1.5, -0.5, 2.5]))
    domain = "real" if p == int(p) and p >= 0 else "nonzero" if p == int(p) else "positive"
    return Call(attrs={"exponent": p}, domain=domain)


def _clamp_draw(draw: Draw, shape: Shape) -> Call:
    bound = st.none() | st.floats(-1.5, 1.5)
    lo, hi = draw(bound), draw(bound)
    if lo is None and hi is None:
        lo = draw(st.floats(-1.5, 1.5))
    return Call(attrs={"min": lo, "max": hi})


def _matmul_draw(draw: Draw, shape: Shape) -> Call:
    k = shape[-1]
    if draw(st.booleans()):
        b: Shape = (k,)
    else:
        batch = shape[:-2] if len(shape) > 2 else ()
        b = (*broadcastable(draw, batch)[-2:], k, draw(st.integers(1, 4)))
    # torch: mm, mv and dot for these; beyond them it records reshapes and expands instead
    same = (len(shape), len(b)) in {(2, 2), (2, 1), (1, 1)}
    return Call((values(draw, b),), same_name=same)


def _reshape_draw(draw: Draw, shape: Shape) -> Call:
    n, factors, p = math.prod(shape), [], 2
    while n > 1:  # prime factors of the size, spread over a random number of dims
        while n % p:
            p += 1
        factors.append(p)
        n //= p
    target = [1] * draw(st.integers(1 if factors else 0, 4))
    for f in factors:
        target[draw(st.integers(0, len(target) - 1))] *= f
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return Call(attrs={"shape": tuple(target)})


def _flatten_draw(draw: Draw, shape: Shape) -> Call:
    a, b = dim(draw, len(shape)), dim(draw, len(shape))
    n = max(len(shape), 1)
    if a % n > b % n:
        a, b = b, a
    return Call(attrs={"start_dim": a, "end_dim": b})


def _expand_draw(minus_one: bool) -> Callable[[Draw, Shape], Call]:
    def draw_(draw: Draw, shape: Shape) -> Call:
        lead = draw(st.lists(st.integers(1, 3), max_size=2))
        dims = [draw(st.integers(1, 3)) if d == 1 else d for d in shape]
        dims = [-1 if minus_one and draw(st.booleans()) else d for d in dims]
        return Call(attrs={"shape": (*lead, *dims)})

    return draw_


def _permute_draw(draw: Draw, shape: Shape) -> Call:
    n = len(shape)
    dims = tuple(d - n if draw(st.booleans()) else d for d in draw(st.permutations(range(n))))
    return Call(attrs={"dims": dims})


def _concat_draw(draw: Draw, shape: Shape) -> Call:
    ax = dim(draw, len(shape))
    others = []
    for _ in range(draw(st.integers(0, 2))):
        s = list(shape)
        s[ax] = draw(st.integers(1, 3))
        others.append(values(draw, tuple(s)))
    return Call(tuple(others), {"axis": ax})


def _stack_draw(draw: Draw, shape: Shape) -> Call:
    others = tuple(values(draw, shape) for _ in range(draw(st.integers(0, 2))))
    return Call(others, {"axis": dim(draw, len(shape) + 1)})


def _split_draw(draw: Draw, shape: Shape) -> Call:
    ax = dim(draw, len(shape))
    n = shape[ax]
    if draw(st.booleans()):
        sections: Any = draw(st.integers(1, n + 1))
    else:  # a list of sizes adding up to n
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        sections = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
    return Call(attrs={"sections": sections, "axis": ax})


def _index_item(draw: Draw, kind: str, size: int, length: int | None = None) -> Any:
    """One dim's entry of an index: an int, a slice, an integer array or a boolean mask."""
    if size == 0 and kind in ("int", "array"):  # an empty dim has no entry to pick
        kind = "slice"
    if kind == "int":
        return draw(st.integers(-size, size - 1))
    if kind == "slice":
        if draw(st.booleans()):
            return slice(None)
        bound = st.none() | st.integers(-size - 1, size + 1)
        return slice(draw(bound), draw(bound), draw(st.none() | st.integers(1, 3)))
    if kind == "array":
        n = draw(st.integers(1, 3)) if length is None else length
        return np.asarray(draw(st.lists(st.integers(-size, size - 1), min_size=n, max_size=n)))
    return mask(draw, (size,))


def _getitem_draw(draw: Draw, shape: Shape) -> Call:
    """Indices of one kind (torch's node names them) or of mixed kinds (names differ: skipped)."""
    kind = draw(st.sampled_from(["int", "slice", "array", "mask", "none", "ellipsis", "mixed"]))
    if not shape and kind not in ("none", "ellipsis"):
        kind = "none"
    if kind == "none":
        return Call(attrs={"index": (None,) * draw(st.integers(1, 2))})
    if kind == "ellipsis":  # AliasBackward0; a 1-d x[...] reaches the engine as x[:] (Slice)
        return Call(attrs={"index": (Ellipsis,)}, same_name=len(shape) != 1)
    n = draw(st.integers(1, len(shape)))
    if kind == "mask":  # one mask over the first n dims
        return Call(attrs={"index": (mask(draw, shape[:n]),)})
    if kind != "mixed":  # integer arrays of one length, so that they broadcast together
        length = draw(st.integers(1, 3))
        items = tuple(_index_item(draw, kind, d, length) for d in shape[:n])
        # slices that take everything: AliasBackward0, except that torch names x[(s,)] (a tuple
        # of one) Alias and x[s] Slice, which the engine's canonical index cannot tell apart
        everything = all(
            isinstance(i, slice) and range(*i.indices(d)) == range(d) for i, d in zip(items, shape)
        )
        return Call(attrs={"index": items}, same_name=not (everything and len(items) == 1))
    # ints and slices for the leading (or, after an ellipsis, trailing) dims, at most one advanced
    # index, some Nones
    ellipsis = draw(st.booleans())
    dims = shape[len(shape) - n :] if ellipsis else shape[:n]
    items = [_index_item(draw, draw(st.sampled_from(["int", "slice"])), d) for d in dims]
    at = draw(st.none() | st.integers(0, n - 1))
    if at is not None:
        items[at] = _index_item(draw, draw(st.sampled_from(["array", "mask"])), dims[at])
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    if ellipsis:
        items.insert(0, Ellipsis)
    return Call(attrs={"index": tuple(items)}, same_name=False)


def _torch_index(index: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(torch.from_numpy(i) if isinstance(i, np.ndarray) else i for i in index)


def _pad_draw(draw: Draw, shape: Shape) -> Call:
    widths = draw(st.lists(st.integers(0, 2), max_size=2 * len(shape)))
    widths = widths[: len(widths) // 2 * 2]
    return Call(attrs={"pad": tuple(widths), "value": draw(st.floats(-2, 2))})


def _where_draw(draw: Draw, shape: Shape) -> Call:
    cond, other = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, base_shape=shape, max_side=4)
    ).input_shapes
    return Call((mask(draw, cond), values(draw, other)))


def _masked_fill_draw(draw: Draw, shape: Shape) -> Call:
    return Call((mask(draw, broadcasts_to(draw, shape)),), {"value": draw(st.floats(-2, 2))})


def _softmax_draw(draw: Draw, shape: Shape) -> Call:
    return Call(attrs={"axis": dim(draw, len(shape))})


def _loss_draw(target: str) -> Callable[[Draw, Shape], Call]:
    def draw_(draw: Draw, shape: Shape) -> Call:
        reduction = draw(st.sampled_from(["mean", "sum", "none"]))
        return Call((values(draw, shape, target),), {"reduction": reduction})

    return draw_


def _nll_draw(draw: Draw, shape: Shape) -> Call:
    n, c = shape
    targets = np.asarray(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), np.int64)
    return Call((targets,), {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))})


def _argreduce_draw(draw: Draw, shape: Shape) -> Call:
    attrs = {"axis": axis(draw, len(shape), multi=False), "keepdims": draw(st.booleans())}
    return Call(attrs=attrs, domain="coarse")


FLOATS = st.floats(0.01, 1.0)
SOFTPLUS = {"beta": st.sampled_from([0.5, 1.0, 2.0]), "threshold": st.sampled_from([1.0, 2.0, 20.0])}

CASES: dict[str, Case] = {
    # elementwise arithmetic
    "add": binary(cg.add, torch.add),
    "sub": binary(cg.sub, torch.sub),
    "mul": binary(cg.mul, torch.mul),
    "div": binary(cg.div, torch.div, other="nonzero"),
    "neg": unary(cg.neg, torch.neg),
    "pow_tensor": binary(cg.pow, torch.pow, "positive"),
    "pow": Case(lambda x, exponent: cg.pow(x, exponent), torch.pow, _pow_draw),
    "rpow": unary(
        lambda x, base: cg.pow(base, x),
        lambda x, base: torch.pow(base, x),
        base=st.sampled_from([0.5, 2.0, 3.0, math.e]),
    ),
    "rsub": unary(lambda x, other: cg.sub(other, x), lambda x, other: other - x, other=st.floats(-2, 2)),
    "maximum": binary(cg.maximum, torch.maximum),
    "minimum": binary(cg.minimum, torch.minimum),
    # elementwise functions
    "abs": unary(cg.abs, torch.abs),
    "exp": unary(cg.exp, torch.exp),
    "log": unary(cg.log, torch.log, "positive"),
    "log1p": unary(cg.log1p, torch.log1p, "positive"),
    "expm1": unary(cg.expm1, torch.expm1),
    "sqrt": unary(cg.sqrt, torch.sqrt, "positive"),
    "reciprocal": unary(cg.reciprocal, torch.reciprocal, "nonzero"),
    "sin": unary(cg.sin, torch.sin),
    "cos": unary(cg.cos, torch.cos),
    "tan": unary(cg.tan, torch.tan, "bounded"),
    "tanh": unary(cg.tanh, torch.tanh),
    "sigmoid": unary(cg.sigmoid, torch.sigmoid),
    "relu": unary(cg.relu, torch.relu),
    "leaky_relu": unary(cg.leaky_relu, F.leaky_relu, negative_slope=FLOATS),
    "softplus": unary(cg.softplus, F.softplus, **SOFTPLUS),
    "silu": unary(cg.silu, F.silu),
    "gelu": unary(cg.gelu, F.gelu, approximate=st.sampled_from(["none", "tanh"])),
    "clamp": Case(cg.clamp, torch.clamp, _clamp_draw),
    "sign": unary(cg.sign, torch.sign),
    "floor": unary(cg.floor, torch.floor),
    "round": unary(cg.round, torch.round),
    # reductions
    "sum": reduction(cg.sum, lambda x, a, k: torch.sum(x, a, k), full=torch.sum),
    "mean": reduction(cg.mean, lambda x, a, k: torch.mean(x, a, k), full=torch.mean),
    "prod": reduction(cg.prod, _all_axes(torch.prod), keepdim_all=False),
    "max": reduction(cg.max, _all_axes(_torch_extremum(torch.max)), multi=False, keepdim_all=False),
    "min": reduction(cg.min, _all_axes(_torch_extremum(torch.min)), multi=False, keepdim_all=False),
    "amax": reduction(cg.amax, lambda x, a, k: torch.amax(x, _dims(a, x.ndim), k)),
    "amin": reduction(cg.amin, lambda x, a, k: torch.amin(x, _dims(a, x.ndim), k)),
    "logsumexp": reduction(cg.logsumexp, lambda x, a, k: torch.logsumexp(x, _dims(a, x.ndim), k)),
    "var": reduction(
        cg.var,
        lambda x, a, k, correction: torch.var(x, a, correction=correction, keepdim=k),
        correction=st.integers(0, 1),
        valid=_spread_defined,
    ),
    "std": reduction(
        cg.std,
        lambda x, a, k, correction: torch.std(x, a, correction=correction, keepdim=k),
        correction=st.integers(0, 1),
        valid=_spread_defined,
    ),
    "norm": reduction(
        cg.norm,
        lambda x, a, k, ord: torch.linalg.vector_norm(x, ord, a, k),
        ord=st.sampled_from([1.0, 2.0, 3.0, 0.5, 1.5, math.inf]),
    ),
    # linear algebra
    "matmul": Case(cg.matmul, torch.matmul, _matmul_draw, ndims=(1, 4), reuse=True),
    "dot": Case(cg.dot, torch.dot, lambda draw, s: Call((values(draw, s),)), ndims=(1, 1), reuse=True),
    "outer": Case(
        cg.outer,
        torch.outer,
        lambda draw, s: Call((values(draw, (draw(st.integers(1, 4)),)),)),
        ndims=(1, 1),
        reuse=True,
    ),
    # shape
    "reshape": Case(cg.reshape, torch.reshape, _reshape_draw),
    "flatten": Case(cg.flatten, torch.flatten, _flatten_draw),
    "squeeze": Case(
        cg.squeeze,
        lambda x, axis: torch.squeeze(x) if axis is None else torch.squeeze(x, axis),
        lambda draw, s: Call(attrs={"axis": axis(draw, len(s))}),
    ),
    "unsqueeze": Case(
        cg.unsqueeze,
        torch_spelling(torch.unsqueeze),
        lambda draw, s: Call(attrs={"axis": dim(draw, len(s) + 1)}),
    ),
    "transpose": Case(
        cg.transpose,
        torch.transpose,
        lambda draw, s: Call(attrs={"dim0": dim(draw, len(s)), "dim1": dim(draw, len(s))}),
    ),
    "permute": Case(
        cg.permute,
        torch.permute,
        _permute_draw,
    ),
    "expand": Case(cg.expand, lambda x, shape: x.expand(shape), _expand_draw(True)),
    "broadcast_to": Case(
        cg.broadcast_to, lambda x, shape: torch.broadcast_to(x, shape), _expand_draw(False)
    ),
    "concat": Case(
        lambda *xs, axis: cg.concat(xs, axis),
        lambda *xs, axis: torch.cat(xs, axis),
        _concat_draw,
        ndims=(1, 4),
        reuse=True,
    ),
    "stack": Case(
        lambda *xs, axis: cg.stack(xs, axis),
        lambda *xs, axis: torch.stack(xs, axis),
        _stack_draw,
        reuse=True,
    ),
    "split": Case(
        cg.split, lambda x, sections, axis: torch.split(x, sections, axis), _split_draw, ndims=(1, 4)
    ),
    "getitem": Case(cg.getitem, lambda x, index: x[_torch_index(index)], _getitem_draw),
    "flip": Case(
        cg.flip,
        lambda x, axis: torch.flip(x, _dims(axis, x.ndim)),
        lambda draw, s: Call(attrs={"axis": axis(draw, len(s))}),
    ),
    "pad": Case(cg.pad, lambda x, pad, value: F.pad(x, pad, value=value), _pad_draw),
    # selection
    "where": Case(
        lambda x, cond, y: cg.where(cond, x, y),
        lambda x, cond, y: torch.where(cond, x, y),
        _where_draw,
        reuse=True,
    ),
    "masked_fill": Case(cg.masked_fill, torch.masked_fill, _masked_fill_draw),
    "clone": unary(cg.clone, torch.clone),
    # neural-network functions
    "softmax": Case(cg.softmax, torch_spelling(torch.softmax), _softmax_draw),
    "log_softmax": Case(cg.log_softmax, torch_spelling(torch.log_softmax), _softmax_draw),
    "mse_loss": Case(cg.mse_loss, F.mse_loss, _loss_draw("real"), reuse=True),
    "nll_loss": Case(cg.nll_loss, F.nll_loss, _nll_draw, ndims=(2, 2)),
    "cross_entropy": Case(cg.cross_entropy, F.cross_entropy, _nll_draw, ndims=(2, 2)),
    "binary_cross_entropy_with_logits": Case(
        cg.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, _loss_draw("unit")
    ),
    # no gradient
    **{n: comparison(getattr(cg, n), getattr(torch, n)) for n in ("lt", "le", "gt", "ge", "eq", "ne")},
    "argmax": Case(cg.argmax, torch_spelling(torch.argmax), _argreduce_draw),
    "argmin": Case(cg.argmin, torch_spelling(torch.argmin), _argreduce_draw),
}
"""Every op of the table: (engine function, torch function, generator)."""


# ---------------------------------------------------------------- programs


@dataclass(frozen=True)
class Ref:
    """An operand: leaf i of the program, or the (first) result of step i."""

    kind: str  # "leaf" or "step"
    i: int

    def get(self, leaves: list[Any], results: list[tuple[Any, ...]]) -> Any:
        return leaves[self.i] if self.kind == "leaf" else results[self.i][0]

    def __repr__(self) -> str:
        return f"{'x' if self.kind == 'leaf' else 's'}{self.i}"


@dataclass(frozen=True)
class Step:
    op: str
    args: tuple[Any, ...]  # Refs, or int/bool arrays passed as constants (targets, masks)
    attrs: dict[str, Any] = field(default_factory=dict)
    adapt: str = "real"  # ADAPTERS entry mapping the primary operand into the op's domain
    same_name: bool = True

    def __repr__(self) -> str:
        args = [repr(a) if isinstance(a, Ref) else f"const{a.tolist()}" for a in self.args]
        if self.adapt != "real":
            args[0] = f"{self.adapt}({args[0]})"
        attrs = [f"{k}={v!r}" for k, v in self.attrs.items()]
        return f"{self.op}({', '.join(args + attrs)})"


@dataclass(frozen=True)
class Program:
    """Float leaves (differentiated) and steps; the result is the last step's output(s)."""

    leaves: tuple[np.ndarray, ...]
    steps: tuple[Step, ...]

    def __repr__(self) -> str:
        leaves = [f"x{i} = np.array({a.tolist()!r})" for i, a in enumerate(self.leaves)]
        return "\n".join(["", *leaves, *(f"s{i} = {s!r}" for i, s in enumerate(self.steps))])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows an example
        printer.text(repr(self))


@dataclass(frozen=True)
class Backend:
    lib: Any  # cg or torch: the namespace the adapters use
    side: Callable[[Case], Callable[..., Any]]
    leaf: Callable[[np.ndarray], Any]  # a tensor requiring grad
    const: Callable[[np.ndarray], Any]
    backward: Callable[..., Any]
    grad: Callable[..., Any]


ENGINE = Backend(
    cg, lambda c: c.engine, lambda a: cg.tensor(a, requires_grad=True), cg.tensor, cg.backward, cg.grad
)
TORCH = Backend(
    torch,
    lambda c: c.torch,
    lambda a: torch.tensor(a, requires_grad=True),
    torch.from_numpy,
    torch.autograd.backward,
    torch.autograd.grad,
)


def apply_step(step: Step, b: Backend, leaves: list[Any], results: list[tuple[Any, ...]]) -> tuple:
    args = [a.get(leaves, results) if isinstance(a, Ref) else b.const(a) for a in step.args]
    args[0] = ADAPTERS[step.adapt](b.lib, args[0])
    out = b.side(CASES[step.op])(*args, **step.attrs)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def run(program: Program, b: Backend, leaves: list[Any]) -> tuple[Any, ...]:
    results: list[tuple[Any, ...]] = []
    for step in program.steps:
        results.append(apply_step(step, b, leaves, results))
    return results[-1]


@st.composite
def op_programs(draw: Draw, op: str) -> Program:
    """One application of `op` to fresh leaves."""
    case = CASES[op]
    shape = draw(shapes(case.ndims[0], min(case.ndims[1], 4)))
    call = case.draw(draw, shape)
    leaves, args = [values(draw, shape, call.domain)], [Ref("leaf", 0)]
    for a in call.others:
        if a.dtype.kind == "f":
            leaves.append(a)
            args.append(Ref("leaf", len(leaves) - 1))
        else:
            args.append(a)
    return Program(tuple(leaves), (Step(op, tuple(args), call.attrs, same_name=call.same_name),))


DIFFERENTIABLE = sorted(n for n in CASES if OPS[n].differentiable)


@st.composite
def programs(draw: Draw, max_steps: int) -> Program:
    """A chain of ops on a leaf; other operands are fresh leaves or, for ops that take any real
    operand (Case.reuse), earlier values of the same shape (fan-out). Torch runs the forward as it
    is drawn, to know each shape."""
    leaves = [values(draw, draw(shapes()))]
    t_leaves = [torch.from_numpy(leaves[0])]
    results: list[tuple[torch.Tensor, ...]] = []
    steps: list[Step] = []
    current = Ref("leaf", 0)
    for _ in range(draw(st.integers(1, max_steps))):
        x = current.get(t_leaves, results)
        shape = tuple(x.shape)
        candidates = [n for n in DIFFERENTIABLE if CASES[n].accepts(shape)]
        if not candidates:  # too many dims after several unsqueezes and stacks
            reject()
        op = draw(st.sampled_from(candidates))
        call = CASES[op].draw(draw, shape)
        args: list[Any] = [current]
        for a in call.others:
            earlier = [Ref("leaf", i) for i, t in enumerate(t_leaves) if t.shape == a.shape] + [
                Ref("step", i) for i, r in enumerate(results) if r[0].shape == a.shape
            ]
            if a.dtype.kind != "f":
                args.append(a)
            elif CASES[op].reuse and earlier and draw(st.booleans()):
                args.append(draw(st.sampled_from(earlier)))
            else:
                # Scaled a little per leaf: shrinking sends every seed to 0, and equal leaves would
                # put maximum, std and friends exactly on their kinks (scaling keeps each domain).
                a = np.asarray(a * (1 + 0.01 * len(leaves)))
                leaves.append(a)
                t_leaves.append(torch.from_numpy(a))
                args.append(Ref("leaf", len(leaves) - 1))
        # torch's reshape of a non-contiguous tensor copies (another node): names are compared on views
        same_name = call.same_name and (op not in ("reshape", "flatten") or x.is_contiguous())
        steps.append(Step(op, tuple(args), call.attrs, call.domain, same_name))
        try:
            results.append(apply_step(steps[-1], TORCH, t_leaves, results))
        except (RuntimeError, IndexError):  # torch refuses (e.g. max of an empty slice)
            reject()
        if op in ("std", "norm") and any(t.numel() and t.abs().min() < 1e-6 for t in results[-1]):
            reject()  # at (or a rounding error from) its singular point 0: conventions, not values
        current = Ref("step", len(steps) - 1)
    if not all(torch.isfinite(t).all() and t.abs().max() < 1e6 for t in results[-1] if t.numel()):
        reject()  # exp(exp(...)): overflow says nothing about the engine
    return Program(tuple(leaves), tuple(steps))


# ---------------------------------------------------------------- checks


def numpy(t: Any) -> np.ndarray | None:
    if t is None or isinstance(t, np.ndarray):
        return t
    if not isinstance(t, torch.Tensor):
        return t.data
    if t._is_zerotensor():  # torch's lazy zeros (double backward of abs): .numpy() can crash
        return np.zeros(tuple(t.shape), np.float64)
    return t.detach().numpy()


def assert_close(actual: Any, expected: Any, what: str, rtol: float = RTOL, floor: float = 1.0) -> None:
    """floor: the least scale of the absolute tolerance (that of the whole computation, when a
    result near 0 is a difference of larger terms)."""
    actual, expected = numpy(actual), numpy(expected)
    assert (actual is None) == (expected is None), f"{what}: engine {actual}, torch {expected}"
    if expected is None:
        return
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, err_msg=what, strict=True)
        return
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(floor, float(finite.max())) if finite.size else floor
    np.testing.assert_allclose(actual, expected, rtol, ATOL * scale, err_msg=what, strict=True)


def requires_grad(out: tuple[Any, ...]) -> bool:
    return any(o.requires_grad for o in out)


def check_first_order(program: Program, cotangent: Callable[[Shape], np.ndarray]) -> list[Any]:
    """Forward values, then backward (implicit for a scalar output) into every leaf's .grad.
    Returns the engine's gradients."""
    sides = {}
    for b in (ENGINE, TORCH):
        leaves = [b.leaf(a) for a in program.leaves]
        sides[b] = leaves, run(program, b, leaves)
    (e_leaves, e_out), (t_leaves, t_out) = sides[ENGINE], sides[TORCH]
    assert len(e_out) == len(t_out), f"{len(e_out)} outputs, torch {len(t_out)}"
    for k, (e, t) in enumerate(zip(e_out, t_out)):
        assert_close(e, t, f"output {k}")
    assert requires_grad(e_out) == requires_grad(t_out), "requires_grad of the output"
    if not requires_grad(t_out):
        return []
    scalar = len(t_out) == 1 and t_out[0].numel() == 1
    grads = None if scalar else [cotangent(tuple(t.shape)) for t in t_out]
    ENGINE.backward(list(e_out), grads)
    TORCH.backward(list(t_out), None if scalar else [torch.from_numpy(g) for g in grads])
    for i, (e, t) in enumerate(zip(e_leaves, t_leaves)):
        assert_close(e.grad, t.grad, f"gradient of x{i}")
    return [e.grad for e in e_leaves]


def derivatives(b: Backend, program: Program, vs: list[np.ndarray], ws: list[np.ndarray]) -> list:
    """First gradients (create_graph, the cotangents vs being leaves too), then the gradients of
    sum(<first gradient, w>) with respect to the leaves and the cotangents."""
    leaves = [b.leaf(a) for a in program.leaves]
    cot = [b.leaf(v) for v in vs]
    out = [o for o in run(program, b, leaves) if o.requires_grad]
    firsts = b.grad(out, leaves, grad_outputs=cot, create_graph=True, allow_unused=True)
    pairs = [(g, b.const(w)) for g, w in zip(firsts, ws) if g is not None and g.requires_grad]
    seconds: Any = [None] * (len(leaves) + len(cot))
    if pairs:
        gs, wts = zip(*pairs)
        seconds = b.grad(list(gs), leaves + cot, grad_outputs=list(wts), allow_unused=True)

    def dense(grads: Any, like: Any) -> list[np.ndarray]:  # None (no path) as zeros
        return [np.zeros_like(a) if g is None else numpy(g) for g, a in zip(grads, like)]

    return dense(firsts, program.leaves) + dense(seconds, [*program.leaves, *vs])


def check_second_order(program: Program, rng: np.random.Generator, singular_ok: bool = False) -> None:
    """singular_ok: where torch's second derivative is not finite, the point is singular (a long
    random program can reach one exactly, e.g. the std of a value stacked with itself) and its
    value there is a convention: only the finite entries are compared."""
    t_out = run(program, TORCH, [TORCH.leaf(a) for a in program.leaves])
    vs = [rng.normal(size=tuple(t.shape)) for t in t_out if t.requires_grad]
    ws = [rng.normal(size=a.shape) for a in program.leaves]
    got, want = derivatives(ENGINE, program, vs, ws), derivatives(TORCH, program, vs, ws)
    n = len(program.leaves)
    names = [f"gradient of x{i} (create_graph)" for i in range(n)]
    names += [f"second derivative wrt x{i}" for i in range(n)]
    names += [f"second derivative wrt cotangent {k}" for k in range(len(vs))]
    # a second derivative that is 0 in exact arithmetic comes out as rounding noise of the size
    # of the first-order terms it cancels (norm(x1 * s, ord=0.5) is linear in x1: torch said
    # -1.1e-12, the engine 0); the tolerance scales with every derivative of the program
    floor = 1.0
    for t in map(numpy, want):
        if t is not None and t.dtype.kind == "f" and np.isfinite(t).any():
            floor = max(floor, float(np.abs(t[np.isfinite(t)]).max()))
    for what, e, t in zip(names, got, want):
        e, t = numpy(e), numpy(t)
        if singular_ok and t is not None and e is not None and not np.isfinite(t).all():
            keep = np.isfinite(t) & np.isfinite(e)
            e, t = e[keep], t[keep]
        assert_close(e, t, what, RTOL_2ND, floor)


def node_name(t: Any) -> str | None:
    return None if t.grad_fn is None else t.grad_fn.name()


def check_names(program: Program) -> None:
    if not program.steps[-1].same_name:
        return
    e_out = run(program, ENGINE, [ENGINE.leaf(a) for a in program.leaves])
    t_out = run(program, TORCH, [TORCH.leaf(a) for a in program.leaves])
    names, torch_names = [node_name(e) for e in e_out], [node_name(t) for t in t_out]
    assert names == torch_names, f"engine {names}, torch {torch_names}"


rngs = st.integers(0, 2**32 - 1).map(np.random.default_rng)


# ---------------------------------------------------------------- properties


def test_every_op_has_a_case():
    ops = {name for name, spec in OPS.items() if not spec.internal}
    assert not ops - CASES.keys(), f"ops without a generator here: {sorted(ops - CASES.keys())}"
    assert not CASES.keys() - ops, f"cases of ops not in the table: {sorted(CASES.keys() - ops)}"


@pytest.mark.parametrize("op", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_values_and_gradients(op, data):
    program, rng = data.draw(op_programs(op)), data.draw(rngs)
    check_first_order(program, lambda shape: rng.normal(size=shape))


@pytest.mark.parametrize("op", DIFFERENTIABLE)
@SETTINGS
@given(data=st.data())
def test_second_derivatives(op, data):
    check_second_order(data.draw(op_programs(op)), data.draw(rngs))


@pytest.mark.parametrize("op", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_node_names(op, data):
    check_names(data.draw(op_programs(op)))


def check_program(program: Program, rng: np.random.Generator, singular_ok: bool = False) -> None:
    check_first_order(program, lambda shape: rng.normal(size=shape))
    check_second_order(program, rng, singular_ok)
    check_names(program)


@settings(SETTINGS, max_examples=10 * EXAMPLES)
@given(program=programs(max_steps=3), rng=rngs)
def test_random_programs(program, rng):
    check_program(program, rng)


@settings(SETTINGS, max_examples=50 * EXAMPLES)
@given(program=programs(max_steps=6), rng=rngs)
def _long_random_programs(program, rng):
    check_program(program, rng, singular_ok=True)


@pytest.mark.slow  # deselected by default (pyproject addopts); run with -m slow
def test_long_random_programs():
    _long_random_programs()


# ---------------------------------------------------------------- kinks, domain edges, extremes


@dataclass(frozen=True)
class Edge:
    """One op at a point where a convention decides the gradient (or where naive code overflows)."""

    op: str
    inputs: tuple[Any, ...]  # lists are float leaves; integer/boolean arrays are constants
    attrs: dict[str, Any] = field(default_factory=dict)  # the table's defaults fill the rest
    expected: Any = None  # PyTorch's gradient of the first input under a cotangent of ones
    second: bool = True  # also compare second derivatives (off where the first is already infinite)

    def program(self) -> Program:
        leaves, args = [], []
        for a in self.inputs:
            if isinstance(a, np.ndarray):
                args.append(a)
            else:
                leaves.append(np.asarray(a, dtype=np.float64))
                args.append(Ref("leaf", len(leaves) - 1))
        attrs = OPS[self.op].attr_defaults() | self.attrs
        return Program(tuple(leaves), (Step(self.op, tuple(args), attrs),))


TIES = [[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]
THIRD = 1 / 3
EXTREME = [-1000.0, -50.0, -1e-8, 0.0, 1e-8, 50.0, 1000.0]

# second=False: the second derivative does not exist at that point (a kink of the first
# derivative, 0**0, the zero vector of a norm, a zero std, softplus's threshold), and torch's
# answer there is a convention of its double-backward formulas, not a value to match.
EDGES = {
    "relu'(0) = 0": Edge("relu", ([-1.0, 0.0, 2.0],), expected=[0, 0, 1]),
    "abs'(0) = 0": Edge("abs", ([-1.0, 0.0, 2.0],), expected=[-1, 0, 1]),
    "leaky_relu'(0) = slope": Edge(
        "leaky_relu", ([-1.0, 0.0, 1.0],), {"negative_slope": 0.1}, expected=[0.1, 0.1, 1]
    ),
    "maximum tie splits 1/2": Edge(
        "maximum", ([1.0, 2.0, 3.0], [1.0, 0.0, 3.0]), expected=[0.5, 1, 0.5]
    ),
    "minimum tie splits 1/2": Edge(
        "minimum", ([1.0, 2.0, 3.0], [1.0, 0.0, 3.0]), expected=[0.5, 0, 0.5]
    ),
    "maximum tie, broadcast": Edge("maximum", ([[2.0], [1.0]], [2.0, 2.0]), expected=[[1], [0]]),
    "clamp: gradient 1 on the bounds": Edge(
        "clamp", ([-1.0, -0.5, 0.0, 0.5, 1.0],), {"min": -0.5, "max": 0.5}, expected=[0, 1, 1, 1, 0]
    ),
    "clamp min only, on the bound": Edge(
        "clamp", ([-1.0, 0.0, 1.0],), {"min": 0.0, "max": None}, expected=[0, 1, 1]
    ),
    "clamp max only, on the bound": Edge(
        "clamp", ([-1.0, 0.0, 1.0],), {"min": None, "max": 0.0}, expected=[1, 1, 0]
    ),
    "amax ties split evenly (axis)": Edge(
        "amax", (TIES,), {"axis": 1, "keepdims": False}, expected=[[0, 0.5, 0.5], [THIRD] * 3]
    ),
    "amax ties split evenly (all)": Edge(
        "amax", (TIES,), {"axis": None, "keepdims": True}, expected=[[0, 0.5, 0.5], [0, 0, 0]]
    ),
    "amin ties split evenly": Edge(
        "amin", (TIES,), {"axis": (0, 1), "keepdims": False}, expected=[[1, 0, 0], [0, 0, 0]]
    ),
    "max along an axis: first of the ties": Edge(
        "max", (TIES,), {"axis": 1, "keepdims": True}, expected=[[0, 1, 0], [1, 0, 0]]
    ),
    "max of all: ties split evenly": Edge(
        "max", (TIES,), {"axis": None, "keepdims": False}, expected=[[0, 0.5, 0.5], [0, 0, 0]]
    ),
    "min along an axis: first of the ties": Edge(
        "min", (TIES,), {"axis": -1, "keepdims": False}, expected=[[1, 0, 0], [1, 0, 0]]
    ),
    "sqrt'(0) = inf": Edge("sqrt", ([0.0, 4.0],), expected=[np.inf, 0.25], second=False),
    "pow 0.5 at 0": Edge("pow", ([0.0, 4.0],), {"exponent": 0.5}, expected=[np.inf, 0.25], second=False),
    "pow 0 at 0": Edge("pow", ([0.0, 2.0],), {"exponent": 0.0}, expected=[0, 0]),
    "pow 1 at 0": Edge("pow", ([0.0, 2.0],), {"exponent": 1.0}, expected=[1, 1]),
    "pow 2 at 0": Edge("pow", ([0.0, 2.0],), {"exponent": 2.0}, expected=[0, 4]),
    "tensor pow at base 0": Edge(
        "pow_tensor", ([0.0, 0.0, 2.0], [2.0, 0.0, 1.0]), expected=[0, 0, 1], second=False
    ),
    **{
        f"norm {p} at the zero vector": Edge(
            "norm", ([0.0, 0.0, 0.0],), {"ord": p}, expected=[0, 0, 0], second=False
        )
        for p in (1.0, 2.0, 3.0, 0.5, math.inf)
    },
    "norm along an axis, one zero row": Edge(
        "norm", ([[0.0, 0.0], [3.0, 4.0]],), {"axis": 1}, expected=[[0, 0], [0.6, 0.8]], second=False
    ),
    "std of equal entries": Edge("std", ([1.0, 1.0, 1.0],), expected=[0, 0, 0], second=False),
    "var of equal entries": Edge("var", ([1.0, 1.0, 1.0],), expected=[0, 0, 0]),
    "prod with one zero": Edge("prod", ([0.0, 2.0, 3.0],), expected=[6, 0, 0]),
    "prod with two zeros": Edge("prod", ([0.0, 2.0, 0.0],), expected=[0, 0, 0]),
    "prod along an axis with a zero": Edge(
        "prod", ([[0.0, 2.0], [3.0, 4.0]],), {"axis": 0}, expected=[[3, 4], [0, 2]]
    ),
    "sign at 0": Edge("sign", ([-1.0, 0.0, 2.0],), expected=[0, 0, 0]),
    "floor at integers": Edge("floor", ([-2.0, 0.0, 1.0],), expected=[0, 0, 0]),
    "round at halves": Edge("round", ([-2.5, 0.5, 1.5],), expected=[0, 0, 0]),
    "softplus at the threshold": Edge(
        "softplus", ([1.0, 0.5],), {"beta": 2.0, "threshold": 2.0}, second=False
    ),
    "logsumexp with -inf": Edge("logsumexp", ([-np.inf, 0.0],), expected=[0, 1], second=False),
    "getitem int, slice, array (torch: int is basic)": Edge(
        "getitem",
        (np.arange(24.0).reshape(2, 3, 4).tolist(),),
        {"index": (0, slice(None), np.array([1, 2]))},
    ),
    **{
        f"{op} at extremes": Edge(op, (EXTREME,))
        for op in ("sigmoid", "softplus", "silu", "gelu", "tanh", "expm1")
    },
    "log1p near -1 and at extremes": Edge("log1p", ([-1 + 1e-12, -1e-12, 0.0, 1e-12, 1e300],)),
    "expm1 near 0": Edge("expm1", ([-1e-12, 0.0, 1e-12, 700.0],)),
    **{
        f"{op} at extremes": Edge(op, ([EXTREME, EXTREME[::-1]],), {"axis": -1})
        for op in ("softmax", "log_softmax", "logsumexp")
    },
    "binary_cross_entropy_with_logits at extremes": Edge(
        "binary_cross_entropy_with_logits", (EXTREME, [0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0])
    ),
    "cross_entropy at extremes": Edge(
        "cross_entropy", ([[1000.0, -1000.0, 0.0], [-50.0, 50.0, 0.0]], np.array([1, 0]))
    ),
}


@pytest.mark.parametrize("edge", EDGES.values(), ids=EDGES.keys())
def test_conventions_at_edges(edge):
    grads = check_first_order(edge.program(), np.ones)
    if edge.expected is not None:
        np.testing.assert_allclose(numpy(grads[0]), edge.expected, rtol=RTOL, err_msg="convention")


@pytest.mark.parametrize(
    "edge", [e for e in EDGES.values() if e.second], ids=[k for k, e in EDGES.items() if e.second]
)
def test_second_derivatives_at_edges(edge):
    check_second_order(edge.program(), np.random.default_rng(0))
