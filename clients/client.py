"""The Python client: numpy arrays in, typed results out, over gRPC or embedded in-process.

    from crossgrad.clients import Client

    with Client("127.0.0.1:50051") as client:          # or Client.embedded(): no server at all
        result = client.verify(
            "Q = 3*a**3 - b**2", {"a": [2.0, 3.0], "b": [6.0, 4.0]}, cotangents={"Q": [1.0, 1.0]}
        )
        print(result.verdict, result.grad("a"))       # PASS [36. 81.]
        result.raise_for_discrepancies()

        # many checks over one VerifyStream, at most 8 in flight; one result per request, in order
        results = client.verify_many([request_1, request_2], concurrency=8)

This module needs grpcio, protobuf and numpy only (the `client` extra); the embedded mode imports
the verification core (the `server` extra) when it is first used.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import numbers
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from crossgrad.v1 import tensor_pb2, verifier_pb2, verifier_pb2_grpc
from crossgrad.v1.tensors import from_tensor, to_tensor
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

pb = verifier_pb2
SERVICE = "crossgrad.v1.VerifierService"
DEFAULT_TIMEOUT = 120.0  # a Verify call (the server's own default budget is 30 s)
SHORT_TIMEOUT = 30.0  # ListOps, DescribeGraph
DEFAULT_CONCURRENCY = 8  # verify_many: checks in flight at once
# verify_many: streams tried before any answer (gRPC's retry policy, for the unary calls only,
# tries those 4 times too)
STREAM_ATTEMPTS = 4
# verify_many, once answers came: streams tried for the requests still open. A server restarting
# takes its drain and warm-up (10 s and more on a loaded machine): backoffs of 0.4, 0.8, 1.6, then
# 2 s span about 35 s (8 spanned 11 s, enough only while gRPC's retries lengthened each attempt)
RESUME_ATTEMPTS = 20

# Retry what is safe to retry (a check has no side effects): a server that is draining or lost a
# worker answers UNAVAILABLE, and another attempt (another replica, a new worker) succeeds.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                # Not VerifyStream: gRPC's retries of a stream whose sender waits for answers
                # (at most `concurrency` checks in flight) left it waiting on a server that had
                # stopped, until the whole call's deadline (a CI suite: 24 minutes); the client
                # sends a stream's open requests again itself (_remote_stream)
                "name": [
                    {"service": SERVICE, "method": method}
                    for method in ("Verify", "DescribeGraph", "ListOps")
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    # CANCELLED too: a server stopping at the end of its drain cancels the calls
                    # it was turning away just then (a caller's own cancel is never retried)
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
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

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (process pools, pytest-xdist)
        return (type(self), (self.code, self.message, self.details))

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
        """The ErrorInfo's reason and metadata as text: field, line and column (and end_line,
        end_column) for a refused request, stage for a budget that ran out, request_id for
        INTERNAL."""
        for d in self.details:
            if isinstance(d, error_details_pb2.ErrorInfo):
                return {"reason": d.reason, **d.metadata}
        return {}

    @property
    def field(self) -> str | None:
        """The request field that was refused ("program", "inputs[0].value", ...), if any."""
        return self.info.get("field")

    @property
    def line(self) -> int | None:
        """Where in the program text (1-based), for an error in the program."""
        return _number(self.info.get("line"))

    @property
    def column(self) -> int | None:
        """The column in `line` (1-based), for an error in the program."""
        return _number(self.info.get("column"))

    @property
    def stage(self) -> str | None:
        """The stage that ran out of time or was cancelled (parse, engine, sympy, jax, ...)."""
        return self.info.get("stage")


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


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
    try:
        status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    except ValueError:  # the details disagree with the call's code: trailers the channel cut
        # (past its metadata limit it answers RESOURCE_EXHAUSTED): the call's own code and words
        status = None
    if status is not None:
        return error_from_status(status)
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (err.details() if isinstance(err, grpc.Call) else str(err)) or code.name
    # UNAVAILABLE without the server's status details is the channel's own: nobody answered
    if code is grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach a crossgrad server at {target}: {message}"
        if "HTTP/2" in message:  # something answered, but not in gRPC (the metrics port, a web server)
            message += " (is this the server's gRPC port? --metrics-port serves plain HTTP)"
        elif "CERTIFICATE_VERIFY_FAILED" in message:  # TLS both ways; its certificate unknown
            message += " (a server's own certificate: trust it with --ca-cert FILE / root_certificates=)"
        elif "WRONG_VERSION_NUMBER" in message or "handshake failed" in message.lower():
            message += " (TLS to a server without it? leave out --tls / tls=True)"
        elif "Socket closed" in message and "backends failing" in message:
            # a TLS server hangs up on a plaintext hello (not a connection lost mid-call)
            message += " (if the server uses TLS: --tls / tls=True, --ca-cert / root_certificates)"
        elif "refused" in message.lower():  # nothing listens: often a server still warming up
            message += (
                " (a server that is starting listens only once its workers are warm, 10 to 30 s:"
                " wait for `crossgrad health` to say SERVING)"
            )
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"no answer from {target} before the deadline: {message}"
    return CrossgradError(code, " ".join(message.split()))  # one line: grpc's can hold newlines


@dataclass
class Input:
    """An input with its options; a bare array means Input(array)."""

    value: npt.ArrayLike
    requires_grad: bool = True
    mask: npt.ArrayLike | None = None
    # default: a numpy array's own (an integer array is int64: class indices for cross_entropy
    # and nll_loss); python numbers and lists are float64
    dtype: str | None = None


def _tensor(value: npt.ArrayLike, dtype: str | None = None, what: str = "a tensor") -> Any:
    try:
        array = np.asarray(value)
    except ValueError:  # numpy: "setting an array element with a sequence..."
        raise ValueError(f"{what}: not a rectangular array of numbers") from None
    if array.dtype.kind in "OUSVMm":  # objects, text, bytes, dates
        raise ValueError(f"{what}: not an array of numbers (numpy made it {array.dtype})")
    if array.dtype.kind == "c":  # a claim's imaginary parts were dropped with a numpy warning
        raise ValueError(f"{what}: complex values are not supported (real float32 or float64 only)")
    if dtype is None and array.dtype.kind == "f" and array.dtype not in (np.float32, np.float64):
        # float16 was checked as float64 and said so nowhere but in the blocks' dtype
        raise ValueError(
            f"{what}: {array.dtype} is not supported; the verifier computes in float32 or float64 "
            "(convert it with .astype, or give Input(value, dtype='float32'))"
        )
    if dtype is None and array.dtype.kind in "iu":
        # python ints are numbers here, as in torch.tensor(..., float); a numpy integer array
        # was made integer on purpose
        dtype = "int64" if isinstance(value, np.ndarray) else "float64"
    if dtype is not None:
        integral = array.dtype.kind != "f" or np.array_equal(array, np.round(array))
        if np.dtype(dtype).kind == "i" and not integral:
            raise ValueError(f"{what}: {dtype}, but its values are not all integers")
        with np.errstate(over="raise", invalid="raise"):
            try:
                array = array.astype(dtype)
            except FloatingPointError:
                raise ValueError(f"{what}: its values do not fit in {dtype}") from None
    return to_tensor(array)


def _names(names: str | Sequence[str], what: str) -> list[str]:
    """A list of names; a string is split at its commas (checks="jacobian" was 8 checks)."""
    if isinstance(names, str):
        return [n.strip() for n in names.split(",") if n.strip()]
    listed = list(names) if isinstance(names, Iterable) else None
    if listed is None or not all(isinstance(n, str) for n in listed):
        raise TypeError(f"{what} must be a list of names or one string of them, not {names!r}")
    return listed


# Arguments of the wrong type got protobuf's or numpy's words without the argument's name
# (verify(None, ...) said "the program is empty", rtol="1e-3" a protobuf TypeError).
def _typed(value: Any, kind: type | tuple[type, ...], what: str, description: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise TypeError(f"{what} must be {description}, not a bool")
    if not isinstance(value, kind):
        raise TypeError(f"{what} must be {description}, not {type(value).__name__} {value!r:.60}")
    return value


def _message(kind: Any, fields: Mapping[str, Any], what: str) -> Any:
    """pb.Budget(**fields) and the like, with errors that name the argument and its fields."""
    if not isinstance(fields, Mapping):
        raise TypeError(f"{what} must be a dict of its fields, not {type(fields).__name__}")
    known = [f.name for f in kind.DESCRIPTOR.fields]
    for name, value in fields.items():
        if name not in known:
            raise ValueError(f"{what} has no field {name!r}: its fields are {', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{what}[{name!r}] must be a number, not {value!r:.60}")
    try:
        return kind(**fields)
    except (ValueError, TypeError) as exc:  # out of the field's range (a negative count)
        raise ValueError(f"{what}: {exc}") from None


def build_request(
    program: str,
    inputs: Mapping[str, npt.ArrayLike | Input],
    *,
    outputs: str | Sequence[str] = (),
    cotangents: Mapping[str, npt.ArrayLike] | None = None,
    checks: str | Sequence[str] = ("vjp",),
    references: str | Sequence[str] = (),
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
    """A VerifyRequest from numpy-friendly arguments (see Client.verify). outputs, checks and
    references: a list of names, or one string of names separated by commas ("vjp, jacobian")."""
    if not isinstance(inputs, Mapping):  # a list of values has no names to bind them to
        raise TypeError(
            f"inputs must be a mapping name -> array, like {{'x': [1.0, 2.0]}}, not a "
            f"{type(inputs).__name__}"
        )
    _typed(program, str, "program", "the program's text (a str)")
    outputs = _names(outputs, "outputs")
    checks, references = _names(checks, "checks"), _names(references, "references")
    for value, name in ((rtol, "rtol"), (atol, "atol")):
        if value is not None:
            _typed(value, numbers.Real, name, "a number")
    _typed(seed, numbers.Integral, "seed", "an integer")
    _typed(blame, bool, "blame", "True or False")
    _typed(id, str, "id", "a str")
    msg = pb.VerifyRequest(id=id, program=program, outputs=outputs, seed=seed, blame=blame)
    for name, given in inputs.items():
        spec = given if isinstance(given, Input) else Input(given)
        item = msg.inputs.add(name=name, value=_tensor(spec.value, spec.dtype, f"input {name!r}"))
        if not spec.requires_grad:  # (left out, the server's default: every float input requires
            item.requires_grad = False  # grad; true said of an integer input is refused)
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
        fields = dict(_typed(samples, Mapping, "samples", "a dict of its fields"))
        if "distribution" in fields:
            try:
                fields["distribution"] = pb.Distribution.Value(
                    "DISTRIBUTION_" + str(fields["distribution"]).upper()
                )
            except ValueError:
                raise ValueError(
                    f"samples['distribution'] is {fields['distribution']!r}: 'normal' or 'uniform'"
                ) from None
        msg.samples.CopyFrom(_message(pb.SamplePoints, fields, "samples"))
    for name, value in (claimed_vjp or {}).items():  # None: "no gradient", torch's .grad None
        claim = msg.claimed_vjp.add(input=name, none=value is None)
        if value is not None:
            claim.gradient.CopyFrom(_tensor(value, "float64"))
    for (output, name), value in (claimed_jacobian or {}).items():
        claim = msg.claimed_jacobian.add(output=output, input=name, none=value is None)
        if value is not None:
            claim.jacobian.CopyFrom(_tensor(value, "float64"))
    if budget is not None:
        msg.budget.CopyFrom(_message(pb.Budget, budget, "budget"))
    return msg


# build_request's keyword fields (what verify() takes beside program and inputs)
REQUEST_FIELDS = list(inspect.signature(build_request).parameters)[2:]


class Result:
    """A verification report: the verdict, the text, and every block's values as arrays.

    In verify_many a request the server refused (or that could not be built) gives a Result
    with `error` set (a CrossgradError) instead of a response; its verdict is ERROR. `request`
    is the request it answers (one that could not be built: a VerifyRequest with its id only)
    and `index` its position among the requests."""

    def __init__(
        self,
        response: verifier_pb2.VerifyResponse | None = None,
        *,
        request: verifier_pb2.VerifyRequest | None = None,
        error: CrossgradError | None = None,
        index: int = 0,
    ) -> None:
        if (response is None) == (error is None):
            raise ValueError("a Result holds a response or an error")
        self.response = response if response is not None else pb.VerifyResponse()
        self.request = request
        self.error = error
        self.index = index

    @property
    def id(self) -> str:
        """The request's id (echoed by the server)."""
        if self.error is not None:
            return self.request.id if self.request is not None else ""
        return self.response.id

    @property
    def verdict(self) -> str:
        """PASS, PASS_WITH_NUMERICAL_NOTES, PASS_WITH_CONVENTION_DIFFERENCES, UNVERIFIED, FAIL or
        ERROR (a refused request is ERROR too, with `error` set)."""
        if self.error is not None:
            return "ERROR"
        return VERDICTS.get(self.response.verdict, "VERDICT_UNSPECIFIED").removeprefix("VERDICT_")

    @property
    def passed(self) -> bool:
        """PASS, or a pass with notes (numerical, conventions at kinks); never UNVERIFIED."""
        return self.verdict in ("PASS", "PASS_WITH_NUMERICAL_NOTES", "PASS_WITH_CONVENTION_DIFFERENCES")

    @property
    def summary(self) -> str:
        return str(self.error) if self.error is not None else self.response.summary

    @property
    def text(self) -> str:
        return str(self.error) if self.error is not None else self.response.text

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        return {n: from_tensor(t) for n, t in self.response.outputs.items()}

    def block(self, quantity: str, input: str, output: str = "", point: int = 0) -> verifier_pb2.Block:
        if self.error is not None:
            raise self.error
        blocks = self.response.points[point].blocks
        for b in blocks:
            if b.quantity == quantity and b.input == input and (not output or b.output == output):
                return b
        raise KeyError(
            f"no {quantity} block for input {input!r}"
            + (f" and output {output!r}" if output else "")
            + f": {self._why_no_block(blocks, quantity, input, output)} (the report's blocks: "
            + f"{', '.join(b.label for b in blocks)})"
        )

    def _why_no_block(self, blocks: Sequence[Any], quantity: str, input: str, output: str) -> str:
        dag = self.response.dag
        if self.request is not None:
            inputs = [i.name for i in self.request.inputs]
        else:
            inputs = [leaf.name for leaf in dag.leaves] + [*dag.frozen, *(b.input for b in blocks)]
        outputs = sorted({b.output for b in blocks if b.output})
        unknown = [n for n in input.split(",") if n not in inputs]
        if unknown:
            return f"no input named {unknown[0]!r} (inputs: {', '.join(dict.fromkeys(inputs))})"
        if output and outputs and output not in outputs:
            return f"no output named {output!r} (outputs: {', '.join(outputs)})"
        if not any(b.quantity == quantity for b in blocks):
            return f"the request did not ask for it (add {quantity!r} to its checks)"
        return "an input that does not require grad has none, as torch's .grad stays None"

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

    def hessian(self, input: str, other: str = "", source: str = "engine") -> np.ndarray:
        """The block d2 y / d input d other of the Hessian (other: input itself by default),
        shaped input's shape + other's shape."""
        return self.values("hessian", f"{input},{other or input}", "", source)

    def raise_for_discrepancies(self) -> None:
        """Raise unless the verdict is a pass (UNVERIFIED raises too: nothing settled it). A
        refused request raises its CrossgradError."""
        if self.error is not None:
            raise self.error
        if not self.passed:
            raise DiscrepancyError(self.text)

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as JSON-ready data: arrays as nested lists, enums by name,
        non-finite numbers as the strings "nan", "inf" and "-inf" (strict JSON has none)."""
        if self.error is not None:
            return {
                "id": self.id,
                "verdict": "ERROR",
                "passed": False,
                "error": {
                    "code": self.error.code.name,
                    "message": self.error.message,
                    "field_violations": [
                        {"field": f, "description": d} for f, d in self.error.field_violations
                    ],
                    "info": self.error.info,
                },
            }
        body = message_to_dict(self.response)
        body.pop("verdict")
        # the engine's gradients at the given point, for `jq .grad.a` (the blocks have the rest)
        grads = {
            b.input: _json_array(from_tensor(b.values["engine"]))
            for b in (self.response.points[0].blocks if self.response.points else ())
            if b.quantity == "vjp" and "engine" in b.values
        }
        return {
            "id": body.pop("id"),
            "verdict": self.verdict,
            "passed": self.passed,
            "grad": grads,
            **body,
        }

    def __str__(self) -> str:
        if self.error is not None:
            return f"request {self.id!r}: {self.error}" if self.id else str(self.error)
        return self.text

    def __repr__(self) -> str:
        return f"<Result {self.verdict}: {self.summary[:80]}>"


def _json_number(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)  # "nan", "inf", "-inf"


def _json_array(array: np.ndarray) -> Any:
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        return np.vectorize(_json_number, otypes=[object])(array).tolist()
    return array.tolist()


def _json_value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name == tensor_pb2.Tensor.DESCRIPTOR.full_name:
            return _json_array(from_tensor(value))
        return message_to_dict(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        if known is None:
            return value  # a value newer than this client's contract
        prefix = field.enum_type.values[0].name.removesuffix("UNSPECIFIED")  # "VERDICT_"
        return known.name.removeprefix(prefix)
    if isinstance(value, float):
        return _json_number(value)
    return value


def message_to_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as plain data with every field present (unset optional fields and
    submessages are None); Tensors become nested lists, int64 stays a number (protobuf's own
    JSON mapping writes it as a string and tensors as base64)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _json_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_json_value(field, v) for v in value]
        elif field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _json_value(field, value)
    return out


DEFAULT_PORT = 50051


def server_target(text: str) -> str:
    """A server's address as gRPC dials it: host[:port] (crossgrad's port if left out, not
    gRPC's default of 443), [IPv6][:port], dns:///name[:port], or an ipv4:/ipv6:/unix: target as
    it is. ValueError says what is wrong (a scheme, a port out of range)."""
    if text.startswith(("unix:", "ipv4:", "ipv6:")):
        return text
    scheme, host = ("dns:///", text[7:]) if text.startswith("dns:///") else ("", text)
    if "://" in host:
        raise ValueError(
            f"{text!r}: give HOST:PORT without a scheme (or dns:///NAME:PORT); gRPC is not http"
        )
    if host.startswith("["):  # [IPv6] or [IPv6]:port
        given = host.rsplit("]", 1)[1]
        return _checked_port(text, given[1:]) if given.startswith(":") else f"{text}:{DEFAULT_PORT}"
    if host.count(":") > 1:  # a bare IPv6 address
        return f"{scheme}[{host}]:{DEFAULT_PORT}"
    return _checked_port(text, host.rsplit(":", 1)[1]) if ":" in host else f"{text}:{DEFAULT_PORT}"


def _checked_port(text: str, port: str) -> str:
    """The address, once its port is a number from 1 to 65535 (gRPC wraps 99999 round to another
    port, and dials 443 for an empty one)."""
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return text


class Client:
    """A crossgrad server at `target` ("host:port", "dns:///name:port" for round-robin over its
    addresses), or embedded in this process when target is None (`Client.embedded()`).

    token: sent as `authorization: Bearer TOKEN` (a leading "Bearer " is dropped from the token,
    so it is not sent twice). tls: True for TLS with the system's roots (or `root_certificates`:
    PEM bytes, or the path of a PEM file), or grpc.ChannelCredentials of your own. timeout: the
    default deadline of a Verify call in seconds (ListOps and DescribeGraph get SHORT_TIMEOUT,
    health 5 s).
    Calls that fail with UNAVAILABLE (a draining server, a lost worker, a replica going away) are
    retried: by gRPC itself (SERVICE_CONFIG), verify_many's streams by the client; nothing else
    is, so a bad request fails at once.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: bool | grpc.ChannelCredentials = False,
        root_certificates: bytes | str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        load_balancing: str = "round_robin",
    ) -> None:
        self.target = None if target is None else server_target(target)
        self.timeout = _seconds(timeout) or DEFAULT_TIMEOUT  # (None: the default)
        self._closed = False
        self._metadata = (("authorization", f"Bearer {_bare_token(token)}"),) if token else ()
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
        if isinstance(tls, grpc.ChannelCredentials):
            self._channel = grpc.secure_channel(self.target, tls, options=options)
        elif tls or root_certificates:
            pem = _pem(root_certificates) if root_certificates else None
            creds = grpc.ssl_channel_credentials(root_certificates=pem)
            self._channel = grpc.secure_channel(self.target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self._stub = verifier_pb2_grpc.VerifierServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @classmethod
    def embedded(cls) -> Client:
        return cls(None)

    @property
    def where(self) -> str:
        """ "embedded" or the target, for messages."""
        return "embedded" if self._embedded is not None else str(self.target)

    def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, timeout: float | None) -> float | None:
        """A call's timeout, checked, once the client is known to be open (a remote one
        used after close() raised grpc's "Cannot invoke RPC on closed channel!")."""
        if self._closed:
            raise ValueError(f"this Client ({self.where}) is closed: make a new one")
        return _seconds(timeout)

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
        _known_fields(fields, "verify()")
        request = build_request(program, inputs, **fields)
        return Result(self.verify_message(request, timeout), request=request)

    def verify_message(
        self, request: verifier_pb2.VerifyRequest, timeout: float | None = None
    ) -> verifier_pb2.VerifyResponse:
        timeout = self._open(timeout)
        if self._embedded is not None:  # a deadline only if this call gives one
            return self._embedded.verify(request, timeout)
        return self._call(self._stub.Verify, request, timeout)

    def verify_many(
        self,
        requests: Iterable[verifier_pb2.VerifyRequest | Mapping[str, Any]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float | None = None,
        streams: int = 1,
    ) -> list[Result]:
        """Check many requests, at most `concurrency` at once, over one VerifyStream (embedded:
        a pool of that many threads). Returns one Result per request, in the requests' order.

        A request is a VerifyRequest or the keyword arguments of verify() as a dict
        ({"program": ..., "inputs": ..., "checks": [...]}). A request that is refused (or cannot
        be built) gives a Result with `error` set and the others go on. If the call as a whole
        fails before any answer (server unreachable, bad token) it raises CrossgradError; a
        connection lost later is retried on a new stream for the requests still unanswered.
        timeout: for the whole call (default: the client's timeout per `concurrency` requests).
        streams: deal the requests over this many VerifyStreams at once (sharing `concurrency`):
        a load balancer sends each stream to one replica, so more streams spread over more."""
        results = sorted(
            self.verify_stream(requests, concurrency=concurrency, timeout=timeout, streams=streams),
            key=lambda r: r.index,
        )
        return results

    def verify_stream(
        self,
        requests: Iterable[verifier_pb2.VerifyRequest | Mapping[str, Any]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float | None = None,
        streams: int = 1,
    ) -> Iterator[Result]:
        """verify_many's results as each check finishes (for progress bars); `result.index` is
        the request's position and `result.request` the request itself."""
        timeout = self._open(timeout)
        if isinstance(requests, (str, bytes, Mapping, pb.VerifyRequest)):  # (a str's characters
            raise TypeError(  # were taken for requests, a dict's keys)
                f"requests must be a list of requests, not one {type(requests).__name__}: "
                "wrap a single request in a list"
            )
        for count, name in ((concurrency, "concurrency"), (streams, "streams")):
            if _typed(count, numbers.Integral, name, "an integer") < 1:
                raise ValueError(f"{name} must be at least 1, got {count}")
        items: list[tuple[int, verifier_pb2.VerifyRequest]] = []
        failed: list[Result] = []
        for k, given in enumerate(requests):
            try:
                items.append((k, _as_request(given)))
            except (ValueError, TypeError, KeyError) as exc:
                what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                error = CrossgradError(grpc.StatusCode.INVALID_ARGUMENT, f"request {k}: {what}")
                # the request as far as it goes: its id, so that the caller can match it
                known = None
                if isinstance(given, Mapping):
                    known = pb.VerifyRequest(id=str(given.get("id", "")))
                failed.append(Result(error=error, request=known, index=k))
        yield from failed
        if not items:
            return
        if self._embedded is not None:  # a deadline only if the call gives one, as verify()
            yield from self._embedded_stream(
                items, concurrency, None if timeout is None else time.monotonic() + timeout
            )
            return
        if timeout is None:
            timeout = self.timeout * math.ceil(len(items) / concurrency)
        if streams > 1 and len(items) > 1:
            yield from self._spread(items, concurrency, streams, time.monotonic() + timeout)
        else:
            yield from self._remote_stream(items, concurrency, time.monotonic() + timeout)

    def _spread(
        self,
        items: list[tuple[int, verifier_pb2.VerifyRequest]],
        concurrency: int,
        streams: int,
        deadline: float,
    ) -> Iterator[Result]:
        """The requests dealt over several VerifyStreams, each in its own thread; results as
        they come. A stream that fails before any answer anywhere raises as one stream would;
        later, its unanswered requests get its error."""
        streams = min(streams, concurrency, len(items))  # each stream has a check in flight
        groups = [items[i::streams] for i in range(streams)]
        shares = [concurrency // streams + (i < concurrency % streams) for i in range(streams)]
        found: queue.Queue[Result | tuple[CrossgradError, list[int]] | None] = queue.Queue()
        abandoned = threading.Event()  # the caller stopped reading: every stream ends
        calls: list[Any] = []

        def run(group: list[tuple[int, verifier_pb2.VerifyRequest]], share: int) -> None:
            try:
                for result in self._remote_stream(group, share, deadline, abandoned, calls.append):
                    found.put(result)
            except CrossgradError as error:
                found.put((error, [k for k, _ in group]))
            finally:
                found.put(None)

        for group, share in zip(groups, shares):
            threading.Thread(target=run, args=(group, share), daemon=True).start()
        requests, given = dict(items), set()
        failures: list[tuple[CrossgradError, list[int]]] = []
        try:
            for _ in range(streams):
                while (item := found.get()) is not None:
                    if isinstance(item, Result):
                        given.add(item.index)
                        yield item
                    else:
                        failures.append(item)
        finally:
            abandoned.set()
            for call in list(calls):
                call.cancel()
        if failures and not given:
            raise failures[0][0]
        for error, indices in failures:
            for k in indices:
                if k not in given:
                    yield Result(error=error, request=requests[k], index=k)

    def _embedded_stream(
        self,
        items: list[tuple[int, verifier_pb2.VerifyRequest]],
        concurrency: int,
        deadline: float | None,
    ) -> Iterator[Result]:
        """The requests on a pool of threads, each within what is left of the call's deadline
        (it was ignored: a 0.05 s call ran 5 s and said UNVERIFIED where a server said
        DEADLINE_EXCEEDED)."""

        def run(k: int, request: verifier_pb2.VerifyRequest) -> Result:
            try:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise CrossgradError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "the call's deadline ran out before this request was checked (queue)",
                    )
                return Result(self._embedded.verify(request, left), request=request, index=k)
            except CrossgradError as error:
                return Result(error=error, request=request, index=k)

        waiting = iter(items)
        with ThreadPoolExecutor(concurrency, thread_name_prefix="crossgrad-verify") as pool:
            running: set[Future[Result]] = set()
            try:
                while True:
                    for k, request in waiting:  # top up to `concurrency` checks in flight
                        running.add(pool.submit(run, k, request))
                        if len(running) >= concurrency:
                            break
                    if not running:
                        return
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in running:
                    future.cancel()

    def _remote_stream(
        self,
        items: list[tuple[int, verifier_pb2.VerifyRequest]],
        concurrency: int,
        deadline: float,
        abandoned: threading.Event | None = None,
        on_call: Callable[[Any], None] = lambda call: None,
    ) -> Iterator[Result]:
        """The requests over one VerifyStream, again over a new one for those still open when
        it fails or a request gets a retry-safe UNAVAILABLE (a lost worker, a busy or draining
        server), within the deadline."""
        pending = dict(items)
        answered = False
        for attempt in range(1, RESUME_ATTEMPTS + 1):  # each ends in a retry or a return
            # A slot is taken when a request is sent and given back when its answer arrives, so
            # at most `concurrency` checks are in flight; stopped ends the feeder with the call.
            slots = threading.Semaphore(concurrency)
            stopped = threading.Event()

            def feed(
                todo: list[tuple[int, verifier_pb2.VerifyRequest]],
                slots: threading.Semaphore = slots,
                stopped: threading.Event = stopped,
            ) -> Iterator[verifier_pb2.VerifyStreamRequest]:
                for k, request in todo:
                    while not slots.acquire(timeout=0.1):
                        if stopped.is_set():
                            return
                    if stopped.is_set():
                        return
                    wire = pb.VerifyRequest()
                    wire.CopyFrom(request)
                    wire.id = f"{k}:{request.id}"  # unique on the stream, whatever the caller's ids
                    yield pb.VerifyStreamRequest(request=wire)

            call = self._stub.VerifyStream(
                feed(sorted(pending.items())),
                timeout=max(deadline - time.monotonic(), 0.001),
                metadata=self._metadata,
            )
            on_call(call)
            retry_safe: dict[int, CrossgradError] = {}  # answered UNAVAILABLE: to send again
            error: CrossgradError | None = None
            try:
                for answer in call:
                    k = int(answer.id.split(":", 1)[0])
                    request = pending.get(k)
                    if request is None:
                        continue  # not ours (cannot happen with a correct server)
                    slots.release()
                    answered = True
                    if answer.HasField("error"):
                        failure = error_from_status(answer.error)
                        if failure.code is grpc.StatusCode.UNAVAILABLE:
                            retry_safe[k] = failure
                            continue
                        yield Result(error=failure, request=pending.pop(k), index=k)
                    else:
                        answer.response.id = request.id
                        yield Result(answer.response, request=pending.pop(k), index=k)
            except grpc.RpcError as err:
                error = _error_from_rpc(err, self.target or "")
            finally:
                stopped.set()
                call.cancel()
            if not pending:
                return
            if error is None:  # the stream ended with requests unanswered, or answered UNAVAILABLE
                error = next(iter(retry_safe.values()), None) or CrossgradError(
                    grpc.StatusCode.UNAVAILABLE, "the stream ended before every request was answered"
                )
            limit = RESUME_ATTEMPTS if answered else STREAM_ATTEMPTS
            pause = min(2.0, 0.2 * 2**attempt)
            # (CANCELLED: a stopping server cancels the calls it was turning away; the caller's
            # own stop is `abandoned`)
            again = error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            retry = again and attempt < limit
            if retry and time.monotonic() + pause < deadline and not (abandoned and abandoned.is_set()):
                time.sleep(pause)
                continue
            if not answered:
                raise error
            for k, request in sorted(pending.items()):  # the calls failed under them
                yield Result(error=retry_safe.get(k, error), request=request, index=k)
            return

    def describe_graph(
        self,
        program: str,
        inputs: Mapping[str, npt.ArrayLike | Input],
        outputs: str | Sequence[str] = (),
        timeout: float | None = None,
    ) -> verifier_pb2.DescribeGraphResponse:
        """The engine's DAG for the program at these inputs (forward pass only); `.dag.dot` is
        its Graphviz DOT text."""
        timeout = self._open(timeout)
        full = build_request(program, inputs, outputs=outputs)
        request = pb.DescribeGraphRequest(program=program, inputs=full.inputs, outputs=full.outputs)
        if self._embedded is not None:
            return self._embedded.describe(request)
        return self._call(self._stub.DescribeGraph, request, timeout or SHORT_TIMEOUT)

    def list_ops(self, timeout: float | None = None) -> list[verifier_pb2.Op]:
        """The op table: every operation the request language knows."""
        timeout = self._open(timeout)
        if self._embedded is not None:
            return list(self._embedded.list_ops().ops)
        return list(self._call(self._stub.ListOps, pb.ListOpsRequest(), timeout or SHORT_TIMEOUT).ops)

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """SERVING, NOT_SERVING, ... (embedded: always SERVING)."""
        timeout = self._open(timeout)
        if self._embedded is not None:
            return "SERVING"
        response = self._call(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _seconds(timeout: Any) -> float | None:
    """None, or a timeout that is a positive number of seconds: 0 was the default deadline
    remotely and one already past embedded, and a str a TypeError from deep inside gRPC."""
    if timeout is None:
        return None
    _typed(timeout, numbers.Real, "timeout", "a number of seconds")
    if not (0 < timeout < math.inf):
        raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout!r}")
    return float(timeout)


def _bare_token(token: str) -> str:
    """The token without a "Bearer " in front (any case): one copied from a header, or from the
    server's docs, was sent as "Bearer Bearer x" and refused as an invalid token."""
    scheme, _, rest = token.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest.strip() else token


def _pem(root_certificates: bytes | str | os.PathLike[str]) -> bytes:
    """root_certificates as grpc takes them: PEM bytes, read from a file when given a path."""
    if isinstance(root_certificates, bytes):
        return root_certificates
    if not isinstance(root_certificates, (str, os.PathLike)):
        raise TypeError(
            "root_certificates must be PEM bytes or the path of a PEM file, not a "
            f"{type(root_certificates).__name__}"
        )
    try:
        with open(root_certificates, "rb") as file:
            return file.read()
    except OSError as exc:
        raise OSError(
            f"root_certificates: cannot read {os.fspath(root_certificates)}: {exc.strerror}"
        ) from None


def _known_fields(fields: Mapping[str, Any], what: str) -> None:
    """TypeError naming a field verify() does not take, and the nearest one it does."""
    for name in fields:
        if name not in REQUEST_FIELDS:
            close = difflib.get_close_matches(name, REQUEST_FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TypeError(f"{what} has no field {name!r}: {hint}fields: {', '.join(REQUEST_FIELDS)}")


def _as_request(given: verifier_pb2.VerifyRequest | Mapping[str, Any]) -> verifier_pb2.VerifyRequest:
    if isinstance(given, pb.VerifyRequest):
        return given
    if isinstance(given, Mapping):
        fields = dict(given)
        for required in ("program", "inputs"):
            if required not in fields:
                raise TypeError(f"a request dict needs {required!r} (it has {', '.join(fields)})")
        program, inputs = fields.pop("program"), fields.pop("inputs")
        _known_fields(fields, "a request dict")
        return build_request(program, inputs, **fields)
    raise TypeError(f"a request is a VerifyRequest or a dict of verify()'s arguments, not {type(given)}")
