"""A check, end to end: parse, run the engine and the references, compare, explain.

check(request) -> Report runs in-process (no network); the gRPC servicer is a thin layer on top.
Bounded cost: the whole check runs under one time budget (request.budget.seconds, or the
caller's tighter deadline), every stage is named to the deadline and long loops reach it, so
running out raises deadline.OutOfTime (and a caller's cancellation deadline.Cancelled) out of
check(); the cost was estimated and refused past the limits before any work (validate.prepare);
running out of memory anyway is a LimitError naming the stage, never a crash.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from crossgrad import engine as cg

from . import blame as blame_mod
from . import caches, deadline
from .backends import engine as engine_backend
from .backends import finite_diff, jax_backend, sympy_backend
from .compare import Block, SourceValues, Tolerance, compare_block
from .deadline import Cancelled, OutOfTime
from .derivatives import Derivatives, Point
from .graph import dag_of
from .ir import Program, Ref
from .kinks import Kink, find_kinks
from .language import LimitError
from .limits import DEFAULT_LIMITS, Limits
from .model import (
    Blame,
    Budget,
    CheckRequest,
    ConventionNote,
    Dag,
    PointReport,
    ReferenceStatus,
    Report,
    Verdict,
)
from .validate import prepare

EXTRA_POINT_INPUT_ELEMENTS = 1_000
"""An extra point's report keeps its drawn inputs up to this many entries in all (see
PointReport.complete)."""

_FATAL = (OutOfTime, Cancelled, MemoryError)
"""What ends a check, wherever it happens: never reported as a source's failure."""


class _Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the stage and name it to the deadline (OutOfTime and the worker's status say
        which stage ran out); running out of memory in it is a LimitError that says so."""
        start = time.perf_counter()
        try:
            with deadline.stage(name):
                yield
        except MemoryError:
            raise LimitError(
                f"the check ran out of memory in the {name} stage", field="memory"
            ) from None
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start


def check(request: CheckRequest, limits: Limits = DEFAULT_LIMITS) -> Report:
    """Differentiate the request's program with the engine and every reference; compare. All of
    it within the request's time budget (or the caller's deadline, if that comes first)."""
    with deadline.within(_seconds(request, limits)), caches.tracking() as hits:
        try:
            report = _check(request, limits)
        except MemoryError:
            raise LimitError(
                "the check ran out of memory (drawing sample points or assembling the report)",
                field="memory",
            ) from None
    report.cache_hits = dict(hits)
    return report


def _seconds(request: CheckRequest, limits: Limits) -> float:
    """The request's total budget, or the default when it is malformed (prepare refuses it)."""
    seconds = getattr(getattr(request, "budget", None), "seconds", None)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
        seconds = Budget().seconds
    return min(float(seconds), limits.max_budget_seconds)


def _check(request: CheckRequest, limits: Limits) -> Report:
    timer = _Timer()
    with timer.stage("parse"):
        prepared = prepare(request, limits)
    program, values, wrt, masks = prepared.program, prepared.values, prepared.wrt, prepared.masks
    cotangents = prepared.cotangents

    statuses: dict[str, ReferenceStatus] = {}
    reports, dag, outputs = [], Dag(), {}
    sympy = sympy_backend.Session(request.budget.sympy_seconds)  # its share, over every point
    for k, point_values in enumerate(_points(request, values, wrt)):
        deadline.checkpoint()
        point = Point(program, wrt, point_values, cotangents, masks, request.checks)
        # inf and nan at singular points are results the report states, not warnings for a log
        with np.errstate(all="ignore"):
            report, run, outs = _check_point(k, request, point, timer, statuses, prepared, sympy)
        if k == 0 and run is not None:
            dag, outputs = dag_of(run, masks), outs
        reports.append(report if k == 0 else _summarised(report))
    verdict = _overall(reports)
    summary = _summary(verdict, reports, statuses)
    error = next((r.summary for r in reports if r.verdict is Verdict.ERROR), "")
    return Report(verdict, summary, reports, statuses, dag, timer.stages, outputs, error)


def _points(
    request: CheckRequest, values: dict[str, np.ndarray], wrt: list[str]
) -> Iterator[dict[str, np.ndarray]]:
    """The given point, then each extra sample point, drawn when its turn comes."""
    yield values
    s = request.samples
    if s is None or s.count <= 0:
        return
    rng = np.random.default_rng(s.seed)
    for _ in range(s.count):
        p = dict(values)
        for n in wrt:
            shape, dtype = values[n].shape, values[n].dtype
            draw = (
                rng.uniform(s.low, s.high, shape)
                if s.distribution == "uniform"
                else rng.normal(0.0, s.scale, shape)
            )
            p[n] = draw.astype(dtype)
        yield p


def _summarised(report: PointReport) -> PointReport:
    """An extra point's report: statistics and worst entries, not every source's arrays."""
    blocks = [dataclasses.replace(b, sources={}, bad=None) for b in report.blocks]
    small = sum(np.size(v) for v in report.inputs.values()) <= EXTRA_POINT_INPUT_ELEMENTS
    return dataclasses.replace(
        report, inputs=report.inputs if small else {}, blocks=blocks, complete=False
    )


def _check_point(
    k: int,
    request: CheckRequest,
    point: Point,
    timer: _Timer,
    statuses: dict[str, ReferenceStatus],
    prepared: Any,
    sympy: sympy_backend.Session,
) -> tuple[PointReport, engine_backend.EngineRun | None, dict[str, np.ndarray]]:
    program, values, wrt = point.program, point.values, point.wrt
    dtype = "float32" if wrt and all(values[n].dtype == np.float32 for n in wrt) else "float64"
    tol = Tolerance.for_dtype(dtype, request.rtol, request.atol)
    with timer.stage("engine"):
        try:
            run = engine_backend.run(
                program, values, {n: n in wrt for n in program.input_names}, point.masks
            )
            derivs = {"engine": engine_backend.derivatives(run, point)}
        except _FATAL:
            raise
        except Exception as exc:  # the engine under test failed on a valid request: the finding
            summary = f"the engine raised {type(exc).__name__}: {exc}"
            return PointReport(k, values, [], [], [], Verdict.ERROR, summary), None, {}
    if k == 0 and prepared.claimed is not None:
        derivs["claimed"] = prepared.claimed
    for ref in request.references:
        with timer.stage(ref):
            try:
                derivs[ref], status = _reference(ref, point, request, k, sympy)
            except sympy_backend.SympyUnavailable as exc:
                status = ReferenceStatus(ref, False, str(exc))
            except _FATAL:
                raise
            except Exception as exc:  # a reference failing is reported, not fatal
                status = ReferenceStatus(ref, False, f"failed: {type(exc).__name__}: {exc}")
            if k == 0 or not status.ran:
                statuses[ref] = status
    if not any(ref in derivs for ref in request.references):  # nothing to compare with: no verdict
        why = "; ".join(f"{s.name}: {s.note}" for s in statuses.values() if not s.ran)
        summary = f"no reference could check this point ({why})"
        return PointReport(k, values, [], [], [], Verdict.ERROR, summary), run, derivs["engine"].values
    with timer.stage("compare"):
        blocks = _blocks(derivs, request.checks, tol)
        operand_values = {
            n.id: [_data(run.values[a.id]) if isinstance(a, Ref) else a for a in n.args]
            for n in program.nodes
            if n.op not in ("input", "take")
        }
        kinks = find_kinks(list(program.nodes), operand_values)
        verdict = _point_verdict(
            blocks, kinks, program, functools.cache(lambda: _entry_reach(run, kinks, wrt))
        )
    culprits: list[Blame] = []
    if verdict is Verdict.FAIL and request.blame and _engine_fails(blocks):
        with timer.stage("blame"):
            culprits = blame_mod.find_culprits(
                list(program.nodes), run.values, {kk.node.id for kk in kinks}, tol, request.seed
            )
    conventions = [ConventionNote(kk.node.op, kk.node.pos, kk.node.text, kk.conventions) for kk in kinks]
    summary = _point_summary(verdict, blocks, kinks, culprits)
    if verdict is Verdict.FAIL and request.blame and _engine_fails(blocks) and not culprits:
        summary += (
            "; blame: every node's VJP is right on its own (each checked alone, with one "
            "cotangent): the error comes from how nodes combine, or only with batched cotangents"
        )
    report = PointReport(k, values, blocks, conventions, culprits, verdict, summary)
    return report, run, derivs["engine"].values


def _data(x: Any) -> Any:
    return (
        x.data if isinstance(x, cg.Tensor) else tuple(_data(v) for v in x) if isinstance(x, tuple) else x
    )


def _reference(
    ref: str, point: Point, request: CheckRequest, k: int, sympy: sympy_backend.Session
) -> tuple[Derivatives, ReferenceStatus]:
    if ref == "jax":
        return jax_backend.derivatives(point), ReferenceStatus("jax", True)
    if ref == "sympy":  # one sample of entries for every point: compiled programs are reused
        return sympy_backend.derivatives(point, request.budget, request.seed, sympy)
    return finite_diff.derivatives(point, request.budget, request.seed + k)


def _blocks(derivs: dict[str, Derivatives], checks: tuple[str, ...], tol: Tolerance) -> list[Block]:
    blocks: list[Block] = []
    engine = derivs["engine"]
    # forward values: a wrong forward pass explains wrong gradients
    for oname, value in engine.values.items():
        sources = {
            s: SourceValues(np.asarray(d.values[oname], np.float64))
            for s, d in derivs.items()
            if oname in d.values
        }
        blocks.append(compare_block(Block("value", oname, "", value.shape, sources), tol))
    for quantity in ("vjp", "jacobian", "hessian"):
        if quantity not in checks:
            continue
        table = getattr(engine, quantity)
        for key in table:
            sources = {
                s: getattr(d, quantity)[key] for s, d in derivs.items() if key in getattr(d, quantity)
            }
            output, inp = (None, key) if quantity == "vjp" else key
            if quantity == "hessian":
                output, inp = None, f"{key[0]},{key[1]}"
            shape = table[key].values.shape
            deadline.checkpoint()  # a block can hold up to 4e6 entries (about a second's work)
            blocks.append(compare_block(Block(quantity, output, inp, shape, sources), tol))
    return blocks


def _engine_fails(blocks: list[Block]) -> bool:
    return any(b.failing.get("engine", 0) for b in blocks)


def _point_verdict(
    blocks: list[Block],
    kinks: list[Kink],
    program: Program,
    entry_reach: Callable[[], list[dict[str, np.ndarray] | None]],
) -> Verdict:
    """FAIL when the engine or the claimed values disagree with the references, unless kinks
    explain every disagreeing entry (then a convention difference). entry_reach is computed only
    when a kink might excuse a failing block."""
    reach = _kink_reach(program, kinks)
    verdict = Verdict.PASS
    for b in blocks:
        failing = sum(b.failing.values())
        if not failing and not b.references_disagree:
            continue
        excused = b.quantity != "value" and _excused(b, reach)
        if excused and failing:
            excused = _entries_excused(b, reach, entry_reach())
        if failing:
            b.status = "convention" if excused else "fail"
        else:
            b.status = "convention" if excused else "references disagree"
        if failing and not excused:
            verdict = Verdict.FAIL
        elif excused and verdict is Verdict.PASS:
            verdict = Verdict.PASS_WITH_CONVENTION_DIFFERENCES
    return verdict


def _kink_reach(program: Program, kinks: list[Kink]) -> list[tuple[set[str], set[str]]]:
    """For each kink: the inputs it depends on and the outputs that depend on it."""
    inputs_of: dict[int, set[str]] = {}
    for node in program.nodes:  # in order: operands come first
        deps = {node.name} if node.op == "input" else set()
        for a in node.args:
            if isinstance(a, Ref):
                deps |= inputs_of[a.id]
        inputs_of[node.id] = deps
    reach = []
    for kink in kinks:
        downstream = {kink.node.id}
        for node in program.nodes[kink.node.id + 1 :]:
            if any(isinstance(a, Ref) and a.id in downstream for a in node.args):
                downstream.add(node.id)
        outputs = {name for name, i in program.outputs if i in downstream}
        reach.append((inputs_of[kink.node.id], outputs))
    return reach


def _excused(block: Block, reach: list[tuple[set[str], set[str]]]) -> bool:
    return any(_reaches(block, ins, outs) for ins, outs in reach)


def _reaches(block: Block, ins: set[str], outs: set[str]) -> bool:
    return bool(set(block.input.split(",")) & ins) and (block.output is None or block.output in outs)


def _entry_reach(
    run: engine_backend.EngineRun, kinks: list[Kink], wrt: list[str]
) -> list[dict[str, np.ndarray] | None]:
    """For each kink, the entries of each input that its kinked entries depend on: only there can
    its convention change a derivative. Found with the engine: the gradient, at this point, of a
    random positive weighting of the kinked operand entries (None where that cannot be done)."""
    rng = np.random.default_rng(0)
    leaves = [run.leaves[n] for n in wrt]
    found: list[dict[str, np.ndarray] | None] = []
    for kink in kinks:
        deadline.checkpoint()
        operands = [run.values[a.id] for a in kink.node.args if isinstance(a, Ref)]
        tensors = [t for t in operands if isinstance(t, cg.Tensor) and t.requires_grad]
        if kink.entries is None or not tensors or not leaves:
            found.append(None if kink.entries is None else {})
            continue
        weights = rng.uniform(1.0, 2.0, kink.entries.shape) * kink.entries
        try:  # the engine is under test: if it fails here, judge the kink's blocks whole
            total = sum((t * weights).sum() for t in tensors)
            grads = cg.grad(total, leaves, retain_graph=True, allow_unused=True, materialize_grads=True)
        except _FATAL:
            raise
        except Exception:
            found.append(None)
            continue
        found.append({n: (g.data != 0) | ~np.isfinite(g.data) for n, g in zip(wrt, grads)})
    return found


def _entries_excused(
    block: Block,
    reach: list[tuple[set[str], set[str]]],
    entry_reach: list[dict[str, np.ndarray] | None],
) -> bool:
    """Whether the kinks that reach a vjp or jacobian block cover every entry that disagrees there
    (a kink elsewhere in the input excuses nothing). Other blocks are judged whole."""
    if block.bad is None or block.quantity not in ("vjp", "jacobian"):
        return True
    covered = np.zeros(block.shape, bool)
    for (ins, outs), entries in zip(reach, entry_reach):
        if not _reaches(block, ins, outs):
            continue
        if entries is None:
            return True  # a reduction's kink: any entry may depend on it
        mask = entries.get(block.input)
        if mask is not None:
            covered = covered | np.broadcast_to(mask, block.shape)
    return not np.any(block.bad & ~covered)


def _overall(points: list[PointReport]) -> Verdict:
    order = [Verdict.PASS, Verdict.PASS_WITH_CONVENTION_DIFFERENCES, Verdict.FAIL, Verdict.ERROR]
    return max((p.verdict for p in points), key=order.index)


def _point_summary(verdict: Verdict, blocks: list[Block], kinks: list[Kink], culprits: list) -> str:
    lines = []
    for b in blocks:
        for src, n in b.failing.items():
            if n:
                e = b.worst[0] if b.worst else None
                at = (
                    f" (worst at {e.index}: {src} {e.values.get(src)!r} vs {e.reference} "
                    f"{e.values.get(e.reference)!r})"
                    if e
                    else ""
                )
                what = "entry disagrees" if n == 1 else "entries disagree"
                lines.append(f"{b.label}: {n} {src} {what}{at}")
        if b.references_disagree and not any(b.failing.values()):
            lines.append(f"{b.label}: the references disagree on {b.references_disagree} entries")
    for kk in kinks:
        lines.append(kk.describe())
    for c in culprits:
        at = f" at {c.position}" if c.position else ""
        lines.append(f"blame: {c.node_name} ({c.op}){at}: {c.text!r}: {c.detail}")
    calm = not any(b.references_disagree for b in blocks)
    head = {
        Verdict.PASS: "every source agrees"
        if calm
        else ("the engine agrees with the references, which disagree among themselves in places"),
        Verdict.PASS_WITH_CONVENTION_DIFFERENCES: "differences only at non-differentiable points",
        Verdict.FAIL: "the engine (or the claimed values) disagree with the references",
        Verdict.ERROR: "error",
    }[verdict]
    return "; ".join([head, *lines])


def _summary(verdict: Verdict, reports: list[PointReport], statuses: dict[str, ReferenceStatus]) -> str:
    parts = [f"{verdict.value}: {reports[0].summary}"]
    if len(reports) > 1:
        bad = [r.point for r in reports[1:] if r.verdict is not Verdict.PASS]
        parts.append(
            f"{len(reports) - 1} extra point(s): "
            + (f"not all pass (points {bad})" if bad else "all pass")
        )
    skipped = [f"{s.name} skipped ({s.note})" for s in statuses.values() if not s.ran]
    sampled = [f"{s.name}: {s.note}" for s in statuses.values() if s.ran and "over budget" in s.note]
    return "; ".join(parts + skipped + sampled)
