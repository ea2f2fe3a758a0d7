"""The worked example of the seed post, and the autograd semantics it walks through."""

import numpy as np
import pytest
from crossgrad import engine as cg


@pytest.fixture
def ab():
    return cg.tensor([2.0, 3.0], requires_grad=True), cg.tensor([6.0, 4.0], requires_grad=True)


def test_vector_jacobian_product_gives_the_partial_derivatives(ab):
    a, b = ab
    Q = 3 * a**3 - b**2
    Q.backward(gradient=cg.tensor([1.0, 1.0]))
    np.testing.assert_array_equal(a.grad.data, 9 * a.data**2)
    np.testing.assert_array_equal(a.grad.data, [36.0, 81.0])
    np.testing.assert_array_equal(b.grad.data, [-12.0, -8.0])


def test_backward_on_a_vector_without_gradient_fails(ab):
    a, b = ab
    Q = 3 * a**3 - b**2
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        Q.backward()
    assert a.grad is None and b.grad is None


def test_second_backward_fails_unless_the_graph_was_retained(ab):
    a, b = ab
    Q = 3 * a**3 - b**2
    Q.backward(gradient=[1.0, 1.0])
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        Q.backward(gradient=[1.0, 1.0])


def test_retain_graph_keeps_the_graph_and_grads_accumulate(ab):
    a, b = ab
    Q = 3 * a**3 - b**2
    Q.backward(gradient=[1.0, 1.0], retain_graph=True)
    Q.backward(gradient=[1.0, 1.0])
    np.testing.assert_array_equal(a.grad.data, [72.0, 162.0])
    np.testing.assert_array_equal(b.grad.data, [-24.0, -16.0])


def test_dag_of_the_mean_example():
    a = cg.tensor([2.0], requires_grad=True)
    d = (3 * a**2).mean()
    assert d.grad_fn.name() == "MeanBackward0"
    names, node = [], d.grad_fn
    while node is not None:
        names.append(node.name())
        node = node.next_functions[0][0] if node.next_functions else None
    assert names == ["MeanBackward0", "MulBackward0", "PowBackward0", "AccumulateGrad"]
    mul = d.grad_fn.next_functions[0][0]
    assert mul.next_functions[1] == (None, 0)  # the constant 3 has no node
    assert mul.next_functions[0][0].next_functions[0][0].variable is a
    d.backward()
    np.testing.assert_array_equal(a.grad.data, [12.0])


def test_frozen_tensor_is_left_out_of_the_dag():
    w = cg.tensor([1.0, 2.0])  # requires_grad=False: a frozen weight
    x = cg.tensor([3.0, 4.0], requires_grad=True)
    y = (w * x).sum()
    mul = y.grad_fn.next_functions[0][0]
    assert mul.next_functions[0] == (None, 0)
    assert mul.next_functions[1][0].name() == "AccumulateGrad"
    y.backward()
    assert w.grad is None
    np.testing.assert_array_equal(x.grad.data, [1.0, 2.0])
    assert not (w * w).requires_grad and (w * w).grad_fn is None


def test_gradient_of_the_wrong_shape_names_both_shapes(ab):
    a, _ = ab
    with pytest.raises(RuntimeError, match=r"shape of \(3,\).*shape of \(2,\)"):
        (a * 2).backward(gradient=[1.0, 1.0, 1.0])


def test_backward_from_a_tensor_without_grad_fails():
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        cg.tensor([1.0]).sum().backward()


def test_float32_stays_float32_including_grads():
    a = cg.tensor(np.array([2.0, 3.0], np.float32), requires_grad=True)
    y = (3 * a**3 + a.tanh() / 2).sum()
    assert y.dtype == np.float32
    y.backward()
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad.data, 9 * a.data**2 + (1 - np.tanh(a.data) ** 2) / 2, rtol=1e-6)


def test_only_floating_tensors_can_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        cg.tensor(np.array([1, 2]), requires_grad=True)
    assert cg.tensor([1, 2]).dtype == np.float64  # python numbers become float64
