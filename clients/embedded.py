"""The verifier in this process, behind the same messages as the server: no network, no workers.

It runs the server's own request handlers (decode, check, encode), so an embedded report is the
report a server gives. Needs the server extra (sympy, JAX)."""

from __future__ import annotations

from crossgrad.v1 import verifier_pb2
from google.rpc import status_pb2

from .client import error_from_status

pb = verifier_pb2


class EmbeddedVerifier:
    def __init__(self) -> None:
        try:
            from crossgrad.server.limits import Limits
            from crossgrad.server.transport import convert, handlers
            from crossgrad.server.transport.options import ServerOptions
        except ImportError as exc:
            raise ImportError(
                f"the embedded verifier needs the server extra (pip install '.[server]' in a crossgrad "
                f"checkout): {exc}"
            ) from None
        defaults = ServerOptions()
        self._handlers = handlers
        self._ops = convert.ops_message
        self._config = handlers.HandlerConfig(
            Limits(), defaults.budget_seconds, defaults.max_report_values
        )

    def _answer(self, outcome: object, kind: type) -> object:
        if not outcome.ok:
            raise error_from_status(status_pb2.Status.FromString(outcome.payload))
        return kind.FromString(outcome.payload)

    def verify(
        self, request: verifier_pb2.VerifyRequest, timeout: float | None = None
    ) -> verifier_pb2.VerifyResponse:
        """The check, within `timeout` seconds when one is given (DEADLINE_EXCEEDED past it, as
        a server says it: the call's deadline), else within the request's own budget."""
        from crossgrad.server import deadline

        request_id = self._handlers.new_request_id()
        outcome = self._handlers.verify(
            request.SerializeToString(),
            self._config,
            timeout,
            request_id=request_id,
            stated=timeout,
            limit=deadline.CALL_DEADLINE if timeout else deadline.BUDGET,
        )
        response = self._answer(outcome, pb.VerifyResponse)
        response.request_id = request_id
        return response

    def describe(self, request: verifier_pb2.DescribeGraphRequest) -> verifier_pb2.DescribeGraphResponse:
        request_id = self._handlers.new_request_id()
        outcome = self._handlers.describe(
            request.SerializeToString(), self._config, request_id=request_id
        )
        return self._answer(outcome, pb.DescribeGraphResponse)

    def list_ops(self) -> verifier_pb2.ListOpsResponse:
        return self._ops()
