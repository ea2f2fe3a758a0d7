"""The Python client: numpy arrays in, typed results out, over gRPC or embedded in-process.

    from crossgrad.clients import Client

    with Client("127.0.0.1:50051") as client:          # or Client.embedded(): no server at all
        result = client.verify(
            "Q = 3*a**3 - b**2", {"a": [2.0, 3.0], "b": [6.0, 4.0]}, cotangents={"Q": [1.0, 1.0]}
        )
        print(result.verdict, result.grad("a"))       # PASS [36. 81.]
        result.raise_for_discrepancies()

This module needs grpcio, protobuf and numpy only (the `client` extra); the embedded mode imports
the verification core (the `server` extra) when it is first used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from crossgrad.v1 import verifier_pb2, verifier_pb2_grpc
from crossgrad.v1.tensors import from_tensor, to_tensor
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

pb = verifier_pb2
SERVICE = "crossgrad.v1.VerifierService"
DEFAULT_TIMEOUT = 120.0

# Retry what is safe to retry (a check has no side effects): a server that is draining or lost a
# worker answers UNAVAILABLE, and another attempt (another replica, a new worker) succeeds.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": SERVICE}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHECKS = {"vjp": pb.CHECK_VJP, "jacobian": pb.CHECK_JACOBIAN, "hessian": pb.CHECK_HESSIAN}
REFERENCES = {"sympy": pb.REFERENCE_SYMPY, "jax": pb.REFERENCE_JAX, "fd": pb.REFERENCE_FD}
VERDICTS = {v: k for k, v in pb.Verdict.items()}  # enum value -> "VERDICT_PASS"


class CrossgradError(Exception):
    """A call the server refused or could not finish: its gRPC code, message and details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Sequence[Any] = ()) -> None:
        self.code = code
        self.message = message
        self.details = list(details)
        super().__init__(f"{code.name}: {message}")

    @property
    def field_violations(self) -> list[tuple[str, str]]:
        return [
            (v.field, v.description)
            for d in self.details
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]

    @property
    def info(self) -> dict[str, str]:
        """The ErrorInfo metadata: field, line and column for program errors, stage for budgets."""
        for d in self.details:
            if isinstance(d, error_details_pb2.ErrorInfo):
                return {"reason": d.reason, **d.metadata}
        return {}


class DiscrepancyError(AssertionError):
    """raise_for_discrepancies: the engine or the claimed values disagree with the references."""


def _details(status: status_pb2.Status) -> list[Any]:
    out = []
    for packed in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
        ):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                out.append(message)
    return out


def error_from_status(status: status_pb2.Status) -> CrossgradError:
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    return CrossgradError(code, status.message, _details(status))


def _error_from_rpc(err: grpc.RpcError, target: str) -> CrossgradError:
    status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    if status is not None:
        return error_from_status(status)
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = err.details() if isinstance(err, grpc.Call) else str(err)
    if code is grpc.StatusCode.UNAVAILABLE and "connect" in (message or "").lower():
        message = f"cannot reach a crossgrad server at {target}: {message}"
    return CrossgradError(code, message or code.name)


@dataclass
class Input:
    """An input with its options; a bare array means Input(array)."""

    value: npt.ArrayLike
    requires_grad: bool = True
    mask: npt.ArrayLike | None = None
    dtype: str | None = None  # default: the array's own (float64 for python numbers)


def _tensor(value: npt.ArrayLike, dtype: str | None = None) -> Any:
    array = np.asarray(value)
    if dtype is not None:
        array = array.astype(dtype)
    elif array.dtype.kind in "iu":
        array = array.astype(np.float64)  # python ints are numbers here, as in torch.tensor(..., float)
    return to_tensor(array)


def build_request(
    program: str,
    inputs: Mapping[str, npt.ArrayLike | Input],
    *,
    outputs: Sequence[str] = (),
    cotangents: Mapping[str, npt.ArrayLike] | None = None,
    checks: Sequence[str] = ("vjp",),
    references: Sequence[str] = (),
    rtol: float | None = None,
    atol: float | None = None,
    samples: Mapping[str, Any] | None = None,
    claimed_vjp: Mapping[str, npt.ArrayLike] | None = None,
    claimed_jacobian: Mapping[tuple[str, str], npt.ArrayLike] | None = None,
    budget: Mapping[str, float] | None = None,
    seed: int = 0,
    blame: bool = True,
    id: str = "",
) -> verifier_pb2.VerifyRequest:
    """A VerifyRequest from numpy-friendly arguments (see Client.verify)."""
    msg = pb.VerifyRequest(id=id, program=program, outputs=list(outputs), seed=seed, blame=blame)
    for name, given in inputs.items():
        spec = given if isinstance(given, Input) else Input(given)
        item = msg.inputs.add(
            name=name, value=_tensor(spec.value, spec.dtype), requires_grad=spec.requires_grad
        )
        if spec.mask is not None:
            item.mask.CopyFrom(_tensor(spec.mask, "float64"))
    for name, value in (cotangents or {}).items():
        msg.cotangents[name].CopyFrom(_tensor(value, "float64"))
    unknown = [c for c in checks if c not in CHECKS] + [r for r in references if r not in REFERENCES]
    if unknown:
        raise ValueError(
            f"unknown checks or references {unknown}: use {list(CHECKS)} and {list(REFERENCES)}"
        )
    msg.checks.extend(CHECKS[c] for c in checks)
    msg.references.extend(REFERENCES[r] for r in references)
    if rtol is not None:
        msg.rtol = rtol
    if atol is not None:
        msg.atol = atol
    if samples is not None:
        fields = dict(samples)
        if "distribution" in fields:
            fields["distribution"] = pb.Distribution.Value(
                "DISTRIBUTION_" + str(fields["distribution"]).upper()
            )
        msg.samples.CopyFrom(pb.SamplePoints(**fields))
    for name, value in (claimed_vjp or {}).items():  # None: "no gradient", torch's .grad None
        claim = msg.claimed_vjp.add(input=name, none=value is None)
        if value is not None:
            claim.gradient.CopyFrom(_tensor(value, "float64"))
    for (output, name), value in (claimed_jacobian or {}).items():
        claim = msg.claimed_jacobian.add(output=output, input=name, none=value is None)
        if value is not None:
            claim.jacobian.CopyFrom(_tensor(value, "float64"))
    if budget:
        msg.budget.CopyFrom(pb.Budget(**budget))
    return msg


class Result:
    """A verification report: the verdict, the text, and every block's values as arrays."""

    def __init__(self, response: verifier_pb2.VerifyResponse) -> None:
        self.response = response

    @property
    def verdict(self) -> str:
        """PASS, PASS_WITH_CONVENTION_DIFFERENCES, FAIL or ERROR."""
        return VERDICTS.get(self.response.verdict, "VERDICT_UNSPECIFIED").removeprefix("VERDICT_")

    @property
    def passed(self) -> bool:
        """PASS, or a pass with notes (numerical, conventions at kinks); never UNVERIFIED."""
        return self.verdict in ("PASS", "PASS_WITH_NUMERICAL_NOTES", "PASS_WITH_CONVENTION_DIFFERENCES")

    @property
    def summary(self) -> str:
        return self.response.summary

    @property
    def text(self) -> str:
        return self.response.text

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        return {n: from_tensor(t) for n, t in self.response.outputs.items()}

    def block(self, quantity: str, input: str, output: str = "", point: int = 0) -> verifier_pb2.Block:
        for b in self.response.points[point].blocks:
            if b.quantity == quantity and b.input == input and (not output or b.output == output):
                return b
        raise KeyError(
            f"no {quantity} block for input {input!r}" + (f" and output {output!r}" if output else "")
        )

    def values(self, quantity: str, input: str, output: str = "", source: str = "engine") -> np.ndarray:
        block = self.block(quantity, input, output)
        if block.values_omitted:
            raise KeyError(f"the server left the values of {block.label} out of the report (too large)")
        if source not in block.values:
            raise KeyError(f"{source!r} did not compute {block.label}; sources: {sorted(block.values)}")
        return from_tensor(block.values[source])

    def grad(self, input: str, source: str = "engine") -> np.ndarray:
        """The vector-Jacobian product for an input: what `input.grad` holds after backward."""
        return self.values("vjp", input, source=source)

    def jacobian(self, output: str, input: str, source: str = "engine") -> np.ndarray:
        return self.values("jacobian", input, output, source)

    def raise_for_discrepancies(self) -> None:
        """Raise unless the verdict is a pass (UNVERIFIED raises too: nothing settled it)."""
        if not self.passed:
            raise DiscrepancyError(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<Result {self.verdict}: {self.summary[:80]}>"


class Client:
    """A crossgrad server at `target` ("host:port", "dns:///name:port" for round-robin over its
    addresses), or embedded in this process when target is None."""

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        load_balancing: str = "round_robin",
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._embedded: Any = None
        self._channel: grpc.Channel | None = None
        if target is None:
            from .embedded import EmbeddedVerifier  # the core: the server extra

            self._embedded = EmbeddedVerifier()
            return
        options = [
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.lb_policy_name", load_balancing),
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20),
        ]
        if tls or root_certificates:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = verifier_pb2_grpc.VerifierServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @classmethod
    def embedded(cls) -> Client:
        return cls(None)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise _error_from_rpc(err, self.target or "") from None

    # -- the API

    def verify(
        self,
        program: str,
        inputs: Mapping[str, npt.ArrayLike | Input],
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> Result:
        """Check a program at a point. fields: outputs, cotangents, checks ("vjp", "jacobian",
        "hessian"), references ("sympy", "jax", "fd"), rtol, atol, samples, claimed_vjp,
        claimed_jacobian, budget, seed, blame, id."""
        return Result(self.verify_message(build_request(program, inputs, **fields), timeout))

    def verify_message(
        self, request: verifier_pb2.VerifyRequest, timeout: float | None = None
    ) -> verifier_pb2.VerifyResponse:
        if self._embedded is not None:
            return self._embedded.verify(request)
        return self._call(self._stub.Verify, request, timeout)

    def describe_graph(
        self,
        program: str,
        inputs: Mapping[str, npt.ArrayLike | Input],
        outputs: Sequence[str] = (),
        timeout: float | None = None,
    ) -> verifier_pb2.DescribeGraphResponse:
        full = build_request(program, inputs, outputs=outputs)
        request = pb.DescribeGraphRequest(program=program, inputs=full.inputs, outputs=outputs)
        if self._embedded is not None:
            return self._embedded.describe(request)
        return self._call(self._stub.DescribeGraph, request, timeout)

    def list_ops(self, timeout: float | None = None) -> list[verifier_pb2.Op]:
        if self._embedded is not None:
            return list(self._embedded.list_ops().ops)
        return list(self._call(self._stub.ListOps, pb.ListOpsRequest(), timeout).ops)

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """SERVING, NOT_SERVING, ... (embedded: always SERVING)."""
        if self._embedded is not None:
            return "SERVING"
        response = self._call(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
