"""The pytest plugin in a throwaway project (pytester, pytest in a subprocess as a user runs it):
the example suite collected one item per case, the `crossgrad` fixture, a bad suite as a
collection error, and a run against a server with sympy and JAX unimportable."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from crossgrad.clients.local_server import LocalServer
from crossgrad.clients.suite_format import load_suite
from service_helpers import unused_address

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
N_EXAMPLES = len(load_suite(EXAMPLES / "crossgrad_examples.yaml").cases)

FIXTURE_TESTS = """\
import numpy as np
import pytest

WORKED = ("Q = 3*a**3 - b**2", {"a": [2.0, 3.0], "b": [6.0, 4.0]})


def test_worked_example(crossgrad):
    result = crossgrad.assert_verified(*WORKED, cotangents={"Q": [1.0, 1.0]})
    assert result.grad("a").tolist() == [36.0, 81.0]
    assert result.grad("b").tolist() == [-12.0, -8.0]


def test_a_frozen_part_of_a_layer(crossgrad):
    W = np.arange(6.0).reshape(2, 3) / 10
    mask = np.array([[1, 0, 1], [0, 1, 1]], dtype=float)
    from crossgrad.clients import Input

    x = Input([1.0, -2.0, 0.5], requires_grad=False)
    result = crossgrad.assert_verified("y = sum(tanh(W @ x))", {"W": Input(W, mask=mask), "x": x})
    assert (result.grad("W")[mask == 0] == 0).all()


def test_a_wrong_claim_is_expected_to_fail(crossgrad):
    crossgrad.assert_verified(
        *WORKED, cotangents={"Q": [1.0, 1.0]}, claimed_vjp={"a": [36.0, 80.0]}, expect="FAIL"
    )


def test_a_wrong_claim_fails_the_test(crossgrad):
    crossgrad.assert_verified(*WORKED, cotangents={"Q": [1.0, 1.0]}, claimed_vjp={"a": [36.0, 80.0]})


def test_an_expectation_in_lower_case_is_a_verdict_as_in_a_suite(crossgrad):
    crossgrad.assert_verified(*WORKED, cotangents={"Q": [1.0, 1.0]}, expect="pass")
    crossgrad.assert_verified(*WORKED, cotangents={"Q": [1.0, 1.0]}, expect="VERDICT_PASS")


def test_a_refused_program_is_the_error_expected(crossgrad):
    result = crossgrad.assert_verified("y = sum(x *", {"x": [1.0]}, expect="ERROR")
    assert "syntax error" in str(result.error)


def test_an_expectation_that_is_no_verdict_fails_the_test(crossgrad):
    crossgrad.assert_verified(*WORKED, cotangents={"Q": [1.0, 1.0]}, expect="GREAT")
"""

WRONG_EXPECTATION = """\
suite: wrong
cases:
  - name: relu at zero expected to pass cleanly
    program: y = sum(relu(x))
    inputs: {x: [0.0, 2.0]}
    expect: PASS
  - name: a refused program expected to be refused
    program: y = sum(x *
    inputs: {x: [1.0]}
    expect: ERROR
"""


def _project(pytester: pytest.Pytester) -> None:
    for name in ("crossgrad_examples.yaml", "mlp_layer.npz", "claimed_worked_example.npz",
                 "claimed_wrong_entry.npz"):  # fmt: skip
        shutil.copy(EXAMPLES / name, pytester.path / name)
    pytester.makepyfile(test_fixture=FIXTURE_TESTS)


def test_example_suite_and_fixture_embedded(pytester):
    _project(pytester)
    (pytester.path / "crossgrad_wrong.yaml").write_text(WRONG_EXPECTATION)
    (pytester.path / "other.yaml").write_text("not: a suite\n")  # not crossgrad*: ignored
    (pytester.path / "crossgrad-settings.yaml").write_text("port: 50051\n")  # no cases: ignored
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    # The example suite's cases, the refusal expected and five fixture tests pass; the wrong
    # expectation, the wrong claim and the expectation that is no verdict fail.
    result.assert_outcomes(passed=N_EXAMPLES + 1 + 5, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*crossgrad_examples.yaml::worked example PASSED*",
            "*crossgrad_examples.yaml::relu at its kink PASSED*",
            "*crossgrad_wrong.yaml::relu at zero expected to pass cleanly FAILED*",
        ]
    )
    out = result.stdout.str()
    # The suite item fails with the headline and the report's text.
    assert (
        "wrong::relu at zero expected to pass cleanly: "
        "expected PASS, got PASS_WITH_CONVENTION_DIFFERENCES" in out
    )
    assert "non-differentiable point: relu" in out
    # The fixture's helper fails with the verdict and the report.
    assert "crossgrad: expected a pass, got FAIL" in out
    assert "crossgrad: expect ['GREAT'] is not a verdict: PASS, " in out
    assert "1 claimed entry is wrong (worst at (1,): claimed 80.0 vs sympy 81.0)" in out


def test_a_bad_suite_is_a_collection_error(pytester):
    (pytester.path / "crossgrad_bad.yaml").write_text(
        "cases:\n  - name: b\n    program: y = sum(x)\n    inputs: {x: [1, 2]}\n    expect: MAYBE\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*crossgrad_bad.yaml:5: case 'b': field 'expect': unknown verdict 'MAYBE'*"]
    )


def test_a_suite_written_in_any_yaml_style_is_collected(pytester):
    """Only a line starting with "cases:" was: a quoted key, a byte-order mark or flow style
    left a suite out without a word, and a wrong claim in it was "1 passed" (from an audit)."""
    case = "name: {name}, program: 'y = sum(a**2)', inputs: {{a: [1, 2]}}, claimed_vjp: {{a: [2, 5]}}"
    styles = {
        "quoted": '"cases":\n  - {' + case.format(name="quoted") + "}\n",
        "bom": "\ufeffcases:\n  - {" + case.format(name="bom") + "}\n",
        "flow": "{cases: [{" + case.format(name="flow") + "}]}\n",
        "spaced": "cases :\n  - {" + case.format(name="spaced") + "}\n",
    }
    for style, text in styles.items():
        (pytester.path / f"crossgrad_{style}.yaml").write_text(text, encoding="utf-8")
    (pytester.path / "crossgrad_settings.yaml").write_text("settings:\n  cases: 3\n")  # not ours
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)  # each a wrong claim


# sympy and JAX made unimportable in the subprocess: a client against a server needs neither.
BLOCK_IMPORTS = """\
import sys

class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sympy", "jax", "jaxlib"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _Blocked())
"""


def test_through_a_server_without_sympy_or_jax(pytester, monkeypatch):
    _project(pytester)
    pytester.makepyfile(
        test_no_heavy_imports=textwrap.dedent("""\
        import sys

        def test_nothing_heavy_was_imported(crossgrad):
            crossgrad.assert_verified("y = sum(x ** 2)", {"x": [1.0, 2.0]})
            assert not [m for m in ("sympy", "jax") if m in sys.modules]

        def test_sympy_is_really_blocked():
            try:
                import sympy  # noqa: F401
            except ImportError:
                return
            raise AssertionError("sympy imported")
        """)
    )
    (pytester.path / "sitecustomize.py").write_text(BLOCK_IMPORTS)
    with LocalServer(args=("--workers", "1", "--log-level", "WARNING")) as server:
        monkeypatch.setenv("PYTHONPATH", str(pytester.path))  # after the server started: not for it
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--crossgrad-server={server.address}"
        )
    # the wrong claim and the expectation that is no verdict still fail
    result.assert_outcomes(passed=N_EXAMPLES + 5 + 2, failed=2)
    assert "crossgrad: expected a pass, got FAIL" in result.stdout.str()


def test_a_server_that_cannot_be_reached_fails_every_check_with_one_reason(pytester):
    """Asked once (health), not by each test after a connection attempt of its own (16 s for
    the example suite and two fixture tests before; now under a second)."""
    _project(pytester)
    nothing_there = unused_address()
    # -rN: no short summary, whose lines repeat each reason in full where CI is set in the
    # environment (pytest truncates them to the terminal's width only outside CI).
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rN", f"--crossgrad-server={nothing_there}"
    )
    n_fixture_tests = FIXTURE_TESTS.count("def test_")
    result.assert_outcomes(failed=N_EXAMPLES, errors=n_fixture_tests)
    out = result.stdout.str()
    reason = f"cannot reach a crossgrad server at {nothing_there}"
    assert out.count(f"not checked: UNAVAILABLE: {reason}") == N_EXAMPLES
    fixture_errors = [
        line for line in out.splitlines() if line.startswith(f"crossgrad: UNAVAILABLE: {reason}")
    ]
    assert len(fixture_errors) == n_fixture_tests and "During handling" not in out


def test_an_empty_server_variable_fails_each_check_with_one_line(pytester, monkeypatch):
    """CROSSGRAD_SERVER set but empty (an unset variable in quotes): pytest.UsageError raised
    inside each test printed pytest's internals, about a thousand lines a test."""
    _project(pytester)
    monkeypatch.setenv("CROSSGRAD_SERVER", "")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rN")
    n_fixture_tests = FIXTURE_TESTS.count("def test_")
    result.assert_outcomes(failed=N_EXAMPLES, errors=n_fixture_tests)
    out = result.stdout.str()
    assert out.count("is empty: give HOST:PORT") == N_EXAMPLES + n_fixture_tests
    assert "_pytest" not in out and len(out.splitlines()) < 40 * (N_EXAMPLES + n_fixture_tests)


def test_the_readme_fixture_example_runs_as_written(pytester):
    """The README's snippet named W, x, program, inputs and claims it never defined: pasted, it
    was a NameError (from a newcomer's walk through the README)."""
    readme = (ROOT / "README.md").read_text()
    at = readme.index("def test_layer(crossgrad)")
    snippet = readme[readme.rindex("```python", 0, at) + len("```python") : readme.index("```", at)]
    pytester.makepyfile(test_readme=snippet)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
