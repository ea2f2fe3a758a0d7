"""Neural-network functions: softmax, log_softmax and losses."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph import Node
from ..optable import normalize_axis
from ..tensor import Tensor
from .core import (
    add_reduce,
    apply,
    batch_dims,
    data,
    define,
    max_reduce,
    min_reduce,
    operand,
    tensor_operand,
)


def _axis_from_end(n: Node) -> int:
    nd = len(n._in_meta[0][0])
    return normalize_axis(n.op, n._attrs["axis"], max(nd, 1)) - max(nd, 1)


def _log_softmax_fwd(x: np.ndarray, axis: int) -> np.ndarray:
    if x.ndim == 0:
        return np.zeros_like(x)
    m = max_reduce(x, axis=axis, keepdims=True)
    if np.isneginf(m).any():  # rows all -inf: shifted by 0, as torch does (a +inf row is all nan)
        m = np.where(np.isneginf(m), 0, m)
    shifted = x - m
    return shifted - np.log(add_reduce(np.exp(shifted), axis=axis, keepdims=True))


def _softmax_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    out = s[-1]
    if n._in_meta[0][0] == ():  # (a 0-d softmax is 1: its gradient 0, but through the output,
        # as torch's: a second backward reaches x; g * 0 was a constant, "does not require grad")
        return (out * (g - g * out),)
    return (out * (g - B.sum(g * out, axis=_axis_from_end(n), keepdims=True)),)


def _log_softmax_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    if n._in_meta[0][0] == ():  # (as softmax's)
        return (g - B.exp(s[-1]) * g,)
    return (g - B.exp(s[-1]) * B.sum(g, axis=_axis_from_end(n), keepdims=True),)


_SOFTMAX = define(
    "softmax", lambda x, axis: np.exp(_log_softmax_fwd(x, axis)), _softmax_vjp, "none", True
)
_LOG_SOFTMAX = define("log_softmax", _log_softmax_fwd, _log_softmax_vjp, "none", True)


def softmax(x: Any, axis: int = -1) -> Tensor:
    return apply(_SOFTMAX, tensor_operand(x), axis=int(axis))


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    return apply(_LOG_SOFTMAX, tensor_operand(x), axis=int(axis))


def _reduce_loss(values: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return add_reduce(values, axis=None) / values.size
    if reduction == "sum":
        return add_reduce(values, axis=None)
    return values


def _loss_scale(B: Any, n: Node, g: Any) -> Any:
    """The loss cotangent shaped to broadcast over the input (batch dims in front), with the
    1/N of a mean reduction."""
    shape = n._in_meta[0][0]
    reduction = n._attrs["reduction"]
    if reduction == "none":
        return g
    g = B.reshape(g, g.shape[: batch_dims(n, g)] + (1,) * len(shape))
    return g / max(int(np.prod(shape)), 1) if reduction == "mean" else g


def _check_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


def _mse_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    gx = _loss_scale(B, n, g) * (2 * (s[0] - s[1]))
    return (gx if n._needs[0] else None, -gx if n._needs[1] else None)


_MSE = define("mse_loss", lambda x, y, reduction: _reduce_loss((x - y) ** 2, reduction), _mse_vjp)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    x, y = tensor_operand(input), tensor_operand(target)
    _MSE.spec.shape_rule("mse_loss", x.shape, y.shape, reduction=reduction)
    return apply(_MSE, x, y, reduction=_check_reduction(reduction))


def _bce_fwd(x: np.ndarray, y: np.ndarray, reduction: str) -> np.ndarray:
    # (1 - y) x + max(-x, 0) + log(1 + exp(-|x|)), torch's form: stable for large |x|, and at
    # x = inf it is inf, where max(x, 0) - x y would be inf - inf = nan
    return _reduce_loss((1 - y) * x + np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x))), reduction)


def _bce_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    x, y = s[0], s[1]
    gs = _loss_scale(B, n, g)
    return (
        gs * (B.sigmoid(x) - y) if n._needs[0] else None,
        gs * -x if n._needs[1] else None,
    )


_BCE = define("binary_cross_entropy_with_logits", _bce_fwd, _bce_vjp)


def binary_cross_entropy_with_logits(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    x, y = tensor_operand(input), tensor_operand(target)
    _BCE.spec.shape_rule("binary_cross_entropy_with_logits", x.shape, y.shape)
    return apply(_BCE, x, y, reduction=_check_reduction(reduction))


def _nll_fwd(logp: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    picked = -logp[np.arange(len(target)), target.astype(np.intp)]
    return _reduce_loss(picked, reduction)


def _nll_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, None]:
    (shape, dtype), reduction = n._in_meta[0], n._attrs["reduction"]
    onehot = np.zeros(shape, dtype)
    onehot[np.arange(shape[0]), np.asarray(data(s[1])).astype(np.intp)] = -1
    if reduction == "none":
        return (B.reshape(g, (*g.shape, 1)) * onehot, None)
    g = B.reshape(g, (*g.shape, 1, 1))
    return ((g / shape[0] if reduction == "mean" else g) * onehot, None)


_NLL = define("nll_loss", _nll_fwd, _nll_vjp)


def _targets(target: Any, classes: int) -> Tensor:
    t = target if isinstance(target, Tensor) else Tensor(np.asarray(target))
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, got dtype {t.dtype}")
    if t.numel() and (min_reduce(t.data, None) < 0 or max_reduce(t.data, None) >= classes):
        raise IndexError(f"target {t.data.tolist()} is out of bounds for {classes} classes")
    return t


def nll_loss(log_probs: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer targets (N,) under log-probabilities (N, C)."""
    x = tensor_operand(log_probs)
    t = _targets(target, x.shape[-1] if x.ndim else 0)
    _NLL.spec.shape_rule("nll_loss", x.shape, t.shape, reduction=reduction)
    return apply(_NLL, x, t, reduction=_check_reduction(reduction))


def cross_entropy(logits: Any, target: Any, reduction: str = "mean") -> Tensor:
    """nll_loss(log_softmax(logits)): logits (N, C), integer targets (N,), as torch composes it."""
    x = tensor_operand(logits)
    _NLL.spec.shape_rule("cross_entropy", x.shape, np.shape(data(operand(target))))
    return nll_loss(log_softmax(x, axis=1), target, reduction)


COMPOSITES = {"cross_entropy": cross_entropy}
"""Ops of the table that the engine builds from other ops (torch composes them the same way)."""
