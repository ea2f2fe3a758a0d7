"""Warming a worker before it reports ready: every import, JAX's and sympy's first compilations,
and the core's first check, so that no request after SERVING pays for them."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from crossgrad.v1 import verifier_pb2
from crossgrad.v1.tensors import to_tensor
from google.rpc import status_pb2

from ..limits import Limits
from .handlers import HandlerConfig, verify

pb = verifier_pb2


WARMUP_SECONDS = 120.0


def configure_caches(sizes: dict[str, int]) -> None:
    """Bound this process's caches (parse, sympy, jax) to the server's sizes."""
    from .. import caches

    caches.configure(**sizes)


def _request(program: str, inputs: dict[str, list[float]], **fields: object) -> bytes:
    msg = pb.VerifyRequest(
        program=program,
        inputs=[pb.Input(name=n, value=to_tensor(np.asarray(v, np.float64))) for n, v in inputs.items()],
        **fields,
    )
    return msg.SerializeToString()


WARMUP_REQUESTS = (
    # the worked example: vjp and Jacobians through every reference
    _request(
        "Q = 3*a**3 - b**2",
        {"a": [2.0, 3.0], "b": [6.0, 4.0]},
        cotangents={"Q": to_tensor(np.ones(2))},
        checks=[pb.CHECK_VJP, pb.CHECK_JACOBIAN],
    ),
    # a Hessian, a reduction, a kink and a FAIL with blame: the remaining code paths
    _request("y = sum(tanh(x) * relu(x)) + max(x)", {"x": [0.5, -1.0, 0.0]}, checks=[pb.CHECK_HESSIAN]),
    _request(
        "y = sum(x ** 2)",
        {"x": [1.0, 2.0]},
        claimed_vjp=[pb.ClaimedGradient(input="x", gradient=to_tensor(np.array([2.0, 5.0])))],
    ),
)


def warm(config: HandlerConfig) -> float:
    """Run the warm-up requests; returns how long it took. They run under the default limits
    and a budget of their own: they exercise the code, whatever the server's policy for
    requests is (a server whose limits refuse Hessians still warms up)."""
    start = time.perf_counter()
    # the hull fit at kinks (verdict.hull_misfit) imports scipy's nnls when first needed: 0.4 s
    # of the first request at a kink that the warm-up requests do not reach
    import scipy.optimize  # noqa: F401

    own = dataclasses.replace(config, limits=Limits(), default_seconds=WARMUP_SECONDS)
    for payload in WARMUP_REQUESTS:
        outcome = verify(payload, own, seconds=WARMUP_SECONDS)
        if not outcome.ok:
            why = status_pb2.Status.FromString(outcome.payload).message
            raise RuntimeError(f"a warm-up check failed: {why}")
    return time.perf_counter() - start
