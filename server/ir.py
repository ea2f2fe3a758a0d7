"""The parsed program: a straight-line list of operations that every backend evaluates in order."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Position:
    """Where an expression is in the request text: 1-based line and column, and where it ends."""

    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"line {self.line}, column {self.col}"


@dataclass(frozen=True)
class Ref:
    """An operand that is the result of another node (by id)."""

    id: int


Operand = Ref | int | float


@dataclass(frozen=True)
class IRNode:
    id: int
    op: str  # an op of the table, or "input", or "take" (one result of a multi-output op)
    args: tuple[Operand, ...]
    attrs: tuple[tuple[str, Any], ...]
    shape: Any  # a tuple of ints (a tuple of those for multi-output ops)
    dtype: str
    pos: Position | None = None
    text: str = ""  # the source text of the expression
    name: str | None = None  # the variable (or input) it is bound to, if any

    @functools.cached_property
    def attr_dict(self) -> dict[str, Any]:
        """The attributes as a dict, built once (every backend asks at every evaluation)."""
        return dict(self.attrs)


@dataclass(frozen=True, eq=False)
class Program:
    source: str
    nodes: tuple[IRNode, ...]
    inputs: tuple[tuple[str, int], ...]  # input name -> node id, in declaration order
    outputs: tuple[tuple[str, int], ...]  # output name -> node id
    cache_key: tuple[Any, ...] = field(default=(), compare=False)

    # Programs are cached by what defines them: text, input shapes and dtypes, outputs.
    def __hash__(self) -> int:
        return hash(self.cache_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Program) and self.cache_key == other.cache_key

    def node(self, ref: int) -> IRNode:
        return self.nodes[ref]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.outputs)

    @functools.cached_property
    def has_float32(self) -> bool:
        """Whether any of its values (inputs included) is float32: if none, every derivative of
        it is computed in float64 (asked for every block of every check)."""
        return any(node.dtype == "float32" for node in self.nodes)


def evaluate(
    program: Program,
    inputs: dict[str, Any],
    apply: Callable[[IRNode, list[Any]], Any],
    on_node: Callable[[IRNode, Any], None] | None = None,
) -> dict[int, Any]:
    """Evaluate every node in order with a backend's apply(node, operand values); returns the
    value of every node by id. on_node(node, value) sees each result (the engine tags its DAG)."""
    env: dict[int, Any] = {}
    for node in program.nodes:
        if node.op == "input":
            value = inputs[node.name]
        elif node.op == "take":
            value = env[node.args[0].id][node.attr_dict["index"]]
        else:
            value = apply(node, [env[a.id] if isinstance(a, Ref) else a for a in node.args])
        env[node.id] = value
        if on_node is not None:
            on_node(node, value)
    return env
