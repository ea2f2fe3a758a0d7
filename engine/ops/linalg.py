"""Matrix products: matmul (1-D, 2-D, batched, broadcast), dot, outer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph import Node
from ..record import record
from ..tensor import Tensor
from .core import apply, batch_dims, define, tensor_operand, unbroadcast


def _matmul_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    a, b = s[0], s[1]
    (sa, _), (sb, _) = n._in_meta
    nb = batch_dims(n, g)
    if nb == 0 and len(sa) == len(sb) == 2:  # the common case, without the general machinery
        return (
            B.matmul(g, B.transpose(b, -1, -2)) if n._needs[0] else None,
            B.matmul(B.transpose(a, -1, -2), g) if n._needs[1] else None,
        )
    lead = g.shape[:nb]
    # Promote 1-D operands to matrices as numpy does, so one formula covers every case.
    a2 = (1, *sa) if len(sa) == 1 else sa
    b2 = (*sb, 1) if len(sb) == 1 else sb
    out2 = np.broadcast_shapes(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    g2 = B.reshape(g, lead + out2)
    ga = gb = None
    if n._needs[0]:
        bm = B.reshape(b, b2) if len(sb) == 1 else b
        ga = unbroadcast(B, B.matmul(g2, B.transpose(bm, -1, -2)), a2, nb)
        ga = B.reshape(ga, lead + sa)
    if n._needs[1]:
        am = B.reshape(a, a2) if len(sa) == 1 else a
        gb = unbroadcast(B, B.matmul(B.transpose(am, -1, -2), g2), b2, nb)
        gb = B.reshape(gb, lead + sb)
    return ga, gb


_MATMUL = define("matmul", np.matmul, _matmul_vjp, save="other")

# torch's names for dtypes: its C type names (mm's message) and its scalar type names
_C_NAMES = {"float16": "c10::Half", "float32": "float", "float64": "double", "int64": "long int"}
_SCALAR_NAMES = {"float16": "Half", "float32": "Float", "float64": "Double", "int64": "Long"}


def mixed_dtype_message(
    op: str, a_shape: tuple[int, ...], a_dtype: Any, b_shape: tuple[int, ...], b_dtype: Any
) -> str | None:
    """torch's error when a matrix product's operands have different dtypes (it does not promote
    them, as the elementwise ops do), or None when they agree. The message is the one of the
    kernel torch reaches for these ranks: dot for two vectors, addmv when one operand is a
    vector, mm when the other is folded to a matrix, bmm for two batches (torch folds a few
    batched cases with a size-1 batch into mm instead; the wording is then bmm's)."""
    da, db = np.dtype(a_dtype).name, np.dtype(b_dtype).name
    if da == db:
        return None
    c, t = (lambda d: _C_NAMES.get(d, d)), (lambda d: _SCALAR_NAMES.get(d, d))
    ra, rb = len(a_shape), len(b_shape)
    if op == "dot" or ra == rb == 1:
        return f"dot : expected both vectors to have same dtype, but found {t(da)} and {t(db)}"
    if rb == 1 or (ra == 1 and rb > 2):  # mv, the vector's dtype first (torch's order)
        vec, mat = (db, da) if rb == 1 else (da, db)
        return f"addmv input tensors must have the same dtype, but got {t(vec)}, {t(mat)}, and {t(vec)}"
    if ra <= 2 or rb <= 2:  # mm; a matrix times a batch is computed transposed: b first
        first, second = (db, da) if ra == 2 and rb > 2 else (da, db)
        return f"expected m1 and m2 to have the same dtype, but got: {c(first)} != {c(second)}"
    return f"expected scalar type {t(da)} but found {t(db)}"  # bmm


def _same_dtype(op: str, a: Tensor, b: Tensor) -> None:
    message = mixed_dtype_message(op, a.shape, a.dtype, b.shape, b.dtype)
    if message is not None:
        raise RuntimeError(message)


def matmul(a: Any, b: Any) -> Tensor:
    a, b = tensor_operand(a), tensor_operand(b)
    if a.dtype != b.dtype and a.ndim and b.ndim:  # a 0-d operand: the shape rule explains
        _same_dtype("matmul", a, b)
    # numpy raises on shapes it cannot multiply, and record() then lets the shape rule explain
    return record(_MATMUL, (a, b))


def _dot_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    gcol = B.reshape(g, (*g.shape, 1))
    return (gcol * s[1] if n._needs[0] else None, gcol * s[0] if n._needs[1] else None)


_DOT = define("dot", np.dot, _dot_vjp, save="other")


def dot(a: Any, b: Any) -> Tensor:
    a, b = tensor_operand(a), tensor_operand(b)
    _DOT.spec.shape_rule("dot", a.shape, b.shape)
    _same_dtype("dot", a, b)
    return apply(_DOT, a, b)


def _outer_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    # outer promotes its operands' dtypes (torch computes it as a broadcast product), so its
    # rule is written with products and sums too: matmul would refuse mixed dtypes
    a, b = s[0], s[1]
    return (
        B.sum(g * b, axis=-1) if n._needs[0] else None,
        B.sum(g * B.reshape(a, (*a.shape, 1)), axis=-2) if n._needs[1] else None,
    )


_OUTER = define("outer", np.outer, _outer_vjp, save="other")


def outer(a: Any, b: Any) -> Tensor:
    a, b = tensor_operand(a), tensor_operand(b)
    _OUTER.spec.shape_rule("outer", a.shape, b.shape)
    return apply(_OUTER, a, b)
