"""Indexing with a leading batch of dimensions, as the VJP of getitem needs.

An index is made canonical once (Tensors and lists become integer arrays, boolean masks become their
integer positions, the Ellipsis is expanded), so that the same index can be applied after any number of
leading batch dimensions: that is what lets jacobian() push a batch of cotangents through getitem.

Integers follow torch, not numpy, when they meet integer arrays: torch selects with the integers
first and only then indexes with the arrays (numpy would broadcast the integers with the arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .optable import ShapeError

Index = tuple[Any, ...]


def canonical_index(index: Any, shape: tuple[int, ...]) -> Index:
    """The index for a tensor of this shape with Tensors and lists as arrays, boolean masks as their
    integer positions (checked against the dimensions they cover) and the Ellipsis expanded."""
    ndim = len(shape)
    if _sequence_as_tuple(index):
        index = tuple(index)
    items = index if isinstance(index, tuple) else (index,)
    out: list[Any] = []
    for item in items:
        data = getattr(item, "data", None)
        if data is not None and not isinstance(item, np.ndarray):  # a Tensor
            item = data
        if isinstance(item, list):
            item = np.asarray(item)
        if isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu":
            item = int(item)  # as torch: a 0-d integer tensor selects, as an int does (a copy)
        if isinstance(item, (bool, np.bool_)):
            raise ShapeError("getitem: a single boolean is not a supported index")
        if isinstance(item, (int, np.integer)):
            out.append(int(item))
        elif isinstance(item, slice) and item.step is not None and item.step <= 0:
            raise ValueError("step must be greater than zero")  # torch's (x[::-1]: use flip)
        elif item is None or item is Ellipsis or isinstance(item, slice):
            out.append(item)
        elif isinstance(item, np.ndarray) and item.dtype == np.bool_:
            if item.ndim == 0:
                raise ShapeError("getitem: a 0-d boolean mask is not a supported index")
            out.append(item)
        elif isinstance(item, np.ndarray) and np.issubdtype(item.dtype, np.integer):
            out.append(item.astype(np.intp, copy=False))
        else:
            raise ShapeError(
                f"getitem: unsupported index {type(item).__name__}; use ints, slices, None, "
                "..., integer arrays or boolean masks"
            )
    if sum(i is Ellipsis for i in out) > 1:
        raise ShapeError("getitem: an index can only have a single ellipsis ('...')")
    used = sum(_dims_used(i) for i in out)
    if used > ndim:
        raise ShapeError(f"getitem: too many indices ({used}) for a tensor of {ndim} dimensions")
    if Ellipsis in [i for i in out if not isinstance(i, np.ndarray)]:
        at = next(k for k, i in enumerate(out) if i is Ellipsis)
        out[at : at + 1] = [slice(None)] * (ndim - used)
    return tuple(_masks_as_positions(out, shape))


def _sequence_as_tuple(index: Any) -> bool:
    """torch's treatSequenceAsTuple: a list of fewer than 32 items of which one is a sequence,
    a tensor, a slice, None or ... is a tuple of indices (x[[[0, 1], [1, 1]]] is x[[0, 1], [1, 1]],
    two entries, where numpy's array index took whole rows)."""
    if not isinstance(index, list) or len(index) >= 32:
        return False
    return any(
        isinstance(i, (list, tuple, slice, np.ndarray))
        or i is None
        or i is Ellipsis
        or hasattr(i, "grad_fn")
        for i in index
    )


def _dims_used(item: Any) -> int:
    if item is None or item is Ellipsis:
        return 0
    return item.ndim if isinstance(item, np.ndarray) and item.dtype == np.bool_ else 1


def _masks_as_positions(items: list[Any], shape: tuple[int, ...]) -> list[Any]:
    out, dim = [], 0
    for item in items:
        if isinstance(item, np.ndarray) and item.dtype == np.bool_:
            covered = tuple(shape[dim : dim + item.ndim])
            if item.shape != covered:
                raise ShapeError(
                    f"getitem: the shape of the mask {list(item.shape)} at index {dim} does not "
                    f"match the shape of the indexed tensor {list(covered)} at index {dim}"
                )
            out.extend(np.nonzero(item))
        else:
            out.append(item)
        dim += _dims_used(item)
    return out


def _is_advanced(item: Any) -> bool:
    return isinstance(item, np.ndarray)


def has_advanced(index: Index) -> bool:
    return any(_is_advanced(i) for i in index)


def _separated(index: Index) -> bool:
    """numpy moves advanced-index dimensions to the front when slices separate advanced indices."""
    pos = [k for k, i in enumerate(index) if _is_advanced(i) or isinstance(i, int)]
    if not any(_is_advanced(i) for i in index) or not pos:
        return False
    return any(not (_is_advanced(i) or isinstance(i, int)) for i in index[pos[0] : pos[-1] + 1])


def _adv_ndim(index: Index) -> int:
    shapes = [i.shape for i in index if _is_advanced(i)]
    return len(np.broadcast_shapes(*shapes)) if shapes else 0


def _torch_stages(index: Index) -> tuple[Index, Index] | None:
    """(integer selections, the rest) when integers meet integer arrays, else None."""
    if not (has_advanced(index) and any(isinstance(i, int) for i in index)):
        return None
    selections = tuple(i if isinstance(i, int) else slice(None) for i in index if i is not None)
    return selections, tuple(i for i in index if not isinstance(i, int))


def index_shape(op: str, shape: tuple[int, ...], index: Any) -> tuple[int, ...]:
    index = canonical_index(index, tuple(shape))
    try:  # a zero-stride view: basic indexing costs nothing, advanced indexing 1 byte per element
        return getitem(np.broadcast_to(np.zeros((), np.int8), shape), index).shape
    except IndexError as exc:
        raise ShapeError(f"{op}: {exc} (tensor shape {tuple(shape)})") from None


def getitem(x: Any, index: Index, nb: int = 0) -> Any:
    """x[index] (torch's semantics) applied after nb leading batch dimensions; x may be any array
    that numpy-style indexing accepts (numpy, JAX, numpy object arrays of sympy expressions)."""
    stages = _torch_stages(index)
    if stages is not None:
        return getitem(getitem(x, stages[0], nb), stages[1], nb)
    if nb == 0:
        return x[index]
    out = x[(slice(None),) * nb + index]
    if _separated(index):  # advanced dims landed before the batch dims: move them after
        k = _adv_ndim(index)
        out = np.moveaxis(out, list(range(k)), list(range(nb, nb + k)))
    return out


def index_scatter(g: np.ndarray, index: Index, shape: tuple[int, ...]) -> np.ndarray:
    """The adjoint of getitem: zeros of (batch + shape) with g added at index (repeats add up)."""
    stages = _torch_stages(index)
    if stages is not None:
        selected = getitem(np.broadcast_to(np.zeros((), np.int8), shape), stages[0]).shape
        return index_scatter(index_scatter(g, stages[1], selected), stages[0], shape)
    nb = g.ndim - len(getitem(np.broadcast_to(np.zeros((), np.int8), shape), index).shape)
    out = np.zeros(g.shape[:nb] + tuple(shape), dtype=g.dtype)
    full = (slice(None),) * nb + index
    if nb and _separated(index):
        k = _adv_ndim(index)
        g = np.moveaxis(g, list(range(nb, nb + k)), list(range(k)))
    if has_advanced(index):
        np.add.at(out, full, g)
    else:
        out[full] = g
    return out
