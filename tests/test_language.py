"""The request language: what parses, what is refused (with line and column), hostile inputs, and
fuzzing that only ever raises the documented error."""

import ast
import contextlib
import re
import time

import numpy as np
import pytest
from crossgrad.server.check import check
from crossgrad.server.language import InputDecl, RequestError, parse
from crossgrad.server.model import CheckRequest, InputSpec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

INPUTS = {"x": ((3,), "float64"), "W": ((2, 3), "float64"), "t": ((2,), "int64")}


def test_a_program_becomes_shape_checked_ir_with_positions():
    program = parse("h = tanh(W @ x + 1)\nloss = mean((h - 0.5) ** 2)", INPUTS, ["loss"])
    ops = [n.op for n in program.nodes if n.op != "input"]
    assert ops == ["matmul", "add", "tanh", "sub", "pow", "mean"]
    tanh = next(n for n in program.nodes if n.op == "tanh")
    assert (tanh.pos.line, tanh.pos.col) == (1, 5) and tanh.shape == (2,) and tanh.name == "h"
    assert program.outputs == (("loss", program.nodes[-1].id),)


def test_attributes_indexing_constants_and_several_outputs():
    program = parse(
        "a = sum(W, axis=0, keepdims=True)\nb = W[:, [0, 2]] * pi\nc = x[-1] + e",
        INPUTS,
        ["a", "b", "c"],
    )
    shapes = {name: program.node(i).shape for name, i in program.outputs}
    assert shapes == {"a": (1, 3), "b": (2, 2), "c": ()}


@pytest.mark.parametrize(
    ("source", "line", "col", "message"),
    [
        ("y = x.sum()", 1, 5, "attribute access"),
        ("y = foo(x)", 1, 5, "unknown function 'foo'"),
        ("y = x + z", 1, 9, "undefined name 'z'"),
        ("y = W @ W", 1, 5, r"matmul: inner dimensions differ: \(2, 3\) @ \(2, 3\)"),
        ("y = x\nimport os", 2, 1, "import is not allowed"),
        ("y = sum(x, axis=3)", 1, 5, "axis 3 is out of range"),
        ("y = (lambda: x)()", 1, 6, "lambda"),
        ("y = [v for v in x]", 1, 5, "comprehension"),
        ("y = x.__class__", 1, 5, "attribute access"),
        ("y = 'text'", 1, 5, "string"),
        ("y = tanh(x, 3)", 1, 5, "at most 0 attribute"),
        ("y = sum(x, dim=0)", 1, 16, "no attribute 'dim'"),
        ("y = tanh()", 1, 5, "takes 1 tensor operand"),
        ("y = x[5]", 1, 5, "out of bounds"),
        ("y = x +", 1, 8, "syntax error"),
        ("y = x ** 10**9", 1, 5, "exponent 1000000000 is too large"),
        ("y = cross_entropy(W, W[:, 0])", 1, 5, "int64"),
        ("y = W + x[:2]", 1, 5, r"add: shapes \(2, 3\) and \(2,\) do not broadcast"),
        ("x = tanh(x)", 1, 1, "is an input"),
        ("y = eval(x)", 1, 5, "unknown function 'eval'"),
        ("y = __import__(x)", 1, 5, "unknown function"),
        ("y = 1 if x else 2", 1, 5, "conditional expression"),
        ("y = x * 2\n  z = y", 2, 2, "unexpected indent"),
    ],
)
def test_refusals_name_the_problem_and_where(source, line, col, message):
    with pytest.raises(RequestError, match=message) as info:
        parse(source, INPUTS)
    pos = info.value.pos
    assert pos is not None, info.value
    assert (pos.line, pos.col) == (line, col), str(info.value)
    # where it ends is never before where it starts (Python's end of an indent error is -1)
    assert (pos.end_line, pos.end_col) >= (pos.line, pos.col), pos


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("y = " + "(" * 10_000 + "x" + ")" * 10_000, "nested more than"),
        ("y = " + "-" * 10_000 + "x", "nested"),
        ("y = " + " + ".join(["x"] * 20_000), "operations|nested|characters"),
        ("\n".join(f"y{k} = x * {k}" for k in range(12_000)), "statements|operations|characters"),
        ("y = x" + " " * 200_000, "characters"),
    ],
)
def test_hostile_programs_get_clear_errors_quickly(source, message):
    start = time.perf_counter()
    with pytest.raises(RequestError, match=message):
        parse(source, INPUTS)
    assert time.perf_counter() - start < 5  # a budget, not a benchmark: nothing hangs


@pytest.mark.parametrize("name", ["lambda", "_hidden", "2x", "sum", "pi"])
def test_input_names_must_be_plain_names(name):
    with pytest.raises(RequestError, match="name"):
        parse("y = x * 2", {"x": ((2,), "float64"), name: ((2,), "float64")})


def test_an_input_declared_with_a_hundred_million_elements_is_refused_before_allocation():
    with pytest.raises(RequestError, match="elements; the limit"):
        parse("y = x * 2", {"x": ((10_000, 10_000), "float64")})


def test_an_expression_that_would_blow_up_sympy_stays_within_budget():
    # Repeated squaring: the expanded expression would have 2**40 terms; the straight-line
    # program has 40 small definitions, and the budget bounds the rest.
    lines = ["v0 = x"] + [f"v{k + 1} = v{k} * v{k} + 1" for k in range(40)] + ["y = sum(v40)"]
    start = time.perf_counter()
    report = check(
        CheckRequest("\n".join(lines), [InputSpec("x", [0.1, 0.2, 0.3])], references=("sympy",))
    )
    assert time.perf_counter() - start < 30
    assert report.references["sympy"].ran or report.references["sympy"].note


# ---------------------------------------------------------------- fuzzing

_ALPHABET = st.sampled_from(
    list("xyW0123456789+-*/@()[]{}.,:=_ \n'\"abcdefghijklmnopqrstuvwz<>!%&|^~#;")
)
_TOKENS = st.sampled_from(
    [
        "x",
        "W",
        "t",
        "y",
        "=",
        "+",
        "-",
        "*",
        "/",
        "**",
        "@",
        "(",
        ")",
        "[",
        "]",
        ",",
        ":",
        "sum",
        "tanh",
        "axis",
        "keepdims",
        "True",
        "0",
        "1",
        "-1",
        "2.5",
        "1e308",
        "pi",
        "\n",
        " ",
        "reshape",
        "split",
        "concat",
        "getitem",
        "import",
        "lambda",
        "__class__",
        ".",
        "'s'",
        "...",
        "None",
    ]
)


def _parse_only_raises_request_error(source):
    with contextlib.suppress(RequestError):
        parse(source, INPUTS)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(_ALPHABET, max_size=80))
def test_fuzz_random_text(source):
    _parse_only_raises_request_error(source)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_fuzz_token_soup(source):
    _parse_only_raises_request_error(source)


def _ast_strategy():
    names = st.sampled_from(["x", "W", "t", "pi", "e", "zz", "sum", "tanh"])
    numbers = st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3, allow_nan=False), st.just(10**9))
    leaves = st.one_of(names.map(lambda n: ast.Name(n, ast.Load())), numbers.map(ast.Constant))
    ops = st.sampled_from(
        [ast.Add(), ast.Sub(), ast.Mult(), ast.Div(), ast.Pow(), ast.MatMult(), ast.Mod()]
    )

    def extend(children):
        return st.one_of(
            st.builds(lambda a, o, b: ast.BinOp(a, o, b), children, ops, children),
            st.builds(lambda a: ast.UnaryOp(ast.USub(), a), children),
            st.builds(
                lambda f, a, k: ast.Call(ast.Name(f, ast.Load()), a, k),
                st.sampled_from(["sum", "tanh", "reshape", "concat", "split", "matmul", "nope"]),
                st.lists(children, max_size=3),
                st.lists(
                    st.builds(
                        lambda n, v: ast.keyword(n, v),
                        st.sampled_from(["axis", "keepdims", "shape", "bogus"]),
                        children,
                    ),
                    max_size=2,
                ),
            ),
            st.builds(lambda a, i: ast.Subscript(a, i, ast.Load()), children, children),
            st.builds(lambda a: ast.Attribute(a, "T", ast.Load()), children),
            st.builds(lambda items: ast.Tuple(items, ast.Load()), st.lists(children, max_size=3)),
        )

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_ast_strategy())
def test_fuzz_random_asts(expr):
    tree = ast.Module([ast.Assign([ast.Name("y", ast.Store())], expr)], [])
    try:
        source = ast.unparse(ast.fix_missing_locations(tree))
    except Exception:
        return
    _parse_only_raises_request_error(source)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.text(_ALPHABET, max_size=120), st.lists(_TOKENS, max_size=40).map("".join)))
def test_fuzz_long_text(source):
    _parse_only_raises_request_error(source)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_ast_strategy())
def test_fuzz_long_asts(expr):
    test_fuzz_random_asts.hypothesis.inner_test(expr)


def test_numbers_in_results_are_exact_enough():
    program = parse("y = x * 0.1", INPUTS)
    assert program.nodes[-1].args[1] == 0.1
    assert np.isclose(0.1 * 3, 0.30000000000000004)


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [("α = x * 2\ny = α + q", 2, 9), ("ééé = x * 2 + q", 1, 15), ("y = x + q", 1, 9)],
)
def test_columns_count_characters_not_utf8_bytes(source, line, column):
    with pytest.raises(RequestError) as err:
        parse(source, {"x": ((2,), "float64")})
    assert (err.value.pos.line, err.value.pos.col) == (line, column)


def test_node_text_is_the_source_of_each_node_also_after_non_ascii_names():
    program = parse("α = x * 2\ny = sum(tanh(α) + x)", {"x": ((2,), "float64")})
    assert {n.text for n in program.nodes if n.op in ("tanh", "sum")} == {"tanh(α)", "sum(tanh(α) + x)"}


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("y = where(x, x, 0.0)", "where: the condition 'x' must be a comparison (bool)"),
        ("y = masked_fill(x, x, 1.0)", "comparison (bool), not float64 (as x > 0, for a 0/1 mask)"),
        ("y = x * (x > 0)", "mul: operand 2, 'x > 0', has dtype bool"),
        ("y = argmax(x) * 1.0", "mul: operand 1, 'argmax(x)', has dtype int64"),
    ],
)
def test_dtype_errors_quote_the_operand_as_written(source, words):
    with pytest.raises(RequestError, match=re.escape(words)):
        parse(source, {"x": ((3,), "float64")})


def test_the_default_output_is_the_last_variable_assigned_even_an_alias():
    assert parse("z = x * 2\ny = z", {"x": ((3,), "float64")}).output_names == ("y",)
    program = parse("y = x", {"x": ((3,), "float64")})  # an input itself, as torch allows
    assert program.outputs == (("y", program.inputs[0][1]),)


def test_programs_parse_in_several_threads_at_once():
    """CPython 3.11's AST constructor keeps one recursion counter per interpreter: two threads
    parsing at once raised SystemError (the server validates long programs on threads)."""
    import threading

    errors: list[BaseException] = []

    def parse_many(offset: int) -> None:
        for k in range(4):
            lines = [f"t{i} = tanh(x * {offset + k + i}) + x" for i in range(1500)] + ["y = sum(t1499)"]
            try:
                parse("\n".join(lines), [InputDecl("x", (1,), "float64")], ["y"])
            except BaseException as exc:  # any exception is the failure
                errors.append(exc)

    threads = [threading.Thread(target=parse_many, args=(100 * n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("y = sum(tanhh(x))", "unknown function 'tanhh' (did you mean 'tanh'?)"),
        ("y = sum(x, axs=0)", "sum has no attribute 'axs' (did you mean 'axis'?)"),
        ("y = sum(x * wieghts)", "undefined name 'wieghts' (did you mean 'weights'?)"),
    ],
)
def test_a_name_one_typo_away_is_suggested(source, hint):
    with pytest.raises(RequestError) as info:
        parse(source, [InputDecl("x", (2,), "float64"), InputDecl("weights", (2,), "float64")])
    assert hint in str(info.value)
    with pytest.raises(RequestError) as info:
        parse("y = sum(foo(x))", [InputDecl("x", (2,), "float64")])
    assert "did you mean" not in str(info.value)  # nothing close: no guess
