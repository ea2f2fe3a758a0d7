"""The Python client: verify_many over a real server and embedded (every answer matched to its
request, a bad request answered on its own), the concurrency bound and a dropped stream (against a
stub server that records what the client sends), results as JSON, and the one-line message when no
server answers."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from crossgrad.clients import Client, CrossgradError, DiscrepancyError, Input, build_request
from crossgrad.clients.client import SERVICE_CONFIG
from crossgrad.clients.local_server import LocalServer
from crossgrad.v1 import verifier_pb2, verifier_pb2_grpc
from google.rpc import status_pb2
from service_helpers import WORKED, assert_worked_example, unused_address

pb = verifier_pb2


@pytest.fixture(scope="module")
def server():
    with LocalServer(args=("--workers", "2", "--log-level", "WARNING")) as running:
        yield running


@pytest.fixture(scope="module")
def embedded():
    return Client.embedded()


def _mixed_requests():
    """Valid and invalid requests, with ids repeated on purpose: matching must not rely on them."""
    worked = {**WORKED, "id": "same"}
    return [
        worked,  # 0: PASS
        {**worked, "program": "Q = 3*a**"},  # 1: a syntax error (INVALID_ARGUMENT from the server)
        {**worked, "claimed_vjp": {"a": [36.0, 81.0], "b": [-12.0, -8.5]}},  # 2: FAIL
        {**worked, "checks": ("bogus",)},  # 3: cannot be built (INVALID_ARGUMENT in the client)
        build_request("y = sum(tanh(x))", {"x": [0.5, -1.0]}, id="tanh"),  # 4: a message, PASS
        {**worked, "inputs": {"a": [2.0, 3.0], "b": [6.0, 4.0, 1.0]}},  # 5: shapes do not broadcast
        {**worked, "id": "last", "inputs": {"a": [1.0, 2.0], "b": [0.5, 4.0]}},  # 6: PASS
    ]


def _assert_mixed_answers(results):
    assert [r.index for r in results] == list(range(7))
    assert [r.verdict for r in results] == ["PASS", "ERROR", "FAIL", "ERROR", "PASS", "ERROR", "PASS"]
    assert_worked_example_vjp(results[0])
    assert results[1].error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "line 1, column 10" in str(results[1].error)
    assert results[1].request.program == "Q = 3*a**"  # the request it answers
    assert results[2].error is None and results[2].grad("b", "claimed").tolist() == [-12.0, -8.5]
    assert "bogus" in str(results[3].error) and results[3].id == "same"  # only its id is known
    assert results[4].id == "tanh"
    assert np.allclose(results[4].grad("x"), 1 - np.tanh([0.5, -1.0]) ** 2)
    assert results[5].error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert results[6].id == "last" and results[6].grad("a").tolist() == [9.0, 36.0]
    assert results[6].grad("b").tolist() == [-1.0, -8.0]
    for r in results:
        if r.error is not None:
            with pytest.raises(CrossgradError):
                r.raise_for_discrepancies()
    with pytest.raises(DiscrepancyError, match="claimed"):
        results[2].raise_for_discrepancies()


def assert_worked_example_vjp(result):
    assert result.verdict == "PASS", result.text
    assert result.grad("a").tolist() == [36.0, 81.0]
    assert result.grad("b").tolist() == [-12.0, -8.0]


def test_verify_many_over_a_real_server_matches_every_answer_to_its_request(server):
    with Client(server.address) as client:
        results = client.verify_many(_mixed_requests(), concurrency=3)
        _assert_mixed_answers(results)
        # the same through verify_stream: as they finish, each carrying its index
        streamed = list(client.verify_stream(_mixed_requests(), concurrency=2))
        assert sorted(r.index for r in streamed) == list(range(7))
        _assert_mixed_answers(sorted(streamed, key=lambda r: r.index))
        # dealt over three streams (what spreads a suite over replicas behind a balancer)
        _assert_mixed_answers(client.verify_many(_mixed_requests(), concurrency=3, streams=3))


def test_verify_many_over_several_streams_to_no_server_raises_once():
    with (
        Client("127.0.0.1:1", timeout=5) as client,
        pytest.raises(CrossgradError, match=r"127\.0\.0\.1:1"),
    ):
        client.verify_many(_mixed_requests(), streams=3)


def test_verify_many_embedded_gives_the_same_answers(embedded):
    _assert_mixed_answers(embedded.verify_many(_mixed_requests(), concurrency=2))


def test_verify_over_a_server_returns_arrays_and_a_readable_report(server):
    with Client(server.address) as client:
        result = client.verify(**WORKED)
        assert_worked_example(result)
        assert result.outputs["Q"].tolist() == [-12.0, 65.0]
        text = str(result)
        assert text.startswith("verdict: PASS") and "vjp d / d a" in text
        result.raise_for_discrepancies()  # a pass does not raise
        assert client.health() == "SERVING"
        ops = {op.name: op for op in client.list_ops()}
        assert ops["tanh"].backward_node == "TanhBackward0"
        # a scalar output: the server's DescribeGraph asks a cotangent of a vector one (see test_cli)
        dag = client.describe_graph("y = sum(3*a**3 - b**2)", WORKED["inputs"]).dag
        names = [n.name for n in dag.nodes]
        assert names == ["SumBackward0", "SubBackward0", "PowBackward0", "MulBackward0", "PowBackward0"]
        assert sorted(leaf.name for leaf in dag.leaves) == ["a", "b"]
        assert dag.dot.startswith("digraph")


def test_checks_references_and_outputs_may_be_one_string():
    """checks="jacobian" was eight unknown checks, one per letter."""
    msg = build_request("y = a * 2", {"a": [1.0]}, outputs="y", checks="vjp, jacobian", references="jax")
    assert list(msg.outputs) == ["y"] and len(msg.checks) == 2 and len(msg.references) == 1


def test_a_host_without_a_port_is_crossgrads_port_as_on_the_command_line():
    """Client("localhost") dialled gRPC's default 443 (the CLI's --server localhost: 50051), and
    Client("http://...") failed with gRPC's "Misformatted domain name"."""
    assert Client("localhost").target == "localhost:50051"
    assert Client("[::1]").target == "[::1]:50051" and Client("127.0.0.1:7").target == "127.0.0.1:7"
    with pytest.raises(ValueError, match="without a scheme"):
        Client("http://127.0.0.1:50051")


def test_a_request_dicts_misspelt_field_is_named_with_the_nearest(embedded):
    (result,) = embedded.verify_many(
        [{"program": "y = sum(a)", "inputs": {"a": [1.0]}, "cotangent": {}}]
    )
    assert "no field 'cotangent': did you mean 'cotangents'?" in str(result.error)


def test_complex_claims_and_inputs_are_refused_not_cut_to_their_real_part(embedded):
    with pytest.raises(ValueError, match="complex values are not supported"):
        embedded.verify("y = sum(x * 2)", {"x": [1.0, 2.0]}, claimed_vjp={"x": np.array([2 + 5j, 2])})
    with pytest.raises(ValueError, match="complex values are not supported"):
        embedded.verify("y = sum(x * 2)", {"x": np.array([1 + 1j, 2])})


def test_float16_inputs_are_refused_not_checked_as_float64(embedded):
    with pytest.raises(ValueError, match="float16 is not supported"):
        embedded.verify("y = sum(a)", {"a": np.array([1.0, 2.0], np.float16)})
    assert (
        embedded.verify("y = sum(a)", {"a": Input(np.float16([1.0]), dtype="float32")}).verdict == "PASS"
    )


def test_to_dict_is_strict_json_with_arrays_and_names(embedded):
    result = embedded.verify(
        "y = log(x)", {"x": Input([0.0, 1.0])}, outputs=["y"], cotangents={"y": [1, 1]}
    )
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))  # no NaN or Infinity tokens
    assert data["verdict"] == result.verdict
    assert data["grad"]["x"] == ["inf", 1.0]  # d log(x) / dx at 0: inf, as a string
    block = next(b for b in data["points"][0]["blocks"] if b["quantity"] == "vjp")
    assert block["shape"] == [2] and block["dtype"] == "float64"  # int64 as numbers, not strings
    assert data["points"][0]["verdict"] == result.verdict  # enums by their short names


def test_a_numpy_integer_array_stays_int64_and_python_ints_are_numbers(embedded):
    """The docstring said "the array's own" dtype, but every integer array went as float64:
    cross_entropy's class indices could only be sent as Input(t, dtype="int64")."""
    logits = [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]
    result = embedded.verify("y = cross_entropy(z, t)", {"z": logits, "t": np.array([0, 2])})
    assert result.verdict == "PASS", result.summary
    assert embedded.verify("y = sum(x * x)", {"x": [1, 2]}).grad("x").tolist() == [2.0, 4.0]
    # one computed with says how to send it as numbers
    with pytest.raises(CrossgradError, match=r"has dtype int64.*give values to compute with as floats"):
        embedded.verify("y = sum(x * x)", {"x": np.array([1, 2])})


def test_an_unreachable_server_is_one_clear_line_naming_the_target():
    target = unused_address()
    with Client(target) as client, pytest.raises(CrossgradError) as raised:
        client.verify(**WORKED, timeout=10)
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert f"cannot reach a crossgrad server at {target}" in str(raised.value)
    assert "\n" not in str(raised.value)
    # nothing listens there: a newcomer's server still warming up looked broken
    assert "listens only once its workers are warm" in str(raised.value)
    with Client(target) as client, pytest.raises(CrossgradError, match="cannot reach"):
        client.verify_many([WORKED, WORKED], timeout=10)  # the whole call fails: it raises


def test_only_unavailable_and_cancelled_are_retried():
    """CANCELLED: a server stopping cancels the calls it was turning away (a caller's own cancel
    is never retried by gRPC); nothing else, so a bad request fails at once."""
    (config,) = json.loads(SERVICE_CONFIG)["methodConfig"]
    assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]


def test_verify_many_ends_soon_after_its_server_stops_mid_batch():
    """A server stopped (SIGTERM) under two streams: gRPC's own retries of a stream whose sender
    waited for answers left one waiting on the stopped server until the whole call's deadline
    (a CI suite: 24 minutes; from an audit). Streams are the client's to send again."""
    rng = np.random.default_rng(0)
    slow = [
        {
            "program": f"y = sum(tanh(W @ x + {i} * 0.07) ** 2)",
            "inputs": {"W": rng.normal(size=(6, 5)), "x": rng.normal(size=5)},
            "checks": ["vjp", "jacobian", "hessian"],
        }
        for i in range(16)
    ]
    with LocalServer(args=("--workers", "1", "--log-level", "WARNING")) as running:
        threading.Timer(4.0, running.stop).start()
        start = time.monotonic()
        with Client(running.address) as client:
            results = client.verify_many(slow, concurrency=2, streams=2, timeout=120)
        took = time.monotonic() - start
    assert took < 60, took  # the server's drain, then the client's retries (about 11 s)
    assert len(results) == 16 and all(r.passed or r.error is not None for r in results)
    assert {r.error.code for r in results if r.error} <= {grpc.StatusCode.UNAVAILABLE}


# -- against a stub VerifyStream server that records what the client does


class _StubVerifier(verifier_pb2_grpc.VerifierServiceServicer):
    """Reads requests ahead of its answers (so a client that sent too many would be seen) and
    answers each after a pause; the first `drop_after` answers of the first stream are followed
    by UNAVAILABLE (a replica going away)."""

    def __init__(self, drop_after: int | None = None, unavailable_first: bool = False) -> None:
        self.unavailable_first = unavailable_first  # the first answer: a retry-safe UNAVAILABLE
        self.max_outstanding = 0
        self.streams = 0
        self.received_ids: list[str] = []
        self.drop_after = drop_after
        self._lock = threading.Lock()

    def VerifyStream(self, request_iterator, context):
        with self._lock:
            self.streams += 1
            first = self.streams == 1
        received: list[pb.VerifyRequest] = []
        done = threading.Event()

        def read():
            for item in request_iterator:
                with self._lock:
                    received.append(item.request)
                    self.received_ids.append(item.request.id)
            done.set()

        threading.Thread(target=read, daemon=True).start()
        answered = 0
        while True:
            time.sleep(0.15)  # time for a client that ignores its bound to send more
            with self._lock:
                self.max_outstanding = max(self.max_outstanding, len(received) - answered)
                if answered == len(received):
                    if done.is_set():
                        return
                    continue
                request = received[answered]
            if first and self.drop_after is not None and answered == self.drop_after:
                context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            answered += 1
            if first and self.unavailable_first and answered == 1:
                busy = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="busy")
                yield pb.VerifyStreamResponse(id=request.id, error=busy)
                continue
            yield pb.VerifyStreamResponse(
                id=request.id, response=pb.VerifyResponse(id=request.id, verdict=pb.VERDICT_PASS)
            )


@pytest.fixture
def stub_server(request):
    param = getattr(request, "param", None)
    stub = _StubVerifier(**param) if isinstance(param, dict) else _StubVerifier(drop_after=param)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    verifier_pb2_grpc.add_VerifierServiceServicer_to_server(stub, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield stub, f"127.0.0.1:{port}"
    grpc_server.stop(0)


def _requests(n):
    return [build_request("y = sum(x)", {"x": [float(k)]}, id=f"r{k}") for k in range(n)]


def test_verify_many_keeps_at_most_concurrency_checks_in_flight(stub_server):
    stub, address = stub_server
    with Client(address) as client:
        results = client.verify_many(_requests(6), concurrency=2)
    assert [r.id for r in results] == [f"r{k}" for k in range(6)]
    assert all(r.verdict == "PASS" for r in results)
    assert stub.max_outstanding == 2  # the bound was used, never exceeded


@pytest.mark.parametrize("stub_server", [2], indirect=True)
def test_a_dropped_stream_is_resumed_for_the_unanswered_requests(stub_server):
    stub, address = stub_server
    with Client(address) as client:
        results = client.verify_many(_requests(5), concurrency=2)
    assert [(r.id, r.verdict) for r in results] == [(f"r{k}", "PASS") for k in range(5)]
    assert stub.streams == 2
    resent = [i.split(":", 1)[1] for i in stub.received_ids[-3:]]
    assert sorted(resent) == ["r2", "r3", "r4"]  # only the unanswered ones, once more


@pytest.mark.parametrize("stub_server", [{"unavailable_first": True}], indirect=True)
def test_a_request_answered_unavailable_is_sent_again(stub_server):
    """A lost worker, a busy or draining server: UNAVAILABLE is safe to retry, as unary calls do."""
    stub, address = stub_server
    with Client(address) as client:
        results = client.verify_many(_requests(3), concurrency=2)
    assert [(r.id, r.verdict) for r in results] == [(f"r{k}", "PASS") for k in range(3)]
    assert stub.streams == 2 and [i.split(":", 1)[1] for i in stub.received_ids].count("r0") == 2


def test_more_streams_than_concurrency_do_not_raise_it(stub_server):
    stub, address = stub_server
    with Client(address) as client:
        results = client.verify_many(_requests(4), concurrency=1, streams=3)
    assert all(r.verdict == "PASS" for r in results)
    assert stub.streams == 1 and stub.max_outstanding == 1  # one stream for one check at a time


def test_hessian_blocks_by_input_pair(embedded):
    result = embedded.verify("y = sum(x**3) + sum(x*z)", {"x": [2.0, 3.0], "z": [1.0, 1.0]},
                             checks=["hessian"])  # fmt: skip
    assert result.hessian("x").tolist() == [[12.0, 0.0], [0.0, 18.0]]
    assert result.hessian("x", "z").tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_a_negative_budget_is_refused_alike_embedded_and_over_a_server(embedded, server):
    with Client(server.address) as remote:
        for client in (embedded, remote):
            with pytest.raises(CrossgradError) as info:
                client.verify("y = sum(a)", {"a": [1.0]}, budget={"seconds": -3})
            assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT, info.value


def test_the_text_report_shows_the_dag_as_edges_and_the_derivatives_that_are_not_zero():
    """A newcomer read "SubBackward0 -> PowBackward0 -> MulBackward0 -> PowBackward0" as a chain,
    and the first four sympy entries were two derivatives and two zeros."""
    with Client() as client:
        text = client.verify(
            "Q = 3*a**3 - b**2", {"a": [2.0, 3.0], "b": [6.0, 4.0]}, cotangents={"Q": [1.0, 1.0]}
        ).text
    dag = next(line for line in text.splitlines() if line.startswith("engine DAG: "))
    edges = sorted(dag.removeprefix("engine DAG: ").split("; "))
    assert edges == [
        "MulBackward0 -> PowBackward0",
        "PowBackward0 -> AccumulateGrad(a)",
        "PowBackward0 -> AccumulateGrad(b)",
        "SubBackward0 -> MulBackward0, PowBackward0",
    ]
    assert "d Q_1/d a_1 = 9*a_1**2" in text and "d Q_0/d a_1 = 0" not in text
    assert "(4 equal to 0 not shown)" in text


def test_a_missing_block_or_a_mistyped_field_says_why():
    with Client() as client:
        with pytest.raises(TypeError, match="no field 'cotangent': did you mean 'cotangents'"):
            client.verify("y = sum(x)", {"x": [1.0]}, cotangent={"y": 1.0})
        r = client.verify(
            "y = sum(x * w)", {"x": [1.0, 2.0], "w": Input([1.0, 1.0], requires_grad=False)}
        )
    with pytest.raises(KeyError, match=r"did not ask for it \(add 'jacobian' to its checks\)"):
        r.jacobian("y", "x")
    with pytest.raises(KeyError, match=r"no input named 'z' \(inputs: x, w\)"):
        r.grad("z")
    with pytest.raises(KeyError, match=r"no output named 'q' \(outputs: y\)"):
        r.values("vjp", "x", "q")
    with pytest.raises(KeyError, match="does not require grad has none"):
        r.grad("w")


def test_inputs_given_as_a_list_are_refused_naming_inputs(embedded):
    # a list has no names: it was AttributeError: 'list' object has no attribute 'items'
    with pytest.raises(TypeError, match=r"inputs must be a mapping name -> array.*not a list"):
        embedded.verify("y = sum(x)", [1.0, 2.0])
    with pytest.raises(TypeError, match="inputs must be a mapping"):
        embedded.describe_graph("y = sum(x)", [1.0, 2.0])


def test_root_certificates_may_be_a_path_or_bytes(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = ("--workers", "1", "--log-level", "WARNING", "--tls-cert", str(cert), "--tls-key", str(key))
    with LocalServer(args=tls) as server:
        # a str path was grpc's "TypeError: expected certificate to be bytes"
        for given in (str(cert), Path(cert), cert.read_bytes()):
            with Client(server.address, root_certificates=given) as client:
                assert_worked_example(client.verify(**WORKED))
    with pytest.raises(OSError, match=r"root_certificates: cannot read .*missing\.pem"):
        Client("127.0.0.1:1", root_certificates=str(tmp_path / "missing.pem"))
    with pytest.raises(TypeError, match="PEM bytes or the path of a PEM file"):
        Client("127.0.0.1:1", root_certificates=42)


def test_an_embedded_verify_many_keeps_the_calls_deadline():
    """It was ignored embedded: a 0.05 s call ran for seconds and said UNVERIFIED, where a
    server answers DEADLINE_EXCEEDED."""
    W = np.random.default_rng(0).normal(size=(40, 40))
    slow = {"program": "y = sum(tanh(W @ x))", "inputs": {"W": W, "x": np.ones(40)}}
    with Client() as client:
        start = time.monotonic()
        results = client.verify_many([slow, slow, WORKED], concurrency=1, timeout=0.05)
        took = time.monotonic() - start
    assert took < 2.0, took  # (sympy alone takes seconds on the first)
    assert [r.error.code if r.error else None for r in results] == [
        grpc.StatusCode.DEADLINE_EXCEEDED
    ] * 3


def test_a_crossgrad_error_survives_pickling():
    """Process pools and pytest-xdist pickle exceptions: __init__'s arguments were lost."""
    import pickle

    with Client() as client, pytest.raises(CrossgradError) as info:
        client.verify("y = sum(", {"x": [1.0]})
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.code, again.message, again.info) == (
        info.value.code,
        info.value.message,
        info.value.info,
    )


@pytest.mark.parametrize(
    "arguments, error, words",
    [
        ({"program": None}, TypeError, "program must be the program's text"),
        ({"rtol": "1e-3"}, TypeError, "rtol must be a number"),
        ({"checks": None}, TypeError, "checks must be a list of names"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"budget": {"sec": 1}}, ValueError, "budget has no field 'sec': its fields are seconds"),
        ({"budget": {"seconds": "1"}}, TypeError, r"budget\['seconds'\] must be a number"),
        ({"samples": {"count": 2, "distribution": "gauss"}}, ValueError, "'normal' or 'uniform'"),
        ({"timeout": 0}, ValueError, "timeout must be a positive, finite number"),
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds"),
    ],
)
def test_an_argument_of_the_wrong_kind_is_named_alike_embedded_and_remote(
    arguments, error, words, server
):
    """They got protobuf's or numpy's words without the argument's name, or meant different
    things: timeout=0 was the default deadline over gRPC and one already past embedded."""
    fields = dict(arguments)
    program = fields.pop("program", "y = sum(x)")
    for client in (Client(), Client(server.address)):
        with client, pytest.raises(error, match=words):
            client.verify(program, {"x": [1.0]}, **fields)


def test_verify_many_refuses_one_request_given_where_a_list_belongs(embedded):
    """A str's characters were taken for requests (each an error), a dict's keys too."""
    for one in ("y = sum(x)", {"program": "y = sum(x)", "inputs": {"x": [1.0]}}):
        with pytest.raises(TypeError, match="wrap a single request in a list"):
            embedded.verify_many(one)


def test_a_closed_client_says_so_embedded_and_remote(server):
    """Remote, grpc's "Cannot invoke RPC on closed channel!" came out; embedded went on."""
    for client in (Client(), Client(server.address)):
        client.close()
        with pytest.raises(ValueError, match=r"this Client \(.*\) is closed"):
            client.verify("y = sum(x)", {"x": [1.0]})
        with pytest.raises(ValueError, match="is closed"):
            client.list_ops()


def test_a_program_error_has_its_field_line_and_column_as_attributes(embedded):
    with pytest.raises(CrossgradError) as info:
        embedded.verify("y = sum(x)\nz = y +* 2", {"x": [1.0]})
    assert (info.value.field, info.value.line, info.value.column) == ("program", 2, 8)  # the "*"
    assert info.value.stage is None
