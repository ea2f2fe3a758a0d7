"""The VerifierService servicer: a thin translation. Each call is checked where its message is
converted (in this process, so a bad request never reaches a worker), handed to the worker pool,
and answered with the worker's serialized report. It holds no verification logic."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import grpc
from crossgrad.v1 import verifier_pb2, verifier_pb2_grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from ..caches import LRU
from ..deadline import BUDGET, CALL_DEADLINE, OutOfTime
from ..graph import prepare_description
from ..validate import prepare
from . import convert
from .handlers import HandlerConfig, Outcome, new_request_id
from .metrics import Metrics
from .workers import WorkerPool

pb = verifier_pb2
SERVICE = verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name
log = logging.getLogger("crossgrad.server")

# Seconds kept back from the caller's deadline: the worker's check stops itself this much before
# it (at its next checkpoint), and the server answers DEADLINE_EXCEEDED with the stage
# ANSWER_MARGIN before it if the check has not stopped by then, so the answer reaches the caller
# (else gRPC's own answer at the deadline says nothing of where the time went). Both at most
# a fraction of a short deadline (40 % and 20 %).
DEADLINE_MARGIN = 0.05
ANSWER_MARGIN = 0.02
# Requests of up to VALIDATED_MAX_BYTES that passed validation are remembered by a digest of their
# bytes: the same bytes validate the same way on this server (its limits are fixed), so a request
# sent again (a suite run again, a client polling) skips the server's decoding, parsing and cost
# estimate (0.07 ms warm, about 0.2 ms in a server that idled while its worker ran: measured on the
# worked example). The worker decodes it as always. Larger requests are not hashed: validating
# them costs little beside their check.
VALIDATED_CAPACITY = 4096
VALIDATE_INLINE_BYTES = 4096  # larger requests are validated on a thread (about 250 statements)
VALIDATED_MAX_BYTES = 64 << 10


class StatusError(Exception):
    """An error status computed elsewhere (in a worker), to be returned as it is."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


def _status(exc: BaseException, request_id: str) -> status_pb2.Status:
    if isinstance(exc, StatusError):
        return exc.status
    if not isinstance(exc, (convert.RequestError, OutOfTime, convert.TransportError)):
        log.exception({"event": "internal_error", "request_id": request_id}, exc_info=exc)
    return convert.error_status(exc, request_id)


def _digest(payload: bytes) -> bytes | None:
    if len(payload) > VALIDATED_MAX_BYTES:
        return None
    return hashlib.blake2b(payload, digest_size=16).digest()


class Validated(NamedTuple):
    """What the server keeps of a request that passed validation (see VALIDATED_CAPACITY)."""

    affinity: int  # which worker's caches suit it
    seconds: float  # its budget
    id: str  # for the log line
    program_hash: str


_UNREAD = Validated(0, 0.0, "", "")  # a request not (yet) parsed, for the log line

# A request read from a stream while the server drains: not started, safe to send again.
_SHUTTING_DOWN = convert.error_status(
    convert.unavailable("the server is shutting down; send the request again", "SHUTTING_DOWN")
)


_DRAINED = object()  # in a stream's answers: the server is shutting down, end the stream


def _duplicate(request_id: str) -> status_pb2.Status:
    return convert.error_status(
        convert.RequestError(
            f"id {request_id!r} is already in use by a request still running on this stream: its "
            "answers could not be told apart (give each request its own id, not empty)",
            field="id",
        )
    )


def _parse(kind: Any, data: bytes) -> Any:
    """A request message from the bytes the server received (see register)."""
    try:
        return kind.FromString(data)
    except DecodeError as exc:
        where = convert.bad_utf8_field(kind.DESCRIPTOR, data)
        if where is not None:
            raise convert.RequestError(f"{where}: the string is not UTF-8", field=where) from None
        raise convert.RequestError(
            f"the request is not a valid {kind.DESCRIPTOR.full_name} message: {exc}", field="request"
        ) from None


def _program_hash(program: str) -> str:
    return hashlib.sha256(program.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# Requests over this size are parsed and serialized on a thread: 60 MB took the event loop
# (health answers with it) for tenths of a second.
PARSE_INLINE_BYTES = 1 << 20


class HeldBytes:
    """Request bytes the server holds (read, waiting for a worker or at one), and a stream's
    answers its client has not read yet, within a budget: 32 requests of 61 MB on one stream
    took the server to 4.6 GB, and streams whose clients read nothing held their 7 MB reports
    (0.5 GB for three). Past it a unary call is turned away (UNAVAILABLE, BUSY: retry-safe) and
    a stream reads no further (HTTP/2's flow control holds its client back) until some is given
    back. One request alone may hold it all."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._given_back: asyncio.Event | None = None

    def try_take(self, size: int) -> int | None:
        """The bytes taken (size, at most the capacity), or None past the budget."""
        size = min(size, self.capacity)
        if self.held and self.held + size > self.capacity:
            return None
        self.held += size
        return size

    def hold(self, size: int) -> int:
        """Take the bytes whatever the budget (an answer already computed)."""
        self.held += size
        return size

    async def take(self, size: int) -> int:
        """Wait until the bytes fit, then take them (as try_take)."""
        while (taken := self.try_take(size)) is None:
            if self._given_back is None:
                self._given_back = asyncio.Event()
            await self._given_back.wait()
        return taken

    def give(self, size: int) -> None:
        self.held -= size
        if self._given_back is not None:
            self._given_back.set()
            self._given_back = None


class VerifierServicer(verifier_pb2_grpc.VerifierServiceServicer):
    def __init__(
        self,
        pool: WorkerPool,
        config: HandlerConfig,
        metrics: Metrics,
        max_stream_inflight: int,
        max_held_bytes: int = 1 << 30,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics
        self.max_stream_inflight = max_stream_inflight
        self.held = HeldBytes(max_held_bytes)
        self.max_message_bytes = max_message_bytes
        self._ops = convert.ops_message()
        self._validated = LRU("validated", VALIDATED_CAPACITY)
        self.accepting: Callable[[], bool] = lambda: True  # False while draining (the door's)
        self._streams: set[asyncio.Queue[Any]] = set()  # each open stream's answers

    def end_streams(self) -> None:
        """End every open stream with a retry-safe UNAVAILABLE (the grace period is over)."""
        for answers in self._streams:
            answers.put_nowait(_DRAINED)

    # -- Verify and VerifyStream

    async def Verify(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The worker's serialized VerifyResponse, sent as it is (see register)."""
        try:
            return await self._verify(request, None, context.time_remaining(), "Verify", hold=True)
        except StatusError as exc:
            await convert.end_with(context, exc.status)
            return b""  # not sent: the status is not OK

    async def VerifyStream(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[verifier_pb2.VerifyStreamResponse]:
        # (response, the bytes it holds) in the order they are ready; None: done; _DRAINED
        answers: asyncio.Queue[Any] = asyncio.Queue()
        # a slot is taken when a request is read and given back when its answer is sent: checks
        # running plus answers the client has not read stay within max_stream_inflight
        slots = asyncio.Semaphore(self.max_stream_inflight)
        # and at most one check per worker at a time: the workers' queues are first come, first
        # served, so a stream's 32 slow checks queued at once kept a unary call waiting 12 s (it
        # now waits for one check to finish at most)
        share = asyncio.Semaphore(len(self.pool.workers))
        tasks: set[asyncio.Task[None]] = set()
        running_ids: set[str] = set()  # a second request with one of these could not be told apart
        # answers computed and not read yet: a stream's next check waits while they hold as much
        # as the largest answer the server sends (a client reading nothing had 24 reports of
        # 7 MB each held, its requests being small enough for the byte budget), or any once the
        # server holds half its byte budget (24 such streams held 1.9 GB past a 1 GiB budget,
        # and every other call was BUSY): each stream keeps one check going at most then
        unsent = 0

        def room() -> bool:
            return unsent == 0 or (
                unsent < self.max_message_bytes and self.held.held < self.held.capacity // 2
            )

        sent = asyncio.Condition()

        async def answer(msg: verifier_pb2.VerifyRequest, held: int) -> None:
            nonlocal unsent
            waiting_since = time.monotonic()
            answer_by = _answer_by(context.time_remaining())
            try:
                payload = await _off_loop_if(held > 2 * PARSE_INLINE_BYTES, msg.SerializeToString)
                async with share:  # (this stream's share of the workers: it alone waits)
                    async with sent:
                        await sent.wait_for(room)
                    waiting_since = None
                    response = await self._verify(payload, msg, context.time_remaining(), "VerifyStream")
                report = pb.VerifyResponse.FromString(response)
                # held until the client has read it
                unsent += len(response)
                await answers.put(
                    (pb.VerifyStreamResponse(id=msg.id, response=report), self.held.hold(len(response)))
                )
            except StatusError as exc:
                await answers.put((pb.VerifyStreamResponse(id=msg.id, error=exc.status), 0))
            except asyncio.CancelledError:
                if waiting_since is not None:  # read, then the stream ended before its turn:
                    # one log line and one count for it too, as for every request read
                    took = time.monotonic() - waiting_since
                    self._account_unchecked(msg, _ended_by(answer_by), "", took)
                raise
            finally:
                running_ids.discard(msg.id)

        async def read() -> None:
            try:
                async for item in request_iterator:
                    # the message and the request's own bytes: held until its answer is queued
                    # (given back by its task's end: a task cancelled before it ran runs no
                    # finally of its own), or here if it never gets one
                    held, handed = await self.held.take(2 * len(item)), False
                    try:
                        refused = None
                        try:
                            large = len(item) > PARSE_INLINE_BYTES
                            msg = (
                                await _off_loop_if(large, _parse, pb.VerifyStreamRequest, item)
                            ).request
                        except convert.RequestError as exc:
                            # a string that is not UTF-8 fails the whole message, but its id may
                            # still be read: answered by it, the stream goes on
                            request_id = (
                                convert.string_at(item, (1, 1)) if exc.field != "request" else None
                            )
                            if request_id is None:
                                # no id to answer it by: the stream ends (INVALID_ARGUMENT) once
                                # the requests read before it are answered
                                await asyncio.gather(*list(tasks))
                                raise
                            # named as Verify names it ("program", not "request.program")
                            inner = str(exc).removeprefix("request.")
                            field = (exc.field or "").removeprefix("request.")
                            msg = pb.VerifyRequest(id=request_id)
                            refused = _status(convert.RequestError(inner, field=field), "")
                        size = len(item)
                        del item
                        await slots.acquire()
                        if refused is None:
                            refused = self._refusal(msg.id, size, running_ids)
                        if refused is not None:
                            code = _code_name(refused.code)
                            self._account_unchecked(msg, code, refused.message, 0.0)
                            await answers.put((pb.VerifyStreamResponse(id=msg.id, error=refused), 0))
                            continue
                        running_ids.add(msg.id)  # "" too: two answers without an id are as ambiguous
                        task = asyncio.create_task(answer(msg, held))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        task.add_done_callback(lambda _, n=held: self.held.give(n))
                        handed = True
                    finally:
                        if not handed:
                            self.held.give(held)
                await asyncio.gather(*list(tasks))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        self._streams.add(answers)
        try:
            while (ready := await answers.get()) is not None:
                if ready is _DRAINED:
                    await convert.end_with(context, _SHUTTING_DOWN)
                    return
                response, size = ready
                try:
                    yield response
                finally:
                    self.held.give(size)
                unsent -= size
                async with sent:
                    sent.notify_all()
                slots.release()
            await reader  # surfaces an error in reading the stream
        except convert.RequestError as exc:
            await convert.end_with(context, _status(exc, ""))
        finally:
            self._streams.discard(answers)
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            while not answers.empty():  # answers never sent give their bytes back
                if isinstance(ready := answers.get_nowait(), tuple):
                    self.held.give(ready[1])

    async def _verify(
        self,
        payload: bytes,
        msg: verifier_pb2.VerifyRequest | None,
        time_remaining: float | None,
        method: str,
        hold: bool = False,
    ) -> bytes:
        """The serialized VerifyResponse for a serialized VerifyRequest (`msg`: the same, parsed,
        when it is at hand), or StatusError. hold: count the request's bytes as held (a stream
        counts its own)."""
        request_id, began = new_request_id(), time.monotonic()
        answer_by = _answer_by(time_remaining)
        outcome: Outcome | None = None
        code, error, validated = "OK", "", ""
        about = _UNREAD  # the request, for the log line, as far as it was read
        held = 0
        try:
            if hold:
                held = self._hold(len(payload))
            digest = _digest(payload)
            known = self._validated.get(digest) if digest else None
            validated = "miss" if known is None else "hit"
            if known is None:
                if msg is None:
                    msg = _parse(pb.VerifyRequest, payload)
                about = _UNREAD._replace(id=msg.id, program_hash=_program_hash(msg.program))
                if len(payload) <= VALIDATE_INLINE_BYTES:
                    known = self._validate(msg, about)
                else:  # a long program parses for a while: not on the event loop, which answers
                    # other calls and deadlines meanwhile (2,000 statements held it 0.25 s)
                    loop = asyncio.get_running_loop()
                    known = await loop.run_in_executor(None, self._validate, msg, about)
                if digest:
                    self._validated.put(digest, known)
            about = known
            # the deadline as it is now: validating took some of it
            remaining = None if answer_by is None else _left(answer_by) + ANSWER_MARGIN
            seconds, limit = _seconds(known.seconds, remaining)
            outcome = await self.pool.submit(
                "verify", payload, known.affinity, seconds, limit, request_id, _left(answer_by)
            )
            if not outcome.ok:
                raise StatusError(status_pb2.Status.FromString(outcome.payload))
            self._sendable(outcome.payload, "report")
            # what only the server knows, appended: a message's serialized fields that come later
            # override (scalars) or add to (maps) earlier ones, so the worker's bytes stay as they are
            known_here = pb.VerifyResponse(
                request_id=request_id,
                worker=outcome.worker,
                timings={"queue": outcome.queue_seconds, "worker": outcome.worker_seconds},
            )
            return outcome.payload + known_here.SerializeToString()
        except asyncio.CancelledError:
            code = _ended_by(answer_by)
            raise
        except Exception as exc:
            status = _status(exc, request_id)
            code, error = _code_name(status.code), status.message
            raise (exc if isinstance(exc, StatusError) else StatusError(status)) from None
        finally:
            self.held.give(held)
            # metrics and the log line on the event loop's next turn, once the answer is on its way
            took = time.monotonic() - began
            asyncio.get_running_loop().call_soon(
                self._account, method, request_id, about, code, error, outcome, validated, took
            )

    def _refusal(self, request_id: str, size: int, running_ids: set[str]) -> status_pb2.Status | None:
        """Why a stream's request is answered without a check, if it is."""
        if not self.accepting():  # draining: the client's to send again
            return _SHUTTING_DOWN
        if request_id in running_ids:
            return _duplicate(request_id)
        too_large = self._oversize(size)
        return None if too_large is None else _status(too_large, "")

    def _hold(self, size: int) -> int:
        """A call's request bytes taken from the server's budget (see HeldBytes): a request past
        --max-message-mb is RESOURCE_EXHAUSTED, and one the budget has no room for UNAVAILABLE."""
        if (too_large := self._oversize(size)) is not None:
            raise too_large
        taken = self.held.try_take(size)
        if taken is None:
            raise convert.unavailable(
                f"the server is busy: it holds {self.held.held >> 20} MiB of requests, its limit "
                f"(--max-held-mb {self.held.capacity >> 20})",
                "BUSY",
            )
        return taken

    def _oversize(self, size: int) -> convert.LimitError | None:
        """A request past --max-message-mb (gRPC reads up to twice that: see _grpc_options)."""
        if size <= self.max_message_bytes:
            return None
        return convert.LimitError(
            f"the request is {size / 2**20:.1f} MiB; this server reads at most "
            f"{self.max_message_bytes >> 20} MiB (--max-message-mb)",
            field="request",
        )

    def _sendable(self, payload: bytes, what: str) -> None:
        """An answer gRPC could not send (past --max-message-mb) is a resource error named here:
        gRPC's own says only "Sent message larger than max", and the call was logged OK."""
        if len(payload) > self.max_message_bytes:
            raise convert.LimitError(
                f"the {what} is {len(payload) / 2**20:.1f} MiB; this server sends at most "
                f"{self.max_message_bytes >> 20} MiB (--max-message-mb): ask for fewer outputs, "
                "checks or values",
                field="request",
            )

    def _validate(self, msg: verifier_pb2.VerifyRequest, about: Validated) -> Validated:
        """Check the request as a worker would before checking it (bad requests stop here), and
        what the server keeps of it."""
        request = convert.check_request(msg, self.config.limits, self.config.default_seconds)
        prepared = prepare(request, self.config.limits)
        affinity = hash((prepared.program.cache_key, tuple(prepared.wrt), request.checks))
        return about._replace(affinity=affinity, seconds=request.budget.seconds)

    def _account(
        self,
        method: str,
        request_id: str,
        about: Validated,
        code: str,
        error: str,
        outcome: Outcome | None,
        validated: str,
        took: float,
    ) -> None:
        """One check's metrics and its JSON log line."""
        timings, verdict = _results(outcome)
        self.metrics.record_check(code, verdict, timings, (outcome.cache_hits or {}) if outcome else {})
        if validated:
            self.metrics.labelled(self.metrics.cache, "validated", validated).inc()
        _log_request(method, request_id, about, code, error, outcome, took)

    def _account_unchecked(
        self, msg: verifier_pb2.VerifyRequest, code: str, error: str, took: float
    ) -> None:
        """One log line and one count for a stream's request answered without a check (refused,
        or its stream ended first), as for every request read."""
        about = _UNREAD._replace(id=msg.id, program_hash=_program_hash(msg.program))
        self._account("VerifyStream", new_request_id(), about, code, error, None, "", took)

    # -- DescribeGraph and ListOps

    async def DescribeGraph(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> verifier_pb2.DescribeGraphResponse:
        request_id, began = new_request_id(), time.monotonic()
        about, code, error, outcome = _UNREAD, "OK", "", None
        answer_by = _answer_by(context.time_remaining())
        held = 0
        try:
            held = self._hold(len(request))
            msg = _parse(pb.DescribeGraphRequest, request)
            about = _UNREAD._replace(program_hash=_program_hash(msg.program))
            key = await _off_loop_if(len(request) > VALIDATE_INLINE_BYTES, self._describable, msg)
            seconds, limit = _seconds(self.config.default_seconds, context.time_remaining())
            outcome = await self.pool.submit(
                "describe", request, key, seconds, limit, request_id, _left(answer_by)
            )
            if not outcome.ok:
                raise StatusError(status_pb2.Status.FromString(outcome.payload))
            self._sendable(outcome.payload, "description")
            return pb.DescribeGraphResponse.FromString(outcome.payload)
        except asyncio.CancelledError:
            code = _ended_by(answer_by)
            raise
        except Exception as exc:
            status = _status(exc, request_id)
            code, error = _code_name(status.code), status.message
            await convert.end_with(context, status)
            return pb.DescribeGraphResponse()  # not sent: the status is not OK
        finally:
            self.held.give(held)
            took = time.monotonic() - began
            asyncio.get_running_loop().call_soon(
                _log_request, "DescribeGraph", request_id, about, code, error, outcome, took
            )

    def _describable(self, msg: verifier_pb2.DescribeGraphRequest) -> int:
        """Check the request as a worker would (bad requests stop here); its worker affinity."""
        described = convert.describe_request(msg, self.config.limits)
        prepared = prepare_description(described, self.config.limits)
        return hash((prepared.program.cache_key, "describe"))

    async def ListOps(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> verifier_pb2.ListOpsResponse:
        code, error, began = "OK", "", time.monotonic()
        try:
            _parse(pb.ListOpsRequest, request)
            return self._ops
        except convert.RequestError as exc:
            status = _status(exc, "")
            code, error = _code_name(status.code), status.message
            await convert.end_with(context, status)
            return pb.ListOpsResponse()  # not sent: the status is not OK
        finally:
            _log_request("ListOps", "", _UNREAD, code, error, None, time.monotonic() - began)


async def _off_loop_if(large: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), on a thread when its message is large (the event loop answers meanwhile)."""
    if not large:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _results(outcome: Outcome | None) -> tuple[dict[str, float], str]:
    """A call's stage timings and its verdict (empty when it has none)."""
    if outcome is None:
        return {}, ""
    return outcome.timings or {}, outcome.verdict if outcome.ok else ""


def _log_request(
    method: str,
    request_id: str,
    about: Validated,
    code: str,
    error: str,
    outcome: Outcome | None,
    took: float,
) -> None:
    """A call's JSON log line: which request, how it ended, where its time went (`seconds`: the
    whole call in the server, whatever stopped it)."""
    if not log.isEnabledFor(logging.INFO):
        return
    timings, verdict = _results(outcome)
    fields: dict[str, Any] = {
        "event": "request",
        "method": method,
        "request_id": request_id,
        # (cut: a request refused for its id's length had all of it, 2 MB, on one log line)
        "id": convert.cut(about.id, convert.MAX_ID_CHARS),
        "program_sha256": about.program_hash,
    }
    if verdict:
        fields["verdict"] = verdict
    if error:
        fields["error"] = error
    if outcome is not None:
        fields.update(
            worker=outcome.worker,
            queue_s=round(outcome.queue_seconds, 6),
            worker_s=round(outcome.worker_seconds, 6),
        )
    fields.update(
        code=code, seconds=round(took, 6), timings={k: round(v, 6) for k, v in timings.items()}
    )
    log.info(fields)


def register(servicer: VerifierServicer, server: grpc.aio.Server) -> None:
    """Add the servicer to the server as the generated code would, except that the methods take
    their requests' bytes as they came (so bytes that are not a valid message get INVALID_ARGUMENT
    naming it, where gRPC's own parsing answers UNKNOWN, and a request the server remembers is
    not parsed at all), and Verify answers with bytes sent as they are (the worker's report is not
    parsed and serialized again here)."""

    class Capture:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass

        def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
            self.handlers = handlers

    capture = Capture()
    verifier_pb2_grpc.add_VerifierServiceServicer_to_server(servicer, capture)
    handlers = {name: h._replace(request_deserializer=None) for name, h in capture.handlers.items()}
    handlers["Verify"] = handlers["Verify"]._replace(response_serializer=_as_bytes)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _as_bytes(response: bytes | verifier_pb2.VerifyResponse) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def _answer_by(time_remaining: float | None) -> float | None:
    """When (time.monotonic) the server answers at the latest: ANSWER_MARGIN before the
    caller's deadline (None: it set none)."""
    if time_remaining is None:
        return None
    return time.monotonic() + time_remaining - min(ANSWER_MARGIN, time_remaining / 5)


def _left(answer_by: float | None) -> float | None:
    return None if answer_by is None else answer_by - time.monotonic()


def _ended_by(answer_by: float | None) -> str:
    """How a call gRPC ended was ended: its deadline came, or its caller went away."""
    late = answer_by is not None and time.monotonic() >= answer_by
    return "DEADLINE_EXCEEDED" if late else "CANCELLED"


def _seconds(budget: float, time_remaining: float | None) -> tuple[float, str]:
    """The request's budget (validated against the server's cap), within the caller's deadline,
    and which of the two it is (for messages)."""
    if time_remaining is None:
        return budget, BUDGET
    # scaled down for short deadlines (as _answer_by's, which stays the smaller): a fixed margin
    # refused every deadline under 52 ms, where a warm check takes a few
    margin = min(DEADLINE_MARGIN, time_remaining * 0.4)
    if budget <= time_remaining - margin:
        return budget, BUDGET
    if time_remaining - margin <= 0:
        raise OutOfTime("queue", 0.0, "the call's deadline leaves no time to check the request")
    return time_remaining - margin, CALL_DEADLINE


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _code_name(code: int) -> str:
    return _CODE_NAMES.get(code, str(code))
