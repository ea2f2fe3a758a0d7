"""The gRPC service, tested as its users reach it: a real server process on a loopback port."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from crossgrad.clients import Client, CrossgradError, build_request
from crossgrad.clients.client import error_from_status
from crossgrad.clients.local_server import LocalServer
from crossgrad.engine import OPS
from crossgrad.server.check import check
from crossgrad.server.model import CheckRequest, InputSpec
from crossgrad.server.transport import convert
from crossgrad.v1 import verifier_pb2, verifier_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from service_helpers import (
    WORKED,
    assert_worked_example,
    cpu_seconds,
    metric,
    slow_request,
    unused_address,
    wait_for,
    worked_request,
    workers,
)

pb = verifier_pb2


@pytest.fixture(scope="module")
def server():
    args = ("--workers", "2", "--metrics-port", "0", "--max-message-mb", "16", "--log-level", "WARNING")
    with LocalServer(args=args) as s:
        yield s


@pytest.fixture
def client(server):
    with Client(server.address) as c:
        yield c


def _stub(address: str):
    channel = grpc.insecure_channel(address)  # no retries: these tests look at first answers
    return channel, verifier_pb2_grpc.VerifierServiceStub(channel)


def _rpc_error(call) -> CrossgradError:
    with pytest.raises(CrossgradError) as info:
        call()
    return info.value


# ---------------------------------------------------------------- the worked example


def test_worked_example_through_verify_is_the_in_process_report(client):
    result = client.verify(**WORKED)
    assert_worked_example(result)
    assert result.response.worker in (0, 1) and result.response.request_id
    node_names = {n.name for n in result.response.dag.nodes}
    assert {"SubBackward0", "MulBackward0", "PowBackward0"} <= node_names
    # the same report as the core computes in-process (the parts that do not depend on time)
    request = CheckRequest(
        WORKED["program"],
        [InputSpec(n, v) for n, v in WORKED["inputs"].items()],
        cotangents=WORKED["cotangents"],
        checks=WORKED["checks"],
    )
    local = convert.report_message(check(request), 10**6)
    assert result.response.verdict == local.verdict
    assert result.response.summary == local.summary
    assert list(result.response.points) == list(local.points)
    assert result.response.dag == local.dag
    assert result.response.outputs == local.outputs


def test_worked_example_through_verify_stream(server):
    channel, stub = _stub(server.address)
    with channel:
        requests = [pb.VerifyStreamRequest(request=worked_request(id=f"r{k}")) for k in range(3)]
        answers = list(stub.VerifyStream(iter(requests), timeout=60))
    assert sorted(a.id for a in answers) == ["r0", "r1", "r2"]
    for a in answers:
        assert a.WhichOneof("result") == "response"
        assert a.response.id == a.id and a.response.verdict == pb.VERDICT_PASS


def test_embedded_client_gives_the_server_report(client):
    remote = client.verify(**WORKED)
    local = Client.embedded().verify(**WORKED)
    assert_worked_example(local)
    assert list(local.response.points) == list(remote.response.points)


# ---------------------------------------------------------------- standard services


def test_health_reflection_and_the_op_table(server, client):
    assert client.health() == "SERVING"
    assert client.health("crossgrad.v1.VerifierService") == "SERVING"
    with grpc.insecure_channel(server.address) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "crossgrad.v1.VerifierService" in services and "grpc.health.v1.Health" in services
    ops = {op.name: op for op in client.list_ops()}
    assert set(ops) == {name for name, spec in OPS.items() if not spec.internal}
    assert ops["relu"].conventions["engine"] and ops["relu"].nonsmooth
    assert [a.name for a in ops["sum"].attributes] == ["axis", "keepdims"]
    assert "SumBackward" in ops["sum"].backward_node


# ---------------------------------------------------------------- errors


def test_a_bad_program_is_invalid_argument_with_line_and_column(client):
    error = _rpc_error(lambda: client.verify("h = sin(x)\ny = frobnicate(h)", {"x": [1.0]}))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations and error.field_violations[0][0] == "program"
    assert "frobnicate" in error.message
    assert (error.info["line"], error.info["column"]) == ("2", "5")


def test_a_long_error_stays_an_invalid_argument_naming_line_and_column(client):
    """An undefined name in a 200-statement program listed every variable, and a name of 3,000
    characters was echoed whole: past the client's 8 KiB of trailers it got RESOURCE_EXHAUSTED
    (or crossgrad's client a bare ValueError) in the status's place."""
    program = "\n".join(f"hidden_layer_{i} = tanh(a * {i})" for i in range(200))
    error = _rpc_error(lambda: client.verify(program + "\nQ = sum(hidden_layr_3)", {"a": [1.0, 2.0]}))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT, error
    assert (error.info["line"], error.info["column"]) == ("201", "9")
    assert "did you mean 'hidden_layer_3'?" in error.message and "and 189 more" in error.message
    request = build_request(**WORKED)
    request.cotangents["\u0103" * 3000].CopyFrom(request.cotangents["Q"])  # 2 bytes a character
    for _ in range(3):
        error = _rpc_error(lambda: client.verify_message(request))
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT and "more bytes" in error.message


def test_bad_fields_are_named(client):
    error = _rpc_error(lambda: client.verify("y = sum(x)", {"x": [1.0]}, cotangents={"z": [1.0]}))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    bad_bytes = build_request("y = sum(x)", {"x": [1.0, 2.0]})
    bad_bytes.inputs[0].value.data = b"\x00" * 12  # 12 bytes for 2 float64 entries
    error = _rpc_error(lambda: client.verify_message(bad_bytes))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations[0][0] == "inputs[x].value" and "12 bytes" in error.message
    error = _rpc_error(lambda: client.verify(**WORKED, id="x" * 100_000))  # echoed and logged
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT and error.field_violations[0][0] == "id"


def test_oversize_requests_are_resource_exhausted(client):
    too_many = np.zeros(1_000_001)  # one over the default limit of elements per input
    error = _rpc_error(lambda: client.verify("y = sum(x)", {"x": too_many}))
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit" in error.message
    too_big = np.zeros((2, 1_100_000))  # 17.6 MB: over the server's 16 MB message limit
    error = _rpc_error(lambda: client.verify("y = sum(x)", {"x": too_big}))
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    # named by the server, with the field and the flag (gRPC's own said "Received message
    # larger than max", and was neither counted nor logged)
    assert error.field_violations[0][0] == "request", error
    assert "reads at most 16 MiB (--max-message-mb)" in error.message, error
    # on a stream it is one request's answer, and the stream goes on (it was cut)
    requests = [
        build_request(**WORKED, id="before"),
        build_request("y = sum(x)", {"x": too_big}, id="big"),
        build_request(**WORKED, id="after"),
    ]
    results = {r.id: r for r in client.verify_many(requests, concurrency=1)}
    big = results["big"].error
    assert big.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-message-mb" in big.message, big
    assert_worked_example(results["before"])
    assert_worked_example(results["after"])


def test_bytes_that_are_not_a_request_are_invalid_argument_and_the_server_goes_on(server, client):
    channel = grpc.insecure_channel(server.address)
    with channel:
        for method in ("Verify", "DescribeGraph", "ListOps"):
            call = channel.unary_unary(f"/crossgrad.v1.VerifierService/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(b"\x0a\x05ab", timeout=10)  # field 1 says 5 bytes follow; 2 do
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, info.value)
            assert "not a valid crossgrad.v1." in info.value.details()
        # a string that is not UTF-8: protobuf refuses the message without naming the field
        wire = build_request(**WORKED).SerializeToString().replace(b"\n\x01b", b"\n\x01\xff")
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/crossgrad.v1.VerifierService/Verify")(wire, timeout=10)
        error = error_from_status(rpc_status.from_call(info.value))
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.field_violations[0][0] == "inputs[1].name", error
        assert error.message == "inputs[1].name: the string is not UTF-8", error
    assert_worked_example(client.verify(**WORKED))


@pytest.mark.parametrize("same_id", ["ok1", ""])  # two without an id are as ambiguous
def test_a_stream_answers_what_it_read_before_bytes_it_cannot_read_and_refuses_duplicate_ids(
    server, same_id
):
    def refusals() -> float:
        return metric(server.metrics_port, "crossgrad_checks_total", code="INVALID_ARGUMENT")

    before = refusals()
    channel = grpc.insecure_channel(server.address)
    first = pb.VerifyStreamRequest(request=slow_request(same_id))  # ~3 s: the second comes meanwhile
    second = pb.VerifyStreamRequest(request=build_request(**WORKED, id=same_id))
    with channel:
        call = channel.stream_stream("/crossgrad.v1.VerifierService/VerifyStream")
        wires = [first.SerializeToString(), second.SerializeToString(), b"\x0a\x05ab"]
        answers = call(iter(wires), timeout=60)
        got = []
        with pytest.raises(grpc.RpcError) as info:
            got.extend(pb.VerifyStreamResponse.FromString(a) for a in answers)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # the first was checked (it used to be cancelled); the second, sent while it ran, refused
    assert sorted(a.WhichOneof("result") for a in got) == ["error", "response"], got
    refused = next(a for a in got if a.WhichOneof("result") == "error")
    assert refused.id == same_id and "already in use" in refused.error.message
    # counted (and logged) as every request read is: it was neither
    assert wait_for(lambda: refusals() == before + 1), (before, refusals())


def test_a_stream_request_with_a_string_that_is_not_utf8_is_answered_by_its_id(server):
    """Such a request ended the whole stream (INVALID_ARGUMENT "request.program"), the requests
    after it unanswered, though its id could be read: it gets its own error, as Verify's."""
    bad = pb.VerifyStreamRequest(request=build_request(**WORKED, id="bad")).SerializeToString()
    bad = bad.replace(b"Q = 3", b"Q = \xff")
    wires = [
        pb.VerifyStreamRequest(request=build_request(**WORKED, id="before")).SerializeToString(),
        bad,
        pb.VerifyStreamRequest(request=build_request(**WORKED, id="after")).SerializeToString(),
    ]
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream("/crossgrad.v1.VerifierService/VerifyStream")
        got = {a.id: a for a in map(pb.VerifyStreamResponse.FromString, call(iter(wires), timeout=60))}
    assert sorted(got) == ["after", "bad", "before"], got
    assert got["before"].response.verdict == got["after"].response.verdict == pb.VERDICT_PASS
    error = got["bad"].error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], error
    assert error.message == "program: the string is not UTF-8", error


def test_a_claim_of_no_gradient_is_read_as_such(client):
    fields = {"cotangents": {"Q": [1.0, 1.0]}}
    inputs = {"a": [2.0, 3.0], "c": [1.0]}
    # Q does not depend on c: "no gradient" is right for c, and wrong for a
    right = client.verify("Q = 3*a**3", inputs, claimed_vjp={"c": None}, **fields)
    assert right.verdict == "PASS", right.text
    wrong = client.verify("Q = 3*a**3", inputs, claimed_vjp={"a": None}, **fields)
    assert wrong.verdict == "FAIL", wrong.text
    both = build_request("Q = 3*a**3", inputs, claimed_vjp={"c": [0.0]}, **fields)
    both.claimed_vjp[0].none = True
    error = _rpc_error(lambda: client.verify_message(both))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT and "not both" in error.message


def test_an_empty_tensor_with_huge_dimensions_is_refused(client):
    msg = worked_request()
    msg.inputs[0].value.Clear()
    msg.inputs[0].value.shape[:] = [0, 2**62, 2**62]  # no entries; numpy cannot shape it
    error = _rpc_error(lambda: client.verify_message(msg))
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert error.field_violations[0][0] == "inputs[a].value" and "no entries" in error.message


def test_time_waiting_for_a_worker_counts_against_the_budget(server, client):
    """Both workers busy: a request with a 1 s budget is not answered 3 s later with a PASS, but
    after about 1 s with DEADLINE_EXCEEDED in the queue stage."""
    answers: queue.Queue = queue.Queue()
    busy = [_in_background(server.address, slow_request(seconds=6.0), answers) for _ in range(2)]
    time.sleep(0.5)
    start = time.monotonic()
    error = _rpc_error(lambda: client.verify(**WORKED, budget={"seconds": 1.0}))
    took = time.monotonic() - start
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED and error.info["stage"] == "queue"
    assert took < 1.0 + 1.0, took
    for t in busy:
        t.join(60)
    assert_worked_example(client.verify(**WORKED))


def _stopped_checks(port: int) -> float:
    """Checks stopped early: out of their time budget, or cancelled by their caller."""
    return metric(port, "crossgrad_checks_total", code="DEADLINE_EXCEEDED") + sum(
        metric(port, "crossgrad_cancelled_checks_total", state=s, why=w)
        for s in ("queued", "running")
        for w in ("cancelled", "deadline")
    )


def test_a_short_deadline_stops_the_work_and_the_server_goes_on(server, client):
    stopped = _stopped_checks(server.metrics_port)
    start = time.monotonic()
    error = _rpc_error(lambda: client.verify_message(slow_request(), timeout=0.1))
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    # the worker stopped working on it (the check takes ~3 s when nothing stops it): the server
    # counts it stopped, and a moment later its workers are idle
    assert wait_for(lambda: _stopped_checks(server.metrics_port) > stopped, 5)
    before = cpu_seconds(workers(server.pid))
    time.sleep(1.0)
    assert cpu_seconds(workers(server.pid)) - before < 0.3
    assert time.monotonic() - start < 3.0
    assert_worked_example(client.verify(**WORKED))


@pytest.mark.parametrize("deadline", [0.3, 0.8])
def test_a_deadline_is_answered_by_the_server_naming_the_stage(server, client, deadline):
    """A check reaches its deadline at its checkpoints, which sympy's steps space out: the
    server answers before the caller's deadline itself (gRPC's own answer said nothing of where
    the time went), and counts the call DEADLINE_EXCEEDED, not CANCELLED."""
    before = metric(
        server.metrics_port, "crossgrad_requests_total", method="Verify", code="DEADLINE_EXCEEDED"
    )
    error = _rpc_error(lambda: client.verify_message(slow_request(), timeout=deadline))
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.info.get("stage") in ("parse", "engine", "sympy", "jax", "fd", "compare"), error
    # the caller's deadline ran out, not the request's 30 s budget
    assert error.message.startswith("the call's deadline ("), error
    assert wait_for(
        lambda: (
            metric(
                server.metrics_port,
                "crossgrad_requests_total",
                method="Verify",
                code="DEADLINE_EXCEEDED",
            )
            > before
        ),
        5,
    )


def test_a_stream_of_slow_checks_does_not_hold_up_other_callers(server, client):
    """A stream takes at most one worker's share at a time, not 32 places in the queues."""
    channel, stub = _stub(server.address)
    items = [pb.VerifyStreamRequest(request=slow_request(f"s{k}", seconds=1.0)) for k in range(12)]
    with channel:
        stream = stub.VerifyStream(iter(items), timeout=60)
        time.sleep(0.5)  # the stream's checks have started
        start = time.monotonic()
        assert_worked_example(client.verify(**WORKED))
        took = time.monotonic() - start
        assert len(list(stream)) == 12
    assert took < 2.5, took  # behind one 1 s check per worker at most (was 12 s behind all)


def test_a_stream_of_200_mixed_requests_gets_200_answers(server):
    rng = np.random.default_rng(1)
    requests, kinds = [], {}
    for k in range(200):
        rid = f"req-{k}"
        if k % 10 == 3:
            msg, kinds[rid] = build_request("y = sum(x ** )", {"x": [1.0]}, id=rid), "invalid"
        elif k % 20 == 7:
            msg, kinds[rid] = slow_request(rid, seconds=0.5), "slow"
        else:
            a = rng.uniform(1, 2, size=3).tolist()
            msg = build_request("y = sum(tanh(a) * a ** 2)", {"a": a}, id=rid)
            kinds[rid] = "valid"
        requests.append(pb.VerifyStreamRequest(request=msg))
    channel, stub = _stub(server.address)
    with channel:
        answers = list(stub.VerifyStream(iter(requests), timeout=120))
    assert sorted(a.id for a in answers) == sorted(kinds)
    for a in answers:
        if kinds[a.id] == "valid":
            assert a.WhichOneof("result") == "response" and a.response.verdict == pb.VERDICT_PASS
        elif kinds[a.id] == "invalid":
            assert a.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        elif a.WhichOneof("result") == "error":  # over its budget: stopped, naming the stage
            assert a.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], a
            assert "stage" in a.error.message
        else:  # or answered within it, without the symbolic reference it had no time for
            sympy = next(r for r in a.response.references if r.name == "sympy")
            assert not sympy.ran and "budget" in sympy.note, sympy


# ---------------------------------------------------------------- auth, draining, faults


def test_a_token_is_required_when_set_but_health_stays_open():
    with LocalServer(args=("--workers", "1", "--token", "s3cret")) as server:
        for token, reason in ((None, "MISSING_TOKEN"), ("wrong", "INVALID_TOKEN")):
            with Client(server.address, token=token) as c:
                error = _rpc_error(lambda c=c: c.verify(**WORKED))
                assert error.code is grpc.StatusCode.UNAUTHENTICATED and error.info["reason"] == reason
                assert c.health() == "SERVING"
        with Client(server.address, token="s3cret") as c:
            assert_worked_example(c.verify(**WORKED))
        channel, stub = _stub(server.address)  # the scheme's name is case-insensitive
        with channel:
            answer = stub.Verify(build_request(**WORKED), metadata=(("authorization", "bearer s3cret"),))
        assert answer.verdict == pb.VERDICT_PASS


def _in_background(address: str, request, answers: queue.Queue) -> threading.Thread:
    """Verify `request` in a thread; its answer (a response or the RpcError) goes to `answers`."""

    def call() -> None:
        channel, stub = _stub(address)
        with channel:
            try:
                answers.put(stub.Verify(request, timeout=60))
            except grpc.RpcError as err:
                answers.put(err)

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_sigterm_finishes_calls_in_flight_refuses_new_ones_and_exits_0(tmp_path):
    log = (tmp_path / "server.log").open("w+")
    server = LocalServer(args=("--workers", "2", "--grace-seconds", "20"), stderr=log)
    with server, log:
        results: queue.Queue = queue.Queue()
        threads = [_in_background(server.address, slow_request(seconds=30.0), results) for _ in range(2)]
        time.sleep(0.5)  # both are in flight
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        channel, stub = _stub(server.address)
        with channel, pytest.raises(grpc.RpcError) as refused:
            stub.Verify(worked_request(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        # with the server's reason and a retry delay: not mistaken for a server nobody reached
        status = rpc_status.from_call(refused.value)
        assert status is not None and len(status.details) == 2  # ErrorInfo and RetryInfo
        error = error_from_status(status)
        assert error.info["reason"] == "SHUTTING_DOWN", error
        for t in threads:
            t.join(60)
        for _ in threads:  # both finished normally: the slow program answers within its budget
            answer = results.get_nowait()
            assert isinstance(answer, pb.VerifyResponse), answer
        assert server.process.wait(30) == 0
        assert not list(Path(server._tmp.name).iterdir())  # its --port-file is gone with it
        log.seek(0)
        text = log.read()
        assert "Traceback" not in text, text  # the workers stopped as told (and logged nothing)
        lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
        turned_away = [x for x in lines if x.get("code") == "UNAVAILABLE"]
        assert len(turned_away) == 1 and turned_away[0]["seconds"] >= 0, turned_away


def test_calls_still_running_when_the_grace_period_ends_are_told_to_retry():
    server = LocalServer(args=("--workers", "2", "--grace-seconds", "1"))
    with server:
        results: queue.Queue = queue.Queue()
        thread = _in_background(server.address, slow_request(seconds=30.0), results)  # ~3 s
        # and a stream its client keeps open (it sent one request and waits)
        channel, stub = _stub(server.address)
        hold = threading.Event()

        def requests():
            yield pb.VerifyStreamRequest(request=build_request(**WORKED, id="first"))
            hold.wait(30)

        stream = stub.VerifyStream(requests(), timeout=60)
        assert next(stream).id == "first"
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        thread.join(30)
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        for err in (results.get_nowait(), ended.value):
            assert isinstance(err, grpc.RpcError) and err.code() is grpc.StatusCode.UNAVAILABLE, err
            # not gRPC's bare "Cancelling all calls"
            assert error_from_status(rpc_status.from_call(err)).info["reason"] == "SHUTTING_DOWN"
        hold.set()
        channel.close()
        assert server.process.wait(30) == 0


def test_a_second_sigterm_ends_the_grace_period_at_once():
    """Ctrl-C twice (or a second SIGTERM) waited out the whole grace period for a stream its
    client kept open; the second signal now ends it, and the stream is told to retry."""
    server = LocalServer(args=("--workers", "1", "--grace-seconds", "120"))
    with server:
        channel, stub = _stub(server.address)
        hold = threading.Event()

        def requests():
            yield pb.VerifyStreamRequest(request=build_request(**WORKED, id="first"))
            hold.wait(120)

        with channel:
            stream = stub.VerifyStream(requests(), timeout=150)
            assert next(stream).id == "first"
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):  # draining: the stream is in flight
                server.process.wait(2)
            began = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(30) == 0 and time.monotonic() - began < 10
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
            assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
            hold.set()


def test_verify_many_carries_on_across_a_server_restart():
    """A replica restarted under a running verify_many: the draining server answers what it
    reads after SIGTERM with a retry-safe UNAVAILABLE, and the client sends every request still
    open again, to the new server, once it listens (206 of 300 were lost before)."""
    port = int(unused_address().rsplit(":", 1)[1])
    args = ("--workers", "2", "--port", str(port))
    requests = [  # new programs (about 70 ms each): the batch outlasts the restart
        build_request(f"y = sum(tanh(x) * x + {k + 1} * x ** 2)", {"x": [0.5, -0.25, 1.5]})
        for k in range(120)
    ]
    results: list = []

    def run() -> None:
        with Client(f"127.0.0.1:{port}", timeout=60) as client:
            results.extend(client.verify_many(requests, concurrency=4))

    thread = threading.Thread(target=run)
    with LocalServer(args=args) as first:
        thread.start()
        time.sleep(1.0)
        assert first.stop() == 0
    with LocalServer(args=args):
        thread.join(120)
    assert len(results) == len(requests)
    assert [r.error for r in results if r.error is not None] == []
    assert all(r.verdict == "PASS" for r in results)


def test_a_worker_killed_mid_request_is_replaced_and_the_server_goes_on():
    with LocalServer(args=("--workers", "2", "--metrics-port", "0")) as server:
        outcome: queue.Queue = queue.Queue()
        thread = _in_background(server.address, slow_request(seconds=20.0), outcome)
        procs = workers(server.pid)
        before = {p.pid: cpu_seconds([p]) for p in procs}
        time.sleep(1.0)
        busy = max(procs, key=lambda p: cpu_seconds([p]) - before[p.pid])
        busy.send_signal(signal.SIGKILL)
        thread.join(60)
        error = outcome.get_nowait()
        assert isinstance(error, grpc.RpcError) and error.code() is grpc.StatusCode.UNAVAILABLE
        assert "died" in error.details() and "retry" in error.details()
        # the worker count is restored, and later requests succeed
        assert wait_for(lambda: metric(server.metrics_port, "crossgrad_workers_ready") == 2, 60)
        assert busy.pid not in {p.pid for p in workers(server.pid)}
        assert metric(server.metrics_port, "crossgrad_worker_restarts_total", reason="signal 9") == 1
        with Client(server.address) as c:
            for _ in range(3):
                assert_worked_example(c.verify(**WORKED))
        assert server.stop() == 0


def test_health_is_not_serving_while_no_worker_is_ready():
    """With every worker dead or warming up, health said SERVING: a probe or load balancer kept
    sending calls that could only wait. It says NOT_SERVING until a worker is ready again."""
    with LocalServer(args=("--workers", "1")) as server, Client(server.address) as client:
        assert client.health() == "SERVING"
        (worker,) = workers(server.pid)
        worker.send_signal(signal.SIGKILL)
        assert wait_for(lambda: client.health() == "NOT_SERVING", 30)
        assert wait_for(lambda: client.health() == "SERVING", 120)
        assert_worked_example(client.verify(**WORKED))


def test_a_program_whose_check_kills_its_worker_twice_is_refused_not_retried():
    """A death is retry-safe once (the OOM killer may have meant another process); a check that
    crashed its worker every time was retried by the client four times, each attempt killing a
    worker, until none was ready (from an operations audit). Twice, it is refused at once."""
    with LocalServer(args=("--workers", "2", "--metrics-port", "0")) as server:
        request = slow_request(seconds=20.0)
        codes = []
        for _ in range(2):
            assert wait_for(lambda: metric(server.metrics_port, "crossgrad_workers_ready") == 2, 60)
            outcome: queue.Queue = queue.Queue()
            procs = workers(server.pid)
            before = {p.pid: cpu_seconds([p]) for p in procs}
            thread = _in_background(server.address, request, outcome)
            time.sleep(1.0)
            max(procs, key=lambda p: cpu_seconds([p]) - before[p.pid]).send_signal(signal.SIGKILL)
            thread.join(60)
            codes.append(outcome.get_nowait().code())
        assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL]
        channel, stub = _stub(server.address)
        with channel, pytest.raises(grpc.RpcError) as info:  # asked again: no worker is risked
            stub.Verify(request, timeout=5)
        assert info.value.code() is grpc.StatusCode.INTERNAL
        assert "killed its worker process 2 times" in info.value.details()
        with Client(server.address) as c:  # the others go on
            assert_worked_example(c.verify(**WORKED))
        assert server.stop() == 0


def test_hung_workers_and_a_request_larger_than_the_pipe_do_not_stop_the_server():
    """Both workers stopped (SIGSTOP) and a 4 MB request: the server's write to the worker's
    pipe blocked its event loop, so health went unanswered and the watchdog never ran (found by
    a fault audit). The pipe is written as it takes bytes; the hung worker is killed, and the
    request, which it never read, is answered retry-safe."""
    with LocalServer(args=("--workers", "2", "--kill-grace-seconds", "0.5")) as server:
        hung = workers(server.pid)
        for p in hung:
            p.send_signal(signal.SIGSTOP)
        try:
            big = build_request("y = sum(x * x)", {"x": np.arange(500_000, dtype=float)})
            big.budget.seconds = 2.0
            outcome: queue.Queue = queue.Queue()
            thread = _in_background(server.address, big, outcome)
            time.sleep(1.0)
            with Client(server.address) as c:
                assert c.health() == "SERVING"  # answered while the worker holds the request
            thread.join(30)
            error = outcome.get_nowait()
            assert isinstance(error, grpc.RpcError)
            # not read by its worker: not checked, so safe to retry (it said DEADLINE_EXCEEDED,
            # "ran out in the idle stage")
            assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
            assert "did not take it up" in error.details()
        finally:
            for p in hung:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(signal.SIGCONT)
        # the worker that held the request was replaced (the other one resumed)
        assert wait_for(
            lambda: len({p.pid for p in workers(server.pid)} - {p.pid for p in hung}) == 1, 30
        )
        assert wait_for(lambda: len(workers(server.pid)) == 2, 30)
        with Client(server.address) as c:
            assert_worked_example(c.verify(**WORKED))
        assert server.stop() == 0


def test_workers_die_with_a_server_killed_outright():
    """SIGKILL leaves no drain: the workers computed their checks to the end of their budgets
    (16 s of CPU each, found by a fault audit) before noticing nobody was there."""
    with LocalServer(args=("--workers", "2")) as server:
        procs = workers(server.pid)
        outcome: queue.Queue = queue.Queue()
        rng = np.random.default_rng(0)  # many stages at 11 points: over 10 s of work
        slow = build_request(
            "h = tanh(W @ x + b)\nloss = sum(sin(h) * h ** 3)",
            {"W": rng.normal(size=(12, 12)), "x": rng.normal(size=12), "b": rng.normal(size=12)},
            checks=("vjp", "jacobian", "hessian"),
            samples={"count": 10, "seed": 1},
            budget={"seconds": 60.0},
        )
        thread = _in_background(server.address, slow, outcome)
        time.sleep(1.0)
        server.process.kill()
        server.process.wait()

        def gone(p: psutil.Process) -> bool:
            try:
                return p.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        assert wait_for(lambda: all(gone(p) for p in procs), 3)
        thread.join(10)
