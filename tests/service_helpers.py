"""Shared by the service tests: requests, a slow program, reading a server's metrics and workers."""

from __future__ import annotations

import socket
import time
import urllib.request

import numpy as np
import psutil
from crossgrad.clients import build_request
from prometheus_client.parser import text_string_to_metric_families

WORKED = {
    "program": "Q = 3*a**3 - b**2",
    "inputs": {"a": [2.0, 3.0], "b": [6.0, 4.0]},
    "cotangents": {"Q": [1.0, 1.0]},
    "checks": ("vjp", "jacobian"),
}
_SLOW_W = np.random.default_rng(5).normal(size=(100, 100)) / 10
_SLOW_X = np.random.default_rng(6).normal(size=100)
_salts = iter(range(1, 10**6))


def unused_address() -> str:
    """A loopback address nobody listens on (a port the system just handed out, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def worked_request(id: str = "", **changes: object):
    fields = {**WORKED, **changes}
    return build_request(fields.pop("program"), fields.pop("inputs"), id=id, **fields)


def slow_request(id: str = "", seconds: float = 30.0):
    """About 3 s of sympy (every exact derivative of a 100 x 100 layer), unless the budget is
    shorter. Each request is a new program (a constant of its own), so no cache shortens it."""
    program = f"y = sum(tanh(W @ x + {next(_salts)}))"
    budget = {"seconds": seconds, "sympy_seconds": seconds}
    return build_request(program, {"W": _SLOW_W, "x": _SLOW_X}, id=id, budget=budget)


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's Prometheus samples: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(port: int, name: str, **labels: str) -> float:
    return metrics(port).get((name, tuple(sorted(labels.items()))), 0.0)


def workers(server_pid: int) -> list[psutil.Process]:
    """The server's worker processes (spawned children; not multiprocessing's resource tracker)."""
    children = psutil.Process(server_pid).children()
    return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def assert_worked_example(result) -> None:
    assert result.verdict == "PASS", result.text
    assert result.grad("a").tolist() == [36.0, 81.0]
    assert result.grad("b").tolist() == [-12.0, -8.0]
    assert np.array_equal(result.jacobian("Q", "a"), np.diag([36.0, 81.0]))
    assert np.array_equal(result.jacobian("Q", "b"), np.diag([-12.0, -8.0]))
