"""Validation at the boundary: what used to be coerced or ignored without a word is a RequestError
naming the field, and everything over a limit is a LimitError (RESOURCE_EXHAUSTED), while a
malformed request stays a plain RequestError (INVALID_ARGUMENT)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from crossgrad.server.check import check
from crossgrad.server.graph import describe_graph
from crossgrad.server.language import LimitError, RequestError, parse
from crossgrad.server.limits import Limits
from crossgrad.server.model import Budget, CheckRequest, InputSpec, SamplePoints, Verdict


def request(**fields: object) -> CheckRequest:
    base: dict[str, object] = {
        "program": "y = sum(x * w)",
        "inputs": [InputSpec("x", [1.0, 2.0]), InputSpec("w", [3.0, 4.0])],
    }
    return CheckRequest(**{**base, **fields})


def refused(req: CheckRequest, field: str, words: str) -> RequestError:
    with pytest.raises(RequestError, match=re.escape(words)) as info:
        check(req)
    assert info.value.field == field, (info.value.field, info.value)
    return info.value


# ---------------------------------------------------------------- coerced or ignored before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"inputs": [InputSpec("x", np.array([1 + 2j, 2.0])), InputSpec("w", [3.0, 4.0])]}, "inputs[x]"),
        ({"inputs": [InputSpec("x", [1.0, 2.0]), InputSpec("w", [3.0, 4j])]}, "inputs[w]"),
        (
            {"inputs": [InputSpec("x", [1.0, 2.0], mask=np.array([1, 0j])), InputSpec("w", [3.0, 4.0])]},
            "inputs[x].mask",
        ),
        ({"program": "y = x * w", "cotangents": {"y": [1.0, 1j]}}, "cotangents[y]"),
        ({"claimed_vjp": {"x": np.array([3.0, 4.0 + 0j])}}, "claimed_vjp[x]"),
        (
            {"claimed_jacobian": {("y", "x"): np.array([[3.0, 4.0 + 1j]])}, "checks": ("jacobian",)},
            "claimed_jacobian[y/x]",
        ),
    ],
)
def test_complex_values_are_refused_not_cut_to_their_real_part(fields, field):
    error = refused(request(**fields), field, "complex values")
    assert "only real numbers" in error.message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"program": "y = x * w", "cotangents": {"y": [True, True]}}, "cotangents[y]"),
        ({"claimed_vjp": {"x": [True, False]}}, "claimed_vjp[x]"),
        ({"inputs": [InputSpec("x", [True, False]), InputSpec("w", [3.0, 4.0])]}, "inputs[x]"),
    ],
)
def test_booleans_are_refused_as_numbers(fields, field):
    """A bool cotangent [1, 1] was read as floats and the check PASSed; a mask may be bool."""
    refused(request(**fields), field, "holds booleans: give numbers")
    masked = request(inputs=[InputSpec("x", [1.0, 2.0], mask=[True, False]), InputSpec("w", [3.0, 4.0])])
    assert check(masked).verdict is Verdict.PASS


def test_names_are_at_most_200_characters():
    """A report repeats a name in every block about it: an unused input named by a megabyte made
    a 13 MB report, and a 99 MiB one was refused only after the check ran."""
    long = "x" * 201
    req = request(inputs=[InputSpec("x", [1.0, 2.0]), InputSpec("w", [3.0, 4.0]), InputSpec(long, 1.0)])
    refused(req, "inputs[2]", "input 2's name has 201 characters; the limit is 200")
    with pytest.raises(RequestError, match="a name of 201 characters; the limit is 200") as info:
        parse(f"{long} = x * 2.0\ny = sum({long})", {"x": ((2,), "float64")})
    assert (info.value.pos.line, info.value.pos.col) == (1, 1)
    assert check(request(program=f"{'v' * 200} = x * w\ny = sum({'v' * 200})")).verdict is Verdict.PASS


def test_constant_overflow_is_said_in_words():
    with pytest.raises(RequestError, match="the result is too large for float64") as info:
        parse("y = x * 10.0 ** 400", {"x": ((2,), "float64")})
    assert "34" not in str(info.value)


def test_text_is_not_read_as_numbers():
    req = request(inputs=[InputSpec("x", ["1.5", "2"]), InputSpec("w", [3.0, 4.0])])
    refused(req, "inputs[x]", "not a numeric array")


def test_a_mask_on_a_frozen_input_is_refused():
    inputs = [InputSpec("x", [1.0, 2.0]), InputSpec("w", [3.0, 4.0], requires_grad=False, mask=[1, 0])]
    refused(request(inputs=inputs), "inputs[w].mask", "does not require grad")


def test_a_mask_on_an_integer_input_is_refused():
    inputs = [
        InputSpec("x", [1.0, 2.0]),
        InputSpec("w", [3.0, 4.0]),
        InputSpec("t", [0, 1], dtype="int64", requires_grad=True, mask=[1, 0]),
    ]
    req = request(program="y = sum(x * w) + sum(t * 1.0)", inputs=inputs)
    refused(req, "inputs[t].mask", "is int64: it is not differentiated")


def test_a_mask_where_it_belongs_still_works():
    inputs = [InputSpec("x", [1.0, 2.0], mask=[1.0, 0.0]), InputSpec("w", [3.0, 4.0])]
    report = check(request(inputs=inputs))
    assert report.verdict is Verdict.PASS
    np.testing.assert_array_equal(report.block("vjp", "x").sources["engine"].values, [3.0, 0.0])


def test_a_mask_entry_is_0_or_1():
    inputs = [InputSpec("x", [1.0, 2.0], mask=[0.5, 1.0]), InputSpec("w", [3.0, 4.0])]
    refused(request(inputs=inputs), "inputs[x].mask", "holds 0.5 at [0]: a mask entry is 1")


@pytest.mark.parametrize(
    ("program", "words"),
    [
        ("y = logsumexp(x[0:0])", "logsumexp: cannot reduce an empty dimension"),
        ("y = sum(softmax(x[0:0], axis=0))", "softmax: cannot normalise over an empty dimension"),
        ("y = sum(log_softmax(x[0:0]))", "log_softmax: cannot normalise over an empty dimension"),
        ("y = sum(getitem(x))", "unknown function 'getitem'"),  # x[i] is how it is written
    ],
)
def test_ops_the_engine_cannot_run_are_refused_where_they_are_written(program, words):
    """These reached the engine and came back as an ERROR verdict (numpy's max of nothing, a
    missing index)."""
    error = refused(request(program=program), "program", words)
    assert error.pos is not None and error.pos.line == 1


def test_limits_of_the_text_say_where():
    long_number = "y = sum(x) * 2 + " + "9" * 5000
    error = refused(request(program=long_number), "program", "a number of 5000 digits")
    assert (error.pos.line, error.pos.col) == (1, 18) and "sys." not in error.message
    deep = "z = sum(x)\ny = " + "(" * 70 + "x" + ")" * 70
    error = refused(request(program=deep), "program", "brackets are nested more than 64 deep")
    assert (error.pos.line, error.pos.col) == (2, 69)
    chain = "z = sum(x)\ny = sum(" + " + ".join(["x"] * 20000) + ")"  # as deep as it is long
    error = refused(request(program=chain), "program", "nested too deeply to parse")
    assert error.pos.line == 2 and "20000 operators and brackets" in error.message  # + and (
    nots = "z = sum(x)\ny = " + "not " * 20000 + "x"  # "this line has 0 operators", before
    error = refused(request(program=nots), "program", "nested too deeply to parse")
    assert "20000 operators and brackets" in error.message


def test_an_output_named_twice_is_refused():
    """Its VJP was added twice (a right claim FAILed, a doubled one PASSed; from an audit)."""
    refused(request(program="z = sum(x * w)", outputs=["z", "z"]), "outputs", "'z' is named twice")


def test_a_cotangent_for_an_output_that_does_not_exist_is_refused():
    req = request(program="y = x * w", cotangents={"y": [1.0, 1.0], "z": [1.0, 1.0]})
    error = refused(req, "cotangents[z]", "which is not an output")
    assert "(the outputs: y)" in error.message


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (
            [InputSpec("x", [1.0, 2.0]), InputSpec("w", [3.0, 4.0], requires_grad=False)],
            "do not require grad",
        ),
        (
            [InputSpec("x", [1.0, 2.0]), InputSpec("w", [3, 4], dtype="int64", requires_grad=True)],
            "int64 inputs (not differentiated)",
        ),
    ],
)
def test_claims_for_inputs_that_are_not_differentiated_are_refused(inputs, words):
    refused(request(inputs=inputs, claimed_vjp={"w": [1.0, 2.0]}), "claimed_vjp[w]", words)
    req = request(inputs=inputs, claimed_jacobian={("y", "w"): [[1.0, 2.0]]}, checks=("jacobian",))
    refused(req, "claimed_jacobian[y/w]", words)


def test_malformed_claim_keys_are_refused():
    req = request(claimed_jacobian={"yx": [[1.0, 2.0]]}, checks=("jacobian",))
    refused(req, "claimed_jacobian", "(output, input) name pairs")


def test_input_names_must_be_nfkc_normalised():
    # Python reads the program's ℌ as H: an input called ℌ could never be used, and one called
    # H would silently be the same variable
    assert parse("y = ℌ * 2", {"H": ((1,), "float64")}).input_names == ("H",)
    req = request(
        program="y = sum(ℌ * w)", inputs=[InputSpec("ℌ", [1.0, 2.0]), InputSpec("w", [3.0, 4.0])]
    )
    error = refused(req, "inputs[ℌ]", "not NFKC-normalised")
    assert "'ℌ'" in error.message and "'H'" in error.message
    req = request(
        program="y = sum(x * w)", inputs=[InputSpec("ｘ", [1.0, 2.0]), InputSpec("w", [3.0, 4.0])]
    )
    refused(req, "inputs[ｘ]", "call the input 'x'")


def test_an_input_given_twice_is_refused():
    inputs = [InputSpec("x", [1.0, 2.0]), InputSpec("w", [3.0, 4.0]), InputSpec("x", [5.0, 6.0])]
    refused(request(inputs=inputs), "inputs[x]", "input 'x' is given twice")


@pytest.mark.parametrize(
    ("dtype", "samples", "field", "words"),
    [
        (
            "float32",
            SamplePoints(count=1, distribution="uniform", low=-1e39, high=0.0),
            "samples.low",
            "overflow float32",
        ),
        ("float32", SamplePoints(count=1, scale=1e38), "samples.scale", "the scale may be at most"),
        (
            "float64",
            SamplePoints(count=1, distribution="uniform", low=-1e308, high=1e308),
            "samples.low",
            "overflow float64",
        ),
        ("float64", SamplePoints(count=1, scale=1e308), "samples.scale", "overflow float64"),
    ],
)
def test_sample_ranges_that_overflow_the_inputs_dtype_are_refused(dtype, samples, field, words):
    inputs = [InputSpec("x", [1.0, 2.0], dtype=dtype), InputSpec("w", [3.0, 4.0], dtype=dtype)]
    refused(request(inputs=inputs, samples=samples), field, words)


def test_sample_ranges_within_the_dtype_are_drawn():
    inputs = [InputSpec("x", [1.0, 2.0], dtype="float32"), InputSpec("w", [3.0, 4.0], dtype="float32")]
    samples = SamplePoints(count=2, distribution="uniform", low=-1e30, high=1e30)
    report = check(request(inputs=inputs, samples=samples, references=("jax",)))
    drawn = report.points[1].inputs["x"]
    assert drawn.dtype == np.float32 and np.all(np.isfinite(drawn)) and np.abs(drawn).max() > 1e20
    # the same range on a frozen float32 input draws nothing, so it is not refused
    frozen = [
        InputSpec("x", [1.0, 2.0]),
        InputSpec("w", [3.0, 4.0], dtype="float32", requires_grad=False),
    ]
    samples = SamplePoints(count=1, distribution="uniform", low=-1e39, high=0.0)
    assert check(request(inputs=frozen, samples=samples, references=("jax",))).points


# ---------------------------------------------------------------- limits and malformed requests


LIMITS = Limits(max_input_elements=10, max_total_elements=12, max_statements=3, max_nodes=8)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"inputs": [InputSpec("x", np.ones(11)), InputSpec("w", [1.0])]},
            "inputs[x]",
            "the limit is 10",
        ),
        (
            {"inputs": [InputSpec("x", np.ones(7)), InputSpec("w", np.ones(7))]},
            "inputs",
            "more than 12 elements in all",
        ),
        ({"program": "a = x\nb = a\nc = b\ny = sum(c * w)"}, "program", "4 statements; the limit is 3"),
        ({"program": "y = sum(x * w + x * w + x * w + x * w)"}, "program", "more than 8 inputs and"),
        ({"program": "y = sum(x ** 2000 * w)"}, "program", "the limit of |exponent| is 1024"),
        ({"program": "y = sum(x * w)" + " " * 100_001}, "program", "the limit is 100000"),
        (
            {"program": "y = sum(" + "(" * 70 + "x" + ")" * 70 + " * w)"},
            "program",
            "nested more than 64",
        ),
        (
            {"budget": Budget(seconds=121.0)},
            "budget.seconds",
            "budget.seconds is 121.0; this server's limit",
        ),
        ({"budget": Budget(sympy_seconds=500.0)}, "budget.sympy_seconds", "budget.sympy_seconds"),
        ({"budget": Budget(fd_max_entries=10**9)}, "budget.fd_max_entries", "budget.fd_max_entries"),
        (
            {"budget": Budget(sympy_max_scalar_ops=10**6)},
            "budget.sympy_max_scalar_ops",
            "limit is 400000",
        ),
        ({"samples": SamplePoints(count=65)}, "samples.count", "samples.count is 65"),
        (
            {"checks": ("hessian",), "budget": Budget(hessian_max_inputs=1)},
            "checks",
            "hessian_max_inputs",
        ),
    ],
)
def test_requests_over_a_limit_are_limit_errors(fields, field, words):
    with pytest.raises(LimitError, match=re.escape(words)) as info:
        check(request(**fields), LIMITS)
    assert info.value.field == field, info.value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"program": "y = sum(x * )"}, "program"),
        ({"budget": Budget(seconds=float("nan"))}, "budget.seconds"),
        ({"budget": Budget(seconds=0.0)}, "budget.seconds"),
        ({"budget": Budget(sympy_max_scalar_ops=-1)}, "budget.sympy_max_scalar_ops"),
        ({"samples": SamplePoints(count=-1)}, "samples.count"),
        ({"inputs": [InputSpec("x", [1.0, 2.0]), InputSpec("w", [np.nan, 1.0])]}, "inputs[w]"),
        ({"outputs": [["y"]]}, "outputs"),
    ],
)
def test_malformed_requests_are_request_errors_not_limit_errors(fields, field):
    with pytest.raises(RequestError) as info:
        check(request(**fields), LIMITS)
    assert not isinstance(info.value, LimitError) and info.value.field == field, info.value


def test_describe_graph_validates_the_same_way():
    req = request(inputs=[InputSpec("x", [1.0, 2j]), InputSpec("w", [3.0, 4.0])])
    with pytest.raises(RequestError, match="complex values"):
        describe_graph(req)
    dag, outputs = describe_graph(request())
    assert outputs["y"] == 11.0 and {leaf.name for leaf in dag.leaves} == {"x", "w"}


# ---------------------------------------------------------------- found by fuzzing the service


@pytest.mark.parametrize(
    ("program", "words"),
    [
        # shape rules handed an int or None where they wanted a tuple: INTERNAL errors before
        ("y = sum(pad(x, 1))", "pad: pad (1,) needs pairs"),
        ("y = sum(unsqueeze(x, None))", "unsqueeze: attribute axis must be an int, got 'None'"),
        # max over several axes: the call was OK and its verdict ERROR (the engine raised)
        ("y = sum(max(x, axis=(0,)))", "max: attribute axis must be an int, got '(0,)'"),
    ],
)
def test_attributes_of_the_wrong_form_are_refused_with_line_and_column(program, words):
    error = refused(request(program=program), "program", words)
    assert error.pos is not None and error.pos.line == 1


def test_permute_of_one_axis_takes_an_int_as_the_engine_does():
    assert check(request(program="y = sum(permute(x, 0) * w)")).verdict is Verdict.PASS


def test_a_nul_character_is_located():
    error = refused(request(program="y = sum(x)\nz = \x00"), "program", "NUL character")
    assert (error.pos.line, error.pos.col) == (2, 5)


def test_finite_differences_over_no_entry_are_refused():
    budget = Budget(fd_max_entries=0, fd_sample_entries=0)  # they raised inside the check
    refused(request(budget=budget), "budget.fd_sample_entries", "from 1 to")


@pytest.mark.parametrize(
    ("samples", "field", "words"),
    [
        (SamplePoints(count=2, distribution="cauchy"), "samples.distribution", "not 'cauchy'"),
        (SamplePoints(count=2, low=3.0, high=1.0), "samples.low", "low 3 is above high 1"),
        (SamplePoints(count=2, low=float("nan")), "samples.low", "must be a finite number, got nan"),
    ],
)
def test_sample_ranges_say_what_is_wrong(samples, field, words):
    refused(request(samples=samples), field, words)


def test_a_budget_of_no_time_says_more_than_0():
    refused(request(budget=Budget(seconds=-1.0)), "budget.seconds", "must be more than 0, got -1.0")


@pytest.mark.parametrize(
    ("distribution", "given", "words"),
    [
        (
            "DISTRIBUTION_NORMAL",
            {"low": 100.0, "high": 200.0},
            "samples.low is a parameter of the uniform",
        ),
        (
            "DISTRIBUTION_UNSPECIFIED",
            {"high": 2.0, "scale": 1.0},
            "samples.high is a parameter of the uniform",
        ),
        ("DISTRIBUTION_UNIFORM", {"scale": 7.0}, "samples.scale is a parameter of the normal"),
    ],
)
def test_the_other_distributions_parameters_are_refused_not_ignored(distribution, given, words):
    """Normal draws with low 100 and high 200 came out near 0: the fields were dropped."""
    from crossgrad.server.transport import convert
    from crossgrad.v1 import verifier_pb2 as pb

    samples = pb.SamplePoints(count=1, distribution=pb.Distribution.Value(distribution), **given)
    msg = pb.VerifyRequest(program="y = sum(x)", samples=samples)
    with pytest.raises(RequestError, match=re.escape(words)) as info:
        convert.check_request(msg, Limits(), 30.0)
    assert info.value.field == f"samples.{next(iter(given))}"


def test_low_and_high_without_a_distribution_mean_uniform():
    """They were refused as "not the normal one" (the default): what they ask is plain."""
    from crossgrad.server.transport import convert
    from crossgrad.v1 import verifier_pb2 as pb

    samples = pb.SamplePoints(count=1, low=100.0, high=200.0)
    got = convert.check_request(pb.VerifyRequest(program="y = sum(x)", samples=samples), Limits(), 30.0)
    assert (got.samples.distribution, got.samples.low, got.samples.high) == ("uniform", 100.0, 200.0)


def test_messages_refuse_what_describe_graph_and_integers_ignored():
    """DescribeGraph took outputs twice (Verify refused them); requires_grad: true on an int64
    input was dropped without a word (torch raises)."""
    from crossgrad.server.transport import convert
    from crossgrad.v1 import tensor_pb2
    from crossgrad.v1 import verifier_pb2 as pb

    x = pb.Input(name="x", value=tensor_pb2.Tensor(values=[1.0, 2.0]))
    twice = pb.DescribeGraphRequest(program="y = sum(x)", inputs=[x], outputs=["y", "y"])
    with pytest.raises(RequestError, match="'y' is given twice"):
        convert.describe_request(twice, Limits())
    t = tensor_pb2.Tensor(values=[0, 1], dtype=tensor_pb2.DTYPE_INT64)
    msg = pb.VerifyRequest(
        program="y = sum(x)", inputs=[x, pb.Input(name="t", value=t, requires_grad=True)]
    )
    with pytest.raises(RequestError, match="input 't' is int64 and cannot require grad") as info:
        convert.check_request(msg, Limits(), 30.0)
    assert info.value.field == "inputs[t].requires_grad"
    msg.inputs[1].requires_grad = False  # said so, or left out: fine
    convert.check_request(msg, Limits(), 30.0)


def test_a_float32_value_too_large_is_not_called_infinite():
    inputs = [InputSpec("x", [1e300, 1.0], dtype="float32"), InputSpec("w", [3.0, 4.0])]
    refused(request(inputs=inputs), "inputs[x]", "values too large for float32")


def test_claims_as_messages_say_what_is_missing_and_keep_their_pairs_apart():
    from crossgrad.server.transport import convert
    from crossgrad.v1 import verifier_pb2 as pb

    msg = pb.VerifyRequest(program="y = sum(x)", claimed_vjp=[pb.ClaimedGradient(input="x")])
    with pytest.raises(RequestError, match=re.escape("give a gradient, or none: true")):  # "shape (0,)"
        convert.check_request(msg, Limits(), 30.0)
    # ("Q/a", "") and ("Q", "a/") were one key, "Q/a/", and "given twice"
    pairs = [
        pb.ClaimedJacobian(output="Q/a", input="", none=True),
        pb.ClaimedJacobian(output="Q", input="a/", none=True),
    ]
    request = convert.check_request(
        pb.VerifyRequest(program="y = sum(x)", claimed_jacobian=pairs), Limits(), 30.0
    )
    assert set(request.claimed_jacobian) == {("Q/a", ""), ("Q", "a/")}


def test_describe_graph_names_the_stage_its_time_ran_out_in():
    """DescribeGraph out of time said "ran out in the first stage" (ErrorInfo stage '')."""
    from crossgrad.server import deadline

    with pytest.raises(deadline.OutOfTime) as info, deadline.budget(1e-9):
        describe_graph(request())
    assert info.value.stage in ("parse", "engine")


def test_a_relative_tolerance_that_would_pass_a_zero_or_a_negated_claim_is_refused():
    """rtol 1 passed a claimed 0 and rtol 2 a negated gradient, as PASS "every source agrees
    within the tolerance". Past 0.5 it is refused; a tolerance given is named in the summary,
    and atol 1e300, which admits anything, verifies nothing."""
    specs = [InputSpec("a", [2.0, 3.0]), InputSpec("b", [6.0, 4.0])]
    negated = {"a": [-36.0, -81.0], "b": [12.0, 8.0]}
    for rtol in (1.0, 2.0):
        with pytest.raises(RequestError, match=r"rtol must be a finite number from 0 to 0\.5") as info:
            check(CheckRequest("Q = sum(3*a**3 - b**2)", specs, claimed_vjp=negated, rtol=rtol))
        assert info.value.field == "rtol"
    loose = check(CheckRequest("Q = sum(3*a**3 - b**2)", specs, claimed_vjp=negated, atol=1e300))
    assert loose.verdict is Verdict.UNVERIFIED and "cannot tell them from 0" in loose.summary
    assert loose.summary.endswith("judged with the tolerance given: atol 1e+300"), loose.summary
    usual = check(CheckRequest("Q = sum(3*a**3 - b**2)", specs, rtol=0.5))
    assert usual.summary.endswith("judged with the tolerance given: rtol 0.5"), usual.summary


def test_an_input_without_a_name_is_named_by_its_place():
    """Its field was "inputs[]"."""
    with pytest.raises(RequestError, match="input 1 has no name") as info:
        check(CheckRequest("y = sum(x)", [InputSpec("x", [1.0]), InputSpec("", [1.0])]))
    assert info.value.field == "inputs[1]"


def test_time_run_out_before_the_first_named_stage_is_the_decode_stages():
    """A 2,000-statement program out of time while read and validated said "ran out in the
    first stage" (ErrorInfo stage '')."""
    from crossgrad.server import deadline

    assert (deadline.OutOfTime("", 0.3).stage, deadline.Cancelled("").stage) == ("decode", "decode")
    assert str(deadline.OutOfTime("", 0.3)).endswith("ran out in the decode stage")
