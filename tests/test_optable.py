"""The op table: every op is implemented by the engine, and shape rules agree with the engine."""

import inspect

import numpy as np
import pytest
from crossgrad import engine as cg
from crossgrad.engine import ops
from crossgrad.engine.ops import COMPOSITES, IMPLS, NumpyOps


def test_every_op_of_the_table_has_an_engine_implementation():
    missing = sorted(set(cg.OPS) - set(IMPLS) - set(COMPOSITES))
    assert not missing, f"ops without an engine implementation: {missing}"
    assert set(IMPLS) | set(COMPOSITES) == set(cg.OPS)
    for name, impl in IMPLS.items():
        assert (impl.vjp is not None) == cg.OPS[name].differentiable, name
    for name, spec in cg.OPS.items():  # operand names, for messages, one per tensor operand
        assert len(spec.operands) == (spec.arity or 1), name


def test_table_lists_every_op_with_its_backward_node(capsys):
    rows = []
    for name, spec in sorted(cg.OPS.items()):
        attrs = spec.attr_defaults()
        node = spec.node_name_for(attrs, ()) if spec.differentiable else "(no gradient)"
        rows.append(f"{name:34s} {node:40s} {spec.nonsmooth or ''}")
        if spec.differentiable:
            assert node.endswith(("Backward0", "Backward1", "Backward2")), name
    with capsys.disabled():
        print("\n" + "\n".join(rows))
    assert len(rows) == len(cg.OPS)


def test_numpy_and_engine_namespaces_offer_the_same_vjp_functions():
    # VJP rules run with either namespace, so every function of one must exist in the other with
    # the same parameters.
    for name, fn in vars(NumpyOps).items():
        if name.startswith("_"):
            continue
        engine_fn = getattr(ops, name)
        fn = fn.__func__ if isinstance(fn, staticmethod) else fn
        if not fn.__module__.startswith("crossgrad"):  # numpy's own: positional use only
            continue
        np_params = list(inspect.signature(fn).parameters)
        assert np_params == list(inspect.signature(engine_fn).parameters)[: len(np_params)], name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cg.tensor(np.ones((2, 3))) + cg.tensor(np.ones(4)), r"add: shapes \(2, 3\) and \(4,\)"),
        (lambda: cg.tensor(np.ones((2, 3))) @ cg.tensor(np.ones((2, 3))), r"matmul: inner dimensions"),
        (lambda: cg.sum(cg.tensor(np.ones(3)), axis=2), r"sum: axis 2 is out of range"),
        (lambda: cg.reshape(cg.tensor(np.ones(6)), (4, 2)), r"cannot reshape \(6,\)"),
        (lambda: cg.concat([cg.tensor(np.ones((2, 2))), cg.tensor(np.ones((3, 3)))], axis=0), "concat"),
        (lambda: cg.tensor(np.ones(3))[5], r"getitem: index 5 is out of bounds"),
    ],
)
def test_shape_errors_name_the_op_and_the_shapes(call, message):
    with pytest.raises(cg.ShapeError, match=message):
        call()


@pytest.mark.parametrize(
    ("name", "shapes", "attrs", "expected"),
    [
        ("add", [(2, 1), (3,)], {}, (2, 3)),
        ("sum", [(2, 3, 4)], {"axis": (0, -1), "keepdims": True}, (1, 3, 1)),
        ("matmul", [(5, 2, 3), (3,)], {}, (5, 2)),
        ("matmul", [(3,), (4, 3, 2)], {}, (4, 2)),
        ("getitem", [(4, 5)], {"index": (slice(1, 3), [0, 2, 4])}, (2, 3)),
        ("pad", [(2, 3)], {"pad": (1, 2)}, (2, 6)),
        ("split", [(5, 2)], {"sections": 2, "axis": 0}, ((2, 2), (2, 2), (1, 2))),
    ],
)
def test_shape_rules(name, shapes, attrs, expected):
    assert cg.OPS[name].shape_rule(name, *shapes, **attrs) == expected


def test_list_ops_names_every_node_describe_graph_records():
    """ListOps' backward_node lists every name an op's node takes by its attributes and ranks
    (it missed getitem's Select/Slice/Index, matmul's Mv and Matmul, SqueezeBackward2 and
    SplitWithSizesBackward0)."""
    from crossgrad.server.graph import describe_graph
    from crossgrad.server.model import CheckRequest, InputSpec
    from crossgrad.server.transport.convert import ops_message
    from op_programs import PROGRAMS

    listed = {op.name: op.backward_node.split(" or ") for op in ops_message().ops}
    m, v = np.arange(6.0).reshape(2, 3), np.arange(3.0)
    cases = [*PROGRAMS.values()] + [
        (program, {"m": m, "v": v})
        for program in (
            "y = m[0]\nz = m[:, 1:]\nw = m[1:]\nu = m[None]\nt = m[[0, 1]]\ns = v[...]",
            "y = m @ v\nz = v @ v\nw = m @ transpose(m)\nu = v @ transpose(m)",
            "y = squeeze(m[None], axis=(0,))\nz = squeeze(m[None])\nw = squeeze(m[None], axis=0)",
            "a, b = split(m, (1, 1))\nc, d, e = split(v, 1)",
            "y = sum(m, axis=0) + max(m, axis=0) + mean(m, axis=(0,))",
        )
    ]
    seen = 0
    for program, values in cases:
        specs = [
            InputSpec(n, x, dtype="int64", requires_grad=False)
            if x.dtype.kind == "i"
            else InputSpec(n, x)
            for n, x in values.items()
        ]
        dag, _ = describe_graph(CheckRequest(program, specs))
        for node in dag.nodes:
            assert node.name in listed[node.op], (program, node.op, node.name, listed[node.op])
            seen += 1
    assert seen > len(PROGRAMS)


def test_list_ops_lists_only_attributes_a_program_writes_by_name():
    """pow listed an attribute `exponent` (default 2.0) that pow(x, exponent=3) refuses: the
    exponent is written as an operand (x ** 3, pow(x, 3))."""
    from crossgrad.server.transport.convert import ops_message

    for op in ops_message().ops:
        for attribute in op.attributes:
            assert f"{attribute.name}=" in op.syntax or attribute.required, (op.name, op.syntax)
            assert attribute.name in op.syntax, (op.name, attribute.name, op.syntax)
