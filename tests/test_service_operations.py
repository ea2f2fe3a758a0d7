"""What operators and generic tools see of the service: JSON requests, the DAG, cache affinity,
metrics, structured logs, TLS, and a client that installs without sympy and JAX."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import pytest
from crossgrad.clients import Client, CrossgradError, build_request
from crossgrad.clients.local_server import LocalServer
from crossgrad.server.language import LimitError
from crossgrad.server.limits import Limits
from crossgrad.v1 import verifier_pb2, verifier_pb2_grpc
from google.protobuf import json_format
from google.rpc import status_pb2
from service_helpers import WORKED, assert_worked_example, metric, slow_request, wait_for

ROOT = Path(__file__).resolve().parent.parent
pb = verifier_pb2
SERVE = [sys.executable, "-m", "crossgrad.server", "serve", "--workers", "1"]


@pytest.fixture(scope="module")
def logged_server():
    """A server whose JSON log lines the tests read."""
    args = ("--workers", "2", "--metrics-port", "0")
    with tempfile.TemporaryFile("w+") as log, LocalServer(args=args, stderr=log) as server:
        server.log = log
        yield server


def _log_lines(server) -> list[dict]:
    server.log.seek(0)
    return [json.loads(line) for line in server.log.read().splitlines() if line.startswith("{")]


def test_the_readme_grpcurl_request_works_as_json(logged_server):
    """The JSON of the README's grpcurl example, read by protobuf's JSON mapping (grpcurl's)."""
    readme = (ROOT / "README.md").read_text()
    body = re.search(r"grpcurl -plaintext -d '(\{.*?\})' ", readme, re.S).group(1)
    request = json_format.Parse(body, pb.VerifyRequest())
    with grpc.insecure_channel(logged_server.address) as channel:
        response = verifier_pb2_grpc.VerifierServiceStub(channel).Verify(request, timeout=60)
    assert response.verdict == pb.VERDICT_PASS
    vjp_a = next(b for b in response.points[0].blocks if b.quantity == "vjp" and b.input == "a")
    assert json_format.MessageToDict(vjp_a)["values"]["engine"]["shape"] == ["2"]


def test_describe_graph_returns_the_dag(logged_server):
    with Client(logged_server.address) as client:
        graph = client.describe_graph(
            "h = tanh(W @ x)\nloss = mean(h ** 2)",
            {"W": [[1.0, 2.0], [3.0, 4.0]], "x": [0.5, -0.5]},
        )
    names = [n.name for n in graph.dag.nodes]
    assert names[0] == "MeanBackward0" and "TanhBackward0" in names and "MvBackward0" in names
    assert {leaf.name for leaf in graph.dag.leaves} == {"W", "x"}
    tanh = next(n for n in graph.dag.nodes if n.name == "TanhBackward0")
    assert (tanh.position.line, tanh.position.column) == (1, 5)
    assert graph.dag.dot.startswith("digraph")
    assert list(graph.outputs) == ["loss"]
    with Client(logged_server.address) as client:
        assert len(client.list_ops()) > 50
        with pytest.raises(CrossgradError):
            client.describe_graph("h = tanh(W @ x", {"W": [[1.0]], "x": [0.5]})

    # one JSON line for each of them too, as for checks (written once the answer is sent)
    def codes() -> list[tuple[str, str]]:
        lines = [x for x in _log_lines(logged_server) if x.get("method") in ("DescribeGraph", "ListOps")]
        return [(x["method"], x["code"]) for x in lines]

    assert wait_for(lambda: ("DescribeGraph", "INVALID_ARGUMENT") in codes(), 10), codes()
    assert ("DescribeGraph", "OK") in codes() and ("ListOps", "OK") in codes(), codes()
    described = [x for x in _log_lines(logged_server) if x.get("method") == "DescribeGraph"]
    assert described and all(len(x["program_sha256"]) == 16 for x in described)


def test_the_same_program_goes_to_the_same_worker_and_hits_its_caches(logged_server):
    with Client(logged_server.address) as client:
        first = client.verify("y = sum(sin(x) * x)", {"x": [0.1, 0.2, 0.3]})
        again = [client.verify("y = sum(sin(x) * x)", {"x": [0.4, 0.5, 0.6]}) for _ in range(3)]
    assert not all(first.response.cache_hits.values())
    for result in again:
        assert result.response.worker == first.response.worker
        assert dict(result.response.cache_hits) and all(result.response.cache_hits.values())


def test_metrics_and_one_json_log_line_per_request(logged_server):
    port = logged_server.metrics_port
    before = metric(port, "crossgrad_requests_total", method="Verify", code="OK")
    with Client(logged_server.address) as client:
        result = client.verify(**WORKED, id="my-request")
        assert_worked_example(result)
        with pytest.raises(CrossgradError):
            client.verify("y = (", {"x": [1.0]})
    assert metric(port, "crossgrad_requests_total", method="Verify", code="OK") == before + 1
    # an error is counted as its call ends, just after the client has its status
    assert wait_for(
        lambda: metric(port, "crossgrad_requests_total", method="Verify", code="INVALID_ARGUMENT")
    )
    assert metric(port, "crossgrad_verdicts_total", verdict="PASS") >= 1
    assert metric(port, "crossgrad_workers_ready") == 2
    assert metric(port, "crossgrad_stage_seconds_count", stage="sympy") >= 1
    lines = [x for x in _log_lines(logged_server) if x.get("id") == "my-request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "request" and line["verdict"] == "PASS" and line["code"] == "OK"
    assert line["request_id"] == result.response.request_id
    assert len(line["program_sha256"]) == 16 and {"sympy", "jax", "engine"} <= set(line["timings"])


@pytest.mark.parametrize(
    ("program", "budget", "code"),
    [("y = (", None, "INVALID_ARGUMENT"), (None, {"seconds": 0.3}, "DEADLINE_EXCEEDED")],
)
def test_every_error_carries_the_request_id_of_its_log_line(logged_server, program, budget, code):
    """Only INTERNAL errors said which request they were: an operator asked about a refused or
    timed-out request had only the client's id, which need not be unique, to search the log by."""
    request = slow_request() if program is None else build_request(program, {"x": [1.0]})
    request.id = f"find-me-{code}"
    if budget:
        request.budget.seconds = budget["seconds"]
    with Client(logged_server.address) as client, pytest.raises(CrossgradError) as info:
        client.verify_message(request)
    assert info.value.code.name == code
    request_id = info.value.info["request_id"]
    assert wait_for(lambda: any(x.get("id") == request.id for x in _log_lines(logged_server)))
    (line,) = [x for x in _log_lines(logged_server) if x.get("id") == request.id]
    assert line["request_id"] == request_id and line["code"] == code


def test_an_id_refused_for_its_length_is_logged_cut(logged_server):
    """All 2 MB of it went on one log line (from an operations audit)."""
    with Client(logged_server.address) as client, pytest.raises(CrossgradError) as info:
        client.verify("y = sum(x)", {"x": [1.0]}, id="i" * 2_000_000)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT and info.value.field == "id"
    assert wait_for(lambda: any(x.get("id", "").startswith("iii") for x in _log_lines(logged_server)))
    (line,) = [x for x in _log_lines(logged_server) if x.get("id", "").startswith("iii")]
    assert len(json.dumps(line)) < 3000 and line["id"].endswith("more bytes)")


def test_a_check_that_runs_out_of_time_is_in_the_stage_histograms_and_its_log_line(logged_server):
    """Only checks that finished were: the slow tail, the checks that ran out, was invisible
    (from an operations audit)."""
    port = logged_server.metrics_port
    before = metric(port, "crossgrad_stage_seconds_count", stage="sympy") or 0
    request = slow_request(id="runs-out", seconds=1.0)
    with Client(logged_server.address) as client, pytest.raises(CrossgradError) as info:
        client.verify_message(request)
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: metric(port, "crossgrad_stage_seconds_count", stage="sympy") > before)
    (line,) = [x for x in _log_lines(logged_server) if x.get("id") == "runs-out"]
    assert line["code"] == "DEADLINE_EXCEEDED" and line["timings"]["sympy"] > 0.5


def test_a_verdict_is_counted_only_for_a_check_that_was_answered():
    """A report too large to send was counted among the verdicts as well as RESOURCE_EXHAUSTED."""
    from crossgrad.server.transport.metrics import Metrics

    metrics = Metrics()
    metrics.record_check("OK", "PASS", {"sympy": 0.01}, {})
    metrics.record_check("RESOURCE_EXHAUSTED", "PASS", {"sympy": 0.01}, {})
    verdicts = metrics.registry.get_sample_value("crossgrad_verdicts_total", {"verdict": "PASS"})
    checks = metrics.registry.get_sample_value("crossgrad_checks_total", {"code": "RESOURCE_EXHAUSTED"})
    assert (verdicts, checks) == (1.0, 1.0)


def test_short_deadlines_leave_the_check_a_share_of_them():
    """A fixed 50 ms margin refused every deadline under 52 ms, though a warm check takes a few:
    the margins are at most 40 % (the check's) and 20 % (the answer's) of a short deadline."""
    from crossgrad.server.deadline import BUDGET, CALL_DEADLINE
    from crossgrad.server.transport.servicer import _answer_by, _seconds

    seconds, limit = _seconds(30.0, 0.05)
    assert limit == CALL_DEADLINE and seconds == pytest.approx(0.03)
    assert _seconds(30.0, 10.0) == (pytest.approx(9.95), CALL_DEADLINE)
    assert _seconds(0.5, 10.0) == (0.5, BUDGET)
    answer_in = _answer_by(0.05) - time.monotonic()
    assert seconds < answer_in < 0.05


def test_a_request_sent_again_skips_validation_but_new_bytes_are_validated(logged_server):
    """The server remembers requests that passed validation by their bytes: the same request
    again is a hit; the same program with a NaN input is new bytes, validated and refused."""
    port = logged_server.metrics_port
    hits = metric(port, "crossgrad_cache_lookups_total", cache="validated", result="hit")
    program, inputs = "y = sum(exp(x) * x)", {"x": [0.25, 0.5]}
    with Client(logged_server.address) as client:
        first = client.verify(program, inputs)
        again = client.verify(program, inputs)
        with pytest.raises(CrossgradError) as nan:
            client.verify(program, {"x": [0.25, float("nan")]})
        for _ in range(2):  # refused requests are not remembered: refused every time
            with pytest.raises(CrossgradError) as unknown:
                client.verify(program, inputs, references=["sympy"], checks=["vjp"], rtol=-1.0)
    assert nan.value.code is grpc.StatusCode.INVALID_ARGUMENT and "NaN" in str(nan.value)
    assert unknown.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert first.response.verdict == again.response.verdict == pb.VERDICT_PASS
    assert again.response.request_id != first.response.request_id
    assert {"queue", "worker", "sympy"} <= set(again.response.timings)
    assert metric(port, "crossgrad_cache_lookups_total", cache="validated", result="hit") == hits + 1


def test_workers_answer_without_polling_between_requests():
    """--worker-spin-ms 0: workers sleep on their pipe between requests and still answer."""
    with LocalServer(args=("--workers", "1", "--worker-spin-ms", "0")) as server:
        with Client(server.address) as client:
            for _ in range(3):
                assert_worked_example(client.verify(**WORKED))
        assert server.stop() == 0


def test_server_options_come_from_flags_then_environment_and_are_checked(monkeypatch, capsys):
    from crossgrad.server.transport import options

    def refused(argv: list[str], words: str) -> None:
        """A usage error: exit code 2, and a message naming the flag (and its variable)."""
        with pytest.raises(SystemExit) as info:
            options.parse(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        # one line: argparse's whole usage (some 45 lines of flags) buried it
        assert err.startswith("crossgrad serve: ") and len(err.splitlines()) == 1, err
        assert words in err and err.rstrip().endswith("(see crossgrad serve --help)"), err

    monkeypatch.setenv("CROSSGRAD_WORKER_SPIN_MS", "0.5")
    assert options.parse([]).worker_spin_ms == 0.5
    assert options.parse(["--worker-spin-ms", "0"]).worker_spin_ms == 0.0
    refused(
        ["--worker-spin-ms", "-1"],
        "--worker-spin-ms (env CROSSGRAD_WORKER_SPIN_MS) must be from 0 to 1000",
    )
    monkeypatch.setenv("CROSSGRAD_PORT", "-5")  # was wrapped around to port 65531
    refused([], "--port (env CROSSGRAD_PORT) must be from 0 to 65535")
    monkeypatch.delenv("CROSSGRAD_PORT")
    cases = {
        ("--port", "99999"): "--port",
        ("--metrics-port", "70000"): "--metrics-port",
        # every call would have been turned away as busy
        ("--max-queue", "0"): "--max-queue (env CROSSGRAD_MAX_QUEUE) must be from 1 to 1048576",
        ("--grace-seconds", "-1"): "--grace-seconds",
        ("--log-level", "BOGUS"): "--log-level",
        ("--limit-max-nodes", "0"): "--limit-max-nodes",
        ("--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"): "cannot read",
        ("--prot", "55061"): "unrecognized arguments: --prot 55061; did you mean --port?",
        ("--wrokers=3",): "did you mean --workers?",
    }
    for argv, words in cases.items():
        refused(list(argv), words)
    monkeypatch.setenv("CROSSGRAD_WORKERS", "many")
    refused([], "CROSSGRAD_WORKERS='many' is not a valid int")


def test_calls_without_the_token_are_counted_and_logged():
    args = ("--workers", "1", "--token", "s3cret", "--metrics-port", "0")
    with tempfile.TemporaryFile("w+") as log, LocalServer(args=args, stderr=log) as server:
        server.log = log
        for token in (None, "wrong"):
            with Client(server.address, token=token) as c, pytest.raises(CrossgradError):
                c.list_ops()
        port = server.metrics_port
        assert metric(port, "crossgrad_requests_total", method="ListOps", code="UNAUTHENTICATED") == 2
        lines = [x for x in _log_lines(server) if x.get("code") == "UNAUTHENTICATED"]
        assert sorted(x["error"] for x in lines) == ["invalid bearer token", "missing bearer token"]
        assert all(x["seconds"] >= 0 for x in lines)
        # two authorization headers: refused in either order (the last one decided)
        with grpc.insecure_channel(server.address) as channel:
            stub = verifier_pb2_grpc.VerifierServiceStub(channel)
            for first, last in (("wrong", "s3cret"), ("s3cret", "wrong")):
                headers = (("authorization", f"Bearer {first}"), ("authorization", f"Bearer {last}"))
                with pytest.raises(grpc.RpcError) as info:
                    stub.ListOps(verifier_pb2.ListOpsRequest(), metadata=headers, timeout=10)
                assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
                assert "2 authorization headers" in info.value.details()


def test_a_worker_whose_memory_grew_past_the_mark_is_replaced_after_its_check():
    """--worker-recycle-mb 100 is below what any warm worker holds (about 330 MB): each check is
    answered, then its worker is replaced (memory a large check freed stays with the process)."""
    args = ("--workers", "1", "--worker-recycle-mb", "100", "--metrics-port", "0")
    with LocalServer(args=args) as server, Client(server.address) as client:
        assert_worked_example(client.verify(**WORKED))
        port = server.metrics_port
        assert wait_for(lambda: metric(port, "crossgrad_worker_restarts_total", reason="memory") == 1)
        assert wait_for(lambda: metric(port, "crossgrad_workers_ready") == 1, 120)
        assert_worked_example(client.verify(**WORKED))


def test_workers_recycled_by_count_are_replaced_one_at_a_time():
    """Two workers sharing the load reach --worker-max-requests together: replaced at once, the
    server had no worker for a warm-up (seconds) and calls waited or ran out of time."""
    args = ("--workers", "2", "--worker-max-requests", "2", "--metrics-port", "0")
    with LocalServer(args=args) as server, Client(server.address) as client:
        port = server.metrics_port
        ready = []
        end = time.monotonic() + 20
        while time.monotonic() < end:
            assert_worked_example(client.verify(**WORKED, timeout=3.0))  # never a warm-up's wait
            ready.append(metric(port, "crossgrad_workers_ready"))
            time.sleep(0.05)
        assert metric(port, "crossgrad_worker_restarts_total", reason="recycled") >= 3
        assert min(ready) >= 1, ready


def test_a_worker_near_its_address_space_cap_is_replaced_and_the_start_warns():
    """A warm worker takes about 1.4 GB of address space: under a 1,600 MB cap the start warns,
    and the worker is replaced within 8 checks (its address space filled with compiled code
    made every later request fail, and only resident memory was watched)."""
    args = ("--workers", "1", "--worker-memory-mb", "1600", "--metrics-port", "0")
    with tempfile.TemporaryFile("w+") as log, LocalServer(args=args, stderr=log) as server:
        server.log = log
        (warning,) = [x for x in _log_lines(server) if x["event"] == "worker_memory_low"]
        assert warning["cap_mb"] == 1600 and "--worker-memory-mb" in warning["hint"]
        with Client(server.address) as client:
            for _ in range(8):
                assert_worked_example(client.verify(**WORKED))
        port = server.metrics_port
        assert wait_for(lambda: metric(port, "crossgrad_worker_restarts_total", reason="memory") == 1)


def test_out_of_memory_in_a_check_is_a_resource_error_that_replaces_its_worker(monkeypatch):
    from crossgrad.server.transport import handlers

    payload = build_request(**WORKED).SerializeToString()
    config = handlers.HandlerConfig(Limits(), 30.0, 1000)
    stage = LimitError("the check ran out of memory in the jax stage", field="memory")
    for raised, said in ((MemoryError(), "memory (the"), (stage, "memory in the jax stage (the")):

        def broken(*args, raised=raised, **kwargs):
            raise raised

        monkeypatch.setattr(handlers, "check", broken)
        outcome = handlers.verify(payload, config)
        assert not outcome.ok and outcome.out_of_memory
        # the stage check() named is kept (it was replaced by a message naming none)
        message = status_pb2.Status.FromString(outcome.payload).message
        assert f"ran out of {said} server's per-worker cap)" in message, message
    monkeypatch.undo()
    assert not handlers.verify(payload, config).out_of_memory


def test_the_warm_up_runs_whatever_the_limits_for_requests_are():
    """Limits that refuse parts of the warm-up (a 9-entry Hessian, a**3, a 1 s budget) used to
    stop the workers from starting; they apply to requests, not to the server's own warm-up."""
    args = ("--workers", "1", "--budget-seconds", "1", "--limit-max-hessian-entries", "4",
            "--limit-max-exponent", "2")  # fmt: skip
    with LocalServer(args=args) as server, Client(server.address) as client:
        error = None
        try:
            client.verify("y = sum(x ** 3)", {"x": [1.0, 2.0]})
        except CrossgradError as exc:
            error = exc
        assert error is not None and error.code is grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert client.verify("y = sum(x ** 2)", {"x": [1.0, 2.0]}).verdict == "PASS"


def test_a_worker_that_cannot_start_says_why_and_which_setting_to_change():
    """A memory cap too small for the warm-up: the log said only "worker 1 failed to start
    (exit 1)", after raw tracebacks."""
    command = [sys.executable, "-m", "crossgrad.server", "serve", "--port", "0", "--workers", "1",
               "--worker-memory-mb", "300"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    *log, plain = done.stderr.strip().splitlines()
    failed = json.loads(log[-1])
    assert failed["event"] == "start_failed" and "--worker-memory-mb" in failed["error"], failed
    assert plain == f"crossgrad serve: {failed['error']}"
    # the setting first, before what the failing import said (scipy: "try reinstalling")
    assert failed["error"].index("--worker-memory-mb") < failed["error"].find("it said:")


def test_sigterm_while_starting_stops_without_ever_serving(tmp_path):
    port_file = tmp_path / "port.json"
    port_file.write_text('{"address": "127.0.0.1:1"}')  # an earlier run's, stale: removed first
    command = [sys.executable, "-m", "crossgrad.server", "serve", "--port", "0", "--workers", "2",
               "--port-file", str(port_file)]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: len(psutil.Process(server.pid).children()) >= 2, 30)
    spawned = psutil.Process(server.pid).children(recursive=True)
    server.send_signal(signal.SIGTERM)  # the workers are still importing and warming up
    assert server.wait(20) == 0, server.stderr.read()
    assert not port_file.exists()  # it never listened
    log = server.stderr.read()
    assert '"while": "starting"' in log
    # only the JSON lines: no "exception was never retrieved", no worker's BrokenPipeError
    assert all(line.startswith("{") for line in log.splitlines()), log
    assert psutil.wait_procs(spawned, timeout=10)[1] == []  # no worker left behind


def test_a_port_in_use_fails_before_the_warm_up():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "crossgrad.server", "serve", "--port", str(port), "--workers", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2, out.stderr
    assert (
        f"--port (env CROSSGRAD_PORT) {port}: cannot listen on 127.0.0.1: Address already in use"
        in out.stderr
    )
    # a plain line too, not only the JSON log's
    assert "\ncrossgrad serve: --port (env CROSSGRAD_PORT)" in "\n" + out.stderr
    assert "worker_ready" not in out.stderr  # no worker was started for nothing


def test_tls(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", names, "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    with LocalServer(args=("--workers", "1", *tls)) as server:
        with Client(server.address, root_certificates=cert.read_bytes()) as client:
            assert_worked_example(client.verify(**WORKED))
        with Client(server.address) as plaintext, pytest.raises(CrossgradError) as refused:
            plaintext.verify(**WORKED, timeout=5)
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        # TLS both ways, the certificate not trusted: the hint names --ca-cert (it said "TLS
        # to a server without it? leave out --tls")
        with Client(server.address, tls=True) as untrusted, pytest.raises(CrossgradError) as info:
            untrusted.verify(**WORKED, timeout=5)
        assert "trust it with --ca-cert FILE" in str(info.value), info.value
        # the pytest plugin too (it had no TLS options: a TLS server could not be used)
        (tmp_path / "test_layer.py").write_text(
            "def test_worked(crossgrad):\n"
            "    crossgrad.assert_verified('Q = 3*a**3 - b**2', {'a': [2.0, 3.0], 'b': [6.0, 4.0]},"
            " cotangents={'Q': [1.0, 1.0]})\n"
        )
        run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
        through = [*run, "--crossgrad-server", server.address, "--crossgrad-ca-cert", str(cert)]
        done = subprocess.run(through, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr

    # Files that are there but no certificate and key: refused before the warm-up, naming the
    # flags (gRPC said "Failed to bind to address" once the workers had warmed up)
    other_key = tmp_path / "other.pem"
    subprocess.run(["openssl", "genrsa", "-out", other_key, "2048"], check=True, capture_output=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for given, words in [
        ((cert, other_key), "the private key is not the certificate's"),
        ((garbage, garbage), "not a PEM certificate chain and its private key"),
        ((tmp_path, key), "cannot read"),
    ]:
        args = ("--tls-cert", str(given[0]), "--tls-key", str(given[1]))
        out = subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and words in out.stderr, out.stderr
        assert "--tls-cert (env CROSSGRAD_TLS_CERT)" in out.stderr and "worker_ready" not in out.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        ((), {"CROSSGRAD_TOKEN": "secret\n"}, "--token (env CROSSGRAD_TOKEN) has whitespace"),
        (("--port", "50999", "--metrics-port", "50999"), {}, "give them different ports"),
        (("--port-file", "/nonexistent/port.json"), {}, "cannot write in '/nonexistent'"),
        (("--limit-max-budget-seconds", "inf"), {}, "must be positive and finite, got inf"),
        (("--host", "192.0.2.1", "--port", "0"), {}, "192.0.2.1: not an address of this machine"),
    ],
)
def test_settings_that_would_fail_later_are_refused_at_once(args, env, words):
    """A token with a newline locked out every client (they never send it); the metrics port on
    the gRPC port, an unwritable port file and a host not this machine's (with port 0) failed
    after the warm-up, as something else; an infinite limit is no limit."""
    out = subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env})  # fmt: skip
    assert out.returncode == 2 and words in out.stderr, out.stderr
    assert "worker_ready" not in out.stderr


def test_the_client_works_without_sympy_and_jax(logged_server):
    """The client extra (grpcio, protobuf, numpy) is enough to call a server."""
    script = f"""
import sys
for name in ("sympy", "jax", "jaxlib", "mpmath", "torch"):
    sys.modules[name] = None  # importing any of them now fails
from crossgrad.clients import Client
with Client({logged_server.address!r}) as client:
    result = client.verify("Q = 3*a**3 - b**2", {{"a": [2.0, 3.0], "b": [6.0, 4.0]}},
                           cotangents={{"Q": [1.0, 1.0]}})
print(result.verdict, result.grad("a").tolist())
assert not any(m in sys.modules and sys.modules[m] is not None for m in ("sympy", "jax"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PASS [36.0, 81.0]"


def test_an_unexpected_error_is_internal_with_a_request_id_in_the_log(monkeypatch, caplog):
    """A bug in the core must reach the client as INTERNAL (never a dead server, never its
    traceback), and the log must say which request it was."""
    from crossgrad.server.transport import handlers

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(handlers, "check", broken)
    with caplog.at_level("ERROR", logger="crossgrad.worker"), pytest.raises(CrossgradError) as info:
        Client.embedded().verify(**WORKED)
    assert info.value.code is grpc.StatusCode.INTERNAL
    request_id = info.value.info["request_id"]
    assert request_id and request_id in info.value.message and "a bug" not in info.value.message
    assert any(
        r.msg.get("request_id") == request_id and r.exc_info
        for r in caplog.records
        if isinstance(r.msg, dict)
    )


def test_a_cancelled_stream_logs_and_counts_every_request_it_sent(logged_server):
    """Five slow requests on one stream, two running (one per worker) and three waiting their
    turn, then the stream cancelled: the three waiting had no log line and no count."""
    port = logged_server.metrics_port
    before = metric(port, "crossgrad_checks_total", code="CANCELLED")
    ids = [f"cancelled-in-stream-{k}" for k in range(5)]
    channel = grpc.insecure_channel(logged_server.address)
    requests = iter([pb.VerifyStreamRequest(request=slow_request(id=i)) for i in ids])
    call = verifier_pb2_grpc.VerifierServiceStub(channel).VerifyStream(requests, timeout=60)
    time.sleep(1.5)  # two checks running, three waiting
    call.cancel()
    channel.close()
    assert wait_for(lambda: metric(port, "crossgrad_checks_total", code="CANCELLED") - before == 5, 30)
    logged = [x for x in _log_lines(logged_server) if x.get("id") in ids]
    assert sorted(x["id"] for x in logged) == ids and {x["code"] for x in logged} == {"CANCELLED"}


def _peak_in_child(queue) -> None:
    from crossgrad.server.transport import workers

    queue.put(workers._peak_resident())


def test_a_worker_spawned_after_the_server_grew_starts_with_its_own_peak_memory():
    """getrusage's peak resident memory carries the parent's over fork and exec: every worker
    spawned after the server once held 2 GB (answers a stream did not read) was replaced after
    each check, for memory it never used."""
    import multiprocessing

    import numpy as np

    grown = np.ones(400 << 17)  # 400 MB, touched
    del grown
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_in_child, args=(queue,))
    child.start()
    peak = queue.get(timeout=120)
    child.join(timeout=60)
    assert peak < 300 << 20, peak >> 20


def test_a_worker_death_long_ago_is_forgotten_not_counted_with_a_new_one(monkeypatch):
    """Two deaths for one program within CRASH_MEMORY_SECONDS refuse it; one an hour ago and one
    now are two separate accidents (the old count was kept and incremented: refused at once)."""
    from crossgrad.server.transport import workers as pool_module

    clock = [1000.0]
    monkeypatch.setattr(pool_module.time, "monotonic", lambda: clock[0])
    pool = pool_module.WorkerPool(pool_module.PoolConfig(handler=None), lambda *_: None)
    job = pool_module.Job(1, "verify", b"", key=7, seconds=5.0, limit="", request_id="", future=None)
    worker = pool_module.Worker(0)
    assert pool._lost(worker, job, "sympy").code is grpc.StatusCode.UNAVAILABLE
    clock[0] += pool_module.CRASH_MEMORY_SECONDS + 1
    assert pool._lost(worker, job, "sympy").code is grpc.StatusCode.UNAVAILABLE
    clock[0] += 1
    assert pool._lost(worker, job, "sympy").code is grpc.StatusCode.INTERNAL  # two in a second


def test_every_limit_flag_says_what_it_limits(capsys):
    """All the --limit-* flags shared one help line, "a limit of the request language" (from a
    newcomer's walk through the README)."""
    from crossgrad.server.transport import options

    with pytest.raises(SystemExit):
        options.parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    helps = re.findall(r"--limit-[\w-]+ LIMIT_\w+ limit: (.*?) \[env", text)
    count = len(dataclasses.fields(Limits))
    assert len(helps) == count and len(set(helps)) == count, helps
