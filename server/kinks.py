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
    "norm": lambda o, a: _zero(np.sqrt(np.sum(np.square(o[0]), axis=a["axis"]))),
    "where": lambda o, a: False,  # the condition's own comparison is checked where it is made
    "std": lambda o, a: _zero(np.std(o[0], axis=a["axis"])) if np.size(o[0]) else False,
    "rpow": lambda o, a: a["base"] <= 0,
}


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
