"""What one request does, as serialized messages in and out: decode, run the core, encode.

A worker process runs these (and so does the embedded client, in-process): the core's errors come
back as a google.rpc.Status, so nothing but the documented errors ever leaves, and the same code
answers over the network and in-process.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from crossgrad.v1 import verifier_pb2
from crossgrad.v1.tensors import to_tensor

from .. import deadline
from ..check import check
from ..graph import describe_graph
from ..language import LimitError
from ..limits import Limits
from . import convert

log = logging.getLogger("crossgrad.worker")


def new_request_id() -> str:
    """16 hex digits, random (os.urandom: a quarter of uuid4's cost, and as unlikely to repeat
    across replicas): what the server's log and a report's request_id name a request by."""
    return os.urandom(8).hex()


@dataclass(frozen=True)
class HandlerConfig:
    """What a worker needs to know of the server's options (picklable)."""

    limits: Limits
    default_seconds: float
    max_report_values: int


@dataclass
class Outcome:
    ok: bool
    payload: bytes  # a serialized response message, or a serialized google.rpc.Status
    verdict: str = ""
    timings: dict[str, float] | None = None
    cache_hits: dict[str, bool] | None = None
    out_of_memory: bool = False  # the worker ran out of memory: it is replaced
    # filled in by the pool: which worker ran it, how long it waited and ran
    worker: int = -1
    queue_seconds: float = 0.0
    worker_seconds: float = 0.0


def verify(
    payload: bytes,
    config: HandlerConfig,
    seconds: float | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    on_stage: Callable[[str], None] | None = None,
    request_id: str = "",
    stated: float | None = None,
    limit: str = deadline.BUDGET,
) -> Outcome:
    """A serialized VerifyRequest in, a serialized VerifyResponse (or error status) out, within
    `seconds` (default: the request's own budget; `stated`: the whole budget, and `limit`: what
    it is, for messages)."""
    try:
        msg = verifier_pb2.VerifyRequest.FromString(payload)
        request = convert.check_request(msg, config.limits, config.default_seconds)
        # no outer limit by default: check() keeps the request's own budget once it is valid
        # (a negative one is INVALID_ARGUMENT, as the server says, not a budget run out)
        with deadline.budget(
            math.inf if seconds is None else seconds, cancelled, on_stage, stated, limit
        ):
            report = check(request, config.limits)
        response = convert.report_message(report, config.max_report_values)
        response.id = msg.id
        return Outcome(
            True, response.SerializeToString(), report.verdict.value, report.timings, report.cache_hits
        )
    except Exception as exc:
        return _failed(exc, request_id)


def describe(
    payload: bytes,
    config: HandlerConfig,
    seconds: float | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    on_stage: Callable[[str], None] | None = None,
    request_id: str = "",
    stated: float | None = None,
    limit: str = deadline.BUDGET,
) -> Outcome:
    """A serialized DescribeGraphRequest in, a serialized DescribeGraphResponse out."""
    try:
        msg = verifier_pb2.DescribeGraphRequest.FromString(payload)
        request = convert.describe_request(msg, config.limits)
        with deadline.budget(seconds or config.default_seconds, cancelled, on_stage, stated, limit):
            dag, outputs = describe_graph(request, config.limits)
        response = verifier_pb2.DescribeGraphResponse(
            dag=convert.dag_message(dag),
            masked=[leaf.name for leaf in dag.leaves if leaf.masked],
        )
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(to_tensor(value))
        return Outcome(True, response.SerializeToString())
    except Exception as exc:
        return _failed(exc, request_id)


def _failed(exc: Exception, request_id: str) -> Outcome:
    # the worker's address-space cap (protobuf says so as a DecodeError: "Arena alloc failed")
    out_of_memory = isinstance(exc, MemoryError) or any(
        words in str(exc) for words in ("alloc failed", "out of memory in the")
    )
    if out_of_memory:  # a resource error, naming the stage where check() knows it
        said = str(exc) if isinstance(exc, LimitError) else "the check ran out of memory"
        exc = LimitError(f"{said} (the server's per-worker cap)", field="memory")
    status = convert.error_status(exc, request_id)
    if status.code == grpc.StatusCode.INTERNAL.value[0]:
        log.error({"event": "internal_error", "request_id": request_id}, exc_info=exc)
    # (a check that ran out of time or was cancelled: its stages so far)
    timings = exc.timings if isinstance(exc, (deadline.OutOfTime, deadline.Cancelled)) else None
    return Outcome(False, status.SerializeToString(), timings=timings, out_of_memory=out_of_memory)
