"""`crossgrad check` as a user runs it (a subprocess): the example suite embedded and through a real
server, JUnit XML read back, baselines and regressions (a VJP rule changed in the subprocess),
and bad suites refused with one line naming file, line, case and field."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.dom import minidom

import pytest
from crossgrad.clients import junit as junit_xml
from crossgrad.clients.client import Client
from crossgrad.clients.local_server import LocalServer
from crossgrad.clients.suite import Outcome, run_cases
from crossgrad.clients.suite_format import SuiteError, load_suite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "crossgrad_examples.yaml"
CHECK = [sys.executable, "-m", "crossgrad.clients.cli", "check"]

# A small suite for the baseline tests: a tanh layer (the rule we corrupt) and a program without
# tanh, which must not regress.
SMALL_SUITE = """\
suite: small
cases:
  - name: tanh layer
    program: |
      h = tanh(W @ x)
      loss = sum(h ** 2)
    inputs:
      W: {random: {shape: [2, 3], seed: 1}}
      x: {value: [0.5, -1.0, 2.0], frozen: true}
  - name: polynomial
    program: Q = 3*a**3 - b**2
    inputs: {a: [2, 3], b: [6, 4]}
    cotangents: {Q: [1, 1]}
"""

# The engine's tanh VJP scaled by 1.001 in the checking process only: a subtle wrong rule.
PATCHED_CHECK = """\
import sys
from crossgrad.engine.ops.core import IMPLS
from crossgrad.clients import suite

right = IMPLS["tanh"].vjp
IMPLS["tanh"].vjp = lambda B, n, g, s: tuple(v * 1.001 for v in right(B, n, g, s))
sys.exit(suite.main(sys.argv[1:]))
"""


def run(
    args: list[str], command: list[str] = CHECK, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return root


@pytest.fixture(scope="module")
def server():
    with LocalServer(args=("--workers", "1", "--log-level", "WARNING")) as s:
        yield s


def _check_example_report(proc: subprocess.CompletedProcess, xml: Path) -> None:
    cases = load_suite(EXAMPLES).cases
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(cases)} cases in" in proc.stdout
    assert f"{len(cases)} as expected, 0 unexpected, 0 regressed, 0 not checked" in proc.stdout
    for case in cases:
        assert case.name in proc.stdout
    root = junit(xml)
    assert root.get("tests") == str(len(cases))
    assert root.get("failures") == "0" and root.get("errors") == "0"
    testcases = root.findall("./testsuite/testcase")
    assert [t.get("name") for t in testcases] == [c.name for c in cases]
    assert all(t.find("failure") is None and t.find("error") is None for t in testcases)
    # Each testcase carries the report's summary, verdict first.
    out = {t.get("name"): t.findtext("system-out") for t in testcases}
    assert out["relu at its kink"].startswith("PASS_WITH_CONVENTION_DIFFERENCES")
    assert out["a claimed gradient wrong in one entry"].startswith("FAIL: the claimed values are wrong")


def test_example_suite_embedded(tmp_path):
    xml = tmp_path / "out" / "junit.xml"
    proc = run([str(EXAMPLES), "--junit", str(xml)])
    _check_example_report(proc, xml)
    assert "PASS_WITH_CONVENTION_DIFFERENCES" in proc.stdout


def test_example_suite_through_a_server(server, tmp_path):
    xml = tmp_path / "junit.xml"
    proc = run([str(EXAMPLES), "--server", server.address, "--junit", str(xml), "--jobs", "3"])
    _check_example_report(proc, xml)


def test_a_wrong_expectation_fails_with_the_report_in_junit(server, tmp_path):
    suite = tmp_path / "kinks.yaml"
    suite.write_text(
        textwrap.dedent("""\
        cases:
          - name: relu at zero, wrongly expected to pass cleanly
            program: y = sum(relu(x))
            inputs: {x: [0.0, 1.5]}
            expect: PASS
          - name: smooth
            program: y = sum(sin(x))
            inputs: {x: [0.3, 1.5]}
        """)
    )
    xml = tmp_path / "junit.xml"
    proc = run([str(suite), "--server", server.address, "--junit", str(xml)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "UNEXPECTED" in proc.stdout
    root = junit(xml)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "1", "0")
    bad, good = root.findall("./testsuite/testcase")
    assert bad.get("classname") == "kinks" and good.find("failure") is None
    failure = bad.find("failure")
    assert failure is not None
    assert failure.get("type") == "UnexpectedVerdict"
    assert failure.get("message") == (
        "kinks::relu at zero, wrongly expected to pass cleanly: "
        "expected PASS, got PASS_WITH_CONVENTION_DIFFERENCES"
    )
    # The discrepancy text: the report, with the convention at the kink and each party's value.
    assert "non-differentiable point: relu" in failure.text
    assert "engine returned 0 at vjp d / d x (0,)" in failure.text


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The small suite and a baseline recorded from it (embedded)."""
    where = tmp_path_factory.mktemp("baseline")
    suite = where / "small.yaml"
    suite.write_text(SMALL_SUITE)
    baseline = where / "baseline.json"
    proc = run([str(suite), "--update-baseline", str(baseline)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"baseline of 2 case(s) written to {baseline}" in proc.stdout
    return suite, baseline


def _values(baseline: Path, case: str, quantity: str, input: str = "", output: str = "") -> list:
    blocks = json.loads(baseline.read_text())["cases"][case]
    (block,) = [
        b
        for b in blocks
        if (b["quantity"], b["input"]) == (quantity, input) and (not output or b["output"] == output)
    ]
    return block["values"]


def test_baseline_records_values_and_gradients(recorded):
    _, baseline = recorded
    data = json.loads(baseline.read_text())
    assert data["format"] == "crossgrad-baseline" and data["version"] == 1
    assert set(data["cases"]) == {"small::tanh layer", "small::polynomial"}
    assert _values(baseline, "small::polynomial", "vjp", "a") == [36.0, 81.0]
    assert _values(baseline, "small::polynomial", "vjp", "b") == [-12.0, -8.0]
    assert _values(baseline, "small::polynomial", "value", output="Q") == [-12.0, 65.0]
    assert len(_values(baseline, "small::tanh layer", "vjp", "W")) == 6
    # x is frozen: no gradient recorded for it.
    assert not [b for b in data["cases"]["small::tanh layer"] if b["input"] == "x"]


def test_updating_a_baseline_from_another_suite_keeps_its_cases_and_says_so(recorded, tmp_path):
    _, baseline = recorded
    copy = tmp_path / "baseline.json"
    copy.write_text(baseline.read_text())
    other = tmp_path / "other.yaml"
    other.write_text("cases:\n  - name: square\n    program: y = sum(x ** 2)\n    inputs: {x: [1, 2]}\n")
    proc = run([str(other), "--update-baseline", str(copy)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"baseline of 1 case(s) written to {copy}, 2 kept from before" in proc.stdout
    fresh = tmp_path / "new" / "dir" / "baseline.json"  # its folder made, as --junit makes its
    assert run([str(other), "--update-baseline", str(fresh)]).returncode == 0 and fresh.exists()
    assert set(json.loads(copy.read_text())["cases"]) == {
        "small::tanh layer",
        "small::polynomial",
        "other::square",
    }


def test_unchanged_code_has_no_regression(recorded):
    suite, baseline = recorded
    proc = run([str(suite), "--baseline", str(baseline)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 regressed," in proc.stdout


def test_a_changed_vjp_rule_is_a_regression(recorded, tmp_path):
    suite, baseline = recorded
    xml = tmp_path / "junit.xml"
    proc = run(
        [str(suite), "--baseline", str(baseline), "--junit", str(xml)],
        command=[sys.executable, "-c", PATCHED_CHECK],
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("regression: ")]
    # Every entry of W's gradient moved; 3 are shown per block (the count says how many more).
    assert lines and all(
        line.startswith("regression: small::tanh layer: vjp (input W) at (") for line in lines
    )
    assert "3 more entries of this block moved" in proc.stdout
    assert (
        "small::tanh layer: expected a pass, got FAIL; 6 entries moved since the baseline" in proc.stdout
    )
    assert "1 unexpected, 1 regressed (6 entries moved from the baseline)" in proc.stdout
    old = _values(recorded[1], "small::tanh layer", "vjp", "W")
    for line in lines:
        m = re.match(r".* at \((\d+), (\d+)\): (\S+) -> (\S+) \(beyond rtol", line)
        assert m, line
        i, j, before, after = int(m[1]), int(m[2]), float(m[3]), float(m[4])
        assert before == pytest.approx(old[3 * i + j], rel=1e-11)
        assert after == pytest.approx(before * 1.001, rel=1e-9)
    assert "small::polynomial" not in "\n".join(lines)  # no tanh there: nothing moved
    # The verifier sees the wrong rule too, and blames the tanh node.
    assert "expected a pass, got FAIL" in proc.stdout
    assert "blame: TanhBackward0" in proc.stdout
    failure = junit(xml).find("./testsuite/testcase[@name='tanh layer']/failure")
    assert failure is not None and "regression: small::tanh layer: vjp (input W)" in failure.text


def test_a_moved_value_alone_is_a_regression(recorded, tmp_path):
    """The verdict stays PASS; only the baseline says something changed (exit 1, REGRESSION)."""
    suite, baseline = recorded
    data = json.loads(baseline.read_text())
    for block in data["cases"]["small::polynomial"]:
        if block["quantity"] == "vjp" and block["input"] == "b":
            block["values"][1] = -8.001
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    proc = run([str(suite), "--baseline", str(edited)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REGRESSION" in proc.stdout
    assert (
        "regression: small::polynomial: vjp (input b) at (1,): -8.001 -> -8 (beyond rtol 1e-09"
        in proc.stdout
    )
    assert "0 unexpected, 1 regressed (1 entry moved from the baseline)" in proc.stdout
    # A looser tolerance lets the same move through.
    proc = run([str(suite), "--baseline", str(edited), "--baseline-rtol", "1e-3"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_block_gone_or_reshaped_is_counted_as_a_block_not_an_entry(recorded, tmp_path):
    """b frozen now (its gradient gone) and a of three entries: "2 entries moved", it said."""
    suite, baseline = recorded
    changed = tmp_path / "small.yaml"
    now = "inputs: {a: [2, 3, 1], b: {value: [6, 4, 1], frozen: true}}\n    cotangents: {Q: [1, 1, 1]}"
    changed.write_text(
        suite.read_text().replace("inputs: {a: [2, 3], b: [6, 4]}\n    cotangents: {Q: [1, 1]}", now)
    )
    proc = run([str(changed), "--baseline", str(baseline)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "small::polynomial: 3 blocks gone or reshaped since the baseline" in proc.stdout
    assert "1 regressed (3 blocks gone or reshaped from the baseline)" in proc.stdout


_ALIAS_BOMB = "".join(  # 310 bytes expanding to 9^9 values through anchors (9 GB before)
    ["cases: &a [x,x,x,x,x,x,x,x,x]\n"]
    + [f"{k}: &{k} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, k in zip("abcdefgh", "bcdefghi")]
)

BAD_SUITES = [
    # (suite text, the line, the words the one-line error must contain)
    (_ALIAS_BOMB, 1, ["expands to more than 1000000 values"]),
    ("cases: &a\n  - name: c\n    program: y = sum(x)\n    inputs: {x: [1]}\n    description: *a\n",
     1, ["a YAML alias refers to a node it is inside"]),
    ('cases:\n  - name: "bad\\x01name"\n    program: y = sum(x)\n    inputs: {x: [1]}\n',
     2, ["field 'name'", "without '::' or control characters"]),
    ("cases:\n  - name: a::b\n    program: y = sum(x)\n    inputs: {x: [1]}\n",
     2, ["field 'name'", "without '::'"]),
    # past the server's 1,024 characters of request id, every run was refused
    ("cases:\n  - name: " + "n" * 1020 + "\n    program: y = sum(x)\n    inputs: {x: [1]}\n",
     2, ["field 'name'", "1020 characters; a case's name takes at most 500"]),
    # every run was UNEXPECTED, "expected , got PASS"
    ("cases:\n  - name: e\n    program: y = sum(x)\n    inputs: {x: [1]}\n    expect: []\n",
     5, ["field 'expect'", "no verdict: leave expect out for any pass"]),
    ("cases:\n  - name: c1\n    program: y = sum(x)\n    inputs: {x: [1, 2]}\n    expct: PASS\n",
     5, ["case 'c1'", "field 'expct'", "unknown key"]),
    ("cases:\n  - name: ragged\n    program: y = sum(x)\n    inputs:\n      x: [[1, 2], [3]]\n",
     5, ["case 'ragged'", "field 'inputs.x'", "nested lists of equal lengths"]),
    ("cases:\n  - name: r\n    program: y = sum(x)\n    inputs:\n      x: {random: {shape: [3]}}\n",
     5, ["case 'r'", "field 'inputs.x.random.seed'", "needs a seed"]),
    ("cases:\n  - name: f\n    program: y = sum(W)\n    inputs:\n      W: {file: nowhere.npz}\n",
     5, ["case 'f'", "field 'inputs.W.file'", "no such file"]),
    ("cases:\n  - name: v\n    program: y = sum(x)\n    inputs: {x: [1]}\n    expect: GREAT\n",
     5, ["case 'v'", "field 'expect'", "unknown verdict 'GREAT'"]),
    ("cases:\n  - name: t\n    program: y = sum(x)\n    inputs: {x: [1]}\n    rtol: -1\n",
     5, ["case 't'", "field 'rtol'", "expected a finite number"]),
    ("cases:\n  - name: d\n    program: y = x\n    inputs: {x: [1]}\n  - name: d\n    program: y = x\n"
     "    inputs: {x: [1]}\n", 5, ["case 'd'", "already used by case #1"]),
    ("cases:\n  - name: y\n    program: y = x: z\n", 3, ["mapping values", "needs quotes"]),
    ("cases:\n  - name: y\n    program: y = x\n   inputs: {x: [1]}\n", 4, ["check the indentation"]),
    ("cases:\n  - name: y\n    program: y = x\n    inputz: {x: [1]}\n", 4, ["did you mean 'inputs'?"]),
    ("cases:\n  - {name: y, program: y = x, inputs: {x: [1]}, samples: 3}\n", 2, ["write {count: 3}"]),
    ("cases:\n  - name: k\n    program: y = x\n    inputs: {x: [1]}\n    inputs: {x: [2]}\n",
     5, ["duplicate key 'inputs'"]),
    ("cases:\n  - name: m\n    program: y = sum(x)\n    inputs:\n"
     "      x: {random: {shape: [3], seed: 1, low: 5, scale: 2}}\n",
     5, ["field 'inputs.x.random.low'", "a parameter of the uniform distribution, not the normal"]),
    ("suite: s\n", 1, ["field 'cases'", "non-empty list of cases"]),
    ("defaults:\n  refrences: [sympy]\ncases:\n  - name: a\n    program: y = sum(x)\n"
     "    inputs: {x: [1]}\n", 2, ["field 'defaults.refrences'", "unknown key"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "words"), BAD_SUITES)
def test_a_bad_suite_exits_2_with_one_line(tmp_path, text, line, words):
    suite = tmp_path / "bad.yaml"
    suite.write_text(text)
    proc = run([str(suite)])
    assert proc.returncode == 2
    assert proc.stdout == ""
    error = proc.stderr.strip()
    assert "\n" not in error and "Traceback" not in error, error
    # (the line, and for YAML's own errors the column)
    assert re.match(rf"crossgrad check: {re.escape(str(suite))}:{line}(:\d+)?: ", error), error
    for w in words:
        assert w in error


def test_a_budget_is_seconds_or_the_requests_budget_fields(tmp_path):
    suite = tmp_path / "budgets.yaml"
    suite.write_text(
        "cases:\n  - {name: a, program: y = sum(x), inputs: {x: [1]}, budget: 5}\n"
        "  - {name: b, program: y = sum(x), inputs: {x: [1]}, budget: {seconds: 3, sympy_seconds: 1}}\n"
        "  - {name: c, program: y = sum(x), inputs: {x: [1]}, budget: 1e2}\n"  # YAML 1.1's string
    )
    a, b, c = load_suite(suite).cases
    assert a.fields["budget"] == {"seconds": 5} and b.fields["budget"]["sympy_seconds"] == 1
    assert c.fields["budget"] == {"seconds": 100.0}


def test_names_may_be_one_string_separated_by_commas(tmp_path):
    """outputs: y, z was one output named 'y, z' (refused: "not assigned (assigned: y, z)")."""
    suite = tmp_path / "names.yaml"
    suite.write_text(
        "cases:\n  - name: two\n    program: |\n      y = sum(a * 2)\n      z = sum(a ** 2)\n"
        "    inputs: {a: [1.0, 2.0]}\n    outputs: y, z\n    checks: vjp, jacobian\n"
    )
    (case,) = load_suite(suite).cases
    assert case.fields["outputs"] == ["y", "z"] and case.fields["checks"] == ["vjp", "jacobian"]


def test_a_program_error_names_its_line_in_the_suite_file(tmp_path):
    """The server's line and column are the program's; the suite file's line was missing."""
    suite = tmp_path / "bad_program.yaml"
    suite.write_text(
        "cases:\n  - name: ok\n    program: y = sum(x * x)\n    inputs: {x: [1.0]}\n"
        "  - name: bad\n    program: |\n      y = x * 2\n      z = foo(y)\n    inputs: {x: [1.0]}\n"
    )
    done = subprocess.run([*CHECK, str(suite)], capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr  # a case not checked: an input error
    assert f"bad: not checked: {suite}:8: INVALID_ARGUMENT: line 2, column 5" in done.stderr
    # the whole message (with the op list) once, in the details; stderr: one short line
    assert done.stdout.count("the ops are: abs, add") == 1
    (line,) = done.stderr.splitlines()
    assert len(line) <= 220 and line.endswith("…")


def test_class_indices_are_an_int64_input(tmp_path):
    suite = tmp_path / "ce.yaml"
    suite.write_text(
        "cases:\n  - name: ce\n    program: y = cross_entropy(z, t)\n"
        "    inputs: {z: [[1, 2, 3], [0, 1, 0]], t: {value: [0, 2], dtype: int64}}\n"
    )
    done = subprocess.run([*CHECK, str(suite)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    suite.write_text(suite.read_text().replace("[0, 2]", "[0.5, 2]"))
    with pytest.raises(SuiteError, match="not all integers"):
        load_suite(suite)


def test_a_refusal_can_be_the_expected_error_baseline_and_all(tmp_path):
    suite = tmp_path / "refusals.yaml"
    suite.write_text(
        "cases:\n  - {name: refused, program: y = sum(x *, inputs: {x: [1]}, expect: ERROR}\n"
        "  - {name: fine, program: y = sum(x * x), inputs: {x: [1]}}\n"
    )
    baseline = tmp_path / "baseline.json"
    for flag in ("--update-baseline", "--baseline"):
        done = subprocess.run([*CHECK, str(suite), flag, str(baseline)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 as expected" in done.stdout
    assert list(json.loads(baseline.read_text())["cases"]["refusals::refused"]) == []


def test_data_files_are_read_relative_to_the_suite(tmp_path):
    """The example suite's .npz files resolve from the suite's folder, wherever we run from."""
    copy = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "examples", copy)
    cases = {c.name: c for c in load_suite(copy / "crossgrad_examples.yaml").cases}
    layer = cases["MLP layer with partly frozen weights"]
    assert layer.inputs["W"].mask.tolist()[0] == [1, 0, 1, 1]
    assert layer.inputs["x"].requires_grad is False
    assert cases["claimed gradients from another framework"].fields["claimed_vjp"]["a"].tolist() == [
        36.0,
        81.0,
    ]
    random = cases["log-softmax loss at seeded random points"].inputs["W"].value
    again = load_suite(copy / "crossgrad_examples.yaml").cases[-1].inputs["W"].value
    assert random.shape == (4, 3) and (random == again).all()  # seeded: the same every time


def test_random_inputs_with_low_and_high_are_uniform(tmp_path):
    """Without a distribution they were drawn from the normal one, low and high ignored."""
    suite = tmp_path / "u.yaml"
    suite.write_text(
        "cases:\n  - name: u\n    program: y = sum(x)\n    inputs:\n"
        "      x: {random: {shape: [200], seed: 3, low: 5, high: 6}}\n"
    )
    x = load_suite(suite).cases[0].inputs["x"].value
    assert x.min() >= 5 and x.max() <= 6


def test_an_unreachable_server_exits_2(tmp_path):
    xml = tmp_path / "junit.xml"
    proc = run([str(EXAMPLES), "--server", "127.0.0.1:1", "--junit", str(xml)], timeout=60)
    assert proc.returncode == 2
    error = junit(xml).find("./testsuite/testcase/error")  # CI still publishes why
    assert error is not None and "127.0.0.1:1" in error.get("message")
    error = proc.stderr.strip()
    assert "\n" not in error and error.startswith(
        "crossgrad check: UNAVAILABLE: cannot reach a crossgrad server at 127.0.0.1:1"
    )
    assert error.count("cannot reach") == 1


def test_the_server_comes_from_crossgrad_server_too():
    environment = {**os.environ, "CROSSGRAD_SERVER": "127.0.0.1:1"}
    proc = subprocess.run(
        [*CHECK, str(EXAMPLES)], capture_output=True, text=True, timeout=60, cwd=ROOT, env=environment
    )
    assert proc.returncode == 2 and "127.0.0.1:1" in proc.stderr, proc.stdout + proc.stderr


def test_usage_errors_exit_2():
    proc = run([])
    assert proc.returncode == 2 and "required: SUITE" in proc.stderr
    proc = run([str(EXAMPLES), "--jobs", "0"])
    assert proc.returncode == 2 and "--jobs must be at least 1" in proc.stderr
    proc = run([str(EXAMPLES), "--baseline", str(EXAMPLES)])  # YAML is not a JSON baseline
    assert proc.returncode == 2 and "not a JSON baseline" in proc.stderr


def test_a_cases_own_tolerance_does_not_widen_the_baseline(tmp_path):
    """rtol: 0.01 is the case's check; as the regression tolerance too, every gradient moving by
    1e-3 was "0 regressed" (found by an audit)."""
    case = (
        "cases:\n  - name: t\n    program: y = sum(tanh({x}))\n"
        "    inputs: {{x: [0.5, 1.0]}}\n    rtol: 0.01\n"
    )
    suite = tmp_path / "tol.yaml"
    suite.write_text(case.format(x="x"))
    baseline = tmp_path / "baseline.json"
    assert run([str(suite), "--update-baseline", str(baseline)]).returncode == 0
    suite.write_text(case.format(x="x * 1.001"))
    proc = run([str(suite), "--baseline", str(baseline)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "regression: tol::t" in proc.stdout and "beyond rtol 1e-09" in proc.stdout
    # renamed: the baseline's case did not run, and the run says so
    suite.write_text(case.format(x="x").replace("name: t", "name: t2"))
    proc = run([str(suite), "--baseline", str(baseline)])
    assert "tol::t: in the baseline, not in its suite now (renamed or removed?)" in proc.stdout


def test_a_refused_field_names_its_line_in_the_suite_file(tmp_path):
    """Refusals of what the suite file could not know (a claim for a frozen input, a cotangent
    for no output) name the line of the key the server named, not only the case."""
    suite = tmp_path / "refused.yaml"
    suite.write_text(
        "cases:\n"
        "  - name: frozen_claim\n"
        "    program: Q = 3*a**3 - b**2\n"
        "    inputs:\n"
        "      a: [2, 3]\n"
        "      b: {value: [6, 4], requires_grad: false}\n"
        "    cotangents: {Q: [1, 1]}\n"
        "    claimed_vjp:\n"
        "      a: [36, 81]\n"
        "      b: [-12, -8]\n"  # line 10
        "  - name: no_such_output\n"
        "    program: Q = a * 2\n"
        "    inputs: {a: [1.0]}\n"
        "    cotangents:\n"
        "      R: [1.0]\n"  # line 15
    )
    with Client() as client:
        frozen, unknown = run_cases(client, load_suite(suite).cases)
    assert frozen.error.startswith(f"{suite}:10: INVALID_ARGUMENT: "), frozen.error
    assert unknown.error.startswith(f"{suite}:15: INVALID_ARGUMENT: "), unknown.error


def test_case_runs_only_the_cases_it_matches(recorded):
    """--case selects by name or SUITE::NAME; the baseline's other cases are not "removed"."""
    suite, baseline = recorded
    proc = run([str(suite), "--case", "poly*", "--baseline", str(baseline)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 case in" in proc.stdout and "polynomial" in proc.stdout
    assert "tanh layer" not in proc.stdout and "note:" not in proc.stdout
    both = run([str(suite), "--case", "small::tanh*", "--case", "polynomial"])
    assert "2 cases in" in both.stdout, both.stdout + both.stderr
    none = run([str(suite), "--case", "polynomail"])
    assert none.returncode == 2
    assert none.stderr.strip() == (
        "crossgrad check: --case 'polynomail' matches no case "
        "(the cases: small::tanh layer, small::polynomial)"
    )


@pytest.mark.parametrize(
    "flag, path, words",
    [
        ("--junit", "/proc/crossgrad/x.xml", "No such file or directory"),
        ("--update-baseline", "/proc/b.json", "No such file or directory"),
        ("--junit", "README.md/junit.xml", "README.md is a file, not a folder"),
        ("--update-baseline", "examples", "is a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_case_runs(tmp_path, flag, path, words):
    # it ran every case, then said only "[Errno 2] No such file or directory: '/proc/b.json.tmp'"
    suite = tmp_path / "crossgrad_small.yaml"
    suite.write_text(SMALL_SUITE)
    proc = run([str(suite), flag, path])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.splitlines()  # one line, naming the flag and the path given
    assert line.startswith(f"crossgrad check: {flag} {path}: ") and words in line, line
    assert ".tmp" not in line
    assert "cases in" not in proc.stdout  # no summary: nothing ran


def test_the_readme_suite_runs_as_written_beside_the_shipped_data(tmp_path):
    # it named layer.npz and claimed.npz, which examples/ does not ship
    readme = (ROOT / "README.md").read_text()
    [text] = re.findall(r"```yaml\n(suite: mylayer.*?)```", readme, re.S)
    suite = tmp_path / "mylayer.yaml"
    suite.write_text(text)
    for data in (ROOT / "examples").glob("*.npz"):  # what `examples/` holds beside the suite
        shutil.copy(data, tmp_path)
    proc = run([str(suite)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 cases" in proc.stdout and "3 as expected" in proc.stdout, proc.stdout


def _refused(tmp_path: Path, text: str) -> str:
    """The one-line SuiteError a suite gets when loaded."""
    suite = tmp_path / "bad.yaml"
    suite.write_text(text)
    with pytest.raises(SuiteError) as refused:
        load_suite(suite)
    return str(refused.value)


XML_NAMES = [
    # (suite text, the line, the field): what a JUnit file cannot hold, refused at load
    ('suite: "s\\x01x"\ncases:\n  - {name: n, program: y = sum(a), inputs: {a: [1]}}\n', 1, "suite"),
    ('suite: "s\\ufffe"\ncases:\n  - {name: n, program: y = sum(a), inputs: {a: [1]}}\n', 1, "suite"),
    ('cases:\n  - name: "n\\ufffe"\n    program: y = sum(a)\n    inputs: {a: [1]}\n', 2, "name"),
    ('cases:\n  - name: "n\\uffff"\n    program: y = sum(a)\n    inputs: {a: [1]}\n', 2, "name"),
    ('cases:\n  - name: "n\\ud800"\n    program: y = sum(a)\n    inputs: {a: [1]}\n', 2, "name"),
]


@pytest.mark.parametrize(("text", "line", "field"), XML_NAMES)
def test_names_xml_cannot_hold_are_refused_at_load(tmp_path, text, line, field):
    """A suite named "s\\x01x" (never checked) or a case named "n\\ufffe" (not a control
    character, yet not XML) wrote a JUnit file that did not parse, and exited 0."""
    error = _refused(tmp_path, text)
    assert error.startswith(f"{tmp_path / 'bad.yaml'}:{line}: "), error
    assert f"field {field!r}" in error and "which XML cannot hold" in error, error


def test_the_junit_file_parses_whatever_its_texts_hold(tmp_path):
    """Messages and reports quote program text, servers and paths that nothing checked."""
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "cases:\n  - {name: a, program: y = sum(x), inputs: {x: [1]}, expect: PASS}\n"
        "  - {name: b, program: y = sum(x), inputs: {x: [1]}}\n"
    )
    a, b = load_suite(suite).cases
    a.path = tmp_path / "d\udcff" / "s.yaml"  # a path's undecodable byte, as Python holds it
    bad = "bad \x01 \ufffe \ud800 end"
    report = types.SimpleNamespace(verdict="FAIL", text=f"report: {bad}", summary=f"FAIL: {bad}")
    outcomes = [Outcome(a, 1.0, result=report), Outcome(b, 0.0, error=f"refused: {bad}")]
    for write, xml in (
        (lambda path: junit_xml.write(path, outcomes), tmp_path / "report.xml"),
        (lambda path: junit_xml.write_error(path, f"no server: {bad}"), tmp_path / "error.xml"),
    ):
        write(xml)
        minidom.parse(str(xml))  # expat: as strict as the CI tools that read the file
        texts = [t for e in junit(xml).iter() for t in (e.text or "", *e.attrib.values())]
        assert any("bad \\x01 \\ufffe \\ud800 end" in t for t in texts)  # visible, escaped
    testcase = junit(tmp_path / "report.xml").find("./testsuite/testcase[@name='a']")
    assert "report: bad \\x01" in testcase.findtext("failure")
    assert testcase.findtext("system-out") == "FAIL: bad \\x01 \\ufffe \\ud800 end"


NOT_NUMBERS = [
    # (the case's lines after its inputs, the line, the field, the words): as the CLI refuses
    # a=[true,2], the suite refuses YAML 1.1's yes and off, and quoted numbers
    ("    inputs: {a: [yes, off]}\n", 4, "inputs.a[0]", "true and false are not numbers: write 1 and 0"),
    ("    inputs:\n      a: [[1, 2], [3, true]]\n", 5, "inputs.a[1][1]", "true and false are not"),
    ('    inputs: {a: ["2", "3"]}\n', 4, "inputs.a[0]", "'2' is text, not a number"),
    ('    inputs: {a: "2"}\n', 4, "inputs.a", "'2' is text, not a number"),
    ('    inputs: {a: {value: [1, "3"]}}\n', 4, "inputs.a.value[1]", "'3' is text, not a number"),
    # a quoted 1e-3 stays text, though a plain one is now a number
    ('    inputs: {a: [1, 2]}\n    cotangents: {y: "1e-3"}\n', 5, "cotangents.y", "is text"),
    ('    inputs: {a: [1, 2]}\n    cotangents:\n      y: ["1e-3"]\n', 6, "cotangents.y[0]", "is text"),
    ('    inputs: {a: [1, 2]}\n    rtol: "1e-7"\n', 5, "rtol", "'1e-7' is text, not a number"),
    ("    inputs: {a: [1, 2]}\n    atol: on\n", 5, "atol", "true and false are not numbers"),
    ("    inputs: {a: [1, null]}\n", 4, "inputs.a[1]", "expected a number, got nothing"),
]  # fmt: skip


@pytest.mark.parametrize(("rest", "line", "field", "words"), NOT_NUMBERS)
def test_booleans_and_quoted_text_are_not_numbers(tmp_path, rest, line, field, words):
    """[yes, off] became [1, 0] and ["2", "3"] [2, 3], both checked and passed."""
    error = _refused(tmp_path, "cases:\n  - name: n\n    program: y = sum(a**2)\n" + rest)
    assert error.startswith(f"{tmp_path / 'bad.yaml'}:{line}: case 'n': field {field!r}: "), error
    assert words in error, error


def test_a_mask_may_be_booleans_as_the_server_takes_it(tmp_path):
    suite = tmp_path / "mask.yaml"
    suite.write_text(
        "cases:\n  - name: m\n    program: y = sum(a**2)\n"
        "    inputs: {a: {value: [1, 2, 3], mask: [true, false, 1]}}\n"
    )
    (case,) = load_suite(suite).cases
    assert case.inputs["a"].mask.tolist() == [1.0, 0.0, 1.0]


def test_numbers_with_an_exponent_are_numbers_everywhere(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string: `cotangents: {y: 1e-3}` was refused, while
    [1e-3] and rtol: 1e-7 were taken. They are read as YAML 1.2 and JSON read them."""
    suite = tmp_path / "exponents.yaml"
    suite.write_text(
        "cases:\n  - name: e\n    program: y = sum(a**2)\n"
        "    inputs: {a: [1e-3, -2E+5, .5, -.5, +1.5e1, 3], b: 1e-3, c: {value: 2e0}}\n"
        "    cotangents: {y: 1e-3}\n    rtol: 1e-7\n    budget: {seconds: 1e3}\n    seed: 12\n"
        "    samples: {count: 2, low: -1e-1, high: 1E1}\n"
    )
    (case,) = load_suite(suite).cases
    assert case.inputs["a"].value.tolist() == [1e-3, -2e5, 0.5, -0.5, 15.0, 3.0]
    assert case.inputs["b"].value.tolist() == 1e-3 and case.inputs["c"].value.tolist() == 2.0
    assert case.fields["cotangents"]["y"].tolist() == 1e-3
    assert case.fields["rtol"] == 1e-7 and case.fields["budget"] == {"seconds": 1000.0}
    assert case.fields["seed"] == 12  # integers stay integers (a float seed is refused)
    assert case.fields["samples"] == {"count": 2, "low": -0.1, "high": 10.0}


def test_a_report_without_its_values_makes_no_baseline(recorded, tmp_path):
    """A server that leaves values out of its reports (--max-report-values) gave a baseline of
    nothing, and every later comparison "0 regressed", exit 0 (from an audit)."""
    suite, baseline = recorded
    with LocalServer(args=("--workers", "1", "--max-report-values", "1", "--log-level", "WARNING")) as s:
        for option, path in (("--update-baseline", tmp_path / "empty.json"), ("--baseline", baseline)):
            proc = run([str(suite), "--server", s.address, option, str(path)])
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert "the server left the values out of its report" in proc.stderr
    assert not (tmp_path / "empty.json").exists()


def test_a_suite_given_twice_is_run_once():
    """Its cases clashed with themselves: "suite 'examples' also has it in" the same file."""
    proc = run(
        [str(EXAMPLES), str(EXAMPLES.parent / ".." / "examples" / EXAMPLES.name), "--case", "abs*"]
    )
    assert proc.returncode == 0 and "2 cases in" in proc.stdout, proc.stdout + proc.stderr


def test_a_hand_edited_baseline_value_is_refused_before_the_suite_runs(recorded, tmp_path):
    """A value edited to null raised a TypeError after the whole suite had run, and the last
    run's JUnit file, all green, stayed in place."""
    suite, baseline = recorded
    edited = tmp_path / "edited.json"
    edited.write_text(re.sub(r'"values": \[[^,\]]+', '"values": [null', baseline.read_text(), count=1))
    xml = tmp_path / "last.xml"
    xml.write_text('<testsuites tests="2" failures="0" errors="0"/>')
    proc = run([str(suite), "--baseline", str(edited), "--junit", str(xml)])
    assert proc.returncode == 2 and "a malformed block" in proc.stderr, proc.stderr
    assert int(junit(xml).get("errors")) == 1


def test_start_server_runs_the_suite_through_a_server_it_starts_and_says_so(tmp_path):
    """--start-server had no test, and said nothing of the server it spent 10 to 30 s starting
    (from a newcomer's walk through the README)."""
    suite = tmp_path / "square.yaml"
    suite.write_text("cases:\n  - name: square\n    program: y = sum(x ** 2)\n    inputs: {x: [1, 2]}\n")
    proc = run([str(suite), "--start-server"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"a local server at 127\.0\.0\.1:\d+ \(SERVING after [\d.]+ s\)", proc.stderr)
    assert "1 as expected" in proc.stdout
