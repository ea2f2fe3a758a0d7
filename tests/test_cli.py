"""The `crossgrad` command run as a user runs it (a subprocess): verify embedded and against a real
server (report and --json), a wrong claimed gradient, graph's DOT and SVG, ops, health, and the exit
codes: 0 pass, 1 discrepancies, 2 usage, input and connection errors, each error one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from crossgrad.clients.local_server import LocalServer
from service_helpers import unused_address

WORKED = ["Q = 3*a**3 - b**2", "a=[2,3]", "b=[6,4]", "--cotangent", "Q=[1,1]"]
DOT = shutil.which("dot")


@pytest.fixture(scope="module")
def server():
    with LocalServer(args=("--workers", "1", "--log-level", "WARNING")) as running:
        yield running


def crossgrad(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str = ""):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CROSSGRAD_")}
    environment.update({"NO_COLOR": "1", "COLUMNS": "100", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "crossgrad.clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
        cwd=cwd,
        input=stdin,
    )


def assert_one_line_error(out, *fragments: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- verify


def test_inputs_may_follow_options():
    out = crossgrad("verify", "Q = 3*a**3 - b**2", "--cotangent", "Q=[1,1]", "a=[2,3]", "b=[6,4]")
    assert out.returncode == 0, out.stderr
    assert "verdict: PASS" in out.stdout


def test_outputs_may_be_given_comma_separated():
    out = crossgrad("verify", "y = sum(a*2)\nz = sum(a**2)", "a=[1,2]", "--output", "y,z", "--json")
    assert out.returncode == 0, out.stderr
    blocks = {b["label"] for p in json.loads(out.stdout)["points"] for b in p["blocks"]}
    assert {"value of y", "value of z"} <= blocks, blocks


def test_an_error_in_a_program_file_names_the_file(tmp_path):
    program = tmp_path / "layer.txt"
    program.write_text("h = tanh(W @ x\ny = sum(h)\n")
    out = crossgrad("verify", str(program), "W=[[1,2],[3,4]]", "x=[1,2]")
    assert_one_line_error(out, f"{program}: line 1, column 9: syntax error")


def test_verify_embedded_prints_the_worked_example():
    out = crossgrad("verify", *WORKED)
    assert out.returncode == 0, out.stderr
    assert "crossgrad verify (embedded)" in out.stdout
    assert "verdict: PASS" in out.stdout
    rows = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if "vjp d / d" in line}
    assert "[36, 81]" in rows["vjp d / d a"] and "[-12, -8]" in rows["vjp d / d b"]
    assert "\x1b[" not in out.stdout  # NO_COLOR: plain text


def test_verify_against_a_server_as_json(server):
    out = crossgrad("verify", *WORKED, "--checks", "vjp,jacobian", "--server", server.address, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["verdict"] == "PASS" and report["passed"] is True
    assert report["grad"] == {"a": [36.0, 81.0], "b": [-12.0, -8.0]}
    blocks = {(b["quantity"], b["input"]): b for b in report["points"][0]["blocks"]}
    assert blocks[("jacobian", "a")]["values"]["sympy"] == [[36.0, 0.0], [0.0, 81.0]]
    assert blocks[("vjp", "b")]["values"]["jax"] == [-12.0, -8.0]
    assert report["worker"] >= 0 and report["request_id"]  # it went through the server
    # a refused request: exit 2, one line on stderr, and the error in the report's shape on stdout
    out = crossgrad("verify", "y = sum(x **", "x=[1]", "--server", server.address, "--json")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    error = json.loads(out.stdout)
    assert error["verdict"] == "ERROR" and error["error"]["code"] == "INVALID_ARGUMENT"
    assert error["error"]["info"]["line"] == "1"


def test_verify_reads_the_program_and_inputs_from_files(tmp_path, server):
    (tmp_path / "q.txt").write_text("Q = 3*a**3 - b**2\n")
    np.save(tmp_path / "a.npy", np.array([2.0, 3.0]))
    np.savez(tmp_path / "point.npz", b=np.array([6.0, 4.0]), unused=np.zeros(3))
    out = crossgrad(
        "verify", "q.txt", "a=a.npy", "b=point.npz:b", "--cotangent", "Q=[1,1]", "--json",
        "--server", server.address, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["grad"] == {"a": [36.0, 81.0], "b": [-12.0, -8.0]}
    # every array of an .npz as inputs; the program on stdin
    np.savez(tmp_path / "both.npz", a=np.array([2.0, 3.0]), b=np.array([6.0, 4.0]))
    out = crossgrad(
        "verify", "-", "--inputs", "both.npz", "--cotangent", "Q=[1,1]", "--json",
        "--server", server.address, cwd=tmp_path, stdin="Q = 3*a**3 - b**2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["grad"]["b"] == [-12.0, -8.0]


def test_class_indices_go_as_int64_with_int_or_from_an_integer_npy(tmp_path, server):
    """Every input was sent as float, so cross_entropy and nll_loss could not be checked."""
    np.save(tmp_path / "t.npy", np.array([0, 2]))
    program, logits = "y = cross_entropy(z, t)", "z=[[1,2,3],[0,1,0]]"
    for target in (["t=[0,2]", "--int", "t"], ["t=t.npy", "--dtype", "float32"]):
        out = crossgrad(
            "verify", program, logits, *target, "--json", "--server", server.address, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["verdict"] == "PASS"
    assert_one_line_error(crossgrad("verify", program, logits, "t=[0,2]"), "--int NAME")
    assert_one_line_error(
        crossgrad("verify", program, logits, "t=[0.5,2]", "--int", "t"), "not all integers"
    )


def test_a_wrong_claimed_gradient_exits_1(server):
    claims = ["--claimed", "a=[36,81]", "--claimed", "b=[-12,-8.5]"]
    out = crossgrad("verify", *WORKED, *claims, "--server", server.address)
    assert out.returncode == 1, out.stderr
    assert "verdict: FAIL" in out.stdout
    assert "entries that do not pass" in out.stdout  # the wrong entry is shown
    (row,) = [line for line in out.stdout.splitlines() if "(1,)" in line and "fail" in line]
    assert "-8.5" in row
    out = crossgrad("verify", *WORKED, *claims, "--json")  # embedded, JSON: the same verdict
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["verdict"] == "FAIL" and report["passed"] is False
    vjp_b = next(b for b in report["points"][0]["blocks"] if b["label"] == "vjp d / d b")
    assert vjp_b["failing"]["claimed"] == 1 and vjp_b["worst"][0]["index"] == [1]


def test_claimed_gradients_may_come_as_one_file(tmp_path):
    """--claimed FILE.npz (or .json) claims every gradient it holds, as a suite's claimed_vjp:
    FILE does; it took NAME=VALUE only, one input at a time (from an audit)."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    wrong = crossgrad("verify", *WORKED, "--claimed", str(examples / "claimed_wrong_entry.npz"))
    assert wrong.returncode == 1 and "claimed -8.5 vs sympy -8.0" in wrong.stdout, wrong.stdout
    right = tmp_path / "claims.json"
    right.write_text(json.dumps({"a": [36, 81], "b": [-12, -8]}))
    assert crossgrad("verify", *WORKED, "--claimed", str(right)).returncode == 0
    twice = crossgrad("verify", *WORKED, "--claimed", str(right), "--claimed", "a=[36,81]")
    assert_one_line_error(twice, "--claimed a is given twice")
    # a null in the file is "no gradient", as --claimed b=null (it was read as a nan scalar)
    right.write_text(json.dumps({"a": [36, 81], "b": None}))
    none = crossgrad("verify", *WORKED, "--claimed", str(right))
    assert none.returncode == 1 and "claimed no gradient (None)" in none.stdout, none.stdout


def test_an_input_given_on_the_line_and_in_a_file_is_refused(tmp_path):
    """It won over the file's without a word, and so did a claimed gradient whose second
    --claimed was forgotten: b's wrong claim became its input and the check PASSed (from an
    audit)."""
    np.savez(tmp_path / "point.npz", a=[2.0, 3.0], b=[6.0, 4.0])
    forgot = crossgrad(
        "verify", "Q = 3*a**3 - b**2", "--inputs", str(tmp_path / "point.npz"),
        "--cotangent", "Q=[1,1]", "--claimed", "a=[36,81]", "b=[-12,-8.5]",
    )  # fmt: skip
    assert_one_line_error(forgot, "input 'b' is in", "--claimed b=...")


def test_a_reader_that_goes_away_is_no_discrepancy():
    """rich's console turned a closed pipe (crossgrad verify | head) into exit 1, which says
    "discrepancies", and check into exit 2 with an empty message: both are 141 (SIGPIPE's)."""
    examples = Path(__file__).resolve().parents[1] / "examples" / "crossgrad_examples.yaml"
    for args in (("verify", *WORKED), ("check", str(examples), "--case", "abs*")):
        command = [sys.executable, "-m", "crossgrad.clients.cli", *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()  # the reader is gone before anything is written
        assert (process.wait(timeout=180), process.stderr.read()) == (141, b""), args


def test_off_a_terminal_reports_take_160_columns_unless_columns_says(monkeypatch, tmp_path):
    """A CI log got rich's 80 columns (tables folded); COLUMNS, set by the user, was overridden."""
    from crossgrad.clients.report import make_console

    with open(tmp_path / "log", "w") as log:
        monkeypatch.setattr(sys, "stdout", log)
        monkeypatch.delenv("COLUMNS", raising=False)
        assert make_console().width == 160
        monkeypatch.setenv("COLUMNS", "100")
        assert make_console().width == 100


# -- errors: exit 2, one line, no traceback


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["verify", *WORKED, "--bogus"], ["unrecognized arguments: --bogus"]),
        (["verify", "Q = 3*a", "a=[2,3"], ["a=[2,3", "not a JSON"]),
        (["verify", "Q = 3*a", "a=[[1,2],[3]]"], ["not a rectangular array"]),
        (["verify", "Q = 3*a", "a=missing.npy"], ["cannot read a from missing.npy"]),
        (["verify", "Q = 3*a", "a"], ["NAME=VALUE"]),
        (["verify", "Q = 3*a"], ["no inputs"]),
        (["verify", *WORKED, "--seed", "-1"], ["--seed", "from 0 to 2^63 - 1"]),  # protobuf's words
        (["verify", *WORKED, "--checks", "vjp,gradient"], ["unknown check gradient"]),
        (["verify", *WORKED, "--timeout", "-1"], ["--timeout", "positive number of seconds"]),
        (["verify", *WORKED, "--timeout", "0"], ["--timeout", "positive number of seconds"]),
        (["verify", *WORKED, "--budget", "nan"], ["--budget", "positive number of seconds"]),
        (["check", "suite.yaml", "--timeout", "-5"], ["--timeout", "positive number of seconds"]),
        (["verify", *WORKED, "--frozen", "c"], ["'c' is not an input"]),
        (["verify", "Q = 3*a**", "a=[2,3]"], ["INVALID_ARGUMENT", "line 1, column 10"]),
        (["verify", "Q = 3*a", "a=[2,3]"], ["give a cotangent"]),
        (["verify", "import os", "a=[2,3]"], ["'import' is Python"]),
        (["verify", "Q = 3*a", "a=[true,2]"], ["true and false are not numbers"]),
        (["ops", "nonexistent_op"], ["no op named nonexistent_op"]),
        (["ops", "rleu"], ["no op named rleu (did you mean relu?"]),
        (["graph", "Q = 3*a", "a=[2,3]", "--dot", "-", "--json"], ["--dot - and --json both"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        # an unset variable in quotes: not embedded mode, which would answer SERVING
        (["health", "--server", ""], ["--server", "is empty"]),
        (["verify", *WORKED, "--server", " "], ["--server", "is empty"]),
        (["health", "--server", "http://127.0.0.1:50051"], ["without a scheme"]),
        (["health", "--server", "127.0.0.1:99999"], ["port must be a number from 1 to 65535"]),
        (["health", "--server", "localhost:"], ["port must be a number from 1 to 65535"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, fragments):
    out = crossgrad(*args)
    assert_one_line_error(out, *fragments)
    assert out.stderr.startswith("crossgrad")


def test_timeout_is_a_deadline_embedded_too():
    """--timeout was ignored without a server: a CI guard that guarded nothing (from an audit)."""
    rng = np.random.default_rng(0)
    W, x = json.dumps((rng.normal(size=(40, 40)) / 5).tolist()), json.dumps(rng.normal(size=40).tolist())
    out = crossgrad("verify", "y = sum(tanh(W @ x))", f"W={W}", f"x={x}", "--timeout", "0.3")
    assert_one_line_error(out, "DEADLINE_EXCEEDED", "the call's deadline (0.3 s)", "a longer --timeout")


def test_an_unreachable_server_exits_2_naming_it():
    address = unused_address()
    for args in (["verify", *WORKED], ["graph", *WORKED[:3]], ["ops"], ["health"]):
        out = crossgrad(*args, "--server", address)
        assert_one_line_error(out, f"cannot reach a crossgrad server at {address}")


def test_debug_shows_the_traceback_and_keeps_the_exit_code():
    out = crossgrad("verify", "Q = 3*a**", "a=[2,3]", "--debug")
    assert "Traceback" in out.stderr and "CrossgradError" in out.stderr
    assert out.returncode == 2  # an input error; it was 1 ("discrepancies") with --debug


# -- graph, ops, health


def _assert_valid_dot(text: str) -> None:
    """A minimal parse: one digraph, balanced braces, every edge between declared nodes."""
    assert re.match(r"\s*digraph\s+\w+\s*\{", text) and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    declared = set(re.findall(r"^\s*(\w+)\s*\[label=", text, flags=re.M))
    edges = re.findall(r"^\s*(\w+)\s*->\s*(\w+)\s*;", text, flags=re.M)
    assert edges and all(a in declared and b in declared for a, b in edges)
    labels = re.findall(r'label="([^"\\]*)', text)
    assert {"SubBackward0", "MulBackward0", "PowBackward0", "a", "b"} <= set(labels)


def test_graph_prints_the_dag_and_writes_dot_and_svg(tmp_path):
    dot_file, svg_file = tmp_path / "out" / "q.dot", tmp_path / "out" / "q.svg"
    args = ["graph", *WORKED[:3], "--dot", str(dot_file)]
    if DOT:
        args += ["--svg", str(svg_file)]
    out = crossgrad(*args)
    assert out.returncode == 0, out.stderr
    tree = out.stdout.splitlines()
    assert tree[0] == "engine DAG of Q" and "SubBackward0" in tree[1]
    assert any("AccumulateGrad a (2,)" in line for line in tree)
    assert "Q = [-12, 65]" in out.stdout
    _assert_valid_dot(dot_file.read_text())
    if DOT:
        rendered = subprocess.run([DOT, "-Tsvg", str(dot_file)], capture_output=True, text=True)
        assert rendered.returncode == 0, rendered.stderr
        root = ET.parse(svg_file).getroot()
        assert root.tag.endswith("svg")
        texts = {t.text for t in root.iter() if t.tag.endswith("text")}
        assert {"SubBackward0", "PowBackward0"} <= texts
    # DOT on stdout, for a pipe
    out = crossgrad("graph", *WORKED[:3], "--dot", "-")
    assert out.returncode == 0
    _assert_valid_dot(out.stdout)


def test_graph_says_clearly_when_graphviz_is_missing(tmp_path):
    svg = tmp_path / "q.svg"
    out = crossgrad("graph", *WORKED[:3], "--svg", str(svg), env={"PATH": str(tmp_path)})
    assert_one_line_error(out, "Graphviz's `dot` is not installed")
    assert not svg.exists()


def test_graph_against_a_server(server):
    out = crossgrad("graph", "y = sum(3*a**3 - b**2)", *WORKED[1:3], "--server", server.address)
    assert out.returncode == 0, out.stderr
    assert "SumBackward0" in out.stdout and "AccumulateGrad b (2,)" in out.stdout


def test_graph_of_a_vector_output_against_a_server(server):
    out = crossgrad("graph", *WORKED[:3], "--server", server.address)  # no cotangent needed
    assert out.returncode == 0, out.stderr
    assert "SubBackward0" in out.stdout and "Q = [-12, 65]" in out.stdout


def test_ops_lists_the_op_table(server):
    out = crossgrad("ops", "relu", "leaky_relu")
    assert out.returncode == 0, out.stderr
    assert "ReluBackward0" in out.stdout and "LeakyReluBackward0" in out.stdout
    assert "written as" in out.stdout
    out = crossgrad("ops", "--json", "--server", server.address)
    assert out.returncode == 0, out.stderr
    ops = {op["name"]: op for op in json.loads(out.stdout)}
    assert ops["relu"]["backward_node"] == "ReluBackward0" and ops["relu"]["nonsmooth"]
    assert ops["sum"]["attributes"][0]["name"] == "axis"
    assert ops["leaky_relu"]["syntax"] == "leaky_relu(x, negative_slope=0.01)"  # how to write it


def test_health(server):
    out = crossgrad("health", "--server", server.address)
    assert out.returncode == 0 and out.stdout.strip() == "SERVING"


def test_check_dispatches_to_the_suite_runner_or_says_it_is_missing():
    script = (
        "import sys; sys.modules['crossgrad.clients.suite'] = None\n"
        "from crossgrad.clients.cli import main; sys.exit(main(['check', 'suite.yaml']))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert_one_line_error(out, "crossgrad check is not available")


def test_the_cli_calls_a_server_without_sympy_and_jax(server):
    """The client and cli extras (grpcio, protobuf, numpy, rich) are enough for --server."""
    script = f"""
import sys
for name in ("sympy", "jax", "jaxlib", "mpmath", "torch", "scipy"):
    sys.modules[name] = None  # importing any of them now fails
from crossgrad.clients.cli import main
worked = ["Q = 3*a**3 - b**2", "a=[2,3]", "b=[6,4]", "--cotangent", "Q=[1,1]"]
codes = [
    main(["verify", *worked, "--server", {server.address!r}]),
    main(["graph", "y = sum(a * b)", "a=[2,3]", "b=[6,4]", "--server", {server.address!r}]),
    main(["ops", "relu", "--server", {server.address!r}]),
]
assert not any(sys.modules.get(m) is not None for m in ("sympy", "jax", "crossgrad.server"))
print("codes", codes)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("codes [0, 0, 0]")
    assert "verdict: PASS" in out.stdout and "ReluBackward0" in out.stdout


def test_usage_mistakes_get_their_own_messages():
    """A bare host gets crossgrad's port; `--claimed x=null` claims no gradient; an expression
    without an assignment says so (not "no such file"); a value past float32 says it overflows."""
    from crossgrad.clients.cli import server_address

    assert server_address("localhost") == "localhost:50051"
    assert server_address("dns:///crossgrad:7000") == "dns:///crossgrad:7000"
    assert server_address("dns:///crossgrad") == "dns:///crossgrad:50051"
    assert server_address("[::1]") == server_address("::1") == "[::1]:50051"
    out = crossgrad("verify", "y = sum(3*a)", "a=[2,3]", "c=[1]", "--claimed", "c=null", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["verdict"] == "PASS", out.stderr
    assert_one_line_error(
        crossgrad("verify", "sum(a)", "a=[1]"), "assigns no output: write it as 'y = sum(a)'"
    )
    out = crossgrad("verify", "y = sum(x)", "x=[1e200]", "--dtype", "float32")
    assert_one_line_error(out, "input 'x': its values do not fit in float32")
    # an unknown option is named by its command, with the nearest (it said "crossgrad:"), and
    # no option is taken for another by its first letters (--claim was --claimed)
    out = crossgrad("verify", "y = sum(a)", "a=[1]", "--cotangents", "y=1")
    assert_one_line_error(out, "crossgrad verify: unrecognized arguments", "did you mean --cotangent?")
    assert_one_line_error(crossgrad("verify", "y = sum(a)", "a=[1]", "--claim", "a=[1]"), "--claim")


def test_a_client_only_install_says_which_extra_the_command_needs():
    """The client extra installs the command too; without rich (the cli extra) verify raised
    "unexpected ModuleNotFoundError: No module named 'rich'"."""
    script = (
        "import sys; sys.modules['rich'] = None; sys.argv = ['crossgrad'] + sys.argv[1:]\n"
        "from crossgrad.clients.cli import main; raise SystemExit(main())"
    )
    args = ["verify", "y = sum(x)", "x=[1]", "--server", unused_address()]
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert "needs the cli extra (pip install '.[cli]' in a crossgrad checkout)" in out.stderr
    assert "unexpected" not in out.stderr and len(out.stderr.splitlines()) == 1


def test_connection_errors_point_to_the_option_that_fixes_them():
    import http.server
    import threading

    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        out = crossgrad("health", "--server", f"127.0.0.1:{web.server_port}", "--tls")
    finally:
        web.shutdown()
    assert_one_line_error(out, "TLS to a server without it? leave out --tls")
    with LocalServer(args=("--workers", "1", "--log-level", "WARNING", "--token", "s3cret")) as secured:
        out = crossgrad("verify", *WORKED, "--server", secured.address)
    assert_one_line_error(out, "UNAUTHENTICATED", "give the token with --token or CROSSGRAD_TOKEN")


def test_a_token_given_with_its_bearer_scheme_is_sent_once():
    # "Bearer s3cret" was sent as "Bearer Bearer s3cret": UNAUTHENTICATED: invalid bearer token
    from crossgrad.clients import Client

    with LocalServer(args=("--workers", "1", "--log-level", "WARNING", "--token", "s3cret")) as secured:
        out = crossgrad("verify", *WORKED, "--server", secured.address, "--token", "Bearer s3cret")
        assert out.returncode == 0, out.stderr
        with Client(secured.address, token="bearer  s3cret") as client:
            assert client.verify("y = sum(a)", {"a": [1.0]}).verdict == "PASS"


def test_an_empty_program_is_said_to_be_empty():
    # it was "no such program file:  (program text assigns, ...)"
    for empty in ("", "  "):
        out = crossgrad("verify", empty, "x=[1.0]")
        assert_one_line_error(out, "crossgrad verify: the program is empty")


def test_a_literal_backslash_n_in_program_text_gets_a_hint():
    # "y = sum(a)\nz = a +* 2" typed in shell double quotes holds a backslash and an n
    program = "y = sum(a)\\nz = a +* 2"
    for command in ("verify", "graph"):
        out = crossgrad(command, program, "a=[1.0]")
        assert_one_line_error(
            out,
            "line 1, column 12: syntax error",
            "holds a literal \\n",
            "in a file, pipe it to - (stdin), or quote it as $'...'",
        )
    # a real new line parses, and a syntax error elsewhere gets no such hint
    out = crossgrad("verify", "y = sum(a)\nz = a +* 2", "a=[1.0]")
    assert_one_line_error(out, "line 2")
    assert "literal" not in out.stderr


def test_the_readme_names_every_option_of_verify():
    # --ca-cert, --timeout, --no-blame, --id and --color were in --help only
    import argparse

    from crossgrad.clients.cli import parser

    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = [o for o in commands.choices["verify"]._option_string_actions if o.startswith("--")]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## The `crossgrad` command")[1].split("\n## ")[0]
    named = {o for o in options if re.search(re.escape(o) + r"(?![\w-])", section)}
    missing = [o for o in options if o not in named and o != "--help"]
    assert not missing, missing


# -- Ctrl-C

TANH = ["verify", "y = sum(tanh(W @ x))", "W=[[1,2],[3,4]]", "x=[1,1]"]
TANH += ["--checks", "vjp,jacobian,hessian"]


def test_ctrl_c_during_verify_ends_interrupted_with_130():
    # JAX dropped some of these interrupts (the report printed, exit 0) or crashed at exit (-11)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CROSSGRAD_")}
    interrupted = 0
    for delay in (0.8, 1.1, 1.4, 1.7):  # imports take about 0.4 s, the whole command 2 to 3 s
        process = subprocess.Popen(
            [sys.executable, "-m", "crossgrad.clients.cli", *TANH],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**environment, "NO_COLOR": "1"},
        )
        time.sleep(delay)
        if process.poll() is not None:  # done already (a fast machine): no Ctrl-C to test
            process.communicate()
            continue
        process.send_signal(signal.SIGINT)
        interrupted += 1
        out, err = process.communicate(timeout=120)
        assert (process.returncode, err) == (130, "crossgrad: interrupted\n"), (delay, out, err)
    assert interrupted >= 2


def _start_seconds(module: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - began


def test_ctrl_c_while_the_command_imports_ends_interrupted_with_130():
    """The first half second (grpc, numpy, the client loading) got Python's traceback: the
    console script's first module now handles Ctrl-C before they load. Sent between the time
    that module is loaded and the time the command's modules are."""
    script = Path(sys.executable).with_name("crossgrad")
    ready, loaded = _start_seconds("crossgrad.clients.command"), _start_seconds("crossgrad.clients.cli")
    if loaded - ready < 0.1:
        pytest.skip(f"the command's imports take {loaded - ready:.2f} s here: no time to interrupt")
    for share in (0.3, 0.5, 0.7):
        process = subprocess.Popen(
            [str(script), *TANH], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(ready + share * (loaded - ready))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
        assert (process.returncode, err, out) == (130, "crossgrad: interrupted\n", ""), share


def test_a_ctrl_c_that_python_drops_in_a_gc_callback_still_interrupts(tmp_path):
    # JAX's _xla_gc_callback got some: "Exception ignored in: <function _xla_gc_callback ...>
    # KeyboardInterrupt", then the report, and exit 0. Here a gc callback sends itself the Ctrl-C
    # while JAX is loaded, so that Python raises it in the callback and drops it.
    script = tmp_path / "ctrl_c.py"
    script.write_text(
        textwrap.dedent("""\
            import gc, os, signal, sys

            def ctrl_c(*_):
                if "jax" in sys.modules and not getattr(ctrl_c, "sent", False):
                    ctrl_c.sent = True
                    os.kill(os.getpid(), signal.SIGINT)
                    for _ in range(1000):  # the handler runs here, in the callback
                        pass

            gc.callbacks.append(ctrl_c)
            from crossgrad.clients.cli import main

            sys.argv = ["crossgrad", *sys.argv[1:]]
            sys.exit(main())
        """)
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CROSSGRAD_")}
    out = subprocess.run(
        [sys.executable, str(script), *TANH],
        capture_output=True,
        text=True,
        timeout=180,
        env={**environment, "NO_COLOR": "1"},
    )
    assert (out.returncode, out.stderr, out.stdout) == (130, "crossgrad: interrupted\n", "")


def test_version():
    out = crossgrad("--version")
    assert out.returncode == 0 and re.fullmatch(r"crossgrad \d+\.\d+\.\d+\S*\n", out.stdout), out
