"""Blame: every kind of wrong rule is named on its own node (first order, batched cotangents,
create_graph, frozen operands, kinks, wrong shapes), and no correct node is ever accused (kink
conventions, JAX's conventions, float32 arithmetic, mixed dtypes)."""

from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from crossgrad.engine.ops import IMPLS, NumpyOps, data
from crossgrad.server import blame
from crossgrad.server.backends import engine as engine_backend
from crossgrad.server.check import check
from crossgrad.server.compare import Tolerance
from crossgrad.server.ir import IRNode
from crossgrad.server.language import parse
from crossgrad.server.model import CheckRequest, InputSpec, Verdict


def culprits(source, inputs, frozen=(), dtypes=None, **kwargs):
    """find_culprits on the engine's forward pass of `source` (inputs in `frozen` do not
    require grad, as a request's frozen weights)."""
    dtypes = dtypes or {}
    values = {n: np.asarray(v, dtypes.get(n, "float64")) for n, v in inputs.items()}
    program = parse(source, {n: (v.shape, str(v.dtype)) for n, v in values.items()})
    with np.errstate(all="ignore"):  # inf and nan at kinks and overflows are expected here
        run = engine_backend.run(
            program, values, {n: v.dtype.kind == "f" and n not in frozen for n, v in values.items()}
        )
        return blame.find_culprits(list(program.nodes), run.values, seed=0, **kwargs)


@contextmanager
def rule(op, make):
    """The engine's VJP rule of `op` replaced by make(original rule) while the block runs."""
    impl = IMPLS[op]
    original = impl.vjp
    impl.vjp = make(original)
    try:
        yield
    finally:
        impl.vjp = original


def off_when(condition):
    """A rule 1% (+0.01) off whenever condition(B, node, g) holds, right otherwise."""

    def make(original):
        def vjp(B, node, g, s):
            grads = original(B, node, g, s)
            if not condition(B, node, g):
                return grads
            return tuple(None if r is None else r * 1.01 + 0.01 for r in grads)

        return vjp

    return make


def only(blamed, op, name, line, col):
    assert [b.op for b in blamed] == [op], [(b.op, b.detail) for b in blamed]
    b = blamed[0]
    assert b.node_name == name
    assert (b.position.line, b.position.col) == (line, col)
    return b


SMOOTH = "h = tanh(W @ x + b)\nloss = mean((h - y) ** 2)"


def smooth_inputs():
    rng = np.random.default_rng(3)
    return {
        "W": rng.normal(size=(3, 4)),
        "x": rng.normal(size=4),
        "b": rng.normal(size=3),
        "y": [0.1, 0.2, 0.3],
    }


# ---------------------------------------------------------------- each kind of wrong rule


@pytest.mark.parametrize("wrong", ["log_softmax", "nll_loss"])
def test_an_op_the_engine_runs_as_several_nodes_is_blamed_naming_them_all(wrong):
    """cross_entropy is log_softmax then nll_loss in the engine, checked as one rule: the blame
    named NllLossBackward0 alone, also when log_softmax's rule was the wrong one."""
    x = np.random.default_rng(1).normal(size=(3, 4))
    with rule(wrong, lambda original: off_when(lambda B, node, g: True)(original)):
        report = check(
            CheckRequest(
                "y = cross_entropy(X, t)", [InputSpec("X", x), InputSpec("t", [2, 0, 3], dtype="int64")]
            )
        )
    b = only(report.points[0].blame, "cross_entropy", "NllLossBackward0", 1, 5)
    assert (
        "cross_entropy runs as NllLossBackward0 and LogSoftmaxBackward0: one of their rules" in b.detail
    )


def test_a_rule_wrong_only_for_the_cotangent_it_received_is_blamed():
    """sin's rule wrong only when its cotangent is all ones (a fast path): blame's seeded random
    cotangents never met it, and the summary said no node's rule was wrong on its own."""
    ones = off_when(lambda B, node, g: bool(np.all(data(g) == 1.0)))
    with rule("sin", ones):
        report = check(
            CheckRequest("y = sin(x)", [InputSpec("x", [0.3, 0.7, 1.2])], cotangents={"y": [1.0] * 3})
        )
    assert report.verdict is Verdict.FAIL
    b = only(report.points[0].blame, "sin", "SinBackward0", 1, 5)
    assert b.detail.startswith("the cotangent it received in the request: gradient of operand 0 (x)")


def test_a_rule_wrong_only_for_one_hot_cotangents_is_blamed_from_a_jacobian():
    """Without a VJP in the request, the cotangents a node received are those of the first
    Jacobian row the engine got wrong: a rule wrong only for one-hot rows (a Jacobian's) was
    caught and not blamed."""

    def one_hot(B, node, g):
        d = data(g)
        return bool(np.all((d == 0) | (d == 1)) and np.all((d != 0).sum(axis=-1) == 1))

    with rule("sin", off_when(one_hot)):
        report = check(
            CheckRequest("y = sin(x)", [InputSpec("x", [0.3, 0.7, 1.2])], checks=("jacobian",))
        )
    assert report.verdict is Verdict.FAIL
    b = only(report.points[0].blame, "sin", "SinBackward0", 1, 5)
    assert b.detail.startswith("the cotangent it received in the request: gradient of operand 0 (x)")


def test_a_rule_wrong_only_under_create_graph_is_blamed():
    with rule("tanh", off_when(lambda B, n, g: B is not NumpyOps)):
        blamed = culprits(SMOOTH, smooth_inputs())
    b = only(blamed, "tanh", "TanhBackward0", 1, 5)
    assert b.detail.startswith("create_graph, the VJP's values"), b.detail
    assert "sympy (exact)" in b.detail


def test_a_rule_whose_second_derivative_only_is_wrong_is_blamed():
    """The VJP's values are right under create_graph; only differentiating them again is off."""

    def make(original):
        def vjp(B, node, g, s):
            (r,) = original(B, node, g, s)
            if B is NumpyOps:
                return (r,)
            x = s[0]
            # the same values, plus a term that is 0 here but whose derivative is not
            return (r + 0.5 * g * (x - B.data(x)),)

        return vjp

    with rule("sin", make):
        blamed = culprits("y = sum(sin(x) * w)", {"x": [0.3, -1.2], "w": [2.0, 0.5]})
    b = only(blamed, "sin", "SinBackward0", 1, 9)
    assert "the VJP of the VJP" in b.detail, b.detail


def test_a_rule_wrong_only_for_batched_cotangents_is_blamed():
    def batched(B, node, g):
        return g.ndim > len(node._out_meta[0][0])

    with rule("tanh", off_when(batched)):
        blamed = culprits(SMOOTH, smooth_inputs())
    b = only(blamed, "tanh", "TanhBackward0", 1, 5)
    assert b.detail.startswith("4 batched cotangents"), b.detail


def test_a_rule_wrong_only_when_an_operand_is_frozen_is_blamed_when_the_request_freezes_it():
    def second_frozen(B, node, g):
        return not node._needs[1]

    source, inputs = "y = sum(x * w)", {"x": [1.0, 2.0, -0.5], "w": [3.0, -4.0, 0.25]}
    with rule("mul", off_when(second_frozen)):
        blamed = culprits(source, inputs, frozen=("w",))
        # nothing in this request runs that path: every float operand requiring grad is right
        unfrozen = culprits(source, inputs)
    b = only(blamed, "mul", "MulBackward0", 1, 9)
    assert "with operand 1 (w) frozen, as in the request" in b.detail, b.detail
    assert not unfrozen, [(c.op, c.detail) for c in unfrozen]


def test_a_rule_returning_the_wrong_shape_is_blamed_with_line_column_and_shapes():
    def make(original):
        def vjp(B, node, g, s):
            (r,) = original(B, node, g, s)
            return (B.sum(r, axis=-1, keepdims=True),)

        return vjp

    with rule("tanh", make):
        blamed = culprits("y = 2 * x\nz = sum(tanh(y))", {"x": [0.5, -1.0, 2.0]})
    b = only(blamed, "tanh", "TanhBackward0", 2, 9)
    assert "invalid gradient" in b.detail and "(1,)" in b.detail and "(3,)" in b.detail, b.detail
    assert b.max_abs_error == np.inf


def test_a_rule_wrong_at_a_relu_kink_beyond_the_admissible_range_is_blamed():
    """relu'(0) may be anything in [0, 1]; 2 is not. The input has no negative entry, so the
    rule is wrong only at the kink (out == 0 means x == 0 here)."""

    def make(original):
        def vjp(B, node, g, s):
            (r,) = original(B, node, g, s)
            return (B.where(data(s[-1]) == 0, g * 2.0, r),)

        return vjp

    source, inputs = "y = sum(relu(x) * w)", {"x": [0.0, 1.0, 2.0], "w": [1.5, -0.5, 2.0]}
    with rule("relu", make):
        blamed = culprits(source, inputs)
    b = only(blamed, "relu", "ReluBackward0", 1, 9)
    assert "entry (0,)" in b.detail and "one-sided derivatives" in b.detail, b.detail
    # the right rule there (torch's relu'(0) = 0) is admissible
    assert not culprits(source, inputs)


def test_a_rule_wrong_at_a_max_tie_is_blamed_and_the_right_ones_are_not():
    """At a tie of max every share of the gradient in [0, g] is admissible: torch's first index
    (max along an axis) and even split (full max) both are; three times those are not."""
    source, inputs = "y = sum(max(x, axis=1)) + max(x)", {"x": [[1.0, 1.0, -1.0], [2.0, 0.0, 2.0]]}
    assert not culprits(source, inputs)

    def make(original):
        def vjp(B, node, g, s):
            (r,) = original(B, node, g, s)
            return (r * 3.0,)

        return vjp

    with rule("max", make):
        blamed = culprits(source, inputs)
    assert {b.op for b in blamed} == {"max"} and len(blamed) == 2
    assert all("one-sided derivatives" in b.detail or "sympy" in b.detail for b in blamed)


def test_a_rule_wrong_only_at_non_kinked_entries_of_a_kinked_node_is_blamed():
    def make(original):
        def vjp(B, node, g, s):
            (r,) = original(B, node, g, s)
            return (B.where(data(s[0]) > 0.5, r * 1.01, r),)

        return vjp

    with rule("abs", make):
        blamed = culprits("y = sum(abs(x))", {"x": [0.0, 1.0, -2.0]})
    b = only(blamed, "abs", "AbsBackward0", 1, 9)
    assert "entry (1,)" in b.detail and "sympy (exact)" in b.detail, b.detail


def test_a_wrong_rule_is_blamed_by_jax_where_sympy_does_not_take_the_node(monkeypatch):
    monkeypatch.setattr(blame, "SYMPY_MAX_COST", 0)
    with rule("tanh", off_when(lambda B, n, g: True)):
        blamed = culprits(SMOOTH, smooth_inputs())
    b = only(blamed, "tanh", "TanhBackward0", 1, 5)
    assert "JAX (float64; too large for sympy" in b.detail, b.detail


def test_float32_rules_are_judged_with_float32_tolerances():
    inputs = {"x": [0.5, -1.0, 2.0]}
    # float32 arithmetic itself (about 1e-7 relative) is not a wrong rule...
    assert not culprits("y = sum(tanh(x) * x)", inputs, dtypes={"x": "float32"})
    # ...but a rule 1e-3 off is, and one 1e-6 off is not, in float32; in float64 it is.
    small = off_when(lambda B, n, g: True)

    def tiny(original):
        return lambda B, n, g, s: tuple(r * (1 + 1e-6) for r in original(B, n, g, s))

    with rule("tanh", small):
        assert [b.op for b in culprits("y = sum(tanh(x))", inputs, dtypes={"x": "float32"})] == ["tanh"]
    with rule("tanh", tiny):
        assert not culprits("y = sum(tanh(x))", inputs, dtypes={"x": "float32"})
        assert [b.op for b in culprits("y = sum(tanh(x))", inputs)] == ["tanh"]


def test_a_node_off_only_through_another_wrong_rule_is_not_blamed():
    """leaky_relu's VJP multiplies by a number: under create_graph that is a mul whose second
    operand needs no gradient. A mul rule wrong exactly there shows in leaky_relu's VJP of its
    VJP too; only mul, whose own check finds it, is blamed, and the detail says where else."""

    def second_frozen(B, node, g):
        return not node._needs[1]

    with rule("mul", off_when(second_frozen)):
        blamed = culprits(
            "y = sum(leaky_relu(x, negative_slope=0.2) * w)",
            {"x": [0.5, -1.0], "w": [1.0, 2.0]},
            frozen=("w",),
        )
    b = only(blamed, "mul", "MulBackward0", 1, 9)
    assert "LeakyReluBackward0" in b.detail, b.detail


# ---------------------------------------------------------------- no correct node is accused


@pytest.mark.parametrize(
    ("source", "inputs", "frozen", "dtypes"),
    [
        (SMOOTH, smooth_inputs(), ("x", "y"), {}),
        (SMOOTH, smooth_inputs(), (), {"W": "float32", "x": "float32", "b": "float32", "y": "float32"}),
        ("a, b = split(x, 2)\ny = sum(a * exp(b))", {"x": [0.1, -0.3, 1.2, 0.7]}, (), {}),
        (
            "y = sum(softmax(x, axis=1) * w) + logsumexp(x)",
            {"x": [[1.0, 2.0], [0.5, -1.0]], "w": [[1.0, 0.0], [2.0, 3.0]]},
            ("w",),
            {},
        ),
        (
            "y = sum(where(x > 0, x * w, 0.5)) + std(x)",
            {"x": [0.0, 1.0, -2.0], "w": [1.0, 2.0, 3.0]},
            (),
            {},
        ),
        ("y = sum(sum(exp(x)))", {"x": [[100.0, 1.0]]}, (), {"x": "float32"}),
        ("y = sum(log(exp(x)))", {"x": [1000.0, 1.0]}, (), {}),
        ("y = std(x)", {"x": [1.0 + 1e-12, 1.0, 1.0]}, (), {}),
    ],
)
def test_a_correct_program_has_no_culprit(source, inputs, frozen, dtypes):
    found = culprits(source, inputs, frozen, dtypes)
    assert not found, [(b.op, b.detail) for b in found]
    assert found.checks.startswith("each of ")


KINKS = [
    ("y = sum(relu(x))", {"x": [0.0, 1.0, -2.0]}),
    ("y = sum(abs(x))", {"x": [0.0, 1.5]}),
    ("y = sum(leaky_relu(x, negative_slope=0.1))", {"x": [0.0, 1.0]}),
    ("y = sum(maximum(x, w))", {"x": [1.0, 2.0], "w": [1.0, 0.5]}),
    ("y = sum(minimum(x, 1.0))", {"x": [1.0, 2.0]}),
    ("y = sum(clamp(x, min=0.0, max=1.0))", {"x": [0.0, 1.0, 0.5]}),
    ("y = sum(sqrt(x))", {"x": [0.0, 4.0]}),
    ("y = sum(log(x))", {"x": [0.0, 4.0]}),
    ("y = sum(x ** 0.5)", {"x": [0.0, 4.0]}),
    ("y = sum(x ** w)", {"x": [0.0, 4.0], "w": [2.0, 0.5]}),
    ("y = sum(x / w)", {"x": [1.0, 4.0], "w": [0.0, 0.5]}),
    ("y = max(x) + amin(x)", {"x": [1.0, 1.0, 0.0, 0.0]}),
    ("y = sum(amax(x, axis=0))", {"x": [[1.0, 2.0], [1.0, 0.0]]}),
    ("y = norm(x)", {"x": [0.0, 0.0, 0.0]}),
    ("y = sum(norm(x, axis=1))", {"x": [[0.0, 0.0], [3.0, 4.0]]}),
    ("y = norm(x, ord=1)", {"x": [0.0, 1.0, -2.0]}),
    ("y = norm(x, ord=0.5)", {"x": [0.0, 1.0]}),
    ("y = norm(x, ord=inf)", {"x": [1.0, -1.0, 0.5]}),
    ("y = std(x)", {"x": [1.0, 1.0, 1.0]}),
    ("y = sum(std(x, axis=1))", {"x": [[2.0, 2.0], [1.0, 3.0]]}),
    ("y = relu(sum(x) - 1) + sum(sin(x))", {"x": [0.5, 0.5]}),
    ("y = amax(x)", {"x": [0.0] * 20}),
]


@pytest.mark.parametrize(("source", "inputs"), KINKS)
def test_kink_conventions_of_a_correct_engine_are_not_blamed(source, inputs):
    found = culprits(source, inputs)
    assert not found, [(b.op, b.detail) for b in found]
    assert "at kinks, against their one-sided derivatives" in found.checks, found.checks


def test_norm_ord_1_at_a_zero_entry_is_not_blamed_where_jax_differs(monkeypatch):
    x = np.array([0.0, 1.0, -2.0])
    # JAX's convention at the zero entry (abs'(0) = 1) is not torch's (sign(0) = 0): comparing
    # with JAX alone at the point accused a correct engine
    jax_grad = np.asarray(jax.grad(lambda v: jnp.linalg.vector_norm(v, ord=1))(jnp.asarray(x)))
    assert jax_grad[0] != 0.0
    assert not culprits("y = norm(x, ord=1)", {"x": x})
    monkeypatch.setattr(blame, "SYMPY_MAX_COST", 0)  # JAX, at both sides of the kink
    found = culprits("y = norm(x, ord=1)", {"x": x})
    assert not found, [(b.op, b.detail) for b in found]
    assert "JAX for 1" in found.checks


def test_a_float32_float64_mix_does_not_crash_and_is_blamed(monkeypatch):
    """float32 x times a float64 0-d tensor is float32 in the engine (as torch), float64 in JAX:
    a float32 cotangent handed to jax.vjp was a ValueError out of check()."""
    request = CheckRequest(
        "y = sum(x * s)",
        [InputSpec("x", [1.0, 2.0, 3.0], dtype="float32"), InputSpec("s", 0.5)],
    )
    with rule("mul", off_when(lambda B, n, g: True)):
        report = check(request)
    assert report.verdict is Verdict.FAIL, report.summary
    assert [b.op for b in report.points[0].blame] == ["mul"], report.summary
    monkeypatch.setattr(blame, "SYMPY_MAX_COST", 0)  # JAX judges: it was JAX that raised
    inputs = {"x": [1.0, 2.0, 3.0], "s": 0.5}
    found = culprits("y = sum(x * s)", inputs, dtypes={"x": "float32"})
    assert not found, [(b.op, b.detail) for b in found]
    with rule("mul", off_when(lambda B, n, g: True)):
        found = culprits("y = sum(x * s)", inputs, dtypes={"x": "float32"})
    assert [b.op for b in found] == ["mul"] and "JAX" in found[0].detail


def test_check_blames_a_batched_only_bug_in_a_jacobian():
    def batched(B, node, g):
        return g.ndim > len(node._out_meta[0][0])

    request = CheckRequest("y = tanh(x)", [InputSpec("x", [0.5, 1.0])], checks=("jacobian",))
    with rule("tanh", off_when(batched)):
        report = check(request)
    assert report.verdict is Verdict.FAIL
    blamed = report.points[0].blame
    assert [(b.node_name, b.position.line, b.position.col) for b in blamed] == [("TanhBackward0", 1, 5)]


# ---------------------------------------------------------------- what was checked, and the API


def test_the_checks_made_are_stated_when_no_node_is_found():
    found = culprits(
        "h = relu(W @ x)\ny = sum(h * h)",
        {"W": [[1.0, -1.0], [2.0, 0.5]], "x": [1.0, 1.0]},
        frozen=("x",),
    )
    assert not found
    assert found.checks == (
        "each of 4 nodes checked alone at its saved operands: first order, 4 batched "
        "cotangents, create_graph (the VJP of its VJP), every float operand requiring grad, and "
        "frozen operands as in the request (1 with some); 1 at kinks, against their one-sided "
        "derivatives (1 gradient entries judged by the admissible range); reference: sympy for 4"
    ), found.checks


def test_the_old_call_still_works():
    values = {"x": np.array([0.5, -1.0])}
    program = parse("y = sum(tanh(x))", {"x": ((2,), "float64")})
    run = engine_backend.run(program, values, {"x": True})
    with rule("tanh", off_when(lambda B, n, g: True)):
        found = blame.find_culprits(
            list(program.nodes), run.values, {1}, Tolerance.for_dtype("float64"), 0
        )
    assert isinstance(found, list) and [b.node_name for b in found] == ["TanhBackward0"]
    assert found.checks.startswith("each of 2 nodes")


def test_a_node_blame_cannot_check_is_named_not_a_crash(monkeypatch):
    from crossgrad.server.backends import jax_backend

    def broken(o, a):
        raise RuntimeError("no lowering today")

    monkeypatch.setattr(blame, "SYMPY_MAX_COST", 0)
    monkeypatch.setitem(jax_backend.LOWERING, "tanh", broken)
    found = culprits("y = sum(tanh(x))", {"x": [0.5, -1.0]})
    assert not found
    assert "not checked, blame itself failed: TanhBackward0 at line 1, column 9" in found.checks
    assert found.checks.startswith("each of 1 node checked alone"), found.checks


def _node(op, shape, **attrs):
    return IRNode(1, op, (), tuple(attrs.items()), shape, "float64")


def test_kink_sides_per_op():
    x = np.array([0.0, 1.0, -2.0])
    sides = blame.kink_sides(_node("relu", (3,)), [x], x == 0)
    assert len(sides) == 2 and sides[0][0][0] > 0 > sides[1][0][0]
    assert sides[0][0][1:].tolist() == [0.0, 0.0]
    # sqrt at 0: only from the right (the left leaves the domain)
    sqrt = blame.kink_sides(_node("sqrt", (3,)), [x], x <= 0)
    assert len(sqrt) == 1 and sqrt[0][0][0] > 0 and sqrt[0][0][2] == 0
    # max with a tie of three: each tied entry raised in turn
    t = np.array([2.0, 1.0, 2.0, 2.0])
    ties = blame.kink_sides(_node("max", (), axis=None, keepdims=False), [t], None)
    assert [np.flatnonzero(s[0]).tolist() for s in ties] == [[0], [2], [3]]
    assert all((s[0] >= 0).all() for s in ties)
    # a zero vector under norm: +/- each entry in turn
    z = np.zeros(3)
    norm = blame.kink_sides(_node("norm", (), axis=None, keepdims=False, ord=2.0), [z], None)
    assert len(norm) == 6
    # maximum(1.0, x) at a tie: the tensor operand moves, not the number
    m = blame.kink_sides(_node("maximum", (2,)), [1.0, np.array([1.0, 3.0])], np.array([True, False]))
    assert m[0][0] is None and m[0][1][0] != 0 and m[0][1][1] == 0
    # no kink, no sides
    assert blame.kink_sides(_node("relu", (3,)), [x], np.zeros(3, bool)) == []
    assert blame.kink_sides(_node("tanh", (3,)), [x], None) == []


def test_kink_entries_past_the_caps_are_unverified_not_judged():
    zeros = np.zeros(blame.TIE_SIDES_CAP + 4)
    node = _node("amax", (), axis=None, keepdims=False)
    assert len(blame.kink_sides(node, [zeros], None)) == blame.TIE_SIDES_CAP
    beyond = blame.kink_beyond_cap(node, [zeros])
    assert beyond is not None and beyond.sum() == 4 and beyond[-4:].all()
    found = culprits("y = amax(x)", {"x": zeros})
    assert not found and "4 gradient entries at kinks left unverified" in found.checks, found.checks


def test_a_tie_rule_whose_shares_do_not_add_up_is_blamed():
    """max's rule giving each of t tied entries 1/(t + 1) of the gradient: every entry lies in
    [0, 1], the range per entry, and blame said no node's rule was wrong (the verdict failed
    it through the hull of the ties' alternatives). Blame now asks for one convex combination."""

    def split(original):
        def vjp(B, node, g, s):
            (r,) = original(B, node, g, s)
            x = np.asarray(data(s[0]))
            ties = int((x == x.max()).sum())
            return (r * ties / (ties + 1) if ties > 1 else r,)

        return vjp

    with rule("max", split):
        blamed = culprits("y = max(x)", {"x": [1.0, 1.0, 1.0, 0.0]})
    b = only(blamed, "max", "MaxBackward1", 1, 5)
    assert "no convex combination" in b.detail, b.detail
    # the right rule at the same ties: nothing blamed
    assert culprits("y = max(x)", {"x": [1.0, 1.0, 1.0, 0.0]}) == []
    assert culprits("y = sum(maximum(x, z))", {"x": [1.0, 2.0], "z": [1.0, 0.5]}) == []
