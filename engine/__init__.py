"""crossgrad's reverse-mode autodiff engine: numpy underneath, PyTorch autograd's semantics on top.

>>> from crossgrad import engine as cg
>>> a = cg.tensor([2.0, 3.0], requires_grad=True)
>>> b = cg.tensor([6.0, 4.0], requires_grad=True)
>>> Q = 3 * a**3 - b**2
>>> Q.backward(gradient=[1.0, 1.0])
>>> a.grad, b.grad
(tensor([36., 81.]), tensor([-12.,  -8.]))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import autograd, methods  # noqa: F401 - methods attaches Tensor's operators
from .autograd import backward, grad
from .dot import to_dot, write_graph
from .functional import hessian, jacobian, jvp, vjp
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .graph import AccumulateGrad, Node, RemovableHandle
from .ops import *  # noqa: F403 - every op is part of the engine's API
from .ops import __all__ as _ops_all
from .optable import OPS, OpSpec, ShapeError
from .tensor import Tensor


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A new tensor (a copy of data); float64 unless dtype says otherwise or data is float32."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape: Any, dtype: Any = np.float64, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_shape(shape), dtype), requires_grad=requires_grad)


def ones(*shape: Any, dtype: Any = np.float64, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_shape(shape), dtype), requires_grad=requires_grad)


def _shape(shape: tuple[Any, ...]) -> tuple[int, ...]:
    return tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape


__all__ = [
    "OPS",
    "AccumulateGrad",
    "Node",
    "OpSpec",
    "RemovableHandle",
    "ShapeError",
    "Tensor",
    "autograd",
    "backward",
    "enable_grad",
    "grad",
    "hessian",
    "is_grad_enabled",
    "jacobian",
    "jvp",
    "no_grad",
    "ones",
    "set_grad_enabled",
    "tensor",
    "to_dot",
    "vjp",
    "write_graph",
    "zeros",
    *_ops_all,
]
