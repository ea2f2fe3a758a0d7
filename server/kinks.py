"""Non-differentiable points: where each op has a kink, what each party's convention is there,
and how to step off it to each side (sides: what the verdict and blame both take).

A disagreement at such a point is a convention difference, not a failure. The conventions are
those of the engine (PyTorch's), JAX and sympy; finite differences see the average of the two
one-sided slopes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from crossgrad.engine.optable import normalize_axes

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
        "jax": "gradient 1/2 on the bound (a tie of jnp.clip's maximum and minimum)",
        "sympy": "Heaviside(0) = 1/2 on the bound",
        "fd": "average: 1/2",
    },
    "leaky_relu": {
        "engine": "slope at 0 = negative_slope (torch)",
        "jax": "slope at 0 = 1",
        "sympy": "Piecewise: negative_slope at 0",
        "fd": "average of both slopes",
    },
    "softplus": {
        "engine": "at beta * x = threshold, softplus's own slope, sigmoid(threshold) (torch "
        "returns x only past it: the value jumps by log1p(exp(-threshold)) / beta)",
        "jax": "softplus's own slope (the same branch)",
        "sympy": "Piecewise: softplus's own slope",
        "fd": "a jump in the value: the quotient diverges",
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
CONVENTIONS["amin"] = CONVENTIONS["amax"]
CONVENTIONS["min"] = {
    **CONVENTIONS["max"],
    "engine": CONVENTIONS["max"]["engine"].replace("maximum", "minimum"),
}
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


def _float(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def _broadcast(mask: np.ndarray, o: list[Any]) -> np.ndarray:
    return np.broadcast_to(mask, np.broadcast_shapes(*map(np.shape, o)))


def _eq(o: list[Any], a: dict[str, Any]) -> Any:
    """Ties of two operands: maximum's and minimum's kinks, and a comparison's (at equality it
    flips a where() branch)."""
    return (np.asarray(o[0]) == np.asarray(o[1])) & np.isfinite(o[0])


# Elementwise ops: which entries of the operands (broadcast together) are on the kink. An entry
# outside the op's domain (sqrt(-1)) is not on a kink: nothing near it is defined.
_ENTRIES: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "relu": lambda o, a: np.asarray(o[0]) == 0,
    "abs": lambda o, a: np.asarray(o[0]) == 0,
    "leaky_relu": lambda o, a: np.asarray(o[0]) == 0,
    "softplus": lambda o, a: np.asarray(o[0]) * a["beta"] == a["threshold"],
    "sign": lambda o, a: np.asarray(o[0]) == 0,
    "sqrt": lambda o, a: np.asarray(o[0]) == 0,
    "floor": lambda o, a: np.isfinite(o[0]) & (np.asarray(o[0]) == np.floor(o[0])),
    "round": lambda o, a: np.abs(np.asarray(o[0]) - np.floor(o[0])) == 0.5,
    "maximum": _eq,
    "minimum": _eq,
    "clamp": lambda o, a: (
        np.isfinite(o[0])
        & (
            (np.asarray(o[0]) == (np.nan if a["min"] is None else a["min"]))
            | (np.asarray(o[0]) == (np.nan if a["max"] is None else a["max"]))
        )
    ),
    "pow": lambda o, a: (np.asarray(o[0]) == 0) & (0 != a["exponent"] < 1),
    "pow_tensor": lambda o, a: _broadcast(np.asarray(o[0]) == 0, o),
    "div": lambda o, a: _broadcast(np.asarray(o[1]) == 0, o),
    "reciprocal": lambda o, a: np.asarray(o[0]) == 0,
    "log": lambda o, a: np.asarray(o[0]) == 0,
    "log1p": lambda o, a: np.asarray(o[0]) == -1,
    "tan": lambda o, a: np.cos(o[0]) == 0,
    **dict.fromkeys(("lt", "le", "gt", "ge", "eq", "ne"), _eq),
}
for _cmp in ("lt", "le", "gt", "ge", "eq", "ne"):
    CONVENTIONS[_cmp] = CONVENTIONS["where"]


def _any_entry(entries: Callable[[list[Any], dict[str, Any]], Any]) -> Callable[..., bool]:
    return lambda o, a: bool(np.any(entries(o, a)))


def _any_row(op: str) -> Callable[[list[Any], dict[str, Any]], bool]:
    def detect(o: list[Any], a: dict[str, Any]) -> bool:
        groups, past = _reduction_kinks(op, o[0], a)
        return bool(groups or past)

    return detect


# Whether an op's operands sit on a kink: any entry, for the elementwise ops; any kinked row
# (_reduction_kinks), for the reductions.
_DETECTORS: dict[str, Callable[[list[Any], dict[str, Any]], bool]] = {
    **{op: _any_entry(entries) for op, entries in _ENTRIES.items()},
    **{op: _any_row(op) for op in ("amax", "amin", "max", "min", "norm", "std")},
    "where": lambda o, a: False,  # the condition's own comparison is checked where it is made
    "rpow": lambda o, a: a["base"] <= 0,
}


@dataclass(frozen=True)
class Kink:
    node: IRNode
    conventions: dict[str, str]
    # the entries of the operands (broadcast together) that sit on the kink; None: the op is a
    # reduction or the like (sides() finds its kinked rows)
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
        if not any(_float(o) for o in operands):  # integers only: no derivative flows here
            continue
        if detect(operands, node.attr_dict):
            where = _ENTRIES.get(node.op)
            entries = None if where is None else np.asarray(where(operands, node.attr_dict))
            kinks.append(Kink(node, CONVENTIONS.get(node.op, {}), entries))
    return kinks


# ---------------------------------------------------------------- one-sided derivatives

DELTA = 1e-9  # relative shift off a kink: one side's slope, far below every tolerance elsewhere
POLE_DELTA = 1e-15  # for slopes that diverge at the kink: the shifted slope is then huge
MAX_GROUP = 8  # entries of a zero vector (norm) or of equal entries (std) moved each way
# Ops whose slope is infinite on the kink (a domain edge or a pole): the range is unbounded there.
UNBOUNDED = {"sqrt", "log", "log1p", "reciprocal", "tan", "pow", "pow_tensor", "rpow", "div"}
BALLS = {"norm", "std"}
"""Ops whose generalized gradient at a kink is a ball: the sides (one per entry and way) span
each entry's range, not that of a combination of entries."""
_DOMAIN_EDGES = {"sqrt": 0.0, "log": 0.0, "log1p": -1.0}  # approached from the right only
TIES = {"maximum", "minimum", "lt", "le", "gt", "ge", "eq", "ne"}  # kinks where two operands meet

Shift = dict[int, np.ndarray]  # operand index -> what to add to it
Move = tuple[int, int, float]  # (operand, flat index of the entry, how much to add to it)
Step = Callable[[np.ndarray, str], np.ndarray]
"""How far to step off a kink of an op (its name), for each entry of an operand (float64)."""


def relative_step(x: np.ndarray, op: str) -> np.ndarray:
    """The verdict's step: DELTA (POLE_DELTA where the slope diverges) times max(1, |x|)."""
    return (POLE_DELTA if op in UNBOUNDED else DELTA) * np.maximum(1.0, np.abs(x))


@dataclass(frozen=True)
class Sides:
    """How to step off a kink. The kink falls into independent groups (a kinked entry of an
    elementwise op; a row of tied entries of a max; a zero row of a norm), each with its
    alternatives: shifts that put it just off the kink on one side (or make one tied entry the
    winner). The generalized gradient is the set of derivatives where each group takes a convex
    combination of its alternatives' derivatives.
    `moves`: per group its alternatives, each moving one entry of one operand (shaped as in
    `shapes`); `groups`: the same as shifts of whole operands.
    `hull`: whether those alternatives span it exactly (piecewise-linear kinks and ties); the
    norm of a zero vector and the std of equal entries have a ball, which sampled directions
    only approximate, a one-sided kink's slope diverges, and a moved operand that was broadcast
    moves several kinked entries at once (then only the range per entry is used). `beyond`: the
    entries of operand 0 on the kink that no group moves (past the caps; several zeros of a
    norm with a negative ord, where the one that decides is not defined), None if there are
    none. `complete`: no group or alternative was left out."""

    moves: list[list[Move]]
    shapes: dict[int, tuple[int, ...]]
    unbounded: bool
    hull: bool = True
    beyond: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return self.beyond is None

    @property
    def groups(self) -> list[list[Shift]]:
        return [[self._shift({k: [(j, amount)]}) for k, j, amount in group] for group in self.moves]

    def turns(self, operands: int) -> list[list[np.ndarray | None]]:
        """Every group on its t-th alternative at once (a group with fewer repeats its own), for
        each t: per operand, what to add to it (None: nothing). Each moves every kinked entry."""
        out = []
        for t in range(max(map(len, self.moves), default=0)):
            moved: dict[int, list[tuple[int, float]]] = {}
            for group in self.moves:
                k, j, amount = group[t % len(group)]
                moved.setdefault(k, []).append((j, amount))
            shift = self._shift(moved)
            out.append([shift.get(k) for k in range(operands)])
        return out

    def _shift(self, moved: dict[int, list[tuple[int, float]]]) -> Shift:
        out = {}
        for k, entries in moved.items():
            out[k] = np.zeros(self.shapes[k])
            for j, amount in entries:
                out[k].reshape(-1)[j] += amount
        return out


def _rows(shape: tuple[int, ...], axis: Any) -> np.ndarray:
    """Flat indices of a reduction's operand, one row per result entry (in the result's order)."""
    nd = len(shape)
    axes = normalize_axes("kink", axis, nd) if nd else ()
    kept = [a for a in range(nd) if a not in axes]
    index = np.transpose(np.arange(math.prod(shape)).reshape(shape), kept + list(axes))
    return index.reshape(math.prod(shape[a] for a in kept), math.prod(shape[a] for a in axes))


def _both_ways(entries: Any) -> list[tuple[int, float]]:
    return [(int(j), way) for j in entries for way in (1.0, -1.0)]


def _reduction_kinks(
    op: str, x: Any, a: dict[str, Any], cap: int | None = None
) -> tuple[list[list[tuple[int, float]]], list[int]]:
    """A reduction's kinked groups, each with its alternatives as (flat index into x, which way
    to move it), and the kinked entries no group moves (flat indices). Rows with a non-finite
    entry at stake are left alone.
      max, amax (min, amin): a row whose largest (smallest) entry is tied: each tied entry in
        turn raised (lowered), at most `cap` of them;
      std over equal entries (at least two): each entry each way, at most MAX_GROUP entries;
      norm: ord > 1, a zero row: each entry each way, at most MAX_GROUP entries; 0 < ord <= 1,
        each zero entry its own group, both ways (the norm is separable in them); ord < 0, a
        zero alone in its row, both ways (several zeros: which one decides is not defined);
        ord = inf (-inf), the largest (smallest) magnitudes when tied: each made the winner in
        turn (its magnitude raised, lowered), at most `cap` of them; when they are 0, each both
        ways (ord = -inf with several zeros: not defined, as for ord < 0)."""
    if not _float(x) or x.size == 0:
        return [], []
    rows = _rows(x.shape, a["axis"])
    flat = np.asarray(x, np.float64).reshape(-1)
    v = flat[rows]
    if v.shape[1] == 0:
        return [], []
    groups: list[list[tuple[int, float]]] = []
    beyond: list[int] = []
    if op in ("max", "amax", "min", "amin"):
        top = op in ("max", "amax")
        best = v.max(axis=1) if top else v.min(axis=1)
        tied = v == best[:, None]
        for r in np.flatnonzero((tied.sum(axis=1) > 1) & np.isfinite(best)):
            hit = rows[r][tied[r]]
            groups.append([(int(j), 1.0 if top else -1.0) for j in hit[:cap]])
            beyond.extend(hit[len(hit) if cap is None else cap :])
        return groups, beyond
    finite = np.isfinite(v).all(axis=1)
    if op == "std":
        if v.shape[1] - a["correction"] <= 0 or v.shape[1] < 2:
            return [], []
        for r in np.flatnonzero(finite & (v == v[:, :1]).all(axis=1)):
            groups.append(_both_ways(rows[r][:MAX_GROUP]))
            beyond.extend(rows[r][MAX_GROUP:])
        return groups, beyond
    p, mags = a["ord"], np.abs(v)
    if math.isinf(p):
        best = mags.max(axis=1) if p > 0 else mags.min(axis=1)
        tied = mags == best[:, None]
        for r in np.flatnonzero(finite & ((tied.sum(axis=1) > 1) | (best == 0))):
            hit = rows[r][tied[r]]
            kept, past = hit[:cap], hit[len(hit) if cap is None else cap :]
            if best[r] == 0 and p < 0 and hit.size > 1:
                kept, past = hit[:0], hit
            elif best[r] == 0:
                groups.append(_both_ways(kept))
            else:
                away = 1.0 if p > 0 else -1.0
                groups.append([(int(j), away * float(np.sign(flat[j]))) for j in kept])
            beyond.extend(past)
    elif p > 1:
        for r in np.flatnonzero(finite & ~mags.any(axis=1)):
            groups.append(_both_ways(rows[r][:MAX_GROUP]))
            beyond.extend(rows[r][MAX_GROUP:])
    else:
        for r in np.flatnonzero(finite & (v == 0).any(axis=1)):
            zeros = rows[r][v[r] == 0]
            if p > 0:
                groups.extend(_both_ways([j]) for j in zeros)
            elif zeros.size == 1:
                groups.append(_both_ways(zeros))
            else:
                beyond.extend(zeros)
    return groups, beyond


def _entry_kinks(
    op: str, operands: list[Any], a: dict[str, Any], entries: np.ndarray, spread: bool
) -> tuple[int, np.ndarray, list[list[tuple[int, float]]], bool] | None:
    """An elementwise op's kinked entries: the operand moved (the divisor of div; for maximum,
    minimum and the comparisons a float tensor, full-shaped if there is one; else operand 0),
    as it is moved (`spread`: broadcast to the kinked entries' shape, so each kinked entry moves
    on its own), per kinked entry of it its group of ways to move it (both; from the right only
    at a domain edge: sqrt, log at 0, log1p at -1, a power of 0 whose exponent is not an
    integer), and whether one move shifts several kinked entries (an operand that was broadcast
    and not spread). None: that operand is not a float tensor."""
    entries = np.asarray(entries, bool)
    k: int | None = 0
    if op == "div":
        k = 1
    elif op in TIES:
        tensors = [j for j in (0, 1) if _float(operands[j])]
        full = [j for j in tensors if operands[j].shape == entries.shape]
        k = (full or tensors or [None])[0]
    x = None if k is None else operands[k]
    if k is None or not _float(x):
        return None
    if spread:
        x = np.broadcast_to(x, entries.shape)
    mask = _reduce_to(entries, x.shape) & np.isfinite(x)
    one_sided = np.zeros(x.shape, bool)
    if op in _DOMAIN_EDGES:
        mask &= x == _DOMAIN_EDGES[op]
        one_sided[...] = True
    elif op == "pow":
        one_sided[...] = not float(a["exponent"]).is_integer()
    elif op == "pow_tensor":
        y = np.asarray(operands[1], np.float64)
        whole = np.broadcast_to(np.isfinite(y) & (y == np.round(y)), entries.shape)
        one_sided = ~_reduce_to(whole | ~entries, x.shape, np.all)
    right = one_sided.reshape(-1)
    groups = [[(int(j), 1.0)] if right[j] else _both_ways([j]) for j in np.flatnonzero(mask)]
    return k, x, groups, x.shape != entries.shape


def sides(
    kink: Kink,
    operands: list[Any],
    step: Step = relative_step,
    tie_cap: int | None = None,
    spread: bool = False,
) -> Sides | None:
    """How to step off this kink, `step` away (None: its operands cannot be shifted entry by
    entry, e.g. not a float tensor; what it may reach is then unverified). The reductions'
    groups are _reduction_kinks' (ties past `tie_cap` left unmoved), the elementwise ops' one
    per kinked entry (_entry_kinks: `spread` moves a broadcast operand in the broadcast shape);
    a clamp is not stepped past its other bound."""
    op, a = kink.node.op, kink.node.attr_dict
    if op in ("max", "amax", "min", "amin", "norm", "std"):
        k, x, reduced = 0, operands[0], False
        found, past = _reduction_kinks(op, x, a, tie_cap)
    elif kink.entries is None:
        return None
    else:
        got = _entry_kinks(op, operands, a, kink.entries, spread)
        if got is None:
            return None
        (k, x, found, reduced), past = got, []
    x = np.asarray(x, np.float64)
    steps = step(x, op).reshape(-1)
    if op == "clamp" and a["min"] is not None and a["max"] is not None and a["max"] > a["min"]:
        steps = np.minimum(steps, (a["max"] - a["min"]) / 4)
    moves = [[(k, j, way * float(steps[j])) for j, way in group] for group in found]
    beyond = None
    if past:
        beyond = np.zeros(x.size, bool)
        beyond[past] = True
        beyond = beyond.reshape(x.shape)
    hull = op not in BALLS and not reduced and all(len(g) > 1 for g in moves)
    return Sides(moves, {k: x.shape}, op in UNBOUNDED, hull, beyond)


def _reduce_to(mask: np.ndarray, shape: tuple[int, ...], how: Callable[..., Any] = np.any) -> np.ndarray:
    """A mask over the broadcast shape, onto an operand of `shape` that was broadcast to it."""
    mask = np.asarray(mask, bool)
    lead = mask.ndim - len(shape)
    if lead > 0:
        mask = how(mask, axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and mask.shape[i] != 1)
    if axes:
        mask = how(mask, axis=axes, keepdims=True)
    return np.broadcast_to(mask, shape).copy()
