"""Hooks (masking a layer's gradient), retain_grad, grad modes, detach, in-place rules."""

import numpy as np
import pytest
from crossgrad import engine as cg


def _layer_loss(W, x):
    return ((W @ x).tanh() ** 2).sum()


def test_mask_hook_freezes_masked_weights_through_an_sgd_step():
    rng = np.random.default_rng(0)
    W = cg.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    x = cg.tensor(rng.normal(size=4))
    mask = rng.random((3, 4)) > 0.5
    handle = W.register_hook(lambda g: g * mask)
    _layer_loss(W, x).backward()
    assert np.all(W.grad.data[~mask] == 0)
    assert np.all(W.grad.data[mask] != 0)
    before = W.data.copy()
    with cg.no_grad():
        W -= 0.1 * W.grad
    np.testing.assert_array_equal(W.data[~mask], before[~mask])
    assert np.all(W.data[mask] != before[mask])

    handle.remove()
    W.grad = None
    _layer_loss(W, x).backward()
    assert np.all(W.grad.data != 0)  # the hook is gone: normal gradients again


def test_hook_on_an_intermediate_rewrites_the_gradient_flowing_through_it():
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(g.data.copy()))
    h.register_hook(lambda g: g * cg.tensor([0.0, 1.0]))
    (h**2).sum().backward()
    np.testing.assert_array_equal(seen[0], [6.0, 12.0])
    np.testing.assert_array_equal(x.grad.data, [0.0, 36.0])


def test_retain_grad_keeps_an_intermediate_gradient():
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    y = (h**2).sum()
    y.backward()
    np.testing.assert_array_equal(h.grad.data, [6.0, 12.0])
    z = x * 2
    z.sum().backward()
    assert z.grad is None  # not retained


def test_hook_on_a_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        cg.tensor([1.0]).register_hook(lambda g: g)


def test_hook_returning_a_wrong_shape_is_an_error():
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g.sum())
    with pytest.raises(RuntimeError, match="hook"):
        (x * 2).sum().backward()


def test_no_grad_enable_grad_and_set_grad_enabled():
    x = cg.tensor([1.0], requires_grad=True)
    with cg.no_grad():
        assert not (x * 2).requires_grad
        with cg.enable_grad():
            assert (x * 2).requires_grad
    assert (x * 2).requires_grad
    with cg.set_grad_enabled(False):
        assert not cg.is_grad_enabled()
    assert cg.is_grad_enabled()

    @cg.no_grad()
    def frozen(t):
        return t * 2

    assert not frozen(x).requires_grad


def test_detach_shares_data_and_leaves_the_graph():
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])


def test_in_place_update_of_a_leaf_that_requires_grad_needs_no_grad():
    w = cg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w -= 1.0
    with cg.no_grad():
        w -= 1.0
    np.testing.assert_array_equal(w.data, [0.0])


def test_grad_zero_and_accumulation():
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    g = x.grad
    (x * x).sum().backward()
    assert x.grad is g  # accumulated in place, as torch does
    np.testing.assert_array_equal(g.data, [4.0, 8.0])
    x.grad.zero_()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0])


def test_backward_with_inputs_only_accumulates_those():
    a = cg.tensor([1.0], requires_grad=True)
    b = cg.tensor([2.0], requires_grad=True)
    (a * b).sum().backward(inputs=[a])
    np.testing.assert_array_equal(a.grad.data, [2.0])
    assert b.grad is None


def test_requires_grad_of_a_non_leaf_cannot_be_changed():
    x = cg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf variables"):
        (x * 2).requires_grad_(False)
    with pytest.raises(RuntimeError, match="requires grad"):
        (x * 2).numpy()
