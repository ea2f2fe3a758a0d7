"""Functional derivatives: jacobian (one batched backward pass), vjp, jvp and hessian."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import ops
from .autograd import grad
from .grad_mode import enable_grad
from .tensor import Tensor

JACOBIAN_CHUNK_ELEMENTS = 1 << 22
"""Cap on (rows in one batched pass) x (largest output or input size): bounds the memory that
the batch of cotangents takes in every node (32 MiB of float64 per array at the cap)."""


def _prepare(inputs: Any, create_graph: bool) -> tuple[bool, tuple[Tensor, ...]]:
    single = not isinstance(inputs, (tuple, list))
    items = (inputs,) if single else tuple(inputs)
    xs = []
    for x in items:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if create_graph and x.requires_grad:
            xs.append(ops.reshape(x, x.shape))  # keep the link to the caller's graph
        else:
            xs.append(Tensor._make(x.data).requires_grad_(True))
    return single, tuple(xs)


def _outputs(func: Callable[..., Any], xs: tuple[Tensor, ...]) -> tuple[bool, tuple[Tensor, ...]]:
    with enable_grad():
        out = func(*xs)
    if isinstance(out, Tensor):
        return True, (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(o, Tensor) for o in out):
        return False, tuple(out)
    raise TypeError(f"the function must return a Tensor or a tuple of Tensors, got {type(out)}")


def _shape_result(rows: list[list[Any]], single_out: bool, single_in: bool) -> Any:
    per_out = [r[0] if single_in else tuple(r) for r in rows]
    return per_out[0] if single_out else tuple(per_out)


def jacobian(
    func: Callable[..., Any],
    inputs: Any,
    create_graph: bool = False,
    strict: bool = False,
    vectorize: bool | None = None,
    strategy: str = "reverse-mode",
    chunk_size: int | None = None,
) -> Any:
    """d func(inputs) / d inputs, shaped output.shape + input.shape for each (output, input).

    Arguments in torch.autograd.functional.jacobian's order. vectorize=True computes all rows of
    an output's Jacobian in one backward pass: the cotangent (an identity matrix) carries a
    leading batch dimension through every VJP rule, chunked to bound memory. vectorize=False
    runs one backward pass per row (the same values). Left out, it is True unless strict (torch's
    default is False; the engine's default is the fast one wherever torch allows it).
    strict=True raises, as torch, where an output does not depend on an input, and together
    with vectorize=True. strategy="forward-mode" is checked as torch checks it, and the Jacobian
    (the same values) is computed in reverse mode: the engine has no forward mode.
    """
    vectorize = not strict if vectorize is None else vectorize
    _check_strategy(strategy, create_graph, strict, vectorize)
    single_in, xs = _prepare(inputs, create_graph)
    single_out, outs = _outputs(func, xs)
    if strict:
        _strict_outputs(outs)
        if vectorize:
            raise RuntimeError(
                "torch.autograd.functional.jacobian: `strict=True` and `vectorized=True` are not "
                "supported together. Please either set `strict=False` or `vectorize=False`."
            )
    rows = []
    for i, out in enumerate(outs):
        m = out.data.size
        blocks: list[list[Any]] = [[] for _ in xs]
        if out.requires_grad and m:
            if vectorize:
                biggest = max([m, *(x.data.size for x in xs)])
                step = chunk_size or max(1, JACOBIAN_CHUNK_ELEMENTS // biggest)
                for start in range(0, m, step):
                    cot = identity_rows(start, min(start + step, m), m, out.dtype)
                    cot = cot.reshape(-1, *out.shape)
                    gs = _vjp_rows(out, xs, cot, create_graph, True, strict, i)
                    for b, g in zip(blocks, gs):
                        b.append(g)
            else:
                for r in range(m):  # (i is the output's index, which strict's errors name)
                    row = identity_rows(r, r + 1, m, out.dtype).reshape(out.shape)
                    gs = _vjp_rows(out, xs, row, create_graph, False, strict, i)
                    for b, g in zip(blocks, gs):
                        b.append(ops.reshape(g, (1, *g.shape)) if create_graph else g.data[None])
        row = []
        for x, b in zip(xs, blocks):
            if not b:
                row.append(Tensor._make(np.zeros(out.shape + x.shape, x.dtype)))
            elif create_graph:
                row.append(ops.reshape(ops.concat(b) if len(b) > 1 else b[0], out.shape + x.shape))
            else:
                full = np.concatenate([getattr(g, "data", g) for g in b])
                row.append(Tensor._make(full.reshape(out.shape + x.shape)))
        rows.append(row)
    return _shape_result(rows, single_out, single_in)


def identity_rows(start: int, stop: int, m: int, dtype: Any) -> np.ndarray:
    """Rows start..stop of the m x m identity, without building the rest of it."""
    rows = np.zeros((stop - start, m), dtype=dtype)
    rows[np.arange(stop - start), np.arange(start, stop)] = 1
    return rows


def _vjp_rows(
    out: Tensor,
    xs: tuple[Tensor, ...],
    cot: np.ndarray,
    create_graph: bool,
    batched: bool,
    strict: bool = False,
    i: int = 0,
) -> tuple[Any, ...]:
    gs = grad(
        out,
        xs,
        cot,
        retain_graph=True,
        create_graph=create_graph,
        allow_unused=True,
        materialize_grads=not strict,  # strict: an input no gradient reached is an error
        is_grads_batched=batched,
    )
    for k, g in enumerate(gs if strict else ()):  # torch's messages (i: output i, as torch)
        if g is None:
            raise RuntimeError(
                f"Output {i} of the user-provided function is independent of input {k}. This is "
                "not allowed in strict mode."
            )
        if create_graph and not g.requires_grad:
            raise RuntimeError(
                f"The jacobian of the user-provided function is independent of input {i}. This "
                "is not allowed in strict mode when create_graph=True."
            )
    return gs


def _check_strategy(strategy: str, create_graph: bool, strict: bool, vectorize: bool) -> None:
    """torch's checks of jacobian's strategy, and its errors."""
    if strategy not in ("forward-mode", "reverse-mode"):
        raise ValueError(
            'Expected strategy to be either "forward-mode" or "reverse-mode". Hint: If your '
            'function has more outputs than inputs, "forward-mode" tends to be more performant. '
            'Otherwise, prefer to use "reverse-mode".'
        )
    if strategy == "reverse-mode":
        return
    if create_graph:
        raise NotImplementedError(
            "torch.autograd.functional.jacobian: `create_graph=True` and "
            '`strategy="forward-mode"` are not supported together (yet). Please either set '
            '`create_graph=False` or `strategy="reverse-mode"`.'
        )
    if strict:
        raise RuntimeError(
            'torch.autograd.functional.jacobian: `strict=True` and `strategy="forward-mode"` '
            "are not supported together (yet). Please either set `strict=False` or "
            '`strategy="reverse-mode"`.'
        )
    if not vectorize:
        raise NotImplementedError(
            "Computing Jacobian using forward-AD or forward-over-reverse Hessian is only "
            "implemented for `vectorize=True`."
        )


def _strict_outputs(outs: tuple[Tensor, ...]) -> None:
    for i, out in enumerate(outs):
        if not out.requires_grad:
            raise RuntimeError(
                f"Output {i} of the user-provided function does not require gradients. The "
                "outputs must be computed in a differentiable manner from the input when "
                "running in strict mode."
            )


def vjp(
    func: Callable[..., Any], inputs: Any, v: Any = None, create_graph: bool = False
) -> tuple[Any, Any]:
    """(func(inputs), vᵀ J): the vector-Jacobian product, v shaped like the output(s)."""
    single_in, xs = _prepare(inputs, create_graph)
    single_out, outs = _outputs(func, xs)
    vs = (v,) if single_out else tuple(v) if v is not None else (None,) * len(outs)
    # outputs that do not depend on the inputs contribute nothing (torch's functional vjp)
    live = [(o, vi) for o, vi in zip(outs, vs) if o.requires_grad]
    if live:
        gs = grad(
            [o for o, _ in live],
            xs,
            None if all(vi is None for _, vi in live) else [vi for _, vi in live],
            retain_graph=create_graph,
            create_graph=create_graph,
            allow_unused=True,
            materialize_grads=True,
        )
    else:
        gs = tuple(Tensor._make(np.zeros_like(x.data)) for x in xs)
    outputs = outs if create_graph else tuple(o.detach() for o in outs)
    return (outputs[0] if single_out else outputs), (gs[0] if single_in else gs)


def jvp(
    func: Callable[..., Any], inputs: Any, v: Any = None, create_graph: bool = False
) -> tuple[Any, Any]:
    """(func(inputs), J v): the Jacobian-vector product, v shaped like the input(s).

    Computed by the double-vjp trick: vᵀ J is linear in the cotangent u, so differentiating
    uᵀ J with respect to u along v gives J v (this needs VJP rules that are themselves
    differentiable, which the engine's are).
    """
    single_in, xs = _prepare(inputs, create_graph)
    single_out, outs = _outputs(func, xs)
    vs = (v,) if single_in else tuple(v) if v is not None else (None,) * len(xs)
    if v is None and not all(x.data.size == 1 for x in xs):
        raise RuntimeError("jvp: v can be omitted only when every input has one element")
    vs = tuple(np.ones_like(x.data) if vi is None else getattr(vi, "data", vi) for x, vi in zip(xs, vs))
    us = tuple(Tensor(np.zeros_like(o.data), requires_grad=True) for o in outs)
    live = [k for k, o in enumerate(outs) if o.requires_grad]
    results: list[Any] = [Tensor._make(np.zeros_like(o.data)) for o in outs]
    if live:
        gs = grad(
            [outs[k] for k in live], xs, [us[k] for k in live], create_graph=True, allow_unused=True
        )
        pairs = [(g, vi) for g, vi in zip(gs, vs) if g is not None and g.requires_grad]
        if pairs:
            jv = grad(
                [g for g, _ in pairs],
                [us[k] for k in live],
                [vi for _, vi in pairs],
                create_graph=create_graph,
                allow_unused=True,
                materialize_grads=True,
            )
            for k, j in zip(live, jv):
                results[k] = j
    outputs = outs if create_graph else tuple(o.detach() for o in outs)
    return (outputs[0] if single_out else outputs), (results[0] if single_out else tuple(results))


def hessian(
    func: Callable[..., Any],
    inputs: Any,
    create_graph: bool = False,
    strict: bool = False,
    vectorize: bool | None = None,
    outer_jacobian_strategy: str = "reverse-mode",
) -> Any:
    """Second derivatives of a scalar func: the Jacobian of its gradient (shape in.shape*2).

    Arguments in torch.autograd.functional.hessian's order; create_graph=True records the
    Hessian so that it can be differentiated (as torch); strict, vectorize and the strategy as
    in jacobian.
    """
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise ValueError('Expected strategy to be either "forward-mode" or "reverse-mode".')
    single_in = not isinstance(inputs, (tuple, list))

    def gradient(*xs: Tensor) -> Any:
        out = func(*xs)
        if not isinstance(out, Tensor) or out.data.size != 1:
            raise RuntimeError("hessian: the function must return a single-element Tensor")
        if strict:
            _strict_outputs((out,))
        if not out.requires_grad:  # independent of the inputs: zero, as torch's hessian says
            gs = tuple(Tensor._make(np.zeros_like(x.data)) for x in xs)
        else:
            gs = grad(out.reshape(()), xs, create_graph=True, allow_unused=True, materialize_grads=True)
        for k, g in enumerate(gs if strict else ()):
            if not g.requires_grad:
                raise RuntimeError(
                    "While computing the hessian, found that the jacobian of the user-provided "
                    f"function with respect to input {k} is independent of the input. This is "
                    "not allowed in strict mode. You should ensure that your function is twice "
                    "differentiable and that the jacobian depends on the inputs (this would be "
                    "violated by a linear function for example)."
                )
        return gs[0] if single_in else gs

    return jacobian(
        gradient,
        inputs,
        create_graph=create_graph,
        strict=strict,
        vectorize=vectorize,
        strategy=outer_jacobian_strategy,
    )
