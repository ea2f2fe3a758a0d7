"""Tensor operators and methods, defined in terms of the engine's ops (torch spellings accepted:
dim/keepdim for axis/keepdims, varargs shapes for reshape/permute/expand)."""

from __future__ import annotations

from typing import Any

from . import ops
from .tensor import Tensor


def _axis_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "dim" in kwargs:
        kwargs["axis"] = kwargs.pop("dim")
    if "keepdim" in kwargs:
        kwargs["keepdims"] = kwargs.pop("keepdim")
    return kwargs


def _method(fn: Any) -> Any:
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        return fn(self, *args, **_axis_kwargs(kwargs))

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


def _shape_args(args: tuple[Any, ...]) -> Any:
    return args[0] if len(args) == 1 and not isinstance(args[0], int) else args


_PLAIN = """
abs exp log log1p expm1 sqrt reciprocal sin cos tan tanh sigmoid relu sign floor round clamp
sum mean prod max min amax amin logsumexp var std norm matmul dot outer flatten squeeze
unsqueeze transpose flip softmax log_softmax clone masked_fill argmax argmin split
maximum minimum neg pow
""".split()  # noqa: SIM905 - easier to read than a list

for _name in _PLAIN:
    setattr(Tensor, _name, _method(getattr(ops, _name)))


def _reshape(self: Tensor, *shape: Any) -> Tensor:
    return ops.reshape(self, _shape_args(shape))


def _permute(self: Tensor, *dims: Any) -> Tensor:
    return ops.permute(self, _shape_args(dims))


def _expand(self: Tensor, *shape: Any) -> Tensor:
    return ops.expand(self, _shape_args(shape))


Tensor.reshape = _reshape
Tensor.view = _reshape
Tensor.permute = _permute
Tensor.expand = _expand
Tensor.broadcast_to = _method(ops.broadcast_to)
Tensor.T = property(lambda self: ops.permute(self, tuple(reversed(range(self.ndim)))))
Tensor.mT = property(lambda self: ops.transpose(self, -2, -1))
Tensor.__getitem__ = lambda self, index: ops.getitem(self, index)

Tensor.__add__ = lambda self, other: ops.add(self, other)
Tensor.__radd__ = lambda self, other: ops.add(self, other)  # torch: tensor operand first
Tensor.__sub__ = lambda self, other: ops.sub(self, other)
Tensor.__rsub__ = lambda self, other: ops.sub(other, self)
Tensor.__mul__ = lambda self, other: ops.mul(self, other)
Tensor.__rmul__ = lambda self, other: ops.mul(self, other)
Tensor.__truediv__ = lambda self, other: ops.div(self, other)
Tensor.__rtruediv__ = lambda self, other: ops.div(other, self)
Tensor.__pow__ = lambda self, other: ops.pow(self, other)
Tensor.__rpow__ = lambda self, other: ops.pow(other, self)
Tensor.__matmul__ = lambda self, other: ops.matmul(self, other)
Tensor.__rmatmul__ = lambda self, other: ops.matmul(other, self)
Tensor.__neg__ = lambda self: ops.neg(self)
Tensor.__pos__ = lambda self: self
Tensor.__abs__ = lambda self: ops.abs(self)
Tensor.__lt__ = lambda self, other: ops.lt(self, other)
Tensor.__le__ = lambda self, other: ops.le(self, other)
Tensor.__gt__ = lambda self, other: ops.gt(self, other)
Tensor.__ge__ = lambda self, other: ops.ge(self, other)
Tensor.__eq__ = lambda self, other: ops.eq(self, other)
Tensor.__ne__ = lambda self, other: ops.ne(self, other)
