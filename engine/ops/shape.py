"""Ops that move entries around: views, joins and splits, indexing, padding, selection."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import indexing
from ..graph import Node
from ..optable import infer_reshape, normalize_axes, normalize_axis, split_sizes
from ..record import save_also
from ..tensor import Tensor
from .core import (
    _pad,
    apply,
    batch_dims,
    data,
    define,
    operand,
    tensor_operand,
    torch_dtype_name,
    unbroadcast,
)


def _in_shape(n: Node) -> tuple[int, ...]:
    return n._in_meta[0][0]


def _reshape_back(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    return (B.reshape(g, g.shape[: batch_dims(n, g)] + _in_shape(n)),)


_RESHAPE = define("reshape", lambda x, shape: np.reshape(x, shape), _reshape_back, "none")
_FLATTEN = define(
    "flatten",
    lambda x, start_dim, end_dim: np.reshape(
        x, _FLATTEN.spec.shape_rule("flatten", x.shape, start_dim, end_dim)
    ),
    _reshape_back,
    "none",
)
_SQUEEZE = define(
    "squeeze",
    lambda x, axis: np.reshape(x, _SQUEEZE.spec.shape_rule("squeeze", x.shape, axis)),
    _reshape_back,
    "none",
)
_UNSQUEEZE = define("unsqueeze", lambda x, axis: np.expand_dims(x, axis), _reshape_back, "none")


def _view(out: Tensor) -> Tensor:
    """Mark the result of a view op (it shares its input's memory), as torch's _is_view."""
    out._view = True
    return out


def _view_if_shared(out: Tensor, x: Tensor) -> Tensor:
    """reshape and flatten: a view where numpy could reshape without a copy (as torch)."""
    out._view = not out.data.size or np.may_share_memory(out.data, x.data)
    return out


def reshape(x: Any, shape: Any) -> Tensor:
    x = tensor_operand(x)
    out = apply(_RESHAPE, x, shape=infer_reshape("reshape", x.shape, _ints(shape)))
    return _view_if_shared(out, x)


def flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    x = tensor_operand(x)
    if x.ndim and normalize_axis("flatten", start_dim, x.ndim) == normalize_axis(
        "flatten", end_dim, x.ndim
    ):
        return x  # nothing to merge: torch returns the input itself
    return _view_if_shared(apply(_FLATTEN, x, start_dim=start_dim, end_dim=end_dim), x)


def squeeze(x: Any, axis: Any = None) -> Tensor:
    return _view(apply(_SQUEEZE, tensor_operand(x), axis=axis if axis is None else _axis(axis)))


def unsqueeze(x: Any, axis: int) -> Tensor:
    return _view(apply(_UNSQUEEZE, tensor_operand(x), axis=int(axis)))


def _ints(values: Any) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)):
        return (int(values),)
    return tuple(int(v) for v in values)


def _axis(axis: Any) -> Any:
    return int(axis) if isinstance(axis, (int, np.integer)) else _ints(axis)


def _transpose_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    nd = len(_in_shape(n))
    if nd == 0:
        return (g,)
    a, b = (normalize_axis("transpose", n._attrs[k], nd) - nd for k in ("dim0", "dim1"))
    return (B.transpose(g, a, b),)


_TRANSPOSE = define(
    "transpose",
    lambda x, dim0, dim1: x if x.ndim == 0 else np.swapaxes(x, dim0, dim1),
    _transpose_vjp,
    "none",
)


def transpose(x: Any, dim0: int = 0, dim1: int = 1) -> Tensor:
    return _view(apply(_TRANSPOSE, tensor_operand(x), dim0=int(dim0), dim1=int(dim1)))


def _permute_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    nb = batch_dims(n, g)
    nd = len(_in_shape(n))
    dims = [normalize_axis("permute", d, nd) for d in n._attrs["dims"]]
    inverse = [dims.index(i) for i in range(nd)]
    return (B.permute(g, tuple(range(nb)) + tuple(nb + i for i in inverse)),)


_PERMUTE = define("permute", lambda x, dims: np.transpose(x, dims), _permute_vjp, "none")


def permute(x: Any, dims: Any) -> Tensor:
    x = tensor_operand(x)
    dims = _ints(dims)
    _PERMUTE.spec.shape_rule("permute", x.shape, dims)
    return _view(apply(_PERMUTE, x, dims=dims))


def _unbroadcast_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    return (unbroadcast(B, g, _in_shape(n), batch_dims(n, g)),)


_EXPAND = define("expand", lambda x, shape: np.broadcast_to(x, shape), _unbroadcast_vjp, "none")
_BROADCAST_TO = define(
    "broadcast_to", lambda x, shape: np.broadcast_to(x, shape), _unbroadcast_vjp, "none"
)


def expand(x: Any, shape: Any) -> Tensor:
    x = tensor_operand(x)
    return _view(apply(_EXPAND, x, shape=_EXPAND.spec.shape_rule("expand", x.shape, _ints(shape))))


def broadcast_to(x: Any, shape: Any) -> Tensor:
    x = tensor_operand(x)
    shape = _BROADCAST_TO.spec.shape_rule("broadcast_to", x.shape, _ints(shape))
    return _view(apply(_BROADCAST_TO, x, shape=shape))


# ---------------------------------------------------------------- joins and splits


def _along(axis_from_end: int, piece: Any) -> tuple[Any, ...]:
    """An index selecting `piece` along the axis counted from the end (batch dims untouched)."""
    return (Ellipsis, piece) + (slice(None),) * (-axis_from_end - 1)


def _concat_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, ...]:
    nd = len(_in_shape(n))
    axis = normalize_axis("concat", n._attrs["axis"], nd) - nd
    grads, start = [], 0
    for (shape, _), need in zip(n._in_meta, n._needs):
        size = shape[axis]
        grads.append(B.getitem(g, _along(axis, slice(start, start + size))) if need else None)
        start += size
    return tuple(grads)


_CONCAT = define("concat", lambda *xs, axis: np.concatenate(xs, axis), _concat_vjp, "none")


def _stack_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, ...]:
    nd = len(_in_shape(n)) + 1
    axis = normalize_axis("stack", n._attrs["axis"], nd) - nd
    return tuple(B.getitem(g, _along(axis, k)) if need else None for k, need in enumerate(n._needs))


_STACK = define("stack", lambda *xs, axis: np.stack(xs, axis), _stack_vjp, "none")


def concat(xs: Any, axis: int = 0) -> Tensor:
    xs = [tensor_operand(x) for x in xs]
    _CONCAT.spec.shape_rule("concat", *(x.shape for x in xs), axis=axis)
    return apply(_CONCAT, *xs, axis=int(axis))


def stack(xs: Any, axis: int = 0) -> Tensor:
    xs = [tensor_operand(x) for x in xs]
    _STACK.spec.shape_rule("stack", *(x.shape for x in xs), axis=axis)
    return apply(_STACK, *xs, axis=int(axis))


def _split_fwd(x: np.ndarray, sections: Any, axis: int) -> tuple[np.ndarray, ...]:
    sizes = split_sizes("split", x.shape, sections, axis)
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis))


def _split_vjp(B: Any, n: Node, gs: list[Any], s: tuple[Any, ...]) -> tuple[Any]:
    nd = len(_in_shape(n))
    return (B.concat(gs, normalize_axis("split", n._attrs["axis"], nd) - nd),)


_SPLIT = define("split", _split_fwd, _split_vjp, "none", n_outputs=0)


def split(x: Any, sections: Any, axis: int = 0) -> tuple[Tensor, ...]:
    """Pieces of x along axis: an int is the size of each piece, a list gives every size."""
    x = tensor_operand(x)
    sections = int(sections) if isinstance(sections, (int, np.integer)) else _ints(sections)
    split_sizes("split", x.shape, sections, axis)
    return tuple(_view(piece) for piece in apply(_SPLIT, x, sections=sections, axis=int(axis)))


# ---------------------------------------------------------------- indexing


def _getitem_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    nb_fwd = n._attrs["nb"]
    return (B.index_scatter(g, n._attrs["index"], _in_shape(n)[nb_fwd:]),)


def _getitem_fwd(x: np.ndarray, index: Any, nb: int, lone_slice: bool = False) -> np.ndarray:
    out = indexing.getitem(x, index, nb)
    if type(out) is not np.ndarray and not indexing.has_advanced(index):
        # numpy returns a single element as a scalar, a copy: torch's x[0] is a 0-d view, which
        # an in-place change of x shows and through which x can be changed (x[0].zero_())
        out = x[(*index, Ellipsis)]
    return out


_GETITEM = define("getitem", _getitem_fwd, _getitem_vjp, "none")


def getitem(x: Any, index: Any, nb: int = 0) -> Tensor:
    """x[index]; nb > 0 applies the index after that many leading (batch) dimensions."""
    x = tensor_operand(x)
    canon = indexing.canonical_index(index, x.shape[nb:])
    indexing.index_shape("getitem", x.shape[nb:], canon)
    # torch names x[:] SliceBackward0 and x[:,] AliasBackward0: the canonical index is a tuple
    lone = {"lone_slice": True} if isinstance(index, slice) else {}
    out = apply(_GETITEM, x, index=canon, nb=nb, **lone)
    out._view = not indexing.has_advanced(canon)  # basic indexing makes a view, as in torch
    if out.grad_fn is not None and not out._view:
        # Advanced indexing: torch's IndexBackward0 saves its indices. The canonical index shares
        # an index tensor's memory: saved, a change in place since is the version error at
        # backward, not a gradient scattered to the new positions; and, freed by a backward, a
        # second one is torch's error. (Lists and numpy arrays have no version to check.)
        items = index if isinstance(index, tuple) else (index,)
        tensors = [i for i in items if isinstance(i, Tensor) and i.ndim]
        save_also(out.grad_fn, tensors or [i for i in canon if isinstance(i, np.ndarray)])
    return out


def _index_scatter_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    shape = n._attrs["shape"]
    return (B.getitem(g, n._attrs["index"], g.ndim - len(shape)),)


_INDEX_SCATTER = define(
    "index_scatter",
    lambda g, index, shape: indexing.index_scatter(g, index, shape),
    _index_scatter_vjp,
    "none",
)


def index_scatter(g: Any, index: Any, shape: Any) -> Tensor:
    """Zeros of shape (after g's batch dims) with g added at index: the adjoint of getitem."""
    return apply(_INDEX_SCATTER, tensor_operand(g), index=index, shape=tuple(shape))


_TO_DTYPE = define(
    "to_dtype",
    lambda x, dtype: np.asarray(x, dtype),
    lambda B, n, g, s: (B.to_dtype(g, n._in_meta[0][1]),),
    "none",
)


def to_dtype(x: Any, dtype: Any) -> Tensor:
    """x as another dtype, differentiably: the gradient returns to x's dtype. Integers and
    booleans carry no gradient: cast to one, the result is outside the graph (as in torch)."""
    x = tensor_operand(x)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return Tensor._make(np.asarray(x.data, dtype))
    return apply(_TO_DTYPE, x, dtype=dtype)


def _flip_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    nd = len(_in_shape(n))
    return (B.flip(g, tuple(a - nd for a in normalize_axes("flip", n._attrs["axis"], nd))),)


# a copy, as torch's flip (numpy's is a view: the result would change with its input, and an
# in-place op on it would change the input)
_FLIP = define("flip", lambda x, axis: np.flip(x, axis).copy(), _flip_vjp, "none")


def flip(x: Any, axis: Any = None) -> Tensor:
    x = tensor_operand(x)
    axes = normalize_axes("flip", None if axis is None else _axis(axis), x.ndim)
    return apply(_FLIP, x, axis=axes)


def _pad_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    pad, shape = n._attrs["pad"], _in_shape(n)
    m = len(pad) // 2
    window = tuple(slice(pad[2 * k], pad[2 * k] + shape[len(shape) - 1 - k]) for k in reversed(range(m)))
    return (B.getitem(g, (Ellipsis, *window)),)


_PAD = define("pad", _pad, _pad_vjp, "none")


def pad(x: Any, pad: Any, value: float = 0.0) -> Tensor:
    """Constant padding, torch order: (last_lo, last_hi, second_last_lo, second_last_hi, ...)."""
    x = tensor_operand(x)
    pad = _ints(pad)
    _PAD.spec.shape_rule("pad", x.shape, pad)
    return apply(_PAD, x, pad=pad, value=float(value))


# ---------------------------------------------------------------- selection


def _where_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, ...]:
    cond, nb = data(s[0]), batch_dims(n, g)
    return (
        None,
        unbroadcast(B, B.where(cond, g, 0.0), n._in_meta[1][0], nb) if n._needs[1] else None,
        unbroadcast(B, B.where(cond, 0.0, g), n._in_meta[2][0], nb) if n._needs[2] else None,
    )


_WHERE = define("where", np.where, _where_vjp, save=(0,))  # the condition alone


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """x where condition holds, else y (the condition carries no gradient)."""
    cond = operand(condition)
    if (kind := np.asarray(data(cond)).dtype) != np.bool_:
        raise RuntimeError(
            "where expected condition to be a boolean tensor, but got a tensor with dtype "
            f"{torch_dtype_name(kind)}"
        )
    x, y = operand(x), operand(y)
    if not any(isinstance(v, Tensor) and v.dtype.kind == "f" for v in (x, y)):
        x = Tensor(x)
    return apply(_WHERE, cond, x, y)


_MASKED_FILL = define(
    "masked_fill",
    lambda x, mask, value: np.where(mask, np.asarray(value, x.dtype), x),
    lambda B, n, g, s: (B.where(data(s[1]), 0.0, g), None),
    save=(1,),  # the mask alone
)


def masked_fill(x: Any, mask: Any, value: Any = 0.0) -> Tensor:
    """x with value where mask is True. A value that is a tensor requiring grad gets its gradient
    (torch records MaskedFillBackward1; here it is a where, WhereBackward0)."""
    if isinstance(value, Tensor) and value.requires_grad:
        if value.ndim != 0:
            raise RuntimeError(
                "masked_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                f"{value.ndim} dimension(s)."
            )
        return where(mask, value.to(x.dtype) if isinstance(x, Tensor) else value, x)
    mask = operand(mask)
    if (kind := np.asarray(data(mask)).dtype) != np.bool_:
        raise RuntimeError(
            "masked_fill_ only supports boolean masks, but got mask with dtype "
            f"{torch_dtype_name(kind).lower()}"
        )
    return apply(_MASKED_FILL, tensor_operand(x), mask, value=float(value))
