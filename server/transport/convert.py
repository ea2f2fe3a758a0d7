"""Converters between crossgrad.v1 messages and the core's dataclasses, and core errors as gRPC
statuses. Reading a request is where the transport validates it: every tensor is decoded with its
limits, every enum and field checked, and what is wrong is named by its field."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc
import numpy as np
from crossgrad.engine import OPS
from crossgrad.v1 import tensor_pb2, verifier_pb2
from crossgrad.v1.tensors import TensorError, from_tensor, tensor_fields
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..compare import Block, SourceValues
from ..deadline import Cancelled, OutOfTime
from ..ir import Position
from ..kinks import CONVENTIONS
from ..language import ATTRIBUTES_AS_OPERANDS, LimitError, RequestError, syntax
from ..limits import Limits
from ..model import (
    Budget,
    CheckRequest,
    Dag,
    InputSpec,
    PointReport,
    ReferenceStatus,
    Report,
    SamplePoints,
    Verdict,
)
from ..render import format_report

pb = verifier_pb2
DOMAIN = "crossgrad"

CHECKS = {pb.CHECK_VJP: "vjp", pb.CHECK_JACOBIAN: "jacobian", pb.CHECK_HESSIAN: "hessian"}
REFERENCES = {pb.REFERENCE_SYMPY: "sympy", pb.REFERENCE_JAX: "jax", pb.REFERENCE_FD: "fd"}
VERDICTS = {v: pb.Verdict.Value(f"VERDICT_{v.value}") for v in Verdict}
MAX_ID_CHARS = 1024


# ---------------------------------------------------------------- requests


def bad_utf8_field(descriptor: Any, data: bytes, depth: int = 0) -> str | None:
    """The field whose string is not UTF-8 (protobuf refuses the message without naming it), as
    "inputs[1].name"; None if every string decodes. Walks the wire format by the descriptor
    (_length_delimited: within the message's size); nesting is capped as protobuf's parser
    caps it."""
    if depth > 100:
        return None
    counts: dict[int, int] = {}
    try:
        for number, chunk in _length_delimited(data):
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            k = counts[number] = counts.get(number, -1) + 1
            name = f"{field.name}[{k}]" if field.is_repeated else field.name
            if field.type == field.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return name
            elif field.type == field.TYPE_MESSAGE:
                inner = bad_utf8_field(field.message_type, chunk, depth + 1)
                if inner is not None:
                    return f"{name}.{inner}"
    except (IndexError, ValueError):  # truncated, or groups (not in crossgrad.v1)
        return None
    return None


def string_at(data: bytes, path: tuple[int, ...]) -> str | None:
    """The string at a path of field numbers (messages down to a string field), read off the
    wire format where protobuf refuses the whole message for another field's bad UTF-8: a
    stream's request is answered by its id. None if it is not there, or not UTF-8 itself."""
    chunk = data
    try:
        for number in path:
            # the last occurrence: a scalar's wins (and a message's fields merge, the last winning)
            found = [c for n, c in _length_delimited(chunk) if n == number]
            if not found:
                return None
            chunk = found[-1]
        return chunk.decode("utf-8")
    except (IndexError, ValueError):  # truncated, groups, or not UTF-8
        return None


def _length_delimited(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of each length-delimited field (strings, bytes, messages) of a
    message's wire format; other fields skipped. Each step consumes bytes: it ends within the
    message's size. IndexError: truncated; ValueError: a group."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            pos = _varint(data, pos)[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise IndexError("truncated")
            yield number, data[pos : pos + size]
            pos += size
        else:
            raise ValueError("a group")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80 or shift > 63:
            return value, pos


def _array(
    t: tensor_pb2.Tensor, field: str, limits: Limits, default_dtype: str = "float64"
) -> np.ndarray:
    try:
        return from_tensor(t, default_dtype, limits.max_input_elements)
    except TensorError as exc:
        error = LimitError if exc.too_large else RequestError
        raise error(f"{field}: {exc}", field=field) from None


def _enums(values: Iterable[int], table: Mapping[int, str], field: str, enum: Any) -> tuple[str, ...]:
    out = []
    for v in values:
        if v not in table:
            raise RequestError(
                f"{field}: {enum.Name(v) if v in enum.values() else v} is not one of "
                f"{', '.join(enum.Name(k) for k in table)}",
                field=field,
            )
        out.append(table[v])
    if len(set(out)) != len(out):
        raise RequestError(f"{field} names the same value twice", field=field)
    return tuple(out)


def _claim(msg: Any, tensor: Any, name: str, field: str, limits: Limits) -> np.ndarray | None:
    """A claimed array, or None for a claim of "no gradient"."""
    if msg.none:
        if msg.HasField(name):
            raise RequestError(f"{field}: give a {name} or none, not both", field=field)
        return None
    if not msg.HasField(name):
        raise RequestError(f"{field}: give a {name}, or none: true for no gradient", field=field)
    return _array(tensor, field, limits)


def _unique(names: Iterable[Any], field: str) -> None:
    seen: set[Any] = set()
    for name in names:
        if name in seen:
            raise RequestError(f"{field}: {name!r} is given twice", field=field)
        seen.add(name)


def _inputs(inputs: Iterable[verifier_pb2.Input], limits: Limits) -> list[InputSpec]:
    specs = []
    for k, i in enumerate(inputs):
        field = f"inputs[{k}]" if not i.name else f"inputs[{i.name}]"
        if not i.HasField("value"):
            raise RequestError(f"{field}: the input has no value", field=field)
        value = _array(i.value, f"{field}.value", limits)
        mask = _array(i.mask, f"{field}.mask", limits) if i.HasField("mask") else None
        requires_grad = i.requires_grad if i.HasField("requires_grad") else True
        if i.HasField("requires_grad") and requires_grad and value.dtype.kind not in "fc":
            # torch: "Only Tensors of floating point and complex dtype can require gradients"
            raise RequestError(
                f"{field}.requires_grad: input {i.name!r} is {value.dtype.name} and cannot "
                "require grad (only floating-point inputs have gradients); leave the field out",
                field=f"{field}.requires_grad",
            )
        specs.append(InputSpec(i.name, value, value.dtype.name, requires_grad, mask))
    _unique((s.name for s in specs), "inputs")
    return specs


def _budget(b: verifier_pb2.Budget, default_seconds: float) -> Budget:
    """The fields given, over the core's defaults; the total time defaults to the server's."""
    given = {f.name: v for f, v in b.ListFields()}
    return dataclasses.replace(Budget(seconds=default_seconds), **given)


def _samples(s: verifier_pb2.SamplePoints) -> SamplePoints:
    distribution = {
        pb.DISTRIBUTION_UNSPECIFIED: "normal",
        pb.DISTRIBUTION_NORMAL: "normal",
        pb.DISTRIBUTION_UNIFORM: "uniform",
    }.get(s.distribution)
    if distribution is None:
        raise RequestError(
            f"samples.distribution: unknown value {s.distribution}", field="samples.distribution"
        )
    given = s.HasField("low") or s.HasField("high")
    if s.distribution == pb.DISTRIBUTION_UNSPECIFIED and given and not s.HasField("scale"):
        distribution = "uniform"  # low and high say which (they were refused as not normal's)
    other = ("scale",) if distribution == "uniform" else ("low", "high")
    for name in other:  # it would be ignored: the other distribution's parameter
        if s.HasField(name):
            raise RequestError(
                f"samples.{name} is a parameter of the "
                f"{'normal' if name == 'scale' else 'uniform'} distribution, not the "
                f"{distribution} one",
                field=f"samples.{name}",
            )
    default = SamplePoints()
    return SamplePoints(
        count=s.count,
        seed=s.seed,
        distribution=distribution,
        low=s.low if s.HasField("low") else default.low,
        high=s.high if s.HasField("high") else default.high,
        scale=s.scale if s.HasField("scale") else default.scale,
    )


def check_request(
    msg: verifier_pb2.VerifyRequest, limits: Limits, default_seconds: float
) -> CheckRequest:
    """The core's request, every field decoded and checked (RequestError / LimitError name it)."""
    if len(msg.id) > MAX_ID_CHARS:  # it is echoed in the answer and written to the log
        raise RequestError(f"id: {len(msg.id)} characters; the limit is {MAX_ID_CHARS}", field="id")
    inputs = _inputs(msg.inputs, limits)
    cotangents = {n: _array(t, f"cotangents[{n}]", limits) for n, t in msg.cotangents.items()}
    _unique((c.input for c in msg.claimed_vjp), "claimed_vjp")
    claimed_vjp = {
        c.input: _claim(c, c.gradient, "gradient", f"claimed_vjp[{c.input}]", limits)
        for c in msg.claimed_vjp
    }
    _unique(((c.output, c.input) for c in msg.claimed_jacobian), "claimed_jacobian")
    claimed_jacobian = {
        (c.output, c.input): _claim(
            c, c.jacobian, "jacobian", f"claimed_jacobian[{c.output}/{c.input}]", limits
        )
        for c in msg.claimed_jacobian
    }
    checks = _enums(msg.checks, CHECKS, "checks", pb.Check) or ("vjp",)
    references = _enums(msg.references, REFERENCES, "references", pb.Reference) or tuple(
        REFERENCES.values()
    )
    _unique(msg.outputs, "outputs")
    return CheckRequest(
        program=msg.program,
        inputs=inputs,
        outputs=list(msg.outputs) or None,
        cotangents=cotangents,
        checks=checks,
        references=references,
        rtol=msg.rtol if msg.HasField("rtol") else None,
        atol=msg.atol if msg.HasField("atol") else None,
        samples=_samples(msg.samples) if msg.HasField("samples") else None,
        claimed_vjp=claimed_vjp,
        claimed_jacobian=claimed_jacobian,
        budget=_budget(msg.budget, default_seconds),
        seed=msg.seed,
        blame=msg.blame if msg.HasField("blame") else True,
    )


def describe_request(msg: verifier_pb2.DescribeGraphRequest, limits: Limits) -> CheckRequest:
    _unique(msg.outputs, "outputs")
    return CheckRequest(
        program=msg.program, inputs=_inputs(msg.inputs, limits), outputs=list(msg.outputs) or None
    )


# ---------------------------------------------------------------- reports


def _position(pos: Position | None) -> tensor_pb2.SourcePosition | None:
    if pos is None:
        return None
    return tensor_pb2.SourcePosition(
        line=pos.line, column=pos.col, end_line=pos.end_line, end_column=pos.end_col
    )


def _values(source: SourceValues) -> dict[str, Any]:
    values = np.asarray(source.values, np.float64)
    if source.checked is not None:
        values = np.where(source.checked, values, np.nan)
    return tensor_fields(values)


# A report's parts are built as dicts of fields and the response from them in one constructor
# call, which protobuf fills in C: building each part as a message and passing it to its parent
# copies it once per level, and adding parts one by one costs Python calls (the worked example's
# whole report: 145 us as messages, 106 us added one by one, 100 us as dicts).


def _block(block: Block, with_values: bool) -> dict[str, Any]:
    return dict(
        quantity=block.quantity,
        output=block.output or "",
        input=block.input,
        shape=block.shape,
        status=block.status,
        label=block.label,
        pairs=[
            dict(
                a=p.a,
                b=p.b,
                max_abs=p.max_abs,
                max_rel=p.max_rel,
                disagreeing=p.disagreeing,
                compared=p.compared,
            )
            for p in block.pairs
        ],
        worst=[
            dict(
                index=e.index,
                values=e.values,
                agree=e.agree,
                disagree=e.disagree,
                reference=e.reference,
                abs_error=e.abs_error,
                rel_error=e.rel_error,
                status=e.status,
                **(
                    {"admissible_low": e.admissible[0], "admissible_high": e.admissible[1]}
                    if e.admissible
                    else {}
                ),
            )
            for e in block.worst
        ],
        counts=block.counts,
        judged_by=block.judged_by,
        unsettled=block.unsettled,
        unused=block.unused,
        dtype=block.dtype,
        failing=block.failing,
        references_disagree=block.references_disagree,
        values_omitted=not (with_values and block.sources),
        values={n: _values(s) for n, s in block.sources.items()} if with_values else {},
    )


def _point(point: PointReport, with_values: bool) -> dict[str, Any]:
    return dict(
        point=point.point,
        verdict=VERDICTS[point.verdict],
        summary=point.summary,
        blocks=[_block(b, with_values) for b in point.blocks],
        conventions=[
            dict(
                op=c.op,
                position=_position(c.position),
                text=c.text,
                conventions=c.conventions,
                admissible=c.admissible,
            )
            for c in point.conventions
        ],
        blame=[
            dict(
                node_name=b.node_name,
                op=b.op,
                ir_node=b.ir_node,
                position=_position(b.position),
                text=b.text,
                max_abs_error=b.max_abs_error,
                detail=b.detail,
            )
            for b in point.blame
        ],
        numerical=[dataclasses.asdict(n) for n in point.numerical],
        reference_notes=[dataclasses.asdict(n) for n in point.reference_notes],
        # an extra point's drawn inputs, where it kept them
        inputs={n: tensor_fields(v) for n, v in (point.inputs or {}).items()}
        if point.point > 0 and with_values
        else {},
    )


def _reference(status: ReferenceStatus, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    return dict(
        name=status.name,
        ran=status.ran,
        note=status.note,
        sampled=[
            dict(
                input=name,
                flat_index=[int(np.ravel_multi_index(i, shapes[name])) if i else 0 for i in entries],
            )
            for name, entries in status.sampled_entries.items()
            if name in shapes
        ],
        symbolic=status.symbolic,
    )


# A program's DAG is one object for as long as the core keeps it (graph.dag_of): its message is
# built once (30 us of the worked example's 170 us report, right after a check)
_dag_messages: weakref.WeakKeyDictionary[Dag, verifier_pb2.Dag] = weakref.WeakKeyDictionary()


def dag_message(dag: Dag) -> verifier_pb2.Dag:
    """The DAG's message (shared: copied by the messages it is put in, never changed)."""
    message = _dag_messages.get(dag)
    if message is None:
        message = _dag_messages[dag] = _new_dag_message(dag)
    return message


def _new_dag_message(dag: Dag) -> verifier_pb2.Dag:
    return pb.Dag(
        nodes=[
            pb.DagNode(
                id=n.id, name=n.name, op=n.op, position=_position(n.position), text=n.text, next=n.next
            )
            for n in dag.nodes
        ],
        leaves=[
            pb.DagLeaf(
                id=leaf.id,
                name=leaf.name,
                shape=leaf.shape,
                requires_grad=leaf.requires_grad,
                masked=leaf.masked,
            )
            for leaf in dag.leaves
        ],
        frozen=dag.frozen,
        dot=dag.dot,
    )


def _value_entries(points: list[PointReport]) -> int:
    return sum(math.prod(b.shape) * len(b.sources) for p in points[:1] for b in p.blocks) + sum(
        sum(np.size(v) for v in (p.inputs or {}).values()) for p in points[1:]
    )


def report_message(report: Report, max_values: int) -> verifier_pb2.VerifyResponse:
    """The whole report; source values while they stay within max_values entries."""
    with_values = _value_entries(report.points) <= max_values
    shapes = {n: np.shape(v) for n, v in (report.points[0].inputs if report.points else {}).items()}
    return pb.VerifyResponse(
        verdict=VERDICTS[report.verdict],
        summary=report.summary,
        text=format_report(report),
        points=[_point(p, with_values) for p in report.points],
        references=[_reference(s, shapes) for s in report.references.values()],
        dag=dag_message(report.dag),
        timings=report.timings,
        error=report.error,
        cache_hits=report.cache_hits,
        outputs={n: tensor_fields(v) for n, v in report.outputs.items()},
    )


# ---------------------------------------------------------------- the op table


def _attr_text(value: Any) -> str:
    return repr(value) if not isinstance(value, tuple) else "(" + ", ".join(map(repr, value)) + ")"


# Attribute values that change an op's node name (torch names by them): tried with every rank
# of the operands from 1 to 3, so that ListOps names every node an op can record.
_NAMING_VALUES: dict[str, tuple[Any, ...]] = {
    "axis": (None, 0, (0,)),
    "sections": (1, (1, 2)),
    "index": (0, slice(1, None), (slice(None),), (slice(1, None), 0), None, np.array([0])),
}


def _backward_names(spec: Any) -> str:
    """The backward node's name; where it depends on attributes or ranks, the names it takes."""
    if isinstance(spec.node_name, str):
        return spec.node_name
    names: list[str] = []
    varied = [a.name for a in spec.attrs if a.name in _NAMING_VALUES]
    for values in itertools.product(*(_NAMING_VALUES[n] for n in varied)):
        attrs = {**spec.attr_defaults(), **dict(zip(varied, values))}
        if isinstance(attrs.get("index"), slice):  # x[1:], a lone slice (not x[1:,])
            attrs = {**attrs, "index": (attrs["index"],), "lone_slice": True}
        elif "index" in attrs and not isinstance(attrs["index"], tuple):
            attrs["index"] = (attrs["index"],)
        for ranks in itertools.product((1, 2, 3), repeat=spec.arity or 2):
            try:
                name = spec.node_name_for(attrs, tuple((3,) * r for r in ranks))
            except Exception:  # a combination the op does not take
                continue
            if name and name not in names:
                names.append(name)
    return " or ".join(names)


def ops_message() -> verifier_pb2.ListOpsResponse:
    ops = []
    for name, spec in OPS.items():
        if spec.internal:
            continue
        ops.append(
            pb.Op(
                name=name,
                operands=list(spec.operands),
                variadic=spec.arity is None,
                attributes=[
                    pb.OpAttribute(
                        name=a.name, kind=a.kind, default=_attr_text(a.default), required=a.required
                    )
                    for a in spec.attrs
                    if name not in ATTRIBUTES_AS_OPERANDS
                ],
                backward_node=_backward_names(spec),
                differentiable=spec.differentiable,
                nonsmooth=spec.nonsmooth or "",
                conventions=CONVENTIONS.get(name, {}),
                syntax=syntax(name),
            )
        )
    return pb.ListOpsResponse(ops=ops)


# ---------------------------------------------------------------- errors


class TransportError(Exception):
    """An error the transport itself raises (worker lost, server busy or draining, memory)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after


def unavailable(message: str, reason: str, metadata: Mapping[str, Any] | None = None) -> TransportError:
    """UNAVAILABLE that is safe to retry (the request was not checked): a lost worker, a busy or
    draining server."""
    return TransportError(grpc.StatusCode.UNAVAILABLE, message, reason, metadata, retry_after=1.0)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _error_info(reason: str, metadata: Mapping[str, Any]) -> any_pb2.Any:
    return _pack(
        error_details_pb2.ErrorInfo(
            reason=reason, domain=DOMAIN, metadata={k: str(v) for k, v in metadata.items()}
        )
    )


# An error's words travel in the trailers three times (the message, percent-encoded, and in the
# base64 details as the message and the field violation): a gRPC client refuses trailers past
# 8 KiB, answering RESOURCE_EXHAUSTED in the status's place (an undefined name in a program of
# 200 statements listed them all). So each stays within this many UTF-8 bytes.
MAX_ERROR_BYTES = 1000


def cut(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    kept = data[: limit - 40].decode("utf-8", "ignore")
    return f"{kept}... ({len(data) - len(kept.encode())} more bytes)"


def _status(code: grpc.StatusCode, message: str, details: list[any_pb2.Any]) -> status_pb2.Status:
    return status_pb2.Status(code=code.value[0], message=cut(message), details=details)


def error_status(exc: BaseException, request_id: str = "") -> status_pb2.Status:
    """The google.rpc.Status a client gets for an exception out of a check. Its ErrorInfo
    carries the request id, which finds the request's line in the server's log."""

    def _info(reason: str, metadata: Mapping[str, Any]) -> any_pb2.Any:
        return _error_info(reason, {**metadata, "request_id": request_id} if request_id else metadata)

    if isinstance(exc, RequestError):
        code = (
            grpc.StatusCode.RESOURCE_EXHAUSTED
            if isinstance(exc, LimitError)
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        reason = (
            "LIMIT_EXCEEDED"
            if isinstance(exc, LimitError)
            else ("INVALID_PROGRAM" if exc.field == "program" else "INVALID_FIELD")
        )
        field = cut(exc.field, 200)
        metadata: dict[str, Any] = {"field": field}
        if exc.pos is not None:
            metadata.update(
                line=exc.pos.line,
                column=exc.pos.col,
                end_line=exc.pos.end_line,
                end_column=exc.pos.end_col,
            )
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=cut(str(exc)), reason=reason
        )
        details = [
            _pack(error_details_pb2.BadRequest(field_violations=[violation])),
            _info(reason, metadata),
        ]
        return _status(code, str(exc), details)
    if isinstance(exc, OutOfTime):
        info = _info("BUDGET_EXHAUSTED", {"stage": exc.stage, "seconds": exc.seconds})
        return _status(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc), [info])
    if isinstance(exc, Cancelled):
        return _status(grpc.StatusCode.CANCELLED, str(exc), [_info("CANCELLED", {"stage": exc.stage})])
    if isinstance(exc, TransportError):
        details = [_info(exc.reason, exc.metadata)]
        if exc.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(datetime.timedelta(seconds=exc.retry_after))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return _status(exc.code, exc.message, details)
    message = f"internal error (request id {request_id}): see the server's log"
    return _status(grpc.StatusCode.INTERNAL, message, [_info("INTERNAL", {})])


async def end_with(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    """End the call with this status, the details in the trailers (grpcio-status's format).

    A status a client retries (UNAVAILABLE, CANCELLED: its retry policy, and nginx's
    grpc_next_upstream) goes as gRPC's abort(), a trailers-only answer: one with headers before
    it commits the call, which is then not retried. Any other is set for when the handler
    returns: the AbortError abort() raises forms a reference cycle with gRPC's handler frames,
    which hold the request's bytes until the cyclic GC runs (twenty refused 32 MB requests left
    the server at 1.5 GB, idle)."""
    grpc_status = rpc_status.to_status(status)
    if grpc_status.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)
    context.set_code(grpc_status.code)
    context.set_details(grpc_status.details)
    context.set_trailing_metadata(grpc_status.trailing_metadata)
