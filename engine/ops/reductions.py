"""Reductions over an axis (or all axes), with keepdims."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..graph import Node
from ..optable import normalize_axes
from ..record import save_also
from ..tensor import Tensor
from .core import (
    NumpyOps,
    add_reduce,
    apply,
    data,
    define,
    keepdims_shape,
    operand,
    restore_reduced,
)


def _axes(n: Node) -> tuple[int, ...]:
    return normalize_axes(n.op, n._attrs["axis"], len(n._in_meta[0][0]))


def _count(n: Node) -> int:
    shape = n._in_meta[0][0]
    return math.prod(shape[a] for a in _axes(n))


def _expand(B: Any, n: Node, g: Any) -> Any:
    """The cotangent broadcast back over the reduced axes (batch dimensions kept in front)."""
    shape = n._in_meta[0][0]
    g = restore_reduced(B, g, n, _axes(n), n._attrs["keepdims"])
    return B.broadcast_to(g, g.shape[: g.ndim - len(shape)] + shape)


def _kept(B: Any, n: Node, x: Any) -> Any:
    """A saved reduced value (the result) in keepdims form, to broadcast against the input."""
    if n._attrs["keepdims"]:
        return x
    return B.reshape(x, keepdims_shape(n._in_meta[0][0], _axes(n)))


def _reduction(name: str, forward: Any, vjp: Any, save: Any = "all", out: bool = False) -> Any:
    impl = define(name, forward, vjp, save, out)
    defaults = impl.spec.attr_defaults()

    def op(x: Any, axis: Any = None, keepdims: bool = False, **extra: Any) -> Tensor:
        attrs = {**defaults, **extra, "axis": _axis_attr(axis), "keepdims": bool(keepdims)}
        return apply(impl, operand(x), **attrs)

    op.__name__ = name
    op.__doc__ = f"{name} over `axis` (all axes when None), keeping reduced axes with keepdims."
    return op


def _axis_attr(axis: Any) -> Any:
    if axis is None or isinstance(axis, int):
        return axis
    return tuple(int(a) for a in axis)


def _np_axis(x: np.ndarray, axis: Any) -> Any:
    """Axes for numpy: non-negative, and none at all for a 0-d tensor (torch accepts 0 and -1)."""
    return None if axis is None else normalize_axes("reduce", axis, x.ndim)


sum = _reduction(
    "sum",
    lambda x, axis, keepdims: add_reduce(x, axis=_np_axis(x, axis), keepdims=keepdims),
    lambda B, n, g, s: (_expand(B, n, g),),
    save="none",
)
mean = _reduction(
    "mean",
    lambda x, axis, keepdims: np.mean(x, axis=_np_axis(x, axis), keepdims=keepdims),
    lambda B, n, g, s: (_expand(B, n, g) / _count(n),),
    save="none",
)


def _prod_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    x, out = s[0], s[-1]
    xd = np.asarray(data(x))
    ge = _expand(B, n, g)
    axes = _axes(n)
    if B is not NumpyOps and (
        (xd == 0).any() or xd.size * math.prod(xd.shape[a] for a in axes) <= _OTHERS_MAX
    ):
        # under create_graph: a differentiable product of the other entries. out / x is exact
        # enough for one derivative, but its own derivative, out'/x - out/x^2, cancels: at
        # x = 3e-10 the second derivative was off by 2e-7 (torch's too)
        return (ge * _product_of_others(B, x, axes),)
    if not (xd == 0).any():
        return (ge * (_kept(B, n, out) / x),)
    # The product of the other entries from exclusive cumulative products (exact, no division).
    moved = np.moveaxis(xd, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(*moved.shape[: moved.ndim - len(axes)], -1)
    ones = np.ones_like(flat[..., :1])
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], -1), -1)
    after = np.flip(np.cumprod(np.concatenate([ones, np.flip(flat, -1)[..., :-1]], -1), -1), -1)
    others = np.moveaxis((before * after).reshape(moved.shape), tuple(range(-len(axes), 0)), axes)
    return (ge * others,)


prod = _reduction(
    "prod",
    lambda x, axis, keepdims: np.prod(x, axis=_np_axis(x, axis), keepdims=keepdims),
    _prod_vjp,
    out=True,
)


_OTHERS_MAX = 1 << 20  # entries of the k x k layout _product_of_others builds (when no entry is 0)


def _product_of_others(B: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """For each entry, the product over `axes` of the other entries, in differentiable ops: the
    reduced entries are laid out k x k with the diagonal set to 1 (O(k^2): used under
    create_graph, where the layout is small or an entry is 0)."""
    shape = x.shape
    kept = [a for a in range(len(shape)) if a not in axes]
    perm = (*kept, *axes)
    k = math.prod(shape[a] for a in axes)
    lead = tuple(shape[a] for a in kept)
    rows = B.reshape(B.permute(x, perm), (*lead, 1, k))
    others = B.prod(B.where(np.eye(k, dtype=bool), 1.0, rows), axis=-1)
    others = B.reshape(others, lead + tuple(shape[a] for a in axes))
    return B.permute(others, tuple(int(i) for i in np.argsort(perm)))


def _even_split_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...], nan_wins: bool = False) -> tuple[Any]:
    """amax/amin and the full max/min: the gradient is shared evenly among tied extrema. A NaN
    result: amax/amin give NaN gradients, the full max/min send it to the NaN entries (torch)."""
    x, out = np.asarray(data(s[0])), np.asarray(data(_kept(np, n, data(s[-1]))))
    hit = (x == out) | (np.isnan(x) & np.isnan(out)) if nan_wins else x == out
    share = hit / np.sum(hit, axis=_axes(n), keepdims=True)
    return (_expand(B, n, g) * share.astype(x.dtype),)


def _first_index_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    """max/min along one axis: the whole gradient goes to the indices they returned (saved)."""
    shape, dtype = n._in_meta[0]
    if not shape:  # a 0-d input: nothing to choose from
        return (_expand(B, n, g),)
    axis = _axes(n)[0]
    indices = np.asarray(data(s[1]))
    if not n._attrs["keepdims"]:
        indices = np.expand_dims(indices, axis)
    onehot = np.zeros(shape, dtype)
    np.put_along_axis(onehot, indices, 1, axis)
    return (_expand(B, n, g) * onehot,)


def _extreme_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    if n._attrs["axis"] is None:
        return _even_split_vjp(B, n, g, s, nan_wins=True)
    return _first_index_vjp(B, n, g, s)


def _extreme_saves(attrs: dict[str, Any]) -> tuple[str, bool]:
    """Over every entry the input and the result (torch's MaxBackward1); along an axis nothing of
    them: the indices, which max_along saves (MaxBackward0)."""
    return ("all", True) if attrs["axis"] is None else ("none", False)


amax = _reduction(
    "amax",
    lambda x, axis, keepdims: np.amax(x, axis=_np_axis(x, axis), keepdims=keepdims),
    _even_split_vjp,
    out=True,
)
amin = _reduction(
    "amin",
    lambda x, axis, keepdims: np.amin(x, axis=_np_axis(x, axis), keepdims=keepdims),
    _even_split_vjp,
    out=True,
)
_max = _reduction(
    "max",
    lambda x, axis, keepdims: np.amax(x, axis=_np_axis(x, axis), keepdims=keepdims),
    _extreme_vjp,
    save=_extreme_saves,
)
_min = _reduction(
    "min",
    lambda x, axis, keepdims: np.amin(x, axis=_np_axis(x, axis), keepdims=keepdims),
    _extreme_vjp,
    save=_extreme_saves,
)


def _one_axis(name: str, axis: Any) -> None:
    if axis is not None and not isinstance(axis, int):
        raise TypeError(f"{name}: axis must be a single int (use a{name} for several axes)")


def max(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The largest entry, or the largest along one axis (values only; see max_along)."""
    _one_axis("max", axis)
    return _max(x, axis, keepdims) if axis is None else max_along(x, axis, keepdims)[0]


def min(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The smallest entry, or the smallest along one axis (values only; see min_along)."""
    _one_axis("min", axis)
    return _min(x, axis, keepdims) if axis is None else min_along(x, axis, keepdims)[0]


def max_along(x: Any, axis: int, keepdims: bool = False) -> tuple[Tensor, Tensor]:
    """(values, indices) of the largest entries along axis, as torch's max(dim)."""
    return _along(_max, argmax, x, axis, keepdims)


def min_along(x: Any, axis: int, keepdims: bool = False) -> tuple[Tensor, Tensor]:
    """(values, indices) of the smallest entries along axis, as torch's min(dim)."""
    return _along(_min, argmin, x, axis, keepdims)


def _along(values_op: Any, index_op: Any, x: Any, axis: int, keepdims: bool) -> tuple[Tensor, Tensor]:
    values = values_op(x, axis, keepdims)
    indices = index_op(x, axis, keepdims)
    if values.grad_fn is not None:
        # As torch's MaxBackward0, the node keeps the indices it returned, not the input: the
        # gradient goes to them whatever the input becomes, and changing them in place (the
        # tensor returned) is the version error at backward.
        save_also(values.grad_fn, [indices])
    return values, indices


def _logsumexp_fwd(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    ax = _np_axis(x, axis)
    m = np.amax(x, axis=ax, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=ax)


logsumexp = _reduction(
    "logsumexp",
    _logsumexp_fwd,
    lambda B, n, g, s: (_expand(B, n, g) * B.exp(s[0] - _kept(B, n, s[-1])),),
    out=True,
)


def _centered(B: Any, n: Node, x: Any) -> Any:
    return x - B.sum(x, axis=_axes(n), keepdims=True) / _count(n)


def _var_backward(B: Any, n: Node, grad: Any, x: Any) -> Any:
    """torch's var_backward for `grad` (expanded to x's shape): (2 / (N - correction)) * grad *
    (x - mean). Along dims the factor is unclamped: inf at N (x - mean's sign kept), negative
    past it (torch's forward clamps the divisor at 0, its backward does not); over every entry
    with no degrees of freedom it is inf, nan where x is the mean."""
    centered = _centered(B, n, x)
    dof = _count(n) - n._attrs["correction"]
    if dof <= 0 and (n._attrs["axis"] is None or not n._in_meta[0][0]):
        return grad * B.where(centered == 0, math.nan, math.inf)
    return (2.0 / dof if dof else math.inf) * grad * centered


def _var_fwd(x: np.ndarray, axis: Any, keepdims: bool, correction: int) -> np.ndarray:
    """numpy's two-pass variance, as torch computes one with a single output. With several
    outputs torch runs Welford's update, which gives exactly 0 for a slice of equal entries, and
    its std backward is 0 there: the two-pass mean's rounding (3 equal entries: 5e-16) made the
    std's gradient +-0.41 per entry where torch's is 0."""
    ax = _np_axis(x, axis)
    out = np.asarray(np.var(x, axis=ax, keepdims=True, ddof=correction))
    if out.size > 1:
        first = x[tuple(slice(0, 1) if k in ax else slice(None) for k in range(x.ndim))]
        equal = np.all(x == first, axis=ax, keepdims=True) & np.isfinite(out)
        out = np.where(equal, 0.0, out).astype(out.dtype)
    return out if keepdims else np.squeeze(out, axis=ax)


var = _reduction("var", _var_fwd, lambda B, n, g, s: (_var_vjp(B, n, g, s),))
std = _reduction(
    "std",
    lambda x, axis, keepdims, correction: np.sqrt(_var_fwd(x, axis, keepdims, correction)),
    lambda B, n, g, s: (_std_vjp(B, n, g, s),),
    out=True,
)


def _var_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> Any:
    return _var_backward(B, n, _expand(B, n, g), s[0])


def _std_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> Any:
    """torch's std_backward: var's for grad / (2 std), which is 0 where the std is 0."""
    out = _kept(B, n, s[-1])
    zero = np.asarray(data(out)) == 0
    grad_var = _expand(B, n, g) / (2 * B.where(zero, 1.0, out))
    if zero.any():
        grad_var = B.where(zero, 0.0, grad_var)
    return _var_backward(B, n, grad_var, s[0])


def _norm_fwd(x: np.ndarray, axis: Any, keepdims: bool, ord: float) -> np.ndarray:
    ax, a = _np_axis(x, axis), np.abs(x)
    if ord == math.inf:
        return np.amax(a, axis=ax, keepdims=keepdims)
    if ord == -math.inf:
        return np.amin(a, axis=ax, keepdims=keepdims)
    if ord == 0:  # the number of nonzero entries (nan counts), as torch
        return np.sum(a != 0, axis=ax, keepdims=keepdims).astype(x.dtype)
    if ord == 2:
        return np.sqrt(np.sum(a * a, axis=ax, keepdims=keepdims))
    if ord == 1:
        return np.sum(a, axis=ax, keepdims=keepdims)
    with np.errstate(divide="ignore"):  # a negative ord: 0 ** ord is inf, and the norm 0
        return np.sum(a**ord, axis=ax, keepdims=keepdims) ** (1 / ord)


def _norm_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    x, out, p = s[0], _kept(B, n, s[-1]), n._attrs["ord"]
    if p == 0:  # a count: torch returns no gradient
        return (None,)
    ge = _expand(B, n, g)
    if math.isinf(p):
        # torch: sgn(x) * g / count * mask, the mask the entries whose |x| is the norm (or nan),
        # so ties share the gradient evenly; torch's sign of nan is 0
        # (sgn is recorded under create_graph, as torch's: a zero second derivative)
        xd = np.asarray(data(x))
        nan = np.isnan(xd)
        hit = (np.abs(xd) == data(out)) | nan
        share = (hit / np.sum(hit, axis=_axes(n), keepdims=True)).astype(xd.dtype)
        sign = B.where(nan, 0.0, B.sign(x)) if nan.any() else B.sign(x)
        return (ge * share * sign,)
    if p == 1:
        return (ge * B.sign(x),)
    zero = np.asarray(data(out)) == 0  # torch: the gradient at the zero vector is 0
    safe = B.where(zero, 1.0, out)
    if p == 2:
        return (B.where(zero, 0.0, ge * x / safe),)
    if p < 1:  # |x|**(p-1) is infinite at x == 0: torch masks those entries to 0, and so do we,
        # on an input where they are 1, so that no inf (nor nan in a second derivative) appears
        at_zero = np.asarray(data(x)) == 0
        scaled = B.where(at_zero, 0.0, B.sign(x) * B.abs(B.where(at_zero, 1.0, x)) ** (p - 1))
    else:
        scaled = B.sign(x) * B.abs(x) ** (p - 1)
    return (B.where(zero, 0.0, ge * scaled / safe ** (p - 1)),)


_NORM = define("norm", _norm_fwd, _norm_vjp, "all", True)


def norm(x: Any, ord: float = 2.0, axis: Any = None, keepdims: bool = False) -> Tensor:
    """The vector p-norm over `axis` (all entries when None), like torch.linalg.vector_norm: any
    ord, inf (the largest |x|) and -inf (the smallest) included; ord=0 counts nonzero entries."""
    x = operand(x)
    attrs = {"axis": _axis_attr(axis), "keepdims": bool(keepdims), "ord": float(ord)}
    _NORM.spec.shape_rule("norm", np.shape(data(x)), **attrs)  # empty and no identity: refused
    return apply(_NORM, x, **attrs)


def _argreduce(name: str, fn: Any) -> Any:
    impl = define(name, lambda x, axis, keepdims: _keep(fn(x, axis=axis), axis, keepdims, x.ndim), None)

    def op(x: Any, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return apply(impl, operand(x), axis=axis, keepdims=keepdims)

    op.__name__ = name
    op.__doc__ = f"Index of the {name[3:]} (flattened when axis is None); no gradient."
    return op


def _keep(idx: Any, axis: int | None, keepdims: bool, ndim: int) -> Any:
    if not keepdims or ndim == 0:
        return idx
    return np.reshape(idx, (1,) * ndim) if axis is None else np.expand_dims(idx, axis)


argmax = _argreduce("argmax", np.argmax)
argmin = _argreduce("argmin", np.argmin)
