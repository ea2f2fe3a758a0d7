"""Run a program through crossgrad's own engine, building its DAG with source positions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from crossgrad import engine as cg

from ..ir import IRNode, Program, evaluate
from ..language import index_for_numpy


def _call(fn: Callable[..., Any]) -> Callable[[list[Any], dict[str, Any]], Any]:
    return lambda operands, attrs: fn(*operands, **attrs)


_SPECIAL: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "pow": lambda o, a: cg.pow(o[0], a["exponent"]),
    "pow_tensor": lambda o, a: cg.pow(o[0], o[1]),
    "rpow": lambda o, a: cg.pow(a["base"], o[0]),
    "rsub": lambda o, a: cg.sub(a["other"], o[0]),
    "concat": lambda o, a: cg.concat(o, **a),
    "stack": lambda o, a: cg.stack(o, **a),
    "getitem": lambda o, a: cg.getitem(o[0], index_for_numpy(a["index"])),
}
LOWERING: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    name: _SPECIAL.get(name) or _call(getattr(cg, name))
    for name, spec in cg.OPS.items()
    if not spec.internal
}
"""How the engine evaluates each op of the table."""


@dataclass
class EngineRun:
    """A program evaluated by the engine: leaves, outputs, and every IR node's tensor."""

    program: Program
    leaves: dict[str, cg.Tensor]
    values: dict[int, Any]  # IR node id -> Tensor (a tuple for split)

    @property
    def outputs(self) -> list[cg.Tensor]:
        return [self.values[i] for _, i in self.program.outputs]


def run(
    program: Program,
    inputs: Mapping[str, np.ndarray],
    requires_grad: Mapping[str, bool],
    masks: Mapping[str, np.ndarray | None] | None = None,
) -> EngineRun:
    """Evaluate the program; masks are applied through hooks (their gradient times the mask)."""
    leaves = {}
    for name in program.input_names:
        t = cg.tensor(inputs[name], requires_grad=requires_grad.get(name, False))
        mask = (masks or {}).get(name)
        if mask is not None and t.requires_grad:
            t.register_hook(_mask_hook(np.asarray(mask, dtype=t.dtype)))
        leaves[name] = t

    def apply(node: IRNode, operands: list[Any]) -> Any:
        return LOWERING[node.op](operands, node.attr_dict)

    def tag(node: IRNode, value: Any) -> None:
        # Each DAG node learns where it came from: the blame names the source line and column.
        fn = getattr(value, "grad_fn", None)
        if fn is not None and fn.metadata.get("ir_node") is None and node.op != "input":
            fn.metadata.update(ir_node=node.id, source=str(node.pos) if node.pos else "", text=node.text)

    with cg.enable_grad():
        values = evaluate(program, leaves, apply, tag)
    return EngineRun(program, leaves, values)


def _mask_hook(mask: np.ndarray) -> Callable[[cg.Tensor], cg.Tensor]:
    return lambda g: g * mask
