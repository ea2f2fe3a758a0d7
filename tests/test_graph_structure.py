"""Graph mechanics: iterative traversal of deep graphs, release of saved arrays, DOT export."""

import gc
import shutil
import weakref

import numpy as np
import pytest
from crossgrad import engine as cg
from crossgrad.engine.graph import _FREED, Node
from crossgrad.engine.ops import IMPLS
from crossgrad.engine.record import record, record_on_tensor


@pytest.mark.parametrize("length", [100_000])
def test_backward_through_a_very_long_chain_has_no_recursion_limit(length):
    x = cg.tensor([0.5], requires_grad=True)
    y = x
    for _ in range(length):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0])
    y = x
    for _ in range(length):
        y = y + 0.0
    (g,) = cg.grad(y.sum(), x)
    np.testing.assert_array_equal(g.data, [1.0])


def test_to_dot_handles_a_deep_graph_iteratively():
    y = cg.tensor([0.5], requires_grad=True)
    for _ in range(20_000):
        y = y.tanh()
    assert cg.to_dot(y, max_nodes=50_000).count("TanhBackward0") == 20_000


def _tanh_chain(n):
    x = cg.tensor(np.linspace(-1, 1, 1000), requires_grad=True)
    y = x
    for _ in range(n):
        y = y.tanh()
    return x, y


def test_saved_arrays_are_released_as_backward_goes():
    _, y = _tanh_chain(5)
    saved = []
    node = y.grad_fn
    while node.next_functions:
        saved.append(node._saved[-1])  # each tanh saves its output
        node = node.next_functions[0][0]
    refs = [weakref.ref(s) if s.base is None else weakref.ref(s.base) for s in saved]
    del saved
    gc.collect()
    assert all(r() is not None for r in refs)  # the graph holds them
    y.sum().backward()
    # Freed by the backward pass without gc, except the root's output: `y` itself holds it.
    assert refs[0]() is not None
    assert all(r() is None for r in refs[1:])


def test_retain_graph_keeps_saved_arrays():
    x, y = _tanh_chain(3)
    node = y.grad_fn
    ref = weakref.ref(node._saved[-1])
    y.sum().backward(retain_graph=True)
    assert ref() is not None
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.grad.data / 2)


def test_peak_memory_during_backward_stays_near_the_saved_graph():
    import tracemalloc

    _, y = _tanh_chain(200)  # 200 saved arrays of 8 kB
    tracemalloc.start()
    y.sum().backward()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 8000  # releasing as we go: a few arrays alive at a time, not 200


def test_dot_export_names_nodes_and_leaves(tmp_path):
    a = cg.tensor([2.0, 3.0], requires_grad=True)
    b = cg.tensor([6.0, 4.0], requires_grad=True)
    frozen = cg.tensor([1.0, 1.0])
    b.register_hook(lambda g: g)
    Q = 3 * a**3 - b**2 + frozen
    dot = cg.to_dot(Q, {"a": a, "b": b})
    for name in ("AddBackward0", "SubBackward0", "MulBackward0", "PowBackward0"):
        assert name in dot
    assert '"a\\n(2,)\\nrequires_grad=True"' in dot
    assert "requires_grad=True (hooked)" in dot
    files = cg.write_graph(Q, tmp_path / "q", {"a": a, "b": b})
    assert files[0].read_text() == dot
    if shutil.which("dot"):
        assert files[1].suffix == ".svg" and "<svg" in files[1].read_text()


@pytest.mark.parametrize("batched", [False, True])
def test_a_rule_returning_a_wrong_shape_is_a_clear_error(batched):
    impl = IMPLS["tanh"]
    original = impl.vjp
    impl.vjp = lambda B, n, g, s: (B.sum(g, axis=-1, keepdims=True),)  # drops the last dimension
    try:
        x = cg.tensor([0.1, 0.2, 0.3], requires_grad=True)
        with pytest.raises(RuntimeError, match=r"TanhBackward0 returned an invalid gradient at index 0"):
            if batched:
                cg.jacobian(lambda v: v.tanh(), x)
            else:
                x.tanh().sum().backward()
    finally:
        impl.vjp = original


def test_tensors_made_by_ops_have_every_field_set():
    # record_on_tensor() builds result tensors inline (the hot path); every slot must be set
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    for t in (x * 2.0, x.tanh(), cg.Tensor._make(np.ones(2)), x @ x):
        for slot in cg.Tensor.__slots__:
            if slot != "__weakref__":
                getattr(t, slot)


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize(
    ("op", "operands"), [("mul", (2.0,)), ("add", (3,)), ("div", (4.0,)), ("tanh", ()), ("sqrt", ())]
)
def test_the_fast_path_builds_the_node_the_general_path_builds(op, operands):
    x = cg.tensor([1.0, 2.0], requires_grad=True, dtype=np.float32)
    fast = record_on_tensor(IMPLS[op], x, (x, *operands))
    general = record(IMPLS[op], (x, *operands))
    assert np.array_equal(fast.data, general.data) and fast.dtype == general.dtype == np.float32
    for slot in Node.__slots__:
        if slot not in ("__weakref__", "_seq"):
            a, b = getattr(fast.grad_fn, slot), getattr(general.grad_fn, slot)
            if slot == "_saved":
                assert [type(v) for v in a] == [type(v) for v in b]
            else:
                assert _tuple(a) == _tuple(b), slot
    for t in (fast, general):
        t.sum().backward()
        assert t.grad_fn._saved is _FREED or not t.grad_fn._saves_values
    with cg.no_grad():
        assert record_on_tensor(IMPLS[op], x, (x, *operands)).grad_fn is None


def test_recording_an_op_leaves_few_objects_for_the_garbage_collector():
    # Each object that stays tracked counts towards the collector's next pass; with a large heap
    # (jax, sympy loaded) those passes cost more than the ops. The hot path keeps 5 per op: the
    # result, its node, the edge, next_functions and the saved values (torch keeps 1).
    y = cg.tensor([0.5, 0.25], requires_grad=True) * 1.0
    ops = [lambda t: t * 1.0001, lambda t: t + 0.5, lambda t: t.tanh(), lambda t: t / 2.0]
    results = [None] * 400
    for op in ops:  # the first use of a shape fills the shared metadata caches
        op(y)
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for i in range(len(results)):
            y = results[i] = ops[i % len(ops)](y)
        kept = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert kept <= 5 * len(results) + 10, (
        f"{kept / len(results):.2f} tracked objects per op"
    )  # + the loop


@pytest.mark.parametrize(
    ("shape", "index", "name"),
    [
        ((3, 1), (slice(None), slice(None, None, 2)), "SliceBackward0"),  # step 2 of a size-1 dim
        ((3, 1), (slice(None), slice(0, 1)), "AliasBackward0"),
        ((3, 2, 2), (slice(None), slice(None, None, 1)), "AliasBackward0"),
        ((3, 2, 2), (Ellipsis, slice(None, None, 2)), "SliceBackward0"),
    ],
)
def test_getitem_nodes_are_named_as_torch_names_them(shape, index, name):
    """A slice with a step other than 1 is a SliceBackward0 even where it takes everything
    (hypothesis found x[:, ::2] of a size-1 dimension named AliasBackward0; torch 2.13 names
    each of these as the table says)."""
    x = cg.tensor(np.zeros(shape), requires_grad=True)
    assert x[index].grad_fn.name() == name


def test_describe_graphs_dot_uses_the_dag_messages_ids_and_output_names():
    """The DOT's n<k> is the DAG's node k (they were numbered apart: n0 was another node), and
    outputs are labelled by name (they were "output 0", "output 1")."""
    from crossgrad.server.graph import describe_graph
    from crossgrad.server.model import CheckRequest, InputSpec

    request = CheckRequest("y = v * 2\nz = y + y", [InputSpec("v", [1.0, 2.0])], outputs=["y", "z"])
    dag, _ = describe_graph(request)
    for node in dag.nodes:
        assert f'  n{node.id} [label="{node.name}\\n' in dag.dot, (node, dag.dot)
    for leaf in dag.leaves:
        assert f'  n{leaf.id} [label="{leaf.name}\\n' in dag.dot, (leaf, dag.dot)
    assert 'r0 [label="y\\n(2,)"' in dag.dot and 'r1 [label="z\\n(2,)"' in dag.dot, dag.dot
