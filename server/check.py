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
from . import verdict as verdict_mod
from .backends import engine as engine_backend
from .backends import finite_diff, jax_backend, sympy_backend
from .compare import STATUSES, Block, SourceValues, Tolerance, compare_block, summarize
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
        except (deadline.OutOfTime, deadline.Cancelled) as exc:
            # the stages it ran, this one's time added below: the server's stage histograms and
            # log line had nothing of the checks that ran out, the slow tail
            exc.timings = self.stages
            raise
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
    claims = bool(request.claimed_vjp or request.claimed_jacobian)
    summary = _summary(verdict, reports, statuses, claims, request.rtol, request.atol)
    nothing_differentiated = all(n in masks and not masks[n].any() for n in wrt)  # (no wrt too)
    if nothing_differentiated and verdict.passed:
        # no derivative was checked: a typo in the frozen inputs turned a gradient check into
        # a PASS of the values alone (from an audit); so did masks that freeze every entry
        verdict = Verdict.UNVERIFIED
        summary = (
            f"{verdict.value}: nothing was differentiated (every input is frozen, an integer "
            f"or masked to 0): only the outputs' values were compared ({summary})"
        )
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
    blocks = [
        dataclasses.replace(
            b, sources={}, bad=None, status_map={}, reference=None, reference_name=None,
            reference_error=None, witness_disagree={},
        )
        for b in report.blocks
    ]  # fmt: skip
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
    run = None
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
            culprits: list[Blame] = []
            if run is not None and request.blame:  # a rule that broke backward (a wrong shape)
                with timer.stage("blame"):
                    culprits = _blame(program, run, request, point, [])
                summary += "".join(f"; blame: {c.node_name} at {c.position}" for c in culprits)
            return PointReport(k, values, [], [], culprits, Verdict.ERROR, summary), None, {}
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
        operand_values = {
            n.id: [_data(run.values[a.id]) if isinstance(a, Ref) else a for a in n.args]
            for n in program.nodes
            if n.op not in ("input", "take")
        }
        kinks = find_kinks(list(program.nodes), operand_values)

        # per input, the largest cotangent of an output that depends on it (another output's
        # cotangent of 1 let a sign-flipped rule pass under cotangents of 1e-12)
        unused = verdict_mod.unused_inputs(program)
        largest = {
            n: float(np.max(np.abs(c), initial=0.0))
            for n, c in zip(program.output_names, point.cotangents)
        }

        def cotangent_scale(inputs: str) -> float:
            return max((c for o, c in largest.items() if inputs not in unused[o]), default=1.0)

        def tolerance_in(
            dtype: str, quantity: str, inputs: str, output: str | None = None, tight: bool = False
        ) -> Tolerance:
            tol = Tolerance.for_dtype(dtype, request.rtol, request.atol)
            if request.atol is not None:
                return tol
            atol = tol.atol
            if quantity == "vjp":
                # a VJP scales with its cotangents, rounding noise and all: the default absolute
                # tolerance (for cotangents of 1) scales with them, or a cotangent of 1e-12 would
                # pass any claimed gradient, sign and all
                atol *= min(1.0, cotangent_scale(inputs))
            # and with the block's own scale: a block of small entries throughout (a mean's 1/N)
            # had atol as good as a large relative tolerance (a float64 rule 2e-6 off passed).
            # Floored: entries far below the block's largest, and blocks of zeros, keep an
            # absolute tolerance (rounding that cancellation leaves). In float32 only `tight`:
            # there the rounding of intermediates of order 1 is of this size whatever the
            # entries' (a saturated sigmoid's 1 - s, torch's own gradient 0.9 % off the exact
            # 6e-6, FAILed 50 seeds in 50). `tight` (for verdict.small_blocks, which makes
            # unverified what passes by more than rounding explains) has no floor where sympy's
            # exact values give the scale, but for a block of zeros: a block of 1e-12 (float32)
            # or 1e-15 (float64) passed any claim, negated or 0. Without sympy, JAX's values give
            # it (a block of 1e-15 passed a negated claim wherever sympy stepped aside), and
            # small_blocks asks how far rounding moves them: a block that cancels to 0 has its
            # rounding noise for a scale.
            if dtype == "float64" or tight:
                exact = _reference_scale(derivs, quantity, output, inputs, ("sympy",)) if tight else None
                if exact:  # (not a block of zeros)
                    scale, floor = exact, 0.0
                else:
                    scale = _reference_scale(derivs, quantity, output, inputs)
                    scale = 1.0 if scale is None else scale
                    floor = 0.0 if tight and scale > 0 else ATOL_SCALE_FLOOR
                atol = min(atol, tol.atol * max(scale, floor))
            return dataclasses.replace(tol, atol=atol)

        @functools.cache  # asked for each block by kinks, comparison, hull and notes
        def tolerance(quantity: str, output: str | None, inputs: str) -> Tolerance:
            dtype = verdict_mod.block_dtype(quantity, output, inputs, point)
            return tolerance_in(dtype, quantity, inputs, output)

        intervals, how = verdict_mod.kink_intervals(
            point, kinks, operand_values, lambda key: tolerance(key[0], *_names(key))
        )
        blocks = _blocks(derivs, point, tolerance, intervals)

        def block_tolerance(b: Block) -> Tolerance:
            return tolerance(b.quantity, b.output, b.input)

        verdict_mod.hull_check(blocks, intervals, block_tolerance)
        verdict_mod.uncoupled_claims(blocks, intervals, block_tolerance)
        verdict_mod.kinked_hessians(blocks, kinks, point, operand_values, block_tolerance)
        engine_values = {i: _data(v) for i, v in run.values.items()}

        def rounded(bits: int) -> Derivatives | None:
            if "sympy" not in derivs:
                return None
            try:
                return sympy_backend.rounded(point, request.budget, request.seed + k, sympy, bits)
            except sympy_backend.SympyUnavailable:  # the formula divides by zero in that precision
                return None

        fp = verdict_mod.FloatingPoint(point, derivs, engine_values, rounded)
        verdict_mod.float32_reached(
            blocks, fp, block_tolerance, lambda b: tolerance_in("float64", b.quantity, b.input, b.output)
        )
        verdict_mod.small_blocks(
            blocks,
            fp,
            block_tolerance,
            lambda b: tolerance_in(b.dtype, b.quantity, b.input, b.output, tight=True),
        )
        if request.atol is not None:
            verdict_mod.blind_tolerance(blocks, fp, block_tolerance)
        verdict_mod.flushed_references(blocks, fp, block_tolerance)
        verdict_mod.undefined_outputs(blocks, point, block_tolerance)
        numerical = verdict_mod.numerical_notes(blocks, fp, block_tolerance, intervals)
        verdict_mod.masked_claims(blocks, point.masks, block_tolerance)
        verdict = verdict_mod.point_verdict(blocks)
        conventions = verdict_mod.convention_notes(kinks, blocks, intervals, how)
        witnesses = verdict_mod.reference_notes(blocks)
    culprits = []
    if verdict is Verdict.FAIL and request.blame and _engine_fails(blocks):
        with timer.stage("blame"):
            culprits = _blame(program, run, request, point, blocks)
    summary = _point_summary(
        verdict, blocks, kinks, culprits, numerical, {n for n, m in point.masks.items() if m is not None}
    )
    non_finite = _engine_fails(blocks) and any(_fails_non_finite(b) for b in blocks)
    undefined = verdict_mod.undefined_nodes(program, engine_values) if non_finite else []
    if undefined:
        # torch's where-gradient trap: no rule is wrong, the program is
        node = undefined[0]
        summary += (
            f"; the engine's non-finite gradient comes from {node.op} ({node.text}) at "
            f"{node.pos}, nan at its operands (not defined there), multiplied by 0 where a "
            "branch is not taken (where, masked_fill): 0 * nan is nan, as in torch; guard its "
            "operands instead (e.g. sqrt(where(x > 5, x - 10, 1.0)))"
        )
    elif verdict is Verdict.FAIL and request.blame and _engine_fails(blocks) and not culprits:
        summary += (
            f"; blame: no node's rule is wrong on its own ({culprits.checks}): the error comes "
            "from how nodes combine"
        )
    report = PointReport(
        k, values, blocks, conventions, culprits, verdict, summary, numerical, witnesses
    )
    return report, run, derivs["engine"].values


def _fails_non_finite(block: Block) -> bool:
    """Whether the engine fails this block with a non-finite value."""
    status = block.status_map.get("engine")
    if status is None or "engine" not in block.sources:
        return False
    values = np.asarray(block.sources["engine"].values, np.float64).reshape(-1)
    return bool((~np.isfinite(values[status.reshape(-1) == STATUSES.index("fail")])).any())


def _blame(
    program: Program,
    run: engine_backend.EngineRun,
    request: CheckRequest,
    point: Point,
    blocks: list[Block],
) -> Any:
    """Every node whose own rule is wrong (blame.Culprits: a list with the checks made), also
    with the cotangent each received in the request's VJP (a rule wrong for all ones alone), or,
    for a Jacobian without a VJP, in the backward pass of the first row the engine got wrong (a
    rule wrong only for one-hot cotangents)."""
    cotangents = point.cotangents if "vjp" in point.checks else _failing_row(point, blocks)
    received = (
        engine_backend.received_cotangents(run, point, cotangents) if cotangents is not None else {}
    )
    return blame_mod.find_culprits(
        list(program.nodes),
        run.values,
        seed=request.seed,
        rtol=request.rtol,
        atol=request.atol,
        received=received,
    )


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


def _names(key: tuple[str, Any]) -> tuple[str | None, str]:
    """(output, inputs) of a derivative table's key: vjp input; jacobian (output, input);
    hessian (input, input)."""
    quantity, k = key
    if quantity == "vjp":
        return None, k
    if quantity == "jacobian":
        return k
    return None, f"{k[0]},{k[1]}"


ATOL_SCALE_FLOOR = 1e-3  # the default atol shrinks with a block's scale down to this fraction


def _reference_scale(
    derivs: dict[str, Derivatives],
    quantity: str,
    output: str | None,
    inputs: str,
    names: tuple[str, ...] = ("sympy", "jax"),
) -> float | None:
    """The largest finite magnitude the references (`names`) give a block, at most 1 (None
    without them): the block's own scale, for its absolute tolerance."""
    key: Any = {
        "value": output,
        "vjp": inputs,
        "jacobian": (output, inputs),
        "hessian": tuple(inputs.split(",")),
    }[quantity]
    scale = None
    for name in names:
        found_by = derivs.get(name)
        table = (
            None
            if found_by is None
            else getattr(found_by, "values" if quantity == "value" else quantity)
        )
        if not table or key not in table:
            continue
        found = table[key]
        values = np.abs(np.asarray(getattr(found, "values", found), np.float64))
        checked = getattr(found, "checked", None)
        if checked is not None:
            values = values[np.asarray(checked, bool)]
        finite = values[np.isfinite(values)]
        if finite.size:
            scale = max(scale or 0.0, float(finite.max()))
    return None if scale is None else min(scale, 1.0)


def _blocks(
    derivs: dict[str, Derivatives],
    point: Point,
    tolerance: Callable[[str, str | None, str], Tolerance],
    intervals: dict[tuple[str, Any], Any],
) -> list[Block]:
    """Every block judged, each with the tolerance of the dtype it is computed in."""
    blocks: list[Block] = []
    engine = derivs["engine"]
    unused = verdict_mod.unused_inputs(point.program)
    # forward values: a wrong forward pass explains wrong gradients
    for oname, value in engine.values.items():
        sources = {
            s: SourceValues(np.asarray(d.values[oname], np.float64))
            for s, d in derivs.items()
            if oname in d.values
        }
        block = Block("value", oname, "", value.shape, sources)
        tol = tolerance("value", oname, "")
        block.dtype = tol.dtype
        blocks.append(compare_block(block, tol))
    for quantity in ("vjp", "jacobian", "hessian"):
        if quantity not in point.checks:
            continue
        table = getattr(engine, quantity)
        for key in table:
            sources = {
                s: getattr(d, quantity)[key] for s, d in derivs.items() if key in getattr(d, quantity)
            }
            output, inp = _names((quantity, key))
            block = Block(quantity, output, inp, table[key].values.shape, sources)
            tol = tolerance(quantity, output, inp)
            block.dtype = tol.dtype
            outs = [output] if output else list(point.program.output_names)
            block.unused = quantity != "hessian" and all(inp in unused[o] for o in outs)
            deadline.checkpoint()  # a block can hold up to 4e6 entries (about a second's work)
            interval = intervals.get((quantity, key))
            block = compare_block(block, tol, interval)
            claimed = derivs.get("claimed")
            if claimed is not None and quantity != "hessian" and key in getattr(claimed, quantity):
                _judge_no_gradient_claim(block, claimed, tol)
            blocks.append(block)
    return blocks


def _judge_no_gradient_claim(block: Block, claimed: Derivatives, tol: Tolerance) -> None:
    """A claim of "no gradient" (None) is right exactly when the outputs do not depend on the
    input; zeros where they do (a gradient that happens to vanish) is still a gradient. A
    claimed VJP's None is recorded as ("", input), a claimed Jacobian's as (output, input)."""
    if (block.output or "", block.input) not in claimed.unused:
        return
    block.claimed_none = True
    status = block.status_map["claimed"]
    status[:] = STATUSES.index("pass") if block.unused else STATUSES.index("fail")
    summarize(block, tol)


def _failing_row(point: Point, blocks: list[Block]) -> list[np.ndarray] | None:
    """The cotangents (one per output) of the first Jacobian row where the engine fails: one-hot
    at that output entry. None where no Jacobian entry of the engine fails."""
    fail = STATUSES.index("fail")
    for b in blocks:
        status = b.status_map.get("engine")
        if b.quantity != "jacobian" or status is None or not (status == fail).any():
            continue
        names = list(point.program.output_names)
        out_shape = b.shape[: len(b.shape) - len(point.shape(b.input))]
        entry = np.unravel_index(int(np.argmax(status == fail)), b.shape)[: len(out_shape)]
        cotangents = [np.zeros_like(c, dtype=np.float64) for c in point.cotangents]
        cotangents[names.index(b.output)][entry] = 1.0
        return cotangents
    return None


def _engine_fails(blocks: list[Block]) -> bool:
    return any(b.failing.get("engine", 0) for b in blocks)


def _overall(points: list[PointReport]) -> Verdict:
    return max((p.verdict for p in points), key=lambda v: v.rank)


def _point_summary(
    verdict: Verdict,
    blocks: list[Block],
    kinks: list[Kink],
    culprits: list,
    numerical: list,
    masked: set[str],
) -> str:
    lines = []
    if any(b.quantity == "hessian" for b in blocks) and masked:
        # a mask's hook acts on first derivatives; torch's functional hessian ignores it too
        lines.append(f"the Hessian is without the gradient masks (of {', '.join(sorted(masked))})")
    for b in blocks:
        for src, n in b.failing.items():
            if n and src == "claimed" and b.claimed_none:
                lines.append(
                    f"{b.label}: claimed no gradient (None), but the input reaches the output "
                    "through differentiable operations: its gradient is a tensor (torch's .grad "
                    "too), zeros where nothing flows"
                )
            elif n:
                fail, status = STATUSES.index("fail"), b.status_map[src].reshape(b.shape)
                e = next((e for e in b.worst if status[e.index] == fail), None)
                at, joint = "", b.off_hull.get(src, 0)
                if e is not None and joint and e.admissible:  # sympy's value there is a convention
                    lo, hi = e.admissible
                    at = f" (worst at {e.index}: {src} {e.values.get(src)!r}, in [{lo:.6g}, {hi:.6g}])"
                elif e is not None and e.admissible:  # the range judged it, not the reference's
                    lo, hi = e.admissible  # value (JAX's nan at std's tie)
                    at = (
                        f" (worst at {e.index}: {src} {e.values.get(src)!r}, outside the one-sided "
                        f"derivatives' range [{lo:.6g}, {hi:.6g}])"
                    )
                elif e is not None:
                    at = (
                        f" (worst at {e.index}: {src} {e.values.get(src)!r} vs {e.reference} "
                        f"{e.values.get(e.reference)!r})"
                    )
                if b.masked_nonzero.get(src):
                    at += (
                        f"; {b.masked_nonzero[src]} of them masked: a gradient mask makes them "
                        "exactly 0, whatever the tolerance"
                    )
                if joint:
                    at += (
                        f"; {joint} of them each within its own range at the kink, but together "
                        "no admissible choice (the entries one kink moves take one side, or one "
                        "mix of its sides: tied shares add up to the whole)"
                    )
                what = "entry is wrong" if n == 1 else "entries are wrong"
                lines.append(f"{b.label}: {n} {src} {what}{at}")
        unverified = verdict_mod.unverified_entries(b)
        if unverified:
            lines.append(
                f"{b.label}: {unverified} {'entry' if unverified == 1 else 'entries'} unverified"
            )
        if b.unused and not b.failing.get("claimed"):
            lines.append(f"{b.label}: no gradient (unused)")
    if numerical:
        lines.append(f"{len(numerical)} numerical note(s): {numerical[0].why} at {numerical[0].block}")
    for kk in kinks:
        lines.append(kk.describe())
    for c in culprits:
        at = f" at {c.position}" if c.position else ""
        lines.append(f"blame: {c.node_name} ({c.op}){at}: {c.text!r}: {c.detail}")
    return "; ".join([verdict_mod.headline(verdict, blocks), *lines])


def _summary(
    verdict: Verdict,
    reports: list[PointReport],
    statuses: dict[str, ReferenceStatus],
    claims: bool,
    rtol: float | None,
    atol: float | None,
) -> str:
    given = reports[0]
    if given.verdict is verdict:
        parts = [f"{verdict.value}: {given.summary}"]
    else:  # decided by the extra points: "FAIL: every source agrees" read as a contradiction
        parts = [f"{verdict.value}: at the given point {given.verdict.value} ({given.summary})"]
    if len(reports) > 1:
        bad = [r for r in reports[1:] if not r.verdict.passed]
        # a claim holds for the given point only: "all pass" read as the claim checked at each
        of = " (the engine's derivatives; the claims are for the given point)" if claims else ""
        parts.append(
            f"{len(reports) - 1} extra point(s){of}: "
            + (
                f"{len(bad)} do not pass (points {[r.point for r in bad]}; point "
                f"{bad[0].point}: {bad[0].verdict.value}: {bad[0].summary})"
                if bad
                else "all pass"
            )
        )
    # tolerances the request chose decide what passes: said, so that a PASS under atol 1e300
    # reads as what it is
    given_tolerance = [f"{n} {v:g}" for n, v in (("rtol", rtol), ("atol", atol)) if v is not None]
    if given_tolerance:
        parts.append(f"judged with the tolerance given: {', '.join(given_tolerance)}")
    skipped = [f"{s.name} skipped ({s.note})" for s in statuses.values() if not s.ran]
    sampled = [f"{s.name}: {s.note}" for s in statuses.values() if s.ran and "over budget" in s.note]
    return "; ".join(parts + skipped + sampled)
