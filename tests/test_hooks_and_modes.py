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
    with pytest.warns(UserWarning, match="not a leaf"):
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


# -- in place after the forward pass, aliasing of .grad, casts: each checked against torch 2.13

torch = pytest.importorskip("torch")


def _both(fn):
    """fn(lib, tensor) run with crossgrad and with torch: (result or error text) each."""

    def tensor(lib, values, requires_grad=False):
        if lib is torch:
            return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)
        return cg.tensor(values, requires_grad=requires_grad)

    out = []
    for lib in (cg, torch):
        try:
            out.append(fn(lib, lambda v, rg=False, lib=lib: tensor(lib, v, rg)))
        except RuntimeError as exc:
            out.append(str(exc).split(":")[0])
    return out


def _grad(t):
    return (
        None
        if t.grad is None
        else np.asarray(t.grad.detach() if hasattr(t.grad, "detach") else t.grad.data).tolist()
    )


def _no_grad(lib):
    return lib.no_grad()


def _sgd_step_before_backward(lib, t):
    w = t([1.0, 2.0], True)
    y = (w * w).sum()
    with _no_grad(lib):
        w -= 0.5
    y.backward()
    return _grad(w)


def _constant_changed(lib, t):
    a, b = t([1.0, 2.0], True), t([3.0, 4.0])
    y = (a * b).sum()
    b += 10
    y.backward()
    return _grad(a)


def _saved_output_zeroed(lib, t):
    w = t([1.0, 2.0], True)
    e = w.exp()
    with _no_grad(lib):
        e.zero_()
    e.sum().backward()
    return _grad(w)


def _changed_through_a_detached_alias(lib, t):
    w = t([1.0, 2.0], True)
    y = (w * w).sum()
    w.detach().add_(1.0)
    y.backward()
    return _grad(w)


def _changed_before_the_forward_pass(lib, t):
    w = t([1.0, 2.0], True)
    with _no_grad(lib):
        w -= 0.5
    (w * w).sum().backward()
    return _grad(w)


def _multiplied_in_place_by_a_weight(lib, t):
    x, w = t([1.0, 2.0]), t([2.0, 3.0], True)
    x *= w
    (x * w).sum().backward()
    return _grad(w), x.requires_grad, x.is_leaf


def _accumulated_into_zeros(lib, t):
    acc, w = t([0.0, 0.0]), t([2.0, 3.0], True)
    acc += w * w
    acc.sum().backward()
    return _grad(w)


@pytest.mark.parametrize(
    "case",
    [
        _sgd_step_before_backward,
        _constant_changed,
        _saved_output_zeroed,
        _changed_through_a_detached_alias,
        _changed_before_the_forward_pass,
        _multiplied_in_place_by_a_weight,
        _accumulated_into_zeros,
    ],
)
def test_in_place_changes_after_the_forward_pass_behave_as_in_torch(case):
    """Before: a value saved for backward and changed in place since gave a gradient computed
    from the new value ([13, 14] for [3, 4]); `x *= w` with w requiring grad was not recorded."""
    mine, theirs = _both(case)
    assert mine == theirs


def _index_tensor_changed(lib, t):
    x = t([1.0, 2.0, 3.0, 4.0], True)
    i = lib.tensor(np.array([0, 1]))
    y = (x[i] * t([10.0, 20.0])).sum()
    i += 2
    y.backward()
    return _grad(x)


def _mask_tensor_changed(lib, t):
    x = t([1.0, 2.0, 3.0, 4.0], True)
    m = lib.tensor(np.array([True, False, True, False]))
    y = x[m].sum()
    m.fill_(True)
    y.backward()
    return _grad(x)


def _index_tensor_of_a_mixed_index_changed(lib, t):
    x = t([[1.0, 2.0], [3.0, 4.0]], True)
    i = lib.tensor(np.array([0, 1]))
    y = x[i, 1].sum()
    i += 1
    y.backward()
    return _grad(x)


def _zero_dim_index_tensor_changed(lib, t):
    x = t([1.0, 2.0, 3.0, 4.0], True)
    i = lib.tensor(np.array(1))
    y = x[i] * 10.0  # torch selects with a 0-d integer tensor, as with an int: nothing saved
    i += 2
    y.backward()
    return _grad(x), y.grad_fn.name()


@pytest.mark.parametrize(
    "case",
    [
        _index_tensor_changed,
        _mask_tensor_changed,
        _index_tensor_of_a_mixed_index_changed,
        _zero_dim_index_tensor_changed,
    ],
)
def test_an_index_tensor_changed_in_place_after_the_forward_pass_behaves_as_in_torch(case):
    """Before: the index aliased the index tensor's memory, and backward scattered the gradient
    to the new positions ([0, 0, 10, 20]) where torch raises its version error."""
    mine, theirs = _both(case)
    assert mine == theirs


def _single_elements_are_views(lib, t):
    b = t([1.0, 2.0, 3.0], True)
    with _no_grad(lib):
        b[0].zero_()
    m = t([[1.0, 2.0], [3.0, 4.0]])
    m[1, 1].fill_(0.0)
    v = m[0, 1]
    m.add_(1.0)
    r = m[:, 0][1]  # a view of a view
    r.mul_(10.0)
    return b.tolist(), m.tolist(), v.item(), v._version, m._version


def test_indexing_down_to_one_element_gives_a_view_as_in_torch():
    """Before: x[0] of a 1-d tensor (and m[1, 1]) was a copy, so b[0].zero_() changed nothing
    and v = m[0, 1] kept its old value after m.add_(1)."""
    mine, theirs = _both(_single_elements_are_views)
    assert mine == theirs


def _max_input_changed(lib, t):
    x = t([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], True)
    values, _ = x.max(1)
    with _no_grad(lib):
        x.mul_(-1.0)
    values.sum().backward()
    return _grad(x)


def _min_input_changed_through_data(lib, t):
    x = t([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], True)
    values = x.min(0, keepdim=True).values
    if lib is torch:
        x.data.mul_(-1.0)
    else:
        x.data *= -1.0
    values.sum().backward()
    return _grad(x)


def _max_indices_changed(lib, t):
    x = t([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], True)
    values, indices = x.max(1)
    indices.zero_()
    values.sum().backward()
    return _grad(x)


@pytest.mark.parametrize(
    "case", [_max_input_changed, _min_input_changed_through_data, _max_indices_changed]
)
def test_max_along_a_dim_saves_its_indices_as_torch(case):
    """Before: max(dim) and min(dim) saved the input and took its argmax at backward, so an
    input changed in place was an error (torch: none) and one changed through .data moved the
    gradient; the indices returned were not the ones saved."""
    mine, theirs = _both(case)
    assert mine == theirs


def _non_leaf_requires_grad_flags(lib, t):
    y = t([1.0, 2.0], True) * 2
    seen = [y.requires_grad_(True) is y]  # accepted: it requires grad already
    for change in (lambda: setattr(y, "requires_grad", True), lambda: y.requires_grad_(False)):
        try:
            change()
            seen.append("accepted")
        except RuntimeError as exc:
            seen.append(str(exc))
    return seen


def test_requires_grad_flags_of_a_non_leaf_are_refused_as_in_torch():
    """Before: `y.requires_grad = True` on a non-leaf was accepted silently (torch refuses it)."""
    mine, theirs = _both(_non_leaf_requires_grad_flags)
    assert mine == theirs


def test_the_version_counter_counts_in_place_changes_of_shared_memory():
    w = cg.tensor([1.0, 2.0])
    view = w.detach()
    assert w._version == 0
    view += 1
    w.zero_()
    assert w._version == view._version == 2


def test_a_grad_is_never_the_callers_array_or_a_read_only_view():
    v = cg.tensor([3.0, 4.0])
    x = cg.tensor([1.0, 2.0], requires_grad=True)
    x.backward(v, create_graph=True)
    x.backward(v)
    assert v.tolist() == [3.0, 4.0] and x.grad.tolist() == [6.0, 8.0]
    h = x * 2
    h.retain_grad()
    h.sum().backward()  # sum's backward: a read-only broadcast view
    h.grad.zero_()
    y = x * 1.0
    y.retain_grad()
    y.backward(v)
    y.grad.zero_()
    assert v.tolist() == [3.0, 4.0]
    z = cg.tensor([1.0, 2.0], requires_grad=True)
    z.sum().backward(create_graph=True)
    z.sum().backward()
    assert z.grad.tolist() == [2.0, 2.0]


def test_a_cast_to_integers_leaves_the_graph():
    x = cg.tensor([1.5, 2.5], requires_grad=True)
    y = x.to(np.int64)
    assert y.dtype == np.int64 and not y.requires_grad and y.grad_fn is None


def test_a_hook_sees_one_cotangent_at_a_time_in_a_batched_jacobian():
    """Under torch's vmap a hook sees unbatched gradients; it saw the whole (m, n) batch here,
    and a hook that is not elementwise (g - g.mean()) gave another Jacobian."""

    def f(lib, x):
        h = x * x
        h.register_hook(lambda g: g - g.mean())
        return h * lib.tensor([1.0, 2.0, 3.0], dtype=x.dtype)  # rows of different means

    x = np.array([1.0, 2.0, 4.0])
    mine = cg.jacobian(lambda t: f(cg, t), cg.tensor(x), vectorize=True)
    theirs = torch.autograd.functional.jacobian(lambda t: f(torch, t), torch.tensor(x), vectorize=True)
    np.testing.assert_allclose(mine.data, theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("program", ["leaf_used_before", "shared_leaf", "chain"])
def test_leaves_accumulate_as_soon_as_they_are_ready_as_in_torch(program):
    """torch runs a leaf's AccumulateGrad before any other ready node; the engine ordered
    leaves by first use, so a hook reading another leaf's .grad saw None (from an audit)."""
    import torch

    def events(lib):
        seen = []
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        b = lib.tensor([3.0, 4.0], requires_grad=True)
        if program == "leaf_used_before":
            _ = a * 1  # a's node is older than b's
            y = b.exp()
            out = (a + y).sum()
        elif program == "shared_leaf":
            y = (a * b).sin()
            out = (y * a + b).sum()
        else:
            y = b.exp().exp()
            out = (a * y).sum() + (y * 2).sum()
        for name, t in (("a", a), ("b", b), ("y", y)):
            t.register_hook(lambda g, name=name: seen.append((name, a.grad is None, b.grad is None)))
        out.backward()
        return seen

    assert events(cg) == events(torch)


def _pass_through_then_mul(lib, t):
    # x2's gradient is v itself (x2 + 1): under create_graph it must stay connected to v
    x1, x2, v = t([1.0, 2.0], True), t([1.0, 2.0], True), t([3.0, 4.0], True)
    (x1 * 1.0).backward(v, create_graph=True)
    (x2 + 1.0).backward(v, create_graph=True)
    (x1.grad * x2.grad).sum().backward()
    return _grad(v), x2.grad.requires_grad


def _pass_through_squared(lib, t):
    x, v = t([1.0, 2.0], True), t([3.0, 4.0], True)
    (x + 1).backward(v, create_graph=True)
    (x.grad**2).sum().backward()
    return _grad(v)


def _retained_grad_of_v(lib, t):
    x, v = t([1.0, 2.0], True), t([3.0, 4.0], True)
    y = x.exp()
    y.retain_grad()
    y.backward(v, create_graph=True)
    ((y.grad**2).sum() + x.grad.sum()).backward()
    return _grad(v)


def _plain_gradient_is_copied(lib, t):
    x, w = t([1.0, 2.0], True), t([3.0, 4.0])
    (x + 1).backward(w, create_graph=True)
    return x.grad.requires_grad, x.grad is w


@pytest.mark.parametrize(
    "case",
    [_pass_through_then_mul, _pass_through_squared, _retained_grad_of_v, _plain_gradient_is_copied],
)
def test_a_gradient_that_reaches_a_leaf_unchanged_keeps_its_graph_as_in_torch(case):
    """backward(v, create_graph=True) with v requiring grad: a leaf (or retained) gradient that
    is v itself was stored as a plain copy, so derivatives with respect to v were lost (v.grad
    [3, 4] where torch has [6, 8]) or refused ("does not require grad")."""
    mine, theirs = _both(case)
    assert mine == theirs


def test_reading_a_non_leafs_grad_warns_as_torch():
    """torch warns (UserWarning) where .grad is read on a tensor backward never fills: the
    intermediate's None is almost always a slip for the leaf's gradient."""
    import warnings

    import torch

    for lib in (cg, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        with pytest.warns(UserWarning, match="not a leaf Tensor is being accessed") as caught:
            assert y.grad is None
        assert "retain_grad()" in str(caught[0].message)
        y.retain_grad()
        y.sum().backward()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # retained, leaves, and tensors without a graph: quiet
            assert y.grad.tolist() == [1.0, 1.0] and x.grad.tolist() == [2.0, 2.0]
            assert lib.tensor([1.0]).grad is None and (x.detach() * 2).grad is None


def _aliased_after_create_graph(lib):
    """Gradients stored by a create_graph backward, then an ordinary backward adding into one
    leaf's .grad: (x.grad, v, y.grad, what a hook kept)."""
    f = np.float64 if lib is cg else lib.float64

    def leaf(values):
        return lib.tensor(values, dtype=f, requires_grad=True)

    w, x, s = leaf([1.0, 2.0]), leaf([3.0, 4.0]), leaf([5.0, 6.0])
    (s * (w + x)).sum().backward(create_graph=True)  # w and x receive one tensor
    v = s * 2
    u = leaf([1.0, 2.0])
    (u + 0).backward(v, create_graph=True)  # u receives v as it is
    y = u + 0
    y.retain_grad()
    kept = []
    z = u.reshape(2, 1)
    z.register_hook(kept.append)
    (s * y).sum().backward(create_graph=True)
    (s.reshape(2, 1) * z).sum().backward(create_graph=True)
    (w * 10).sum().backward()
    (u * 10).sum().backward()
    return x.grad.tolist(), v.tolist(), y.grad.tolist(), kept[0].tolist()


def test_create_graph_gradients_are_copies_no_later_accumulation_reaches_others():
    """Stored as they came, one leaf's .grad was another's (w + x), the caller's v, or shared
    memory with a retained gradient or one a hook kept: adding into it changed them all."""
    import torch

    assert _aliased_after_create_graph(cg) == _aliased_after_create_graph(torch)
    assert _aliased_after_create_graph(cg) == ([5.0, 6.0], [10.0, 12.0], [5.0, 6.0], [[5.0], [6.0]])


def test_a_set_grad_enabled_object_sets_its_mode_when_entered_and_takes_only_bools():
    import torch

    for lib in (cg, torch):
        mode = lib.set_grad_enabled(False)
        lib.set_grad_enabled(True)
        with mode:
            assert not lib.is_grad_enabled()
        assert lib.is_grad_enabled()
        with pytest.raises(TypeError, match="must be bool, not int"):
            lib.set_grad_enabled(0)


def test_clamp_to_tensor_bounds_says_what_to_use():
    x = cg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(TypeError, match=r"clamp: min must be a number here.*maximum\(x, lo\)"):
        x.clamp(min=cg.tensor([1.5, 1.5, 1.5]))


def test_in_place_on_a_broadcast_view_is_torchs_runtime_error():
    """sum's gradient is a broadcast view: a hook changing it in place got numpy's ValueError
    ("output array is read-only")."""
    import torch

    for lib in (cg, torch):
        x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x * 2
        y.register_hook(lambda g: g.mul_(0))
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            y.sum().backward()
        with pytest.raises(RuntimeError, match="Please clone"):
            lib.tensor([1.0, 2.0]).expand(3, 2).add_(1)
