"""No request takes more than it declared: the audit's denial-of-service requests, replayed against
a real server. Each is answered (a report, or the error that names the limit) within its time
budget + 2 s, no worker grows past its memory cap, and the worked example is answered normally
right after each."""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import numpy as np
import psutil
import pytest
from crossgrad.clients import Client, CrossgradError, build_request
from crossgrad.clients.local_server import LocalServer
from service_helpers import WORKED, assert_worked_example, workers

MEMORY_CAP_MB = 3072
BUDGET = 3.0


def _gelu_tower() -> object:
    return build_request("y = " + "gelu(" * 8 + "x" + ")" * 8, {"x": [0.3]}, budget={"seconds": BUDGET})


def _fd_hessian_1000() -> object:
    x = np.linspace(-1, 1, 1000)
    budget = {"seconds": BUDGET, "hessian_max_inputs": 1000}
    return build_request("y = sum(x ** 3)", {"x": x}, checks=("hessian",), budget=budget)


def _samples_on_large_inputs() -> object:
    rng = np.random.default_rng(0)
    inputs = {n: rng.normal(size=500_000) for n in "abcd"}
    return build_request(
        "y = sum(a * b + c * d)", inputs, samples={"count": 2}, budget={"seconds": BUDGET}
    )


def _samples_times_sympy() -> object:
    rng = np.random.default_rng(1)
    return build_request(
        "y = sum(tanh(W @ x) ** 3)",  # about 3 s of sympy at each point
        {"W": rng.normal(size=(100, 100)) / 10, "x": rng.normal(size=100)},
        samples={"count": 2},
        budget={"seconds": BUDGET, "sympy_seconds": BUDGET},
    )


def _outer_jacobian() -> object:
    x = np.linspace(0, 1, 2000)
    return build_request(
        "y = outer(x, z)", {"x": x, "z": x}, checks=("jacobian",), budget={"seconds": BUDGET}
    )


def _long_program_every_check() -> object:
    chain = [f"h{k} = sin(h{k - 1}) * 1.0001" for k in range(1, 1999)]
    lines = ["h0 = x", *chain, "y = sum(h1998)"]  # 2,000 statements: the most a program may have
    return build_request(
        "\n".join(lines),
        {"x": [0.1, 0.2]},
        checks=("vjp", "jacobian", "hessian"),
        budget={"seconds": BUDGET},
    )


def _sin_exp_exp() -> object:
    return build_request("y = sum(sin(exp(exp(x))))", {"x": [17.0]}, budget={"seconds": 1.0})


CASES = {
    "8 nested gelu (sympy swells)": (_gelu_tower, BUDGET),
    "a 1,000-input Hessian by finite differences": (_fd_hessian_1000, BUDGET),
    "extra sample points on four 500,000-entry inputs": (_samples_on_large_inputs, BUDGET),
    "extra sample points on a slow symbolic program": (_samples_times_sympy, BUDGET),
    "a Jacobian through outer(x, y) of 2000 x 2000": (_outer_jacobian, BUDGET),
    "2,000 statements with vjp, jacobian and hessian": (_long_program_every_check, BUDGET),
    "sin(exp(exp(x))) at x = 17": (_sin_exp_exp, 1.0),
}
ANSWERS = (None, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


@pytest.fixture(scope="module")
def server():
    args = ("--workers", "2", "--worker-memory-mb", str(MEMORY_CAP_MB), "--max-message-mb", "64")
    with LocalServer(args=args) as s:
        yield s


class PeakMemory:
    """The largest RSS any worker reached while the block ran (sampled every 20 ms)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid, self.peak_mb, self._stop = server_pid, 0.0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for p in workers(self.server_pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.peak_mb = max(self.peak_mb, p.memory_info().rss / 2**20)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("case", list(CASES))
def test_a_costly_request_is_answered_within_its_budget(server, case):
    make, budget = CASES[case]
    request = make()
    with Client(server.address) as client, PeakMemory(server.pid) as memory:
        start = time.monotonic()
        try:
            result = client.verify_message(request, timeout=budget + 30)
            code = None
            assert result.verdict != 0
        except CrossgradError as exc:
            code = exc.code
            assert "budget" in exc.message or "limit" in exc.message or "memory" in exc.message, exc
        took = time.monotonic() - start
    assert code in ANSWERS
    assert took <= budget + 2.0, f"{case}: answered in {took:.1f} s ({code})"
    assert memory.peak_mb < MEMORY_CAP_MB
    with Client(server.address) as client:
        assert_worked_example(client.verify(**WORKED))
