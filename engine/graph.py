"""Backward nodes (grad_fn), the leaf accumulator, and an op's engine implementation (OpImpl)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .optable import OpSpec

if TYPE_CHECKING:
    from .tensor import Tensor

SECOND_BACKWARD = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through "
    "the graph a second time or if you need to access saved tensors after calling backward."
)

_FREED = object()  # marks saved values released by a backward pass without retain_graph
_sequence = itertools.count()  # creation order, for deterministic topological order
_LEAVES_FIRST = 1 << 62  # an AccumulateGrad's place in that order, less its own creation


class RemovableHandle:
    """Returned by register_hook; remove() unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks: dict[int, Callable[..., Any]]) -> None:
        self.id = next(self._ids)
        self._hooks = hooks

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:  # with x.register_hook(mask): ... removes it after
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Node:
    """A backward function: turns the gradient of its outputs into gradients of its inputs."""

    __slots__ = (
        "__weakref__",
        "_attrs",
        "_edges",
        "_has_tensors",
        "_in_meta",
        "_metadata",
        "_needs",
        "_out_meta",
        "_saved",
        "_saves_values",
        "_seq",
        "_tensor_hooks",
        "_versions",
    )
    impl: OpImpl  # set on each generated subclass
    # _edges: (node, output index) per operand, (None, 0) where none, aligned with the VJP's results

    @property
    def next_functions(self) -> tuple[tuple[Any, int], ...]:
        """(node, output index) for each input that can carry a gradient, as torch lists them."""
        skip = self.impl.spec.no_grad_operands
        if not skip:
            return self._edges
        return tuple(e for k, e in enumerate(self._edges) if k not in skip)

    def name(self) -> str:
        return type(self).__name__

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form annotations (the request language stores the source position here)."""
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    @property
    def op(self) -> str:
        return self.impl.spec.name

    @property
    def attrs(self) -> dict[str, Any]:
        return self._attrs

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(m[0] for m in self._in_meta)

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(m[0] for m in self._out_meta)

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"


class AccumulateGrad:
    """The node of a leaf tensor: adds the incoming gradient into `variable.grad`."""

    __slots__ = ("__weakref__", "_metadata", "_seq", "variable")
    next_functions: tuple = ()
    _edges: tuple = ()
    _out_meta = ((None, None),)  # one output, like every node: its gradient buffer has one slot

    def __init__(self, variable: Tensor) -> None:
        self.variable = variable
        # after every other node in the order: as torch's (its sequence number is the largest
        # there is), a leaf's gradient is accumulated as soon as it is ready, before any other
        # ready node runs (a hook reading another leaf's .grad sees it). Leaves ready together
        # go oldest first: torch takes them in the order of the operands that readied them.
        self._seq = _LEAVES_FIRST - next(_sequence)
        self._metadata = None

    def name(self) -> str:
        return "AccumulateGrad"

    metadata = Node.metadata

    def __repr__(self) -> str:
        return f"<AccumulateGrad object at {id(self):#x}>"


@dataclass(eq=False)
class OpImpl:
    """The engine's implementation of one op of the table.

    forward(*operands, **attrs) computes on numpy arrays (python numbers pass through as numbers).
    vjp(B, node, g, saved) returns one gradient per operand (None where not needed), computed with the
    array namespace B: numpy for a plain backward, the engine's own ops under create_graph so that the
    result is differentiable again. `g` carries any number of leading batch dimensions.
    save: which operands the VJP needs: "all", "none", "other" (operand i's gradient needs the
    other operands, as in mul and matmul), "divisor" (div: the divisor, and the dividend for the
    divisor's gradient) or a tuple of operand positions (where's condition, masked_fill's mask),
    or a function of the attributes returning (save, save_output) where they decide it.
    As torch, nothing more is saved: an operand changed in place after the op is no error where
    its gradient does not read it. save_output: the VJP needs the result.
    """

    spec: OpSpec
    forward: Callable[..., Any]
    vjp: Callable[..., tuple[Any, ...]] | None
    save: str | tuple[int, ...] | Callable[[dict[str, Any]], tuple[Any, bool]] = "all"
    save_output: bool = False
    n_outputs: int = 1  # > 1 for ops returning several tensors (split); 0: as many as forward returns

    def __post_init__(self) -> None:
        self._node_classes: dict[str, type[Node]] = {}
        # Most ops have one node name whatever the attributes: skip the lookup for those.
        named = isinstance(self.spec.node_name, str) and self.vjp is not None
        self.fixed_class = self.node_class({}, ()) if named else None

    def node_class(self, attrs: dict[str, Any], shapes: tuple[Any, ...]) -> type[Node]:
        name = self.spec.node_name_for(attrs, shapes)
        cls = self._node_classes.get(name)
        if cls is None:
            cls = type(name, (Node,), {"__slots__": (), "impl": self})
            self._node_classes[name] = cls
        return cls
