"""A check, end to end: parse, run the engine and the references, compare, explain.

check(request) -> Report runs in-process (no network); the gRPC servicer is a thin layer on top.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from crossgrad import engine as cg

from . import blame as blame_mod
from .backends import engine as engine_backend
from .backends import finite_diff, jax_backend, sympy_backend
from .compare import Block, SourceValues, Tolerance, compare_block
from .derivatives import Derivatives, Point
from .ir import Program, Ref
from .kinks import Kink, find_kinks
from .language import InputDecl, RequestError, parse
from .limits import DEFAULT_LIMITS, Limits
from .model import (
    Blame,
    CheckRequest,
    ConventionNote,
    Dag,
    DagLeaf,
    DagNode,
    PointReport,
    ReferenceStatus,
    Report,
    Verdict,
)

QUANTITIES = ("vjp", "jacobian", "hessian")
REFERENCES = ("sympy", "jax", "fd")


class _Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start


def _validate(request: CheckRequest, limits: Limits) -> tuple[dict[str, np.ndarray], list[InputDecl]]:
    unknown = set(request.checks) - set(QUANTITIES)
    if unknown:
        raise RequestError(
            f"unknown check(s) {sorted(unknown)}; use {', '.join(QUANTITIES)}", field="checks"
        )
    unknown = set(request.references) - set(REFERENCES)
    if unknown:
        raise RequestError(
            f"unknown reference(s) {sorted(unknown)}; use {', '.join(REFERENCES)}", field="references"
        )
    values, decls = {}, []
    for spec in request.inputs:
        arr = np.asarray(spec.values)
        if arr.size > limits.max_input_elements:
            raise RequestError(
                f"input {spec.name!r} has {arr.size} elements; the limit is {limits.max_input_elements}",
                field=f"inputs[{spec.name}]",
            )
        try:
            arr = arr.astype(spec.dtype)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"input {spec.name!r}: {exc}", field=f"inputs[{spec.name}]") from None
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise RequestError(
                f"input {spec.name!r} has NaN or infinite values", field=f"inputs[{spec.name}]"
            )
        if spec.mask is not None and np.shape(spec.mask) != arr.shape:
            raise RequestError(
                f"the mask of {spec.name!r} has shape {np.shape(spec.mask)}; the "
                f"input has shape {arr.shape}",
                field=f"inputs[{spec.name}].mask",
            )
        values[spec.name] = arr
        decls.append(InputDecl(spec.name, arr.shape, spec.dtype))
    if request.samples is not None and request.samples.count > limits.max_sample_points:
        raise RequestError(f"at most {limits.max_sample_points} extra sample points", field="samples")
    return values, decls


def _cotangents(request: CheckRequest, program: Program) -> list[np.ndarray]:
    cots = []
    for name, nid in program.outputs:
        node = program.node(nid)
        given = request.cotangents.get(name)
        if given is None:
            if math.prod(node.shape) != 1 and "vjp" in request.checks:
                raise RequestError(
                    f"output {name!r} has shape {node.shape}: give a cotangent (the gradient "
                    "flowing in from a later layer), as backward(gradient=...) needs",
                    field=f"cotangents[{name}]",
                )
            given = np.ones(node.shape)
        arr = np.asarray(given, dtype=np.float64)
        if arr.shape != node.shape:
            raise RequestError(
                f"the cotangent of {name!r} has shape {arr.shape}; the output has shape {node.shape}",
                field=f"cotangents[{name}]",
            )
        cots.append(arr)
    return cots


def check(request: CheckRequest, limits: Limits = DEFAULT_LIMITS) -> Report:
    """Differentiate the request's program with the engine and every reference; compare."""
    timer = _Timer()
    with timer.stage("parse"):
        values, decls = _validate(request, limits)
        program = parse(request.program, decls, request.outputs, limits)
        cotangents = _cotangents(request, program)
    specs = {s.name: s for s in request.inputs}
    wrt = [n for n in program.input_names if specs[n].requires_grad and values[n].dtype.kind == "f"]
    masks = {n: np.asarray(specs[n].mask, dtype=np.float64) for n in wrt if specs[n].mask is not None}
    if "hessian" in request.checks and (
        len(program.outputs) != 1 or math.prod(program.node(program.outputs[0][1]).shape) != 1
    ):
        raise RequestError("the Hessian needs a single scalar output", field="checks")

    statuses: dict[str, ReferenceStatus] = {}
    reports, dag, outputs = [], Dag(), {}
    for k, point_values in enumerate([values, *_extra_points(request, values, wrt)]):
        point = Point(program, wrt, point_values, cotangents, masks, request.checks)
        report, run, outs = _check_point(k, request, point, timer, statuses)
        if k == 0:
            dag, outputs = _dag(run, masks), outs
        reports.append(report)
    verdict = _overall(reports)
    summary = _summary(verdict, reports, statuses)
    return Report(verdict, summary, reports, statuses, dag, timer.stages, outputs)


def _extra_points(
    request: CheckRequest, values: dict[str, np.ndarray], wrt: list[str]
) -> list[dict[str, np.ndarray]]:
    s = request.samples
    if s is None or s.count <= 0:
        return []
    rng = np.random.default_rng(s.seed)
    points = []
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
        points.append(p)
    return points


def _check_point(
    k: int,
    request: CheckRequest,
    point: Point,
    timer: _Timer,
    statuses: dict[str, ReferenceStatus],
) -> tuple[PointReport, engine_backend.EngineRun, dict[str, np.ndarray]]:
    program, values, wrt = point.program, point.values, point.wrt
    dtype = "float32" if wrt and all(values[n].dtype == np.float32 for n in wrt) else "float64"
    tol = Tolerance.for_dtype(dtype, request.rtol, request.atol)
    with timer.stage("engine"):
        run = engine_backend.run(
            program, values, {n: n in wrt for n in program.input_names}, point.masks
        )
        derivs = {"engine": engine_backend.derivatives(run, point)}
    if k == 0 and (request.claimed_vjp or request.claimed_jacobian):
        derivs["claimed"] = _claimed(request, program, values)
    for ref in request.references:
        with timer.stage(ref):
            try:
                derivs[ref], status = _reference(ref, point, request, k)
            except sympy_backend.SympyUnavailable as exc:
                status = ReferenceStatus(ref, False, str(exc))
            if k == 0 or not status.ran:
                statuses[ref] = status
    with timer.stage("compare"):
        blocks = _blocks(derivs, request.checks, tol)
        operand_values = {
            n.id: [_data(run.values[a.id]) if isinstance(a, Ref) else a for a in n.args]
            for n in program.nodes
            if n.op not in ("input", "take")
        }
        kinks = find_kinks(list(program.nodes), operand_values)
    verdict = _point_verdict(blocks, kinks)
    culprits: list[Blame] = []
    if verdict is Verdict.FAIL and request.blame and _engine_fails(blocks):
        with timer.stage("blame"):
            culprits = blame_mod.find_culprits(
                list(program.nodes), run.values, {kk.node.id for kk in kinks}, tol, request.seed
            )
    conventions = [
        ConventionNote(kk.node.op, str(kk.node.pos or ""), kk.node.text, kk.conventions) for kk in kinks
    ]
    summary = _point_summary(verdict, blocks, kinks, culprits)
    report = PointReport(k, values, blocks, conventions, culprits, verdict, summary)
    return report, run, derivs["engine"].values


def _data(x: Any) -> Any:
    return (
        x.data if isinstance(x, cg.Tensor) else tuple(_data(v) for v in x) if isinstance(x, tuple) else x
    )


def _reference(
    ref: str, point: Point, request: CheckRequest, k: int
) -> tuple[Derivatives, ReferenceStatus]:
    if ref == "jax":
        return jax_backend.derivatives(point), ReferenceStatus("jax", True)
    module = sympy_backend if ref == "sympy" else finite_diff
    return module.derivatives(point, request.budget, request.seed + k)


def _claimed(request: CheckRequest, program: Program, values: dict[str, np.ndarray]) -> Derivatives:
    d = Derivatives()
    for name, g in request.claimed_vjp.items():
        if name not in values:
            raise RequestError(f"claimed gradient for unknown input {name!r}", field="claimed")
        arr = np.asarray(g, dtype=np.float64)
        if arr.shape != values[name].shape:
            raise RequestError(
                f"the claimed gradient of {name!r} has shape {arr.shape}; the "
                f"input has shape {values[name].shape}",
                field="claimed",
            )
        d.vjp[name] = SourceValues(arr)
    outs = dict(program.outputs)
    for (oname, name), j in request.claimed_jacobian.items():
        if oname not in outs or name not in values:
            raise RequestError(
                f"claimed Jacobian for unknown pair ({oname!r}, {name!r})", field="claimed"
            )
        shape = program.node(outs[oname]).shape + values[name].shape
        arr = np.asarray(j, dtype=np.float64)
        if arr.shape != shape:
            raise RequestError(
                f"the claimed Jacobian d {oname}/d {name} has shape {arr.shape}; expected {shape}",
                field="claimed",
            )
        d.jacobian[(oname, name)] = SourceValues(arr)
    return d


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
            blocks.append(compare_block(Block(quantity, output, inp, shape, sources), tol))
    return blocks


def _engine_fails(blocks: list[Block]) -> bool:
    return any(b.failing.get("engine", 0) for b in blocks)


def _point_verdict(blocks: list[Block], kinks: list[Kink]) -> Verdict:
    failing = any(sum(b.failing.values()) for b in blocks)
    disagree = any(b.references_disagree for b in blocks)
    for b in blocks:
        if sum(b.failing.values()):
            b.status = "convention" if kinks else "fail"
        elif b.references_disagree:
            b.status = "convention" if kinks else "references disagree"
    if not failing and not disagree:
        return Verdict.PASS
    if kinks:
        return Verdict.PASS_WITH_CONVENTION_DIFFERENCES
    return Verdict.FAIL if failing else Verdict.PASS


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
        lines.append(f"blame: {c.node_name} ({c.op}) at {c.position}: {c.text!r}: {c.detail}")
    head = {
        Verdict.PASS: "every source agrees",
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


def _dag(run: engine_backend.EngineRun, masks: dict[str, np.ndarray]) -> Dag:
    dag = Dag()
    ids: dict[Any, int] = {}
    leaf_names = {id(t): n for n, t in run.leaves.items()}
    stack = [o.grad_fn for o in run.outputs if o.grad_fn is not None]
    order = []
    while stack and len(ids) < 100_000:
        node = stack.pop()
        if node in ids:
            continue
        ids[node] = len(ids)
        order.append(node)
        stack.extend(c for c, _ in node.next_functions if c is not None and c not in ids)
    for node in order:
        if isinstance(node, cg.AccumulateGrad):
            name = leaf_names.get(id(node.variable), "leaf")
            dag.leaves.append(DagLeaf(ids[node], name, tuple(node.variable.shape), True, name in masks))
            continue
        meta = node.metadata
        dag.nodes.append(
            DagNode(
                ids[node],
                node.name(),
                node.op,
                meta.get("source", ""),
                meta.get("text", ""),
                [ids[c] for c, _ in node.next_functions if c is not None],
            )
        )
    dag.frozen = [n for n, t in run.leaves.items() if not t.requires_grad]
    dag.dot = cg.to_dot(run.outputs, run.leaves)
    return dag
