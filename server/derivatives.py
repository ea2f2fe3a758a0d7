"""What one source computed at one point: forward values and derivative blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .compare import SourceValues


@dataclass
class Derivatives:
    values: dict[str, np.ndarray] = field(default_factory=dict)  # output -> value
    vjp: dict[str, SourceValues] = field(default_factory=dict)  # input -> vᵀJ
    jacobian: dict[tuple[str, str], SourceValues] = field(default_factory=dict)  # (output, input)
    hessian: dict[tuple[str, str], SourceValues] = field(default_factory=dict)  # (input, input)
