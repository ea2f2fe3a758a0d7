"""What a check asks for and what it answers: plain dataclasses, independent of the transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from .compare import Block
from .ir import Position


@dataclass
class InputSpec:
    name: str
    values: Any  # array-like, shaped like the input
    dtype: str = "float64"
    requires_grad: bool = True
    mask: Any = None  # optional gradient mask (1 keeps, 0 freezes), applied through engine hooks


@dataclass
class SamplePoints:
    """Extra points to check besides the given one."""

    count: int = 0
    seed: int = 0
    distribution: str = "normal"  # "normal" (mean 0, std scale) or "uniform" (in [low, high])
    low: float = -1.0
    high: float = 1.0
    scale: float = 1.0


@dataclass
class Budget:
    # The request's total time: every stage and every sample point share it (capped by
    # Limits.max_budget_seconds, and by the caller's own deadline when it has one).
    seconds: float = 30.0
    # sympy's share of it, over the whole request: past it sympy checks a sample, or skips.
    sympy_seconds: float = 10.0
    sympy_max_scalar_ops: int = 60_000  # above this, sympy checks a seeded sample of entries
    sympy_sample_entries: int = 64
    sympy_max_jacobian_rows: int = 512
    symbolic_text_max_ops: int = 40  # show symbolic derivatives as text when this small
    fd_max_entries: int = 512
    fd_sample_entries: int = 256
    hessian_max_inputs: int = 256


@dataclass
class CheckRequest:
    program: str
    inputs: list[InputSpec]
    outputs: list[str] | None = None
    cotangents: dict[str, Any] = field(default_factory=dict)
    checks: tuple[str, ...] = ("vjp",)  # any of "vjp", "jacobian", "hessian"
    references: tuple[str, ...] = ("sympy", "jax", "fd")
    rtol: float | None = None
    atol: float | None = None
    samples: SamplePoints | None = None
    claimed_vjp: dict[str, Any] = field(default_factory=dict)  # input -> gradient
    claimed_jacobian: dict[tuple[str, str], Any] = field(default_factory=dict)  # (output, input)
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    blame: bool = True


class Verdict(StrEnum):
    """From best to worst; a report takes the worst of its points, a point the worst of its
    entries. PASS_WITH_* differ from the exact values only where that is admissible: at a kink
    within the range of the one-sided derivatives (conventions), or where floating point itself
    departs from the exact value and the engine equals the same computation done correctly in
    its precision (numerical notes). UNVERIFIED: some entry no reference could settle (never a
    PASS)."""

    PASS = "PASS"
    PASS_WITH_NUMERICAL_NOTES = "PASS_WITH_NUMERICAL_NOTES"
    PASS_WITH_CONVENTION_DIFFERENCES = "PASS_WITH_CONVENTION_DIFFERENCES"
    UNVERIFIED = "UNVERIFIED"
    FAIL = "FAIL"
    ERROR = "ERROR"

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)

    @property
    def passed(self) -> bool:
        return self.rank <= Verdict.PASS_WITH_CONVENTION_DIFFERENCES.rank


@dataclass
class ReferenceStatus:
    name: str
    ran: bool
    note: str = ""  # why it did not run, or what it sampled
    sampled_entries: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    symbolic: list[dict[str, str]] = field(default_factory=list)  # {"entry", "text", "latex"}


@dataclass
class Blame:
    node_name: str  # e.g. TanhBackward0
    op: str
    ir_node: int
    position: Position | None  # where the node's expression is in the request
    text: str  # the expression in the request
    max_abs_error: float
    detail: str


@dataclass
class ConventionNote:
    """A kink the program sits on: what each party returned there, and what is admissible."""

    op: str
    position: Position | None
    text: str
    conventions: dict[str, str]  # party -> what it returned at the kinked entries
    admissible: str = ""  # the range of the one-sided derivatives, where it was computed


@dataclass
class NumericalNote:
    """An entry where floating point departs from the exact value and the engine (or claim)
    equals the same computation done in its precision: not a wrong rule."""

    block: str  # the block's label
    index: tuple[int, ...]
    source: str  # "engine" or "claimed"
    value: float
    exact: float
    same_precision: float  # JAX, computing in the same dtype
    why: str  # overflow, underflow, ill-conditioning, float32 rounding
    condition: float  # how far the derivative moves, relative, per relative ulp of the inputs


@dataclass
class ReferenceNote:
    """A witness (JAX, finite differences) disagreeing with the exact reference, or JAX and
    finite differences disagreeing where sympy did not check: reported, never an excuse."""

    block: str
    reference: str  # the witness that disagrees
    against: str  # whom with
    entries: int
    index: tuple[int, ...]  # the worst one
    values: dict[str, float]


@dataclass
class DagNode:
    id: int
    name: str
    op: str
    position: Position | None
    text: str
    next: list[int]


@dataclass
class DagLeaf:
    id: int
    name: str
    shape: tuple[int, ...]
    requires_grad: bool
    masked: bool


@dataclass(eq=False)  # known by identity: a program's DAG is kept and shared (graph.dag_of)
class Dag:
    nodes: list[DagNode] = field(default_factory=list)
    leaves: list[DagLeaf] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)  # inputs that do not require grad
    dot: str = ""


@dataclass
class PointReport:
    point: int  # 0: the given point; 1..: extra samples
    inputs: dict[str, np.ndarray]  # extra points: only when small (complete says)
    blocks: list[Block]
    conventions: list[ConventionNote]
    blame: list[Blame]
    verdict: Verdict
    summary: str
    numerical: list[NumericalNote] = field(default_factory=list)
    reference_notes: list[ReferenceNote] = field(default_factory=list)
    # Point 0 is complete. An extra point keeps each block's statistics (pairs, failing counts,
    # worst entries, status) but not every source's arrays (block.sources is empty and
    # block.bad None), and its drawn inputs only when they total at most
    # check.EXTRA_POINT_INPUT_ELEMENTS entries (samples.seed regenerates them): a report with
    # 64 extra points of large arrays would otherwise reach hundreds of MB.
    complete: bool = True


@dataclass
class Report:
    verdict: Verdict
    summary: str
    points: list[PointReport]
    references: dict[str, ReferenceStatus]
    dag: Dag
    timings: dict[str, float]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # engine's values at point 0
    error: str = ""
    # Per cache this check consulted ("parse", "sympy", "jax"): whether everything it looked up
    # there was cached. Kept apart from the rest so that a repeated request gets the same report.
    cache_hits: dict[str, bool] = field(default_factory=dict)

    @property
    def blocks(self) -> list[Block]:
        return self.points[0].blocks if self.points else []

    def block(self, quantity: str, input: str, output: str | None = None) -> Block:
        for b in self.blocks:
            if b.quantity == quantity and b.input == input and (output is None or b.output == output):
                return b
        raise KeyError((quantity, output, input))
