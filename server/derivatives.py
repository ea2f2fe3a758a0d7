"""What every source is asked (a Point) and what it answers (Derivatives)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .compare import SourceValues
from .ir import Program


@dataclass(frozen=True)
class Point:
    """One point to differentiate at, and what to compute there."""

    program: Program
    wrt: list[str]  # the inputs differentiated (float, requires_grad)
    values: dict[str, np.ndarray]  # every input's value
    cotangents: list[np.ndarray]  # one per output, for the VJP
    masks: dict[str, np.ndarray]  # gradient masks: references multiply their gradients by them
    checks: tuple[str, ...]  # any of "vjp", "jacobian", "hessian"

    @property
    def fixed(self) -> dict[str, np.ndarray]:
        """The inputs that are not differentiated (integer targets, frozen tensors)."""
        return {n: self.values[n] for n in self.program.input_names if n not in self.wrt}

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(np.shape(self.values[name]))

    def output_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(n, self.program.node(i).shape) for n, i in self.program.outputs]

    def masked(self, name: str, gradient: np.ndarray) -> np.ndarray:
        mask = self.masks.get(name)
        return gradient if mask is None else gradient * mask


@dataclass
class Derivatives:
    values: dict[str, np.ndarray] = field(default_factory=dict)  # output -> value
    vjp: dict[str, SourceValues] = field(default_factory=dict)  # input -> vᵀJ
    jacobian: dict[tuple[str, str], SourceValues] = field(default_factory=dict)  # (output, input)
    hessian: dict[tuple[str, str], SourceValues] = field(default_factory=dict)  # (input, input)
    # (output, input) pairs with no path from the output back to the input in the graph: their
    # derivatives are zero, and torch's .grad says None ("no gradient (unused)"). An input is
    # unused in the VJP when it is unused by every output. Filled by the engine's backend.
    unused: set[tuple[str, str]] = field(default_factory=set)
