"""The verification core, in process: references agree on every op, corrupted VJPs are caught and
blamed, kinks are conventions, masks and claimed values are checked."""

import os
import re
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from crossgrad.engine import OPS
from crossgrad.engine.ops import IMPLS
from crossgrad.server.backends import engine as engine_backend
from crossgrad.server.backends import jax_backend, sympy_backend
from crossgrad.server.check import check
from crossgrad.server.language import RequestError, parse
from crossgrad.server.model import Budget, CheckRequest, InputSpec, SamplePoints, Verdict
from op_programs import NODE_OP, PROGRAMS

DIFFERENTIABLE = sorted(n for n, s in OPS.items() if s.differentiable and not s.internal)


def request_for(op, checks=("vjp",), **kwargs):
    source, values = PROGRAMS[op]
    inputs = [
        InputSpec(n, v, dtype="int64", requires_grad=False) if v.dtype.kind == "i" else InputSpec(n, v)
        for n, v in values.items()
    ]
    decls = {n: (v.shape, "int64" if v.dtype.kind == "i" else "float64") for n, v in values.items()}
    program = parse(source, decls)
    rng = np.random.default_rng(0)
    cots = {name: rng.normal(size=program.node(i).shape) for name, i in program.outputs}
    return CheckRequest(source, inputs, cotangents=cots, checks=checks, **kwargs)


def test_every_op_has_a_program_and_every_backend_lowers_it():
    assert sorted(PROGRAMS) == DIFFERENTIABLE
    callable_ops = {n for n, s in OPS.items() if not s.internal}
    for backend in (engine_backend, jax_backend, sympy_backend):
        assert set(backend.LOWERING) == callable_ops, backend.__name__
    assert {n for n, f in sympy_backend.LOWERING.items() if f is None} == {"argmax", "argmin"}


def test_worked_example_passes_and_every_reference_agrees():
    req = CheckRequest(
        "Q = 3*a**3 - b**2",
        [InputSpec("a", [2.0, 3.0]), InputSpec("b", [6.0, 4.0])],
        cotangents={"Q": [1.0, 1.0]},
        checks=("vjp", "jacobian"),
    )
    report = check(req)
    assert report.verdict is Verdict.PASS
    for source in ("engine", "sympy", "jax", "fd"):
        np.testing.assert_allclose(report.block("vjp", "a").sources[source].values, [36, 81], rtol=1e-9)
        np.testing.assert_allclose(report.block("vjp", "b").sources[source].values, [-12, -8], rtol=1e-9)
    np.testing.assert_array_equal(
        report.block("jacobian", "a", "Q").sources["sympy"].values, np.diag([36.0, 81.0])
    )
    np.testing.assert_array_equal(
        report.block("jacobian", "b", "Q").sources["engine"].values, np.diag([-12.0, -8.0])
    )
    texts = {e["entry"]: e["text"] for e in report.references["sympy"].symbolic}
    assert texts["d Q_0/d a_0"] == "9*a_0**2"
    assert texts["d Q_1/d b_1"] == "-2*b_1"
    assert [n.name for n in report.dag.nodes][:1] == ["SubBackward0"]
    assert {leaf.name for leaf in report.dag.leaves} == {"a", "b"}


def test_a_program_checked_again_keeps_its_dag_only_where_the_graph_is_the_same():
    """The report's DAG is kept per program, which inputs require grad and which are masked;
    new values share it, a change of any of those gets its own."""

    def dag(a=(2.0, 3.0), frozen_b=False, mask_a=None):
        req = CheckRequest(
            "Q = 3*a**3 - b**2",
            [
                InputSpec("a", list(a), mask=mask_a),
                InputSpec("b", [6.0, 4.0], requires_grad=not frozen_b),
            ],
            cotangents={"Q": [1.0, 1.0]},
        )
        return check(req).dag

    first = dag()
    assert dag(a=(5.0, -1.0)) is first  # new values: the same graph
    frozen = dag(frozen_b=True)
    assert frozen.frozen == ["b"] and {leaf.name for leaf in frozen.leaves} == {"a"}
    assert len(frozen.nodes) < len(first.nodes)  # b**2 has no node when b is frozen
    masked = dag(mask_a=[1.0, 0.0])
    assert [leaf.masked for leaf in masked.leaves if leaf.name == "a"] == [True]
    assert not any(leaf.masked for leaf in first.leaves) and first.frozen == []


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_every_op_agrees_with_every_reference(op):
    report = check(request_for(op, checks=("vjp", "jacobian")))
    assert report.verdict is Verdict.PASS, report.summary
    assert all(s.ran for s in report.references.values()), report.references


@contextmanager
def corrupted(op):
    impl = IMPLS[op]
    original = impl.vjp

    def wrong(B, node, g, s):
        return tuple(None if r is None else r * 1.1 + 0.01 for r in original(B, node, g, s))

    impl.vjp = wrong
    try:
        yield
    finally:
        impl.vjp = original


_detected = []


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_a_corrupted_vjp_is_caught_and_blamed_on_its_node(op):
    target = NODE_OP.get(op, op)
    with corrupted(target):
        report = check(request_for(op))
    blamed = {b.op for b in report.points[0].blame}
    caught = report.verdict is Verdict.FAIL and op in blamed
    _detected.append((op, caught))
    assert report.verdict is Verdict.FAIL, report.summary
    assert op in blamed, report.summary
    blame = next(b for b in report.points[0].blame if b.op == op)
    assert blame.node_name.endswith("Backward0") or blame.node_name.endswith(("Backward1", "Backward2"))
    assert blame.position is not None and blame.position.line >= 1


def test_mutation_detection_rate_is_complete(capsys):
    # Runs after the parametrized mutation tests (file order): report the rate they reached.
    if len(_detected) < len(DIFFERENTIABLE):
        pytest.skip("run together with test_a_corrupted_vjp_is_caught_and_blamed_on_its_node")
    rate = sum(c for _, c in _detected) / len(_detected)
    with capsys.disabled():
        print(f"\nmutation detection rate: {rate:.0%} of {len(_detected)} ops")
    assert rate == 1.0, [op for op, c in _detected if not c]


@pytest.mark.parametrize(
    ("source", "values"),
    [
        ("y = sum(relu(x))", {"x": [0.0, 1.0, -2.0]}),
        ("y = sum(abs(x))", {"x": [0.0, 1.5]}),
        ("y = sum(maximum(x, w))", {"x": [1.0, 2.0], "w": [1.0, 0.5]}),
        ("y = sum(clamp(x, min=0.0, max=1.0))", {"x": [0.0, 1.0, 0.5]}),
    ],
)
def test_kinks_are_convention_differences_not_failures(source, values):
    report = check(CheckRequest(source, [InputSpec(n, v) for n, v in values.items()]))
    assert report.verdict in (Verdict.PASS, Verdict.PASS_WITH_CONVENTION_DIFFERENCES), report.summary
    notes = report.points[0].conventions
    assert notes and all(note.conventions for note in notes)
    assert "non-differentiable" in report.summary


def test_relu_at_zero_names_each_party_convention():
    report = check(CheckRequest("y = sum(relu(x))", [InputSpec("x", [0.0, 1.0])]))
    assert report.verdict is Verdict.PASS_WITH_CONVENTION_DIFFERENCES
    entry = report.block("vjp", "x").worst[0]
    assert entry.index == (0,)
    assert entry.values["engine"] == 0.0 and entry.values["sympy"] == 0.5
    note = report.points[0].conventions[0]  # what each party actually returned, and the range
    assert note.op == "relu" and note.conventions["sympy"].startswith("0.5 at vjp d / d x (0,)")
    assert note.conventions["engine"].startswith("0 at") and note.conventions["jax"].startswith("0 at")
    assert note.admissible.startswith("[0, 1]")


@pytest.mark.parametrize(
    ("op", "source", "stated"),
    [
        ("relu", "y = sum(relu(x))", {"engine": "0", "jax": "0"}),
        ("abs", "y = sum(abs(x))", {"engine": "0", "jax": "1"}),
        ("clamp", "y = sum(clamp(x, min=0.0, max=1.0))", {"engine": "1", "jax": "1/2"}),
        ("leaky_relu", "y = sum(leaky_relu(x, 0.1))", {"engine": "negative_slope", "jax": "1"}),
    ],
)
def test_the_op_tables_conventions_are_what_each_party_returns(op, source, stated):
    """ListOps' text for a kink names each party's value there, as the report measures it (it
    said JAX gives clamp 1 on the bound and leaky_relu its negative slope at 0: 1/2 and 1)."""
    from crossgrad.server.kinks import CONVENTIONS

    report = check(CheckRequest(source, [InputSpec("x", [0.0, 0.5])], references=("jax",)))
    (note,) = report.points[0].conventions
    for party, value in stated.items():
        stated_there = rf"(^|\s){re.escape(value)}(?![\w/.])"  # "1" is not "1/2"
        assert re.search(stated_there, CONVENTIONS[op][party]), CONVENTIONS[op]
        measured = {"1/2": "0.5", "negative_slope": "0.1"}.get(value, value)
        assert note.conventions[party].startswith(f"{measured} at"), note.conventions


def test_a_gradient_mask_zeroes_the_engine_gradient_and_passes():
    rng = np.random.default_rng(3)
    W, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    mask = (rng.random((3, 4)) > 0.5).astype(float)
    req = CheckRequest("y = sum(tanh(W @ x) ** 2)", [InputSpec("W", W, mask=mask), InputSpec("x", x)])
    report = check(req)
    assert report.verdict is Verdict.PASS, report.summary
    g = report.block("vjp", "W").sources["engine"].values
    assert np.all(g[mask == 0] == 0) and np.all(g[mask == 1] != 0)
    assert "without the gradient masks" not in report.summary
    # second derivatives are not masked (as torch's functional hessian): the summary says so
    req.checks = ("vjp", "hessian")
    report = check(req)
    assert report.verdict is Verdict.PASS, report.summary
    assert "the Hessian is without the gradient masks (of W)" in report.summary
    h = report.block("hessian", "W,W").sources["engine"].values
    masked_diagonal = [h[i, j, i, j] for i, j in zip(*np.nonzero(mask == 0))]
    assert np.all(np.array(masked_diagonal) != 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_claim_that_ignores_the_mask_fails_however_small_the_masked_gradients(dtype):
    """A frozen weight on an input feature of 3e-12: the masked gradients (1e-12) were within
    the tolerance, so torch's gradient without the mask's hook passed (from an audit). A hook
    zeroes them exactly; torch's hooked gradient and Jacobian pass."""
    import torch

    W = np.array([[0.3, -1.2, 0.8], [1.1, 0.4, -0.7]], dtype)
    x = np.array([0.7, -1.1, 3e-12], dtype)
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    inputs = [
        InputSpec("W", W, dtype=dtype, mask=mask),
        InputSpec("x", x, dtype=dtype, requires_grad=False),
    ]

    def torch_vjp(hooked):
        w = torch.tensor(W, requires_grad=True)
        if hooked:
            w.register_hook(lambda g: g * torch.tensor(mask, dtype=w.dtype))
        torch.tanh(w @ torch.tensor(x)).sum().backward()
        return w.grad.numpy().astype(np.float64)

    def verdict(**claims):
        report = check(CheckRequest("y = tanh(W @ x)", inputs, cotangents={"y": [1.0, 1.0]}, **claims))
        return report.verdict, report.summary

    assert verdict(claimed_vjp={"W": torch_vjp(hooked=True)})[0] is Verdict.PASS
    got, summary = verdict(claimed_vjp={"W": torch_vjp(hooked=False)})
    assert got is Verdict.FAIL and "2 of them masked" in summary, summary
    jac = (
        torch.autograd.functional.jacobian(lambda w: torch.tanh(w @ torch.tensor(x)), torch.tensor(W))
        .numpy()
        .astype(np.float64)
        * mask
    )  # the mask zeroes the Jacobian's columns
    jacobian = {"checks": ("jacobian",), "claimed_jacobian": {("y", "W"): jac}}
    assert verdict(**jacobian)[0] is Verdict.PASS, verdict(**jacobian)
    jac[1, 0, 2] = 1e-7
    got, summary = verdict(**jacobian)
    assert got is Verdict.FAIL and "1 of them masked" in summary, summary


def test_a_claimed_gradient_wrong_in_one_entry_fails_naming_it():
    a, b = np.array([2.0, 3.0]), np.array([6.0, 4.0])
    claimed = {"a": np.array([36.0, 81.0]), "b": np.array([-12.0, -8.5])}
    req = CheckRequest(
        "Q = 3*a**3 - b**2",
        [InputSpec("a", a), InputSpec("b", b)],
        cotangents={"Q": [1.0, 1.0]},
        claimed_vjp=claimed,
    )
    report = check(req)
    assert report.verdict is Verdict.FAIL
    block = report.block("vjp", "b")
    assert block.failing == {"engine": 0, "claimed": 1}
    assert block.worst[0].index == (1,) and "claimed" in block.worst[0].disagree
    assert "claimed" in report.summary and "(1,)" in report.summary
    assert report.block("vjp", "a").failing["claimed"] == 0


def test_sympy_checks_all_gradient_entries_of_a_32x32_layer_exactly():
    rng = np.random.default_rng(0)
    req = CheckRequest(
        "y = sum(tanh(W @ x))",
        [InputSpec("W", rng.normal(size=(32, 32)) / 6), InputSpec("x", rng.normal(size=32))],
        references=("sympy",),
    )
    report = check(req)
    assert report.verdict is Verdict.PASS
    status = report.references["sympy"]
    assert status.ran and not status.sampled_entries
    assert report.block("vjp", "W").sources["sympy"].checked is None  # every entry computed
    assert (
        report.block("vjp", "W").pairs[0].compared + report.block("vjp", "x").pairs[0].compared == 1056
    )


def test_over_budget_sympy_checks_a_seeded_sample_and_says_which():
    rng = np.random.default_rng(1)
    inputs = [InputSpec("W", rng.normal(size=(40, 40)) / 6), InputSpec("x", rng.normal(size=40))]
    req = CheckRequest("y = sum(tanh(W @ x))", inputs, references=("sympy", "jax"))
    req.budget.sympy_max_scalar_ops = 500
    report = check(req)
    assert report.verdict is Verdict.PASS
    status = report.references["sympy"]
    assert "over budget" in status.note and "seed" in status.note
    sampled = sum(len(v) for v in status.sampled_entries.values())
    assert sampled == req.budget.sympy_sample_entries
    checked = report.block("vjp", "W").sources["sympy"].checked
    assert checked is not None and checked.sum() == len(status.sampled_entries.get("W", []))


def test_hessian_of_a_scalar_output_agrees():
    req = CheckRequest(
        "y = sum(x ** 3) * sum(w * x)",
        [InputSpec("x", [0.5, -1.2, 2.0]), InputSpec("w", [1.0, 2.0, 3.0])],
        checks=("vjp", "hessian"),
    )
    report = check(req)
    assert report.verdict is Verdict.PASS, report.summary
    h = report.block("hessian", "x,x").sources
    np.testing.assert_allclose(h["engine"].values, h["sympy"].values, rtol=1e-12)


def test_extra_sample_points_are_checked_too():
    req = CheckRequest("y = sum(sin(x) * x)", [InputSpec("x", [0.1, 0.2])])
    req.samples = SamplePoints(count=3, seed=5)
    report = check(req)
    assert report.verdict is Verdict.PASS and len(report.points) == 4
    assert not np.allclose(report.points[1].inputs["x"], report.points[0].inputs["x"])
    assert report.summary.endswith("; 3 extra point(s): all pass"), report.summary
    # a claim is for the given point: the summary does not read as if it were checked at four
    x = np.array([0.1, 0.2])
    req.claimed_vjp = {"x": np.cos(x) * x + np.sin(x)}
    report = check(req)
    assert report.verdict is Verdict.PASS, report.summary
    assert (
        "3 extra point(s) (the engine's derivatives; the claims are for the given point): all pass"
        in report.summary
    )


def test_input_names_cannot_clash_with_the_generated_sympy_code():
    # mpf and Heaviside are names in the code sympy generates; inputs may still be called so.
    req = CheckRequest(
        "y = mpf * sin(mpf) + relu(Heaviside)", [InputSpec("mpf", 0.5), InputSpec("Heaviside", 1.0)]
    )
    report = check(req)
    assert report.verdict is Verdict.PASS, report.summary
    texts = {e["entry"]: e["text"] for e in report.references["sympy"].symbolic}
    assert texts["d y/d mpf"] == "mpf*cos(mpf) + sin(mpf)"


def test_every_non_smooth_op_of_the_table_has_a_kink_detector():
    from crossgrad.server.kinks import _DETECTORS, CONVENTIONS

    nonsmooth = {n for n, s in OPS.items() if s.nonsmooth}
    assert nonsmooth <= set(_DETECTORS), sorted(nonsmooth - set(_DETECTORS))
    assert set(_DETECTORS) <= set(CONVENTIONS)


def test_a_kink_excuses_only_the_blocks_that_depend_on_it():
    # relu(z) sits at its kink, but the claimed gradient for x (which the kink does not touch)
    # is wrong: that must still fail.
    req = CheckRequest(
        "y = sum(x * x) + sum(relu(z))",
        [InputSpec("x", [1.0, 2.0]), InputSpec("z", [0.0, 1.0])],
        claimed_vjp={"x": [2.0, 5.0]},
    )
    report = check(req)
    assert report.verdict is Verdict.FAIL
    assert report.block("vjp", "x").status == "fail"
    assert report.block("vjp", "z").status == "convention"


def test_a_kink_excuses_only_the_entries_that_depend_on_it():
    # x[0] sits on relu's kink; x[1] does not, and its claimed gradient is wrong
    report = check(
        CheckRequest(
            "y = sum(relu(x))", [InputSpec("x", [0.0, 1.0, 2.0])], claimed_vjp={"x": [0.0, 5.0, 1.0]}
        )
    )
    assert report.verdict is Verdict.FAIL, report.summary
    # through a matmul: row 0 of W @ x is on the kink, so W[0, :] and all of x depend on it
    W, x = [[1.0, -1.0], [0.5, 2.0]], [1.0, 1.0]
    inputs = [InputSpec("W", W), InputSpec("x", x)]
    exact = {"W": [[0.5, 0.5], [1.0, 1.0]], "x": [1.0, 1.5]}  # sympy's: Heaviside(0) = 1/2
    ok = check(
        CheckRequest("y = sum(relu(W @ x))", inputs, claimed_vjp=exact, checks=("vjp", "jacobian"))
    )
    assert ok.verdict is Verdict.PASS_WITH_CONVENTION_DIFFERENCES, ok.summary
    wrong_w = {"W": [[0.5, 0.5], [1.0, 9.0]], "x": [1.0, 1.5]}  # W[1, 1] is off the kink's path
    assert (
        check(CheckRequest("y = sum(relu(W @ x))", inputs, claimed_vjp=wrong_w)).verdict is Verdict.FAIL
    )


def test_a_corrupted_vjp_is_caught_even_with_a_kink_elsewhere_in_its_input():
    with corrupted("relu"):
        report = check(CheckRequest("y = sum(relu(x))", [InputSpec("x", [0.0, 1.0, 2.0, -1.0])]))
    assert report.verdict is Verdict.FAIL, report.summary


def test_float32_inputs_are_checked_with_float32_tolerances():
    x = np.array([0.5, -1.0, 2.0], np.float32)
    report = check(CheckRequest("y = sum(tanh(x) * x)", [InputSpec("x", x, dtype="float32")]))
    assert report.verdict is Verdict.PASS, report.summary
    assert report.block("vjp", "x").sources["engine"].values.dtype == np.float32


@pytest.mark.parametrize(
    ("source", "values"),
    [
        ("y = sum(sqrt(x))", [0.0, 1.0]),
        ("y = std(x)", [1.0, 1.0, 1.0]),
        ("y = sum(x ** 0.5)", [0.0, 4.0]),
        ("y = sum(x / 0)", [1.0, 2.0]),
    ],
)
def test_singular_points_are_conventions_and_sympy_says_why_it_could_not_run(source, values):
    report = check(CheckRequest(source, [InputSpec("x", values)]))
    assert report.verdict is not Verdict.FAIL, report.summary
    sympy = report.references["sympy"]
    assert sympy.ran or "cannot" in sympy.note
    assert "Error: )" not in sympy.note, sympy.note  # mpmath's ZeroDivisionError has no message


def test_sources_that_agree_on_an_infinite_derivative_differ_by_0():
    """sqrt'(0) is inf in the engine and in JAX: the block passed with "engine~jax inf"."""
    report = check(CheckRequest("y = sum(sqrt(x))", [InputSpec("x", [0.0, 2.0])]))
    assert report.verdict is Verdict.PASS, report.summary
    pair = {(p.a, p.b): p for p in report.block("vjp", "x").pairs}[("engine", "jax")]
    assert pair.max_abs == 0 and pair.disagreeing == 0, pair
    assert "division by zero" in report.references["sympy"].note


def test_a_split_with_only_its_second_piece_used():
    report = check(
        CheckRequest("a, b = split(x, 2)\ny = sum(b * b)", [InputSpec("x", [1.0, 2.0, 3.0, 4.0])])
    )
    assert report.verdict is Verdict.PASS, report.summary
    np.testing.assert_array_equal(report.block("vjp", "x").sources["engine"].values, [0, 0, 6, 8])


@pytest.mark.parametrize(
    ("source", "inputs", "options", "message"),
    [
        ("y = x * " + "9" * 400, {"x": [1.0, 2.0]}, {}, "too large"),
        ("y = sum(split(x, 2))", {"x": [1.0, 2.0, 3.0, 4.0]}, {}, "unpack"),
        ("y = norm(x, ord=0)", {"x": [1.0, 2.0]}, {}, "ord must be a nonzero number"),
        ("y = clamp(x)", {"x": [1.0, 2.0]}, {}, "min or max"),
        ("y = sum(x)", {"x": np.zeros(0)}, {}, "empty"),
        ("y = sum(x)", {"x": [[1.0, 2.0], [3.0]]}, {}, "not an array"),
        ("y = sum(x)", {"x": [1.0, 2.0]}, {"seed": -1}, "seed"),
        ("y = x * 2", {"x": [1.0, 2.0]}, {"cotangents": {"y": [np.nan, 1.0]}}, "NaN"),
        ("y = var(x, correction=3)", {"x": [1.0, 2.0]}, {}, "degrees of freedom"),
        ("y = sum(x ** 2)", {"x": [1.0, 2.0]}, {"rtol": float("nan")}, "rtol"),
        ("y = sum(x)", {"x": [1.0, 2.0]}, {"checks": ("hessian", "vjp"), "budget": None}, None),
    ],
)
def test_bad_requests_are_request_errors(source, inputs, options, message):
    from crossgrad.server.language import RequestError

    options = {k: v for k, v in options.items() if v is not None}
    req = CheckRequest(source, [InputSpec(n, v) for n, v in inputs.items()], **options)
    if message is None:  # a valid request, for contrast
        assert check(req).verdict is Verdict.PASS
        return
    with pytest.raises(RequestError, match=message):
        check(req)


def test_targets_out_of_range_are_refused_with_their_position():
    from crossgrad.server.language import RequestError

    req = CheckRequest(
        "y = cross_entropy(z, t)",
        [InputSpec("z", np.zeros((2, 3))), InputSpec("t", [0, 5], dtype="int64", requires_grad=False)],
    )
    with pytest.raises(RequestError, match="class indices 0 to 2") as info:
        check(req)
    assert info.value.pos is not None


def test_reductions_of_a_0d_input_over_axis_0():
    report = check(
        CheckRequest("y = sum(x, axis=-1) * mean(x, axis=(0,)) + amax(x, axis=0)", [InputSpec("x", 2.0)])
    )
    assert report.verdict is Verdict.PASS and all(s.ran for s in report.references.values())


_X = [InputSpec("x", [1.0, 2.0])]


@pytest.mark.parametrize(
    ("request_fields", "words"),
    [
        ({"claimed_jacobian": {("y", "x"): np.eye(2)}}, "'jacobian' is not among the checks"),
        ({"claimed_vjp": {"x": [1.0, 1.0]}, "checks": ("jacobian",)}, "'vjp' is not among the checks"),
        (
            {
                "inputs": [InputSpec("x", [1.0, 2.0], requires_grad=False)],
                "claimed_vjp": {"x": [2.0, 4.0]},
            },
            "do not require grad",
        ),
        ({"references": ()}, "at least one reference"),
        ({"references": "jax"}, "not the string"),
        ({"claimed_vjp": {"x": ["a", "b"]}}, "not a numeric array"),
        ({"claimed_vjp": {"x": [[1.0], [1.0, 2.0]]}}, "not a numeric array"),
        ({"seed": 2**70}, "seed must be an integer"),
        ({"seed": 0.5}, "seed must be an integer"),
        ({"samples": SamplePoints(count=2.5)}, "samples.count must be an integer"),
        ({"samples": SamplePoints(count=1, seed=0.5)}, "samples.seed must be an integer"),
        ({"budget": Budget(sympy_seconds=float("nan"))}, "budget.sympy_seconds"),
        ({"budget": Budget(fd_max_entries=10**9)}, "budget.fd_max_entries"),
        ({"budget": Budget(hessian_max_inputs=-1)}, "budget.hessian_max_inputs"),
        ({"inputs": [InputSpec(5, [1.0])]}, "name must be a string"),
        ({"inputs": [InputSpec("x", [1.7, 0.0], dtype="int64", requires_grad=False)]}, "non-integer"),
    ],
)
def test_bad_request_fields_are_request_errors_that_name_the_field(request_fields, words):
    fields = {"program": "y = sum(x * x)", "inputs": _X, **request_fields}
    with pytest.raises(RequestError, match=re.escape(words)):
        check(CheckRequest(**fields))


@pytest.mark.parametrize(
    ("source", "checks"),
    [("y = x[5:]", ("vjp", "jacobian")), ("y = sum(x[5:]) + sum(x)", ("vjp", "jacobian", "hessian"))],
)
def test_empty_slices_are_checked_like_any_other_result(source, checks):
    cotangents = {"y": np.zeros(0)} if source == "y = x[5:]" else {}
    report = check(
        CheckRequest(source, [InputSpec("x", [1.0, 2.0, 3.0])], cotangents=cotangents, checks=checks)
    )
    assert report.verdict is Verdict.PASS, report.summary
    assert all(status.ran for status in report.references.values()), report.references


@pytest.mark.parametrize("source", ["y = max(x)", "y = std(x)", "y = var(x)", "y = sum(softmax(x) * x)"])
def test_symbolic_definitions_stay_small_for_reductions_over_many_entries(source):
    # n-argument Max compares every pair of its arguments, and a mean inlined into each entry of
    # var makes expressions (and their derivatives) quadratic: both took minutes for n ~ 50-100
    import sympy as sp

    n = 50
    program = parse(source, {"x": ((n,), "float64")})
    line = sympy_backend.build(program, {"x": np.linspace(-1, 1, n)}, {"x": None})
    assert all(len(e.args) <= 2 for _, e in line.defs if isinstance(e, (sp.Max, sp.Min)))
    assert max(sp.count_ops(e) for _, e in line.defs) <= 5 * n  # linear in n, not n * n


def test_no_reference_able_to_run_is_an_error_not_a_pass():
    report = check(
        CheckRequest(
            "y = sum(x * x)",
            [InputSpec("x", [1.0, 2.0])],
            references=("sympy",),
            budget=Budget(sympy_seconds=0),
        )
    )
    assert report.verdict is Verdict.ERROR
    assert "no reference could check" in report.summary and "time budget" in report.summary


def test_a_failure_no_single_node_explains_says_so(monkeypatch):
    """A gradient mask applied twice (the hooks, not any node's rule): blame checks every node
    alone, finds each right, and says which checks it made."""
    monkeypatch.setattr(engine_backend, "_mask_hook", lambda mask: lambda g: g * mask * 2)
    inputs = [InputSpec("x", [0.5, 1.0], mask=[1.0, 0.0])]
    report = check(CheckRequest("y = sum(tanh(x))", inputs))
    assert report.verdict is Verdict.FAIL, report.summary
    assert not report.points[0].blame
    assert "no node's rule is wrong on its own (each of" in report.summary
    assert "batched" in report.summary and "create_graph" in report.summary


def test_a_rule_returning_a_wrong_shape_is_blamed_with_its_position():
    impl = IMPLS["tanh"]
    original = impl.vjp
    impl.vjp = lambda B, node, g, s: tuple(r[..., :1] for r in original(B, node, g, s))
    try:
        report = check(CheckRequest("h = x * 2\ny = sum(tanh(h))", [InputSpec("x", [0.5, 1.0])]))
    finally:
        impl.vjp = original
    assert report.verdict is Verdict.ERROR
    (blame,) = report.points[0].blame
    assert blame.node_name == "TanhBackward0" and (blame.position.line, blame.position.col) == (2, 9)
    assert "TanhBackward0 at line 2, column 9" in report.summary


_SAME_SUM_EVERY_TIME = """
import os, sys
import crossgrad.server.check  # starts JAX's CPU client with one thread
import jax, jax.numpy as jnp, numpy as np
assert "xla_cpu_multi_thread_eigen=false" in os.environ["XLA_FLAGS"]
X = np.random.default_rng(0).normal(size=(1000, 1000))
gelu = jax.nn.gelu
f = jax.jit(lambda X: jnp.sum(gelu(gelu(gelu(jnp.broadcast_to(X, (4, 1000, 1000)))))))
sums = {float(f(X)) for _ in range(40)}
sys.exit(0 if len(sums) == 1 else f"different sums: {sorted(sums)}")
"""


def test_jax_in_process_gives_the_same_sum_every_time():
    """XLA's CPU pool races in a reduction over a broadcast: this jitted sum came out different
    in most calls on a loaded machine (a false FAIL against the engine). The core starts JAX with
    a pool of one thread (see crossgrad.server.backends)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    command = [sys.executable, "-c", _SAME_SUM_EVERY_TIME]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_sympy_that_ran_out_of_its_share_on_a_program_steps_aside_at_once_next_time():
    """A 5.5k-parameter MLP spent sympy's whole 10 s share on every check, and was then judged by
    JAX anyway: the program is remembered with the share it ran out of."""
    source = "h = tanh(W @ x) * 1.000123\ny = sum(h * h)"  # a program no other test compiles
    rng = np.random.default_rng(3)

    def sympy_note(seconds):
        req = CheckRequest(
            source,
            [InputSpec("W", rng.normal(size=(6, 6))), InputSpec("x", rng.normal(size=6))],
            budget=Budget(sympy_seconds=seconds),
        )
        report = check(req)
        assert report.verdict is Verdict.PASS, report.summary
        return report.references["sympy"]

    first = sympy_note(1e-6)
    assert not first.ran and "ran out of its time budget" in first.note
    again = sympy_note(1e-6)
    assert not again.ran and "it ran out of a 1e-06 s share on this program before" in again.note
    assert sympy_note(30.0).ran  # more time: tried again
