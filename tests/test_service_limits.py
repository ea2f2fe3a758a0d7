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


def test_requests_waiting_for_a_worker_hold_the_server_to_its_byte_budget():
    """32 requests of 61 MB on one stream took the server process to 4.6 GB (each waiting
    request held, parsed and serialized again). With --max-held-mb the stream reads no further
    until a check gives its bytes back: every request is answered, the server stays small."""
    x = np.random.default_rng(0).normal(size=500_000)  # 4 MB
    requests = [
        {"program": f"y = sum(x * {k + 1}.0)", "inputs": {"x": x}, "references": ["jax"], "id": f"r{k}"}
        for k in range(48)
    ]
    args = ("--workers", "1", "--max-held-mb", "8")
    with LocalServer(args=args) as server, Client(server.address, timeout=120) as client:
        process = psutil.Process(server.pid)
        before = process.memory_info().rss
        peak, stop = [before], threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                peak.append(process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            results = client.verify_many(requests, concurrency=32)
        finally:
            stop.set()
            sampler.join()
        assert [r.error for r in results] == [None] * 48, [r.error for r in results if r.error]
        grew_mb = (max(peak) - before) / 2**20
        print(f"\n[held bytes] 48 requests of 4 MB on one stream: the server grew {grew_mb:.0f} MB")
        assert grew_mb < 250, grew_mb  # held without a budget: about 2.5 x 192 MB


def test_refused_requests_give_their_memory_back_at_once():
    """Twenty refused 32 MB requests left the server at 1.5 GB, idle: gRPC's abort() raised an
    error whose reference cycle kept each request's bytes until the cyclic GC ran. Refused
    calls now end with their status set, and their memory is reused by the next."""
    rng = np.random.default_rng(0)
    inputs = {f"x{k}": rng.normal(size=1_000_000) for k in range(3)}  # 24 MB
    program = "y = sum(tanh(x0)) + q"  # q is not defined: INVALID_ARGUMENT, after decoding it all
    args = ("--workers", "1", "--max-message-mb", "64")
    with LocalServer(args=args) as server, Client(server.address) as client:
        process = psutil.Process(server.pid)
        calls = (client.verify, client.describe_graph) * 6
        for k, call in enumerate(calls):
            if k == 2:  # after the first of each: what a refused request costs once
                before = process.memory_info().rss
            with pytest.raises(CrossgradError) as info:
                call(program, inputs)
            assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT, info.value
        grew_mb = (process.memory_info().rss - before) / 2**20
        print(f"\n[refused] 10 more refused requests of 24 MB: the server grew {grew_mb:.0f} MB")
        assert grew_mb < 120, grew_mb  # kept until the cyclic GC: about 4 x 24 MB each
        assert_worked_example(client.verify(**WORKED))


def test_held_bytes_turn_away_or_wait_past_the_budget():
    import asyncio

    from crossgrad.server.transport.servicer import HeldBytes

    async def scenario() -> list[str]:
        held, events = HeldBytes(10), []
        assert held.try_take(6) == 6 and held.try_take(6) is None  # a call: turned away (busy)
        assert held.try_take(4) == 4

        async def stream_read() -> None:  # a stream: waits for bytes given back
            events.append(f"took {await held.take(8)}")

        waiting = asyncio.create_task(stream_read())
        await asyncio.sleep(0.01)
        events.append("still waiting" if not waiting.done() else "did not wait")
        held.give(6)
        held.give(4)
        await waiting
        assert held.try_take(50) is None and held.held == 8
        held.give(8)
        assert held.try_take(50) == 10  # alone, one request may hold it all
        return events

    assert asyncio.run(scenario()) == ["still waiting", "took 8"]


def test_an_answer_past_the_message_limit_is_a_resource_error_the_server_counts():
    """DescribeGraph computed outputs of 96 MB: the client got gRPC's "Sent message larger than
    max" and the server logged the call OK. Now the server names the limit, and counts it."""
    from service_helpers import metric, wait_for

    def counted(port: int) -> float:
        return metric(port, "crossgrad_requests_total", method="DescribeGraph",
                      code="RESOURCE_EXHAUSTED")  # fmt: skip

    x = np.linspace(0, 1, 400)
    args = ("--workers", "1", "--max-message-mb", "1", "--metrics-port", "0")
    with LocalServer(args=args) as server, Client(server.address) as client:
        with pytest.raises(CrossgradError) as info:
            client.describe_graph("y = outer(x, z)", {"x": x, "z": x})  # 1.2 MB of values
        assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "sends at most 1 MiB (--max-message-mb)" in info.value.message, info.value
        # counted as the call ends, which is just after the client has its status
        assert wait_for(lambda: counted(server.metrics_port) == 1, 10), counted(server.metrics_port)
        assert client.describe_graph("y = outer(x, z)", {"x": x[:10], "z": x[:10]}).dag.nodes


def test_a_report_past_the_message_limit_leaves_its_values_out():
    """A 400-input Jacobian's report with every source's values is 4.9 MB: with --max-message-mb 1
    it ran, then was refused. The values are left out (values_omitted) and the verdict comes."""
    x = np.linspace(-1, 1, 400)
    args = ("--workers", "1", "--max-message-mb", "1")
    with LocalServer(args=args) as server, Client(server.address) as client:
        result = client.verify("y = tanh(x)", {"x": x}, checks=["jacobian"])
        assert result.verdict == "PASS", result.text
        blocks = result.response.points[0].blocks
        assert [b.quantity for b in blocks if b.values_omitted] == ["value", "jacobian"], blocks


def test_a_stream_cut_short_gives_back_every_byte_it_held():
    """Requests read from a stream hold bytes until their checks end: a stream the client
    cancels with checks waiting gives them all back (a task cancelled before it ran would have
    kept them, and the server would have turned every call away as busy)."""
    from crossgrad.v1 import verifier_pb2 as pb
    from crossgrad.v1 import verifier_pb2_grpc
    from service_helpers import metric, slow_request, wait_for

    args = ("--workers", "1", "--metrics-port", "0")
    with LocalServer(args=args) as server, grpc.insecure_channel(server.address) as channel:
        port = server.metrics_port
        stub = verifier_pb2_grpc.VerifierServiceStub(channel)
        requests = [pb.VerifyStreamRequest(request=slow_request(f"s{k}", 5.0)) for k in range(12)]
        call = stub.VerifyStream(iter(requests))
        assert wait_for(lambda: metric(port, "crossgrad_held_request_bytes") > 0)
        call.cancel()
        assert wait_for(lambda: metric(port, "crossgrad_held_request_bytes") == 0, 30)
        with Client(server.address) as client:
            assert_worked_example(client.verify(**WORKED))


def test_a_stream_whose_client_reads_nothing_holds_one_answer_size_at_most():
    """Answers a client has not read wait in the server: a client that sent 24 small requests
    whose reports were 7 MB each, and read none, held them all (and three such streams 0.5 GB,
    past --max-held-mb). They now count as held bytes, and a stream's next check waits while
    its unread answers hold as much as the largest answer the server sends."""
    from crossgrad.v1 import verifier_pb2 as pb
    from crossgrad.v1 import verifier_pb2_grpc
    from service_helpers import metric, wait_for

    x = np.random.default_rng(0).normal(size=300)  # a 300 x 300 Jacobian from 2 sources: 1.4 MB
    requests = [
        pb.VerifyStreamRequest(
            request=build_request(
                "y = tanh(x)", {"x": x + k}, checks=("jacobian",), references=["jax"], id=f"r{k}"
            )
        )
        for k in range(16)
    ]
    args = ("--workers", "1", "--metrics-port", "0", "--max-message-mb", "4")
    with LocalServer(args=args) as server, grpc.insecure_channel(server.address) as channel:
        port = server.metrics_port
        call = verifier_pb2_grpc.VerifierServiceStub(channel).VerifyStream(iter(requests))

        def held() -> float:
            return metric(port, "crossgrad_held_request_bytes")

        assert wait_for(lambda: held() > 4 << 20, 60)  # the answers count
        time.sleep(3)  # long enough for all 16 checks (about 0.1 s each)
        checked = metric(port, "crossgrad_checks_total", code="OK")
        # 4 MB of answers unread stop the stream's checks: one more may have been running
        assert held() < (4 << 20) + 2 * 1.5e6, held()
        assert checked < 16, checked
        call.cancel()
        assert wait_for(lambda: held() == 0, 30)
        with Client(server.address) as client:
            assert_worked_example(client.verify(**WORKED))


def test_streams_whose_clients_read_nothing_stop_at_half_the_servers_byte_budget():
    """Each stream kept up to --max-message-mb of unread answers: 24 such streams held 1.9 GB
    past a 1 GiB --max-held-mb, and every other call was BUSY. Once the server holds half its
    budget, a stream with an unread answer starts no more checks."""
    from crossgrad.v1 import verifier_pb2 as pb
    from crossgrad.v1 import verifier_pb2_grpc
    from service_helpers import metric, wait_for

    x = np.random.default_rng(0).normal(size=300)  # a 300 x 300 Jacobian from 2 sources: 1.4 MB

    def requests(stream: int) -> list[pb.VerifyStreamRequest]:
        return [
            pb.VerifyStreamRequest(
                request=build_request(
                    "y = tanh(x)",
                    {"x": x + k},
                    checks=("jacobian",),
                    references=["jax"],
                    id=f"{stream}.{k}",
                )
            )
            for k in range(8)
        ]

    args = ("--workers", "1", "--metrics-port", "0", "--max-message-mb", "4", "--max-held-mb", "16")
    with LocalServer(args=args) as server, grpc.insecure_channel(server.address) as channel:
        port = server.metrics_port
        stub = verifier_pb2_grpc.VerifierServiceStub(channel)
        calls = [stub.VerifyStream(iter(requests(s))) for s in range(4)]

        def held() -> float:
            return metric(port, "crossgrad_held_request_bytes")

        assert wait_for(lambda: held() > 8 << 20, 60)
        time.sleep(4)  # long enough for all 32 checks (about 0.1 s each)
        assert held() < (8 << 20) + 4 * 1.5e6, held()
        with Client(server.address) as client:  # room left for others
            assert_worked_example(client.verify(**WORKED))
        for call in calls:
            call.cancel()
        assert wait_for(lambda: held() == 0, 30)
