"""What every op module shares: the registry, operand conversion, and the numpy namespace of VJPs.

VJP rules are written once against an array namespace `B` and run in two ways: with `NumpyOps`
(plain numpy, the fast path of an ordinary backward) and with the engine's own ops module (under
create_graph, so the gradient is itself recorded and can be differentiated again). The two namespaces
offer the same functions with the same signatures; a test keeps them in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import indexing
from ..graph import Node, OpImpl
from ..optable import OPS
from ..record import record
from ..tensor import Tensor

IMPLS: dict[str, OpImpl] = {}
"""The engine's implementation of every op of the table, by name."""


def define(
    name: str,
    forward: Callable[..., Any],
    vjp: Callable[..., tuple[Any, ...]] | None,
    save: str | tuple[int, ...] | Callable[[dict[str, Any]], tuple[Any, bool]] = "all",
    save_output: bool = False,
    n_outputs: int = 1,
) -> OpImpl:
    if name in FLOATS_ONLY:
        forward = _floats_only(name, forward)
    impl = OpImpl(OPS[name], forward, vjp, save, save_output, n_outputs)
    IMPLS[name] = impl
    return impl


# Ops torch computes for floating point tensors only: an int64 tensor is its error, not an
# implicit cast (the engine computed silu of int64 in float64). The message is torch's.
FLOATS_ONLY = {
    "silu": '"silu_cpu" not implemented for',
    "gelu": '"GeluKernelImpl" not implemented for',
    "softplus": '"softplus_cpu" not implemented for',
    "leaky_relu": '"leaky_relu_cpu" not implemented for',
    "softmax": '"softmax_lastdim_kernel_impl" not implemented for',
    "log_softmax": '"log_softmax_lastdim_kernel_impl" not implemented for',
    "mse_loss": '"mse_cpu" not implemented for',
    "mean": "mean(): could not infer output dtype. Input dtype must be either a floating point or "
    "complex dtype. Got:",
    "var": "std and var only support floating point and complex dtypes; got",
    "std": "std and var only support floating point and complex dtypes; got",
    "norm": "linalg.vector_norm: Expected a floating point or complex tensor as input. Got",
}
_TORCH_NAMES = {
    "float32": "Float",
    "float64": "Double",
    "int64": "Long",
    "int32": "Int",
    "bool": "Bool",
    "uint8": "Byte",
}


def torch_dtype_name(dtype: Any) -> str:
    """torch's name of a dtype in its messages (Float, Double, Long, ...)."""
    name = np.dtype(dtype).name
    return _TORCH_NAMES.get(name, name)


def _floats_only(name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
    def checked(x: Any, *args: Any, **kwargs: Any) -> Any:
        kind = getattr(x, "dtype", np.dtype(np.float64)).kind
        if kind not in "fc":
            raise NotImplementedError(f"{FLOATS_ONLY[name]} '{torch_dtype_name(x.dtype)}'")
        return forward(x, *args, **kwargs)

    return checked


def operand(x: Any) -> Any:
    """A Tensor or a python number stays as it is (numbers adopt the tensor's dtype, as in torch;
    numpy scalars such as np.float64 become python numbers first, or numpy would keep their dtype)."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (Tensor, int, float)):
        return x
    if isinstance(x, np.ndarray):
        return Tensor._make(x)
    return Tensor(x)


def tensor_operand(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def apply(impl: OpImpl, *operands: Any, **attrs: Any) -> Any:
    return record(impl, operands, attrs)


# ---------------------------------------------------------------- helpers used by VJP rules


def batch_dims(node: Node, g: Any) -> int:
    """How many leading batch dimensions the cotangent carries (jacobian pushes a batch at once)."""
    return g.ndim - len(node._out_meta[0][0])


def unbroadcast(B: Any, g: Any, shape: tuple[int, ...], nb: int) -> Any:
    """Sum g (batch + broadcast shape) back down to batch + shape, the adjoint of broadcasting."""
    gshape = g.shape[nb:]
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    axes = tuple(range(nb, nb + lead)) + tuple(
        nb + lead + i for i, d in enumerate(shape) if d == 1 and gshape[lead + i] != 1
    )
    if axes:
        g = B.sum(g, axis=axes, keepdims=True)
    return B.reshape(g, g.shape[:nb] + shape)


def keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def restore_reduced(B: Any, g: Any, node: Node, axes: tuple[int, ...], keepdims: bool) -> Any:
    """Reshape the cotangent of a reduction so it broadcasts against the input (batch-aware)."""
    if keepdims:
        return g
    nb = batch_dims(node, g)
    return B.reshape(g, g.shape[:nb] + keepdims_shape(node._in_meta[0][0], axes))


def data(x: Any) -> Any:
    """The numpy value behind x, for constants (masks, indices) inside a VJP rule."""
    return x.data if isinstance(x, Tensor) else x


class NumpyOps:
    """The numpy namespace for VJP rules: same names and signatures as the engine's ops."""

    abs = staticmethod(np.abs)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    tanh = staticmethod(np.tanh)
    sign = staticmethod(np.sign)
    where = staticmethod(np.where)
    matmul = staticmethod(np.matmul)
    reshape = staticmethod(np.reshape)
    broadcast_to = staticmethod(np.broadcast_to)
    zeros_like = staticmethod(np.zeros_like)

    @staticmethod
    def sigmoid(x: Any) -> Any:
        return _sigmoid(x)

    @staticmethod
    def threshold_backward(g: Any, result: Any) -> Any:
        """relu's gradient: g where the result is positive (0 at 0; nan passes g, as torch)."""
        return np.where(result <= 0, 0.0, g)

    @staticmethod
    def erf(x: Any) -> Any:
        from .elementwise import _erf  # (elementwise imports this module)

        return _erf(x)

    @staticmethod
    def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return add_reduce(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def transpose(x: Any, dim0: int = 0, dim1: int = 1) -> Any:
        return np.swapaxes(x, dim0, dim1)

    @staticmethod
    def permute(x: Any, dims: Any) -> Any:
        return np.transpose(x, dims)

    @staticmethod
    def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return np.prod(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def flip(x: Any, axis: Any = None) -> Any:
        return np.flip(x, axis)

    @staticmethod
    def concat(xs: Any, axis: int = 0) -> Any:
        return np.concatenate(xs, axis)

    @staticmethod
    def pad(x: Any, pad: Any, value: float = 0.0) -> Any:
        return _pad(x, pad, value)

    @staticmethod
    def getitem(x: Any, index: Any, nb: int = 0) -> Any:
        return indexing.getitem(x, index, nb)

    @staticmethod
    def index_scatter(g: Any, index: Any, shape: Any) -> Any:
        return indexing.index_scatter(g, index, tuple(shape))

    @staticmethod
    def to_dtype(x: Any, dtype: Any) -> Any:
        return np.asarray(x, dtype)

    data = staticmethod(data)


# ufunc.reduce directly: np.sum, np.max and np.mean add several microseconds of Python dispatch,
# as much as the arithmetic on small arrays.
add_reduce, max_reduce, min_reduce = np.add.reduce, np.maximum.reduce, np.minimum.reduce


def _sigmoid(x: Any) -> Any:
    # exp of a non-positive number only: no overflow warnings for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(np.asarray(x) >= 0, 1 / (1 + e), e / (1 + e))


def _pad(x: np.ndarray, pad: Any, value: float) -> np.ndarray:
    if not pad:
        return np.array(x)
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (int(pad[2 * k]), int(pad[2 * k + 1]))
    return np.pad(x, widths, constant_values=value)
