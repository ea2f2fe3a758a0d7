"""Tensor operators and methods, defined in terms of the engine's ops (torch spellings accepted:
dim/keepdim for axis/keepdims, varargs shapes for reshape/permute/expand)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from . import ops
from .ops.reductions import max_along, min_along
from .optable import OPS
from .tensor import Tensor


def _axis_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "dim" in kwargs:
        kwargs["axis"] = kwargs.pop("dim")
    if "keepdim" in kwargs:
        kwargs["keepdims"] = kwargs.pop("keepdim")
    return kwargs


def _no_dims_means_all(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """torch reduces over every dimension for dim=() (numpy's axis=() reduces over none)."""
    if args and isinstance(args[0], (tuple, list)) and not args[0]:
        args = (None, *args[1:])
    if isinstance(kwargs.get("axis"), (tuple, list)) and not kwargs["axis"]:
        kwargs["axis"] = None
    return args


def _method(fn: Any, reduction: bool = False, torch_args: Any = None) -> Any:
    """fn as a Tensor method taking torch's spellings; a reduction also takes torch's dim=();
    torch_args(args, kwargs) translates what else differs."""

    @functools.wraps(fn)
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        kwargs = _axis_kwargs(kwargs)
        if reduction:
            args = _no_dims_means_all(args, kwargs)
        if torch_args is not None:
            args = torch_args(args, kwargs)
        return fn(self, *args, **kwargs)

    return method


def _unbiased_as_correction(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """var/std's torch forms (dim, unbiased, keepdim), (unbiased) and unbiased=: False is
    correction=0."""
    if "unbiased" in kwargs:
        kwargs["correction"] = int(bool(kwargs.pop("unbiased")))
    at = 0 if args and isinstance(args[0], bool) else 1
    if len(args) > at and isinstance(args[at], bool):
        kwargs["correction"] = int(args[at])
        args = args[:at] + args[at + 1 :]
    return args


def _norm_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Tensor.norm(p, dim, keepdim): p= is ord ("fro" is 2 over a tensor's entries), and dim=()
    is every dimension, as for the other reductions."""
    if "p" in kwargs:
        kwargs["ord"] = kwargs.pop("p")
    if kwargs.get("ord") == "fro":
        kwargs["ord"] = 2.0
    if args and isinstance(args[0], str) and args[0] == "fro":
        args = (2.0, *args[1:])
    if isinstance(kwargs.get("axis"), (tuple, list)) and not kwargs["axis"]:
        kwargs["axis"] = None
    if len(args) > 1 and isinstance(args[1], (tuple, list)) and not args[1]:
        args = (args[0], None, *args[2:])
    return args


def _one_dim_at_least(name: str) -> Any:
    """prod and logsumexp take no dim=() (torch refuses it; numpy's axis=() reduces nothing)."""

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        dims = args[0] if args else kwargs.get("axis")
        if isinstance(dims, (tuple, list)) and not dims:
            raise TypeError(f"{name}(): dim=() names no dimension: give one, or none for all")
        return args

    return check


def _shape_args(args: tuple[Any, ...]) -> Any:
    return args[0] if len(args) == 1 and not isinstance(args[0], int) else args


_PLAIN = """
abs exp log log1p expm1 sqrt reciprocal sin cos tan tanh sigmoid relu sign floor round clamp
sum mean prod amax amin logsumexp norm matmul dot outer flatten squeeze
unsqueeze transpose flip softmax log_softmax clone masked_fill argmax argmin split
maximum minimum neg pow
""".split()  # noqa: SIM905 - easier to read than a list

_ELEMENTWISE = {n for n, spec in OPS.items() if spec.arity == 1 and not spec.attrs}
_REDUCTIONS = {"sum", "mean", "amax", "amin"}  # torch reduces over every dim for dim=()

for _name in _PLAIN:
    _fn = getattr(ops, _name)
    # Ops without attributes need no translation of torch's keyword spellings: bind them directly.
    setattr(Tensor, _name, _fn if _name in _ELEMENTWISE else _method(_fn, _name in _REDUCTIONS))
Tensor.norm = _method(ops.norm, torch_args=_norm_args)
Tensor.prod = _method(ops.prod, torch_args=_one_dim_at_least("prod"))
Tensor.logsumexp = _method(ops.logsumexp, torch_args=_one_dim_at_least("logsumexp"))


def _reshape(self: Tensor, *shape: Any) -> Tensor:
    return ops.reshape(self, _shape_args(shape))


def _view(self: Tensor, *shape: Any) -> Tensor:
    """This tensor with another shape, sharing its memory (torch's view): where that would need
    a copy (x.T.view(4)) torch's error, never a copy that in-place changes would miss."""
    out = ops.reshape(self, _shape_args(shape))
    if out.data.size and not np.may_share_memory(out.data, self.data):
        raise RuntimeError(
            "view size is not compatible with input tensor's size and stride (at least one "
            "dimension spans across two contiguous subspaces). Use .reshape(...) instead."
        )
    return out


def _permute(self: Tensor, *dims: Any) -> Tensor:
    return ops.permute(self, _shape_args(dims))


def _expand(self: Tensor, *shape: Any) -> Tensor:
    return ops.expand(self, _shape_args(shape))


class MaxMin(NamedTuple):
    """What torch's Tensor.max(dim) and min(dim) return: the values and their indices."""

    values: Tensor
    indices: Tensor


def _extremum_method(values: Any, along: Any) -> Any:
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        kwargs = _axis_kwargs(kwargs)
        if (args[0] if args else kwargs.get("axis")) is None:
            return values(self, *args, **kwargs)  # over every entry: one value, as in torch
        return MaxMin(*along(self, *args, **kwargs))

    method.__name__ = values.__name__
    method.__doc__ = f"{values.__doc__} Along an axis: (values, indices), as in torch."
    return method


def _to(self: Tensor, dtype: Any) -> Tensor:
    """This tensor in another dtype (itself if it has it already); the gradient flows back."""
    return self if self.dtype == np.dtype(dtype) else ops.to_dtype(self, dtype)


Tensor.max = _extremum_method(ops.max, max_along)
Tensor.min = _extremum_method(ops.min, min_along)
Tensor.to = _to
Tensor.float = lambda self: _to(self, np.float32)
Tensor.double = lambda self: _to(self, np.float64)
Tensor.var = _method(ops.var, True, _unbiased_as_correction)
Tensor.std = _method(ops.std, True, _unbiased_as_correction)
Tensor.reshape = _reshape
Tensor.view = _view
Tensor.permute = _permute
Tensor.expand = _expand
Tensor.broadcast_to = _method(ops.broadcast_to)
Tensor.T = property(lambda self: ops.permute(self, tuple(reversed(range(self.ndim)))))
Tensor.mT = property(lambda self: ops.transpose(self, -2, -1))
Tensor.__getitem__ = lambda self, index: ops.getitem(self, index)

# Functions bound directly (self is the first operand) save a call on the hot path.
Tensor.__add__ = ops.add
Tensor.__radd__ = ops.add  # torch: the tensor operand comes first in next_functions
Tensor.__sub__ = ops.sub
Tensor.add = ops.add  # x.add(y, alpha=2): x + 2 * y, as torch
Tensor.sub = ops.sub
Tensor.__rsub__ = lambda self, other: ops.sub(other, self)
Tensor.__mul__ = ops.mul
Tensor.__rmul__ = ops.mul
Tensor.__truediv__ = ops.div
Tensor.__rtruediv__ = lambda self, other: ops.div(other, self)
Tensor.__pow__ = ops.pow
Tensor.__rpow__ = lambda self, other: ops.pow(other, self)
Tensor.__matmul__ = ops.matmul
Tensor.__rmatmul__ = lambda self, other: ops.matmul(other, self)
Tensor.__neg__ = ops.neg
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = lambda self: ops.abs(self)
Tensor.__lt__ = lambda self, other: ops.lt(self, other)
Tensor.__le__ = lambda self, other: ops.le(self, other)
Tensor.__gt__ = lambda self, other: ops.gt(self, other)
Tensor.__ge__ = lambda self, other: ops.ge(self, other)
Tensor.__eq__ = lambda self, other: ops.eq(self, other)
Tensor.__ne__ = lambda self, other: ops.ne(self, other)
