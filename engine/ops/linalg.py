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


def matmul(a: Any, b: Any) -> Tensor:
    # numpy raises on shapes it cannot multiply, and record() then lets the shape rule explain
    return record(_MATMUL, (tensor_operand(a), tensor_operand(b)))


def _dot_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    gcol = B.reshape(g, (*g.shape, 1))
    return (gcol * s[1] if n._needs[0] else None, gcol * s[0] if n._needs[1] else None)


_DOT = define("dot", np.dot, _dot_vjp, save="other")


def dot(a: Any, b: Any) -> Tensor:
    a, b = tensor_operand(a), tensor_operand(b)
    _DOT.spec.shape_rule("dot", a.shape, b.shape)
    return apply(_DOT, a, b)


def _outer_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    return (
        B.matmul(g, s[1]) if n._needs[0] else None,
        B.matmul(s[0], g) if n._needs[1] else None,
    )


_OUTER = define("outer", np.outer, _outer_vjp, save="other")


def outer(a: Any, b: Any) -> Tensor:
    a, b = tensor_operand(a), tensor_operand(b)
    _OUTER.spec.shape_rule("outer", a.shape, b.shape)
    return apply(_OUTER, a, b)
