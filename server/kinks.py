"""Non-differentiable points: where each op has a kink, and what each party's convention is there.

A disagreement at such a point is a convention difference, not a failure. The conventions are
those of the engine (PyTorch's), JAX and sympy; finite differences see the average of the two
one-sided slopes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ir import IRNode

CONVENTIONS: dict[str, dict[str, str]] = {
    "relu": {
        "engine": "relu'(0) = 0 (torch)",
        "jax": "relu'(0) = 0",
        "sympy": "Heaviside(0) = 1/2",
        "fd": "average of the one-sided slopes: 1/2",
    },
    "abs": {
        "engine": "abs'(0) = 0 (torch)",
        "jax": "abs'(0) = 1",
        "sympy": "sign(0) = 0",
        "fd": "average of the one-sided slopes: 0",
    },
    "maximum": {
        "engine": "ties split 1/2 (torch)",
        "jax": "ties split 1/2",
        "sympy": "Heaviside(0) = 1/2",
        "fd": "average: 1/2",
    },
    "minimum": {
        "engine": "ties split 1/2 (torch)",
        "jax": "ties split 1/2",
        "sympy": "Heaviside(0) = 1/2",
        "fd": "average: 1/2",
    },
    "clamp": {
        "engine": "gradient 1 on the bound (torch)",
        "jax": "gradient 1 on the bound",
        "sympy": "Heaviside(0) = 1/2 on the bound",
        "fd": "average: 1/2",
    },
    "leaky_relu": {
        "engine": "slope at 0 = negative_slope (torch)",
        "jax": "slope at 0 = negative_slope",
        "sympy": "Piecewise: negative_slope at 0",
        "fd": "average of both slopes",
    },
    "sqrt": {
        "engine": "sqrt'(0) = inf",
        "jax": "sqrt'(0) = inf",
        "sympy": "cannot evaluate (the derivative is infinite)",
        "fd": "one-sided quotients diverge",
    },
    "amax": {
        "engine": "ties share the gradient evenly (torch)",
        "jax": "ties share evenly",
        "sympy": "Heaviside products at ties",
        "fd": "average",
    },
    "max": {
        "engine": "full reduction: ties share evenly; along an axis: the first maximum (torch)",
        "jax": "ties share evenly",
        "sympy": "Heaviside products at ties",
        "fd": "average",
    },
    "where": {
        "engine": "the branch the condition picks (torch)",
        "jax": "the branch picked",
        "sympy": "Piecewise: the branch picked",
        "fd": "average of the two branches' slopes",
    },
    "norm": {
        "engine": "gradient 0 at the zero vector (torch)",
        "jax": "nan at the zero vector",
        "sympy": "nan (0/0)",
        "fd": "one-sided slopes differ",
    },
}
for _a, _b in (("amin", "amax"), ("min", "max")):
    CONVENTIONS[_a] = CONVENTIONS[_b]
_DOMAIN = {
    "engine": "as torch: inf or nan",
    "jax": "inf or nan",
    "sympy": "cannot evaluate there",
    "fd": "the quotient diverges or is nan",
}
for _op in ("std", "pow", "pow_tensor", "rpow", "div", "reciprocal", "log", "log1p", "tan"):
    CONVENTIONS.setdefault(_op, _DOMAIN)
CONVENTIONS["std"] = {
    "engine": "gradient 0 where the std is 0 (torch)",
    "jax": "nan",
    "sympy": "cannot evaluate (0/0)",
    "fd": "one-sided slopes differ",
}
for _op in ("sign", "floor", "round"):
    CONVENTIONS[_op] = {
        "engine": "0 (torch)",
        "jax": "0",
        "sympy": "0 (taken as piecewise constant)",
        "fd": "a jump: the quotient diverges",
    }


def _ties(x: np.ndarray, axis: Any) -> bool:
    x = np.asarray(x)
    if x.size == 0:
        return False
    top = np.amax(x, axis=axis, keepdims=True)
    bottom = np.amin(x, axis=axis, keepdims=True)
    return bool(((x == top).sum(axis=axis) > 1).any() or ((x == bottom).sum(axis=axis) > 1).any())


def _zero(x: Any) -> bool:
    return bool(np.any(np.asarray(x) == 0))


def _eq(o: list[Any], a: dict[str, Any]) -> Any:
    return np.asarray(o[0]) == np.asarray(o[1])


# Elementwise ops: which entries of the operands (broadcast together) are on the kink.
_ENTRIES: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "relu": lambda o, a: np.asarray(o[0]) == 0,
    "abs": lambda o, a: np.asarray(o[0]) == 0,
    "leaky_relu": lambda o, a: np.asarray(o[0]) == 0,
    "sign": lambda o, a: np.asarray(o[0]) == 0,
    "sqrt": lambda o, a: np.asarray(o[0]) <= 0,
    "floor": lambda o, a: np.asarray(o[0]) == np.floor(o[0]),
    "round": lambda o, a: np.abs(np.asarray(o[0]) - np.floor(o[0])) == 0.5,
    "maximum": _eq,
    "minimum": _eq,
    "clamp": lambda o, a: (
        (np.asarray(o[0]) == (np.nan if a["min"] is None else a["min"]))
        | (np.asarray(o[0]) == (np.nan if a["max"] is None else a["max"]))
    ),
    "pow": lambda o, a: (np.asarray(o[0]) == 0) & (0 != a["exponent"] < 1),
    "pow_tensor": lambda o, a: np.asarray(o[0]) == 0,
    "div": lambda o, a: np.broadcast_to(np.asarray(o[1]) == 0, np.broadcast_shapes(*map(np.shape, o))),
    "reciprocal": lambda o, a: np.asarray(o[0]) == 0,
    "log": lambda o, a: np.asarray(o[0]) <= 0,
    "log1p": lambda o, a: np.asarray(o[0]) <= -1,
    "tan": lambda o, a: np.cos(o[0]) == 0,
    # a comparison at equality flips a where() branch: that is the where's kink
    **dict.fromkeys(("lt", "le", "gt", "ge", "eq", "ne"), _eq),
}
for _cmp in ("lt", "le", "gt", "ge", "eq", "ne"):
    CONVENTIONS[_cmp] = CONVENTIONS["where"]


def _any_entry(entries: Callable[[list[Any], dict[str, Any]], Any]) -> Callable[..., bool]:
    return lambda o, a: bool(np.any(entries(o, a)))


# Whether an op's operands sit on a kink: any entry, for the elementwise ops; for the reductions,
# any tie or zero (where any entry may be involved).
_DETECTORS: dict[str, Callable[[list[Any], dict[str, Any]], bool]] = {
    **{op: _any_entry(entries) for op, entries in _ENTRIES.items()},
    "amax": lambda o, a: _ties(o[0], a["axis"]),
    "amin": lambda o, a: _ties(o[0], a["axis"]),
    "max": lambda o, a: _ties(o[0], a["axis"]),
    "min": lambda o, a: _ties(o[0], a["axis"]),
    "norm": lambda o, a: _norm_kinked(np.asarray(o[0], np.float64), a),
    "where": lambda o, a: False,  # the condition's own comparison is checked where it is made
    "std": lambda o, a: _zero(np.std(o[0], axis=a["axis"])) if np.size(o[0]) else False,
    "rpow": lambda o, a: a["base"] <= 0,
}


def _norm_kinked(x: np.ndarray, attrs: dict[str, Any]) -> bool:
    """norm's kinks: a zero vector; for ord <= 1 any zero entry; for ord = inf ties of |x| at
    the largest, for -inf at the smallest (and a zero entry there)."""
    if x.size == 0:
        return False
    rows = _rows(x, attrs["axis"])[0]
    mags, p = np.abs(rows), attrs["ord"]
    if np.any(np.all(rows == 0, axis=1)) or (np.isfinite(p) and p <= 1 and np.any(rows == 0)):
        return True
    if np.isinf(p):
        best = mags.max(axis=1, keepdims=True) if p > 0 else mags.min(axis=1, keepdims=True)
        return bool(np.any((mags == best).sum(axis=1) > 1) or (p < 0 and np.any(best == 0)))
    return False


@dataclass(frozen=True)
class Kink:
    node: IRNode
    conventions: dict[str, str]
    # the entries of the operands (broadcast together) that sit on the kink; None: the op is a
    # reduction or the like, where any entry may be involved
    entries: np.ndarray | None = None

    def describe(self) -> str:
        where = f" at {self.node.pos}" if self.node.pos else ""
        return (
            f"{self.node.op} ({self.node.text or self.node.op}){where} is at a non-differentiable point"
        )


def find_kinks(nodes: list[IRNode], operand_values: dict[int, list[Any]]) -> list[Kink]:
    """The nodes whose operands sit exactly on a kink of their op at this point."""
    kinks = []
    for node in nodes:
        detect = _DETECTORS.get(node.op)
        if detect is None:
            continue
        operands = operand_values[node.id]
        if detect(operands, node.attr_dict):
            where = _ENTRIES.get(node.op)
            entries = None if where is None else np.asarray(where(operands, node.attr_dict))
            kinks.append(Kink(node, CONVENTIONS.get(node.op, {}), entries))
    return kinks


# ---------------------------------------------------------------- one-sided derivatives

DELTA = 1e-9  # relative shift off a kink: one side's slope, far below every tolerance elsewhere
POLE_DELTA = 1e-15  # for slopes that diverge at the kink: the shifted slope is then huge
MAX_GROUP = 8  # entries of a zero vector (norm, std) whose directions are sampled
# Ops whose slope is infinite on the kink (a domain edge or a pole): the range is unbounded there.
UNBOUNDED = {"sqrt", "log", "log1p", "reciprocal", "tan", "pow", "pow_tensor", "rpow", "div"}

Shift = dict[int, np.ndarray]  # operand index -> what to add to it


@dataclass(frozen=True)
class Sides:
    """How to step off a kink. The kink falls into independent groups (a kinked entry of an
    elementwise op; a row of tied entries of a max; a zero row of a norm), each with its
    alternatives: shifts that put it just off the kink on one side (or make one tied entry the
    winner). The generalized gradient is the set of derivatives where each group takes a convex
    combination of its alternatives' derivatives.
    `hull`: whether those alternatives span it exactly (piecewise-linear kinks and ties); the
    norm of a zero vector and the std of equal entries have a ball, which sampled directions
    only approximate (then only the range per entry is used). `complete`: no group or
    alternative was left out."""

    groups: list[list[Shift]]
    unbounded: bool
    hull: bool = True
    complete: bool = True


def _delta(x: np.ndarray, op: str) -> np.ndarray:
    return (POLE_DELTA if op in UNBOUNDED else DELTA) * np.maximum(1.0, np.abs(x))


def _full(operands: list[Any], shape: tuple[int, ...]) -> int | None:
    """An array operand with the full (broadcast) shape: the one a shift can move entry by entry."""
    for k, o in enumerate(operands):
        if isinstance(o, np.ndarray) and o.shape == shape:
            return k
    return None


def _rows(x: np.ndarray, axis: Any) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """x with the reduced axes moved last and flattened (one row per reduction), and the map
    back to x's shape."""
    from crossgrad.engine.optable import normalize_axes

    axes = normalize_axes("kink", axis, x.ndim)
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + list(axes))
    rows = moved.reshape(-1, int(np.prod([x.shape[a] for a in axes], dtype=int)))

    def back(r: np.ndarray) -> np.ndarray:
        return np.transpose(r.reshape(moved.shape), np.argsort(rest + list(axes)))

    return rows, back


def _one(shape: tuple[int, ...], row: int, col: int, value: float) -> np.ndarray:
    out = np.zeros(shape)
    out[row, col] = value
    return out


def _zero_rows(x: np.ndarray, axis: Any, on: np.ndarray, op: str) -> Sides:
    """The norm of a zero row, the std of a row of equal entries: ± a small step along each of
    its entries (the first MAX_GROUP)."""
    rows, back = _rows(np.asarray(x, np.float64), axis)
    width = min(rows.shape[1], MAX_GROUP)
    groups = []
    for r in np.flatnonzero(on):
        step = _delta(rows[r], op)
        groups.append(
            [{0: back(_one(rows.shape, r, j, sign * step[j]))} for j in range(width) for sign in (1, -1)]
        )
    return Sides(groups, False, hull=False, complete=width == rows.shape[1])


def _tie_sides(x: np.ndarray, axis: Any, biggest: bool, op: str) -> Sides:
    """max/min reductions with ties: in each tied row, each tied entry in turn the winner."""
    rows, back = _rows(np.asarray(x, np.float64), axis)
    best = rows.max(axis=1, keepdims=True) if biggest else rows.min(axis=1, keepdims=True)
    tied = (rows == best) & ((rows == best).sum(axis=1, keepdims=True) > 1)
    sign = 1.0 if biggest else -1.0
    groups = [
        [
            {0: back(_one(rows.shape, r, j, sign * _delta(rows[r, j], op)))}
            for j in np.flatnonzero(tied[r])
        ]
        for r in np.flatnonzero(tied.any(axis=1))
    ]
    return Sides(groups, False)


def _norm_sides(x: np.ndarray, attrs: dict[str, Any]) -> Sides:
    """A zero row: directions, as std's; otherwise per row its kinked entries: for ord <= 1 each
    zero entry ± a step; for ord = ±inf each of the entries tied at the largest (smallest) |x|
    in turn made the winner, and a zero entry at the smallest ± a step."""
    rows, back = _rows(x, attrs["axis"])
    zero = np.all(rows == 0, axis=1)
    found = _zero_rows(x, attrs["axis"], zero, "norm")
    p, groups = attrs["ord"], list(found.groups)
    mags = np.abs(rows)
    for r in np.flatnonzero(~zero):
        step = _delta(rows[r], "norm")
        if np.isfinite(p) and p <= 1:
            at = np.flatnonzero(rows[r] == 0)
        elif np.isinf(p):
            best = mags[r].max() if p > 0 else mags[r].min()
            tied = np.flatnonzero(mags[r] == best)
            if len(tied) > 1 and best > 0:  # the winner's |x| moved away from the others'
                direction = np.where(rows[r] >= 0, 1.0, -1.0) * (1.0 if p > 0 else -1.0)
                groups.append([{0: back(_one(rows.shape, r, j, direction[j] * step[j]))} for j in tied])
            at = tied if best == 0 else np.array([], int)
        else:
            at = np.array([], int)
        groups += [[{0: back(_one(rows.shape, r, j, sign * step[j]))} for sign in (1, -1)] for j in at]
    return Sides(groups, False, hull=found.hull or not groups, complete=found.complete)


def sides(kink: Kink, operands: list[Any]) -> Sides | None:
    """How to step off this kink (None: its operands cannot be shifted entry by entry, e.g. both
    broadcast; what it may reach is then unverified)."""
    op, attrs = kink.node.op, kink.node.attr_dict
    x = operands[0]
    if op in ("max", "amax", "min", "amin"):
        return _tie_sides(x, attrs["axis"], op in ("max", "amax"), op)
    if op == "norm":
        return _norm_sides(np.asarray(x, np.float64), attrs)
    if op == "std":
        rows, _ = _rows(np.asarray(x, np.float64), attrs["axis"])
        centred = rows - rows.mean(axis=1, keepdims=True)
        return _zero_rows(x, attrs["axis"], np.all(centred == 0, axis=1), op)
    if kink.entries is None:
        return None
    entries = np.asarray(kink.entries, bool)
    if op == "div":  # a zero denominator: shift the denominator
        k = 1 if np.shape(operands[1]) == entries.shape else None
    else:
        k = _full(operands, entries.shape)
    if k is None:
        return None
    step = _delta(np.asarray(operands[k], np.float64), op)
    groups = []
    for flat in np.flatnonzero(entries):
        one = np.zeros(entries.size)
        one[flat] = step.reshape(-1)[flat]
        groups.append([{k: one.reshape(entries.shape)}, {k: -one.reshape(entries.shape)}])
    return Sides(groups, op in UNBOUNDED)
