"""Blame: when the engine disagrees with references that agree, find the node whose VJP is wrong.

Each node's rule is checked in isolation: the op is re-run on fresh leaves holding the operand
values saved from the engine's forward pass, its VJP is taken with a random cotangent, and the
result is compared with JAX's VJP of the same op at the same operands.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from crossgrad import engine as cg

from . import deadline
from .backends import engine as engine_backend
from .backends import jax_backend
from .compare import Tolerance, close
from .ir import IRNode, Ref
from .model import Blame


def _values(x: Any) -> Any:
    return x.data if isinstance(x, cg.Tensor) else x


def _is_float_tensor(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def check_node(
    node: IRNode, operands: list[Any], tol: Tolerance, rng: np.random.Generator
) -> Blame | None:
    """Compare the engine's VJP of one op with JAX's at the given operand values."""
    arrays = [_values(o) for o in operands]
    leaves = [
        cg.tensor(a, requires_grad=True)
        if _is_float_tensor(a)
        else (cg.tensor(a) if isinstance(a, np.ndarray) else a)
        for a in arrays
    ]
    attrs = node.attr_dict
    with cg.enable_grad():
        out = engine_backend.LOWERING[node.op](leaves, attrs)
    outs = out if isinstance(out, tuple) else (out,)
    diff = [k for k, leaf in enumerate(leaves) if isinstance(leaf, cg.Tensor) and leaf.requires_grad]
    if not diff or not all(o.requires_grad for o in outs):
        return None
    cots = [rng.standard_normal(o.shape).astype(o.dtype) for o in outs]
    ours = cg.grad(
        list(outs),
        [leaves[k] for k in diff],
        [cg.tensor(c) for c in cots],
        allow_unused=True,
        materialize_grads=True,
    )

    def f(*xs: Any) -> Any:
        full = list(arrays)
        for k, x in zip(diff, xs):
            full[k] = x
        result = jax_backend.LOWERING[node.op](
            [jnp.asarray(v) if isinstance(v, np.ndarray) else v for v in full], attrs
        )
        return result if isinstance(result, tuple) else (result,)

    _, pullback = jax.vjp(f, *[jnp.asarray(arrays[k]) for k in diff])
    theirs = pullback(tuple(jnp.asarray(c) for c in cots))
    worst, where = 0.0, ""
    for k, g_ours, g_ref in zip(diff, ours, theirs):
        a, b = g_ours.data, np.asarray(g_ref)
        if a.shape != b.shape:
            return _blame(node, np.inf, f"operand {k}: gradient of shape {a.shape}, expected {b.shape}")
        bad = ~close(a, b, tol)
        if not bad.any():
            continue
        errors = np.where(bad, np.nan_to_num(np.abs(a - b), nan=np.inf), -1.0)
        idx = np.unravel_index(np.argmax(errors), a.shape)
        if errors[idx] >= worst:
            at = tuple(map(int, idx))
            where = f"operand {k} entry {at}: engine {float(a[idx]):.10g}, JAX {float(b[idx]):.10g}"
            worst = float(errors[idx])
    return _blame(node, worst, where) if where else None


def _blame(node: IRNode, err: float, detail: str) -> Blame:
    """node_name is the op until find_culprits names the engine's node."""
    return Blame(node.op, node.op, node.id, node.pos, node.text, err, detail)


def find_culprits(
    nodes: list[IRNode], engine_values: dict[int, Any], skip: set[int], tol: Tolerance, seed: int
) -> list[Blame]:
    """Every node whose own VJP disagrees with JAX's, in program order (nodes in `skip`, e.g. at a
    kink where conventions differ, are not judged)."""
    rng = np.random.default_rng(seed)
    culprits = []
    for node in nodes:
        deadline.checkpoint()
        if node.op in ("input", "take") or node.id in skip:
            continue
        value = engine_values[node.id]
        grad_fn = (value[0] if isinstance(value, tuple) else value).grad_fn
        if grad_fn is None:
            continue
        operands = [engine_values[a.id] if isinstance(a, Ref) else a for a in node.args]
        blame = check_node(node, operands, tol, rng)
        if blame is not None:
            blame.node_name = grad_fn.name()
            culprits.append(blame)
    return culprits
