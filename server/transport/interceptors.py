"""Bearer-token auth (an interceptor), and the door (draining, metrics, in-flight count).

Health checks and reflection stay open without a token, so probes and generic tools work; while
the server drains, the verifier's methods answer UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from . import convert
from .metrics import Metrics

log = logging.getLogger("crossgrad.server")

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _rewrap(handler: grpc.RpcMethodHandler, wrap: Callable[[Any, bool], Any]) -> grpc.RpcMethodHandler:
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
    )
    for attr, make, streaming_response in kinds:
        behaviour = getattr(handler, attr)
        if behaviour is not None:
            return make(
                wrap(behaviour, streaming_response),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health checks and reflection needs `authorization: Bearer <token>`. A call
    without it is counted (crossgrad_requests_total{code="UNAUTHENTICATED"}) and logged."""

    def __init__(self, token: str, metrics: Metrics) -> None:
        self._expected = token.encode()
        self.metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        headers = [v for k, v in details.invocation_metadata or () if k == "authorization"]
        given = headers[0] if len(headers) == 1 else ""
        given = given.encode() if isinstance(given, str) else given
        scheme, _, token = given.strip().partition(b" ")
        # the scheme's name is case-insensitive (RFC 9110); the token is compared in constant
        # time: no timing oracle
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._expected):
            return handler
        why = "missing bearer token" if not headers else "invalid bearer token"
        # more than one is refused in either order (the last one decided)
        if len(headers) > 1:
            why = f"{len(headers)} authorization headers (send one)"
        method = details.method.rsplit("/", 1)[-1]

        began = time.monotonic()

        async def deny(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            self.metrics.labelled(self.metrics.requests, method, "UNAUTHENTICATED").inc()
            log.warning(
                {"event": "request", "method": method, "code": "UNAUTHENTICATED", "error": why,
                 "peer": context.peer(), "seconds": round(time.monotonic() - began, 6)}
            )  # fmt: skip
            error = convert.TransportError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{why}: send 'authorization: Bearer <token>'",
                "MISSING_TOKEN" if not headers else "INVALID_TOKEN",
            )
            await convert.end_with(context, convert.error_status(error))

        return _rewrap(handler, lambda behaviour, streaming_response: deny)  # same kind


class Door:
    """Counts calls in and out (metrics, in-flight), and turns verifier calls away with UNAVAILABLE
    while the server is not accepting them (draining). It wraps the servicer's methods once, at
    registration, rather than intercepting: with no interceptor, gRPC looks handlers up without
    a coroutine and a new handler per call."""

    METHODS = ("Verify", "VerifyStream", "DescribeGraph", "ListOps")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.accepting = False
        self.why_closed = "the server is starting"
        self.inflight = 0
        metrics.inflight.set_function(lambda: self.inflight)

    def guard(self, servicer: Any) -> Any:
        """The servicer with each verifier method wrapped (before it is added to a server)."""
        for method in self.METHODS:
            behaviour = getattr(servicer, method)
            streaming = method == "VerifyStream"
            setattr(servicer, method, self._observed(method, behaviour, streaming))
        return servicer

    def _observed(self, method: str, behaviour: Any, streaming_response: bool) -> Any:
        if streaming_response:

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if not self.accepting:
                    await self._turn_away(method, context, time.monotonic())
                    return
                with self._call(method, context):
                    async for response in behaviour(request, context):
                        yield response

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not self.accepting:
                return await self._turn_away(method, context, time.monotonic())
            with self._call(method, context):
                return await behaviour(request, context)

        return unary

    async def _turn_away(self, method: str, context: grpc.aio.ServicerContext, began: float) -> None:
        """UNAVAILABLE with the server's details (ErrorInfo SHUTTING_DOWN, RetryInfo): a client
        tells it from a server it cannot reach, and retries elsewhere."""
        self.metrics.labelled(self.metrics.requests, method, "UNAVAILABLE").inc()
        log.info(
            {"event": "request", "method": method, "code": "UNAVAILABLE", "error": self.why_closed,
             "seconds": round(time.monotonic() - began, 6)}
        )  # fmt: skip
        error = convert.unavailable(self.why_closed, "SHUTTING_DOWN")
        await convert.end_with(context, convert.error_status(error))

    def _call(self, method: str, context: grpc.aio.ServicerContext) -> _Call:
        return _Call(self, method, context)


class _Call:
    """Times one call and records its status code, however it ends."""

    def __init__(self, door: Door, method: str, context: grpc.aio.ServicerContext) -> None:
        self.door, self.method, self.context = door, method, context

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        self.door.inflight += 1

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.door.inflight -= 1
        code = self.context.code()
        if code is None:
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)) or self.context.cancelled():
                # gRPC ended the call: the caller went away, or its deadline came
                remaining = self.context.time_remaining()
                late = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED
            elif exc is None:
                code = grpc.StatusCode.OK
            else:
                code = grpc.StatusCode.UNKNOWN
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        metrics = self.door.metrics
        metrics.labelled(metrics.requests, self.method, name).inc()
        metrics.labelled(metrics.latency, self.method).observe(time.perf_counter() - self.start)
