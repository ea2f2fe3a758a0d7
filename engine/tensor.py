"""Tensor: a numpy array plus what autograd needs (requires_grad, grad, grad_fn)."""

from __future__ import annotations

import operator
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .grad_mode import _state
from .graph import AccumulateGrad, Node, RemovableHandle

# torch's words (TensorBody.h), for .grad read on a tensor that is neither a leaf nor retains it
_NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
    "attribute won't be populated during autograd.backward(). If you indeed want the .grad field "
    "to be populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. If you "
    "access the non-leaf Tensor by mistake, make sure you access the leaf Tensor instead. See "
    "github.com/pytorch/pytorch/pull/30531 for more information."
)


def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=dtype)
    arr = np.array(data)
    # float64 by default, as the engine's users expect; integer and boolean arrays keep their dtype
    # (targets, indices, masks), and python numbers and lists of them become float64.
    if arr.dtype.kind in "iub" and not isinstance(data, (np.ndarray, np.generic)):
        return arr.astype(np.float64)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"unsupported tensor data of dtype {arr.dtype}")
    return arr


# In-place changes, by the id of the array that owns the memory (views and detached tensors
# share it): torch's version counter. Only arrays changed in place have an entry (dropped when
# the array dies), so a node recorded while this is empty saved everything at version 0, and a
# backward that finds it empty has nothing to check.
_versions: dict[int, int] = {}


def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns a's memory (numpy keeps a view's base as the owner itself)."""
    base = a.base
    return base if isinstance(base, np.ndarray) else a


def version_of(a: Any) -> int:
    """How many times the memory of array a was changed in place through a Tensor."""
    return _versions.get(id(_owner(a)), 0) if _versions and type(a) is np.ndarray else 0


def bump_version(a: np.ndarray) -> None:
    owner = _owner(a)
    key = id(owner)
    if key not in _versions:
        weakref.finalize(owner, _versions.pop, key, None)
    _versions[key] = _versions.get(key, 0) + 1


def _leaf_flags_error(requires_grad: bool) -> str:
    """torch's message for changing requires_grad of a non-leaf (the hint only when turning off)."""
    message = "you can only change requires_grad flags of leaf variables."
    if requires_grad:
        return message
    return (
        f"{message} If you want to use a computed variable in a subgraph that doesn't require "
        "differentiation use var_no_grad = var.detach()."
    )


class Tensor:
    """An n-dimensional array whose operations autograd can record.

    Tensor(data, requires_grad=False, dtype=None): data is anything numpy.array accepts; lists of
    python numbers become float64, float32 arrays stay float32 (and so do their gradients).
    """

    __slots__ = (
        "__weakref__",
        "_acc",
        "_grad",
        "_hooks",
        "_output_nr",
        "_requires_grad",
        "_retains_grad",
        "_view",
        "data",
        "grad_fn",
    )
    __array_ufunc__ = None  # numpy operators defer to Tensor's reflected operators
    __hash__ = object.__hash__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data = _as_array(data, dtype)
        self._grad: Tensor | None = None
        self.grad_fn: Node | None = None
        self._output_nr = 0
        self._acc: weakref.ref[AccumulateGrad] | None = None
        self._hooks: dict[int, Callable[..., Any]] | None = None
        self._retains_grad = False
        self._view = False
        self._requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _make(data: Any, grad_fn: Node | None = None, output_nr: int = 0) -> Tensor:
        """Wrap an op's result without copying (the hot path of every op)."""
        t = object.__new__(Tensor)
        t.data = data if type(data) is np.ndarray else np.asarray(data)
        t._grad = None
        t.grad_fn = grad_fn
        t._requires_grad = grad_fn is not None
        t._output_nr = output_nr
        t._acc = None
        t._hooks = None
        t._retains_grad = False
        t._view = False
        return t

    # ------------------------------------------------------------ array facts
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None) -> Any:
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        if not self.data.ndim:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())  # as torch: any one-element tensor, whatever its shape

    def __int__(self) -> int:
        return int(self.item())

    def item(self) -> Any:
        if self.data.size != 1:
            raise RuntimeError(f"a Tensor with {self.data.size} elements cannot be converted to Scalar")
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
            )
        return self.data

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.dtype != np.float64:
            extra += f", dtype={self.dtype}"
        if self.grad_fn is not None:
            extra += f", grad_fn=<{self.grad_fn.name()}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ------------------------------------------------------------ autograd
    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    @property
    def output_nr(self) -> int:
        return self._output_nr

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, requires_grad: bool) -> None:
        if not self.is_leaf:  # as torch: requires_grad_(True) accepts a non-leaf, the setter not
            raise RuntimeError(_leaf_flags_error(requires_grad))
        self.requires_grad_(requires_grad)

    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient (leaves, and tensors that retain_grad()). Read on another
        tensor, None with torch's warning: backward() never fills it (the usual slip is
        reading an intermediate's .grad instead of the leaf's)."""
        if self._grad is None and not self.is_leaf and not self._retains_grad:
            warnings.warn(_NON_LEAF_GRAD, UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, grad: Tensor | None) -> None:
        if grad is not None:  # torch's checks: another tensor's gradient is a bug waiting
            if not isinstance(grad, Tensor):
                raise TypeError(
                    f"assigned grad expected to be a Tensor or None but got grad of type "
                    f"{type(grad).__name__}"
                )
            if grad.shape != self.shape:
                raise RuntimeError(
                    f"attempting to assign a gradient of size '{list(grad.shape)}' to a tensor "
                    f"of size '{list(self.shape)}'. Please ensure that the gradient and the tensor "
                    "are the same size"
                )
            if grad.dtype != self.dtype:
                raise RuntimeError(
                    f"attempting to assign a gradient with dtype '{grad.dtype}' to a tensor with "
                    f"dtype '{self.dtype}'. Please ensure that the gradient and the tensor have "
                    "the same dtype"
                )
        self._grad = grad

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            if requires_grad:  # it already does: nothing to change (as torch)
                return self
            raise RuntimeError(_leaf_flags_error(requires_grad))
        if requires_grad and self.data.dtype.kind != "f":
            raise RuntimeError(
                "only Tensors of floating point and complex dtype can require gradients "
                f"(got {self.data.dtype})"
            )
        self._requires_grad = bool(requires_grad)
        return self

    def _accumulator(self) -> AccumulateGrad:
        acc = self._acc() if self._acc is not None else None
        if acc is None:
            acc = AccumulateGrad(self)
            self._acc = weakref.ref(acc)
        return acc

    def detach(self) -> Tensor:
        """A tensor sharing this one's data, outside the graph."""
        return Tensor._make(self.data)

    def _is_view(self) -> bool:
        """Whether a view op (a slice, reshape, transpose, expand, ...) made this tensor from
        another one, whose memory it shares (torch's _is_view; detach() makes no view)."""
        return self._view

    def detach_(self) -> Tensor:
        if self._view:  # torch's rule: the view's base would still be in the graph
            raise RuntimeError(
                "Can't detach views in-place. Use detach() instead. If you are using "
                "DistributedDataParallel (DDP) for training, and gradient_as_bucket_view is set "
                "as True, gradients are views of DDP buckets, and hence detach_() cannot be "
                "called on these gradients. To fix this error, please refer to the "
                "Optimizer.zero_grad() function in torch/optim/optimizer.py as the solution."
            )
        self.grad_fn = None
        self._requires_grad = False
        return self

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
        """hook(grad) runs when this tensor's gradient is computed, before it is used or
        accumulated; returning a tensor replaces the gradient (e.g. to mask some weights)."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        hooks = self._hook_dict()
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def _hook_dict(self) -> dict[int, Callable[..., Any]]:
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = {}
            return self._hooks
        node = self.grad_fn
        if node._tensor_hooks is None:
            node._tensor_hooks = {}
        return node._tensor_hooks.setdefault(self._output_nr, {})

    def retain_grad(self) -> None:
        """Keep .grad for a non-leaf tensor after backward (leaves always keep theirs)."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.is_leaf or self._retains_grad:
            return
        self._retains_grad = True
        self._hook_dict()[-1] = _RetainGrad(self)

    def backward(
        self,
        gradient: Any = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Sequence[Tensor] | Tensor | None = None,
    ) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad (a vector-Jacobian product with
        `gradient` when self is not a scalar)."""
        from .autograd import backward

        backward(self, gradient, retain_graph, create_graph, inputs)

    # ------------------------------------------------------------ in place (outside the graph)
    def _inplace_check(self) -> None:
        if not self.data.flags.writeable:  # a broadcast view (sum's gradient, an expand): numpy
            # said "output array is read-only"; torch's words
            raise RuntimeError(
                "unsupported operation: more than one element of the written-to tensor refers "
                "to a single memory location. Please clone() the tensor before performing the "
                "operation."
            )
        if _state.enabled and self.requires_grad:
            if self.is_leaf:
                raise RuntimeError(
                    "a leaf Variable that requires grad is being used in an in-place operation."
                )
            raise RuntimeError(
                "in-place operations on tensors recorded in the graph are not supported; "
                "use the out-of-place form"
            )

    @property
    def _version(self) -> int:
        """In-place changes to this tensor's memory (torch's version counter): a backward
        through a node that saved it before a change is an error, not a wrong gradient."""
        return version_of(self.data)

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def fill_(self, value: float) -> Tensor:
        self._inplace_check()
        self.data[...] = value
        bump_version(self.data)
        return self

    def _inplace(self, other: Any, fn: Callable[..., Any], op: Callable[[Any, Any], Any]) -> Tensor:
        self._inplace_check()
        if _state.enabled and isinstance(other, Tensor) and other.requires_grad:
            return self._recorded_inplace(other, op)
        fn(self.data, other.data if isinstance(other, Tensor) else other, out=self.data)
        bump_version(self.data)
        return self

    def _recorded_inplace(self, other: Tensor, op: Callable[[Any, Any], Any]) -> Tensor:
        """x op= w where w requires grad (x does not: _inplace_check): torch records the op, and
        x, changed in place, now has its history (the node saved x's value from before)."""
        if self.data.base is not None:
            raise RuntimeError(
                "an in-place operation on a view with an operand that requires grad is not "
                "supported: use the out-of-place form"
            )
        result = op(Tensor._make(self.data.copy()), other)
        if result.shape != self.shape:
            raise RuntimeError(
                f"output with shape {list(self.shape)} doesn't match the broadcast shape "
                f"{list(result.shape)}"
            )
        if not np.can_cast(result.dtype, self.dtype, "same_kind"):
            raise RuntimeError(
                f"result type {result.dtype} can't be cast to the desired output type {self.dtype}"
            )
        np.copyto(self.data, result.data, casting="same_kind")
        bump_version(self.data)
        self.grad_fn, self._output_nr, self._requires_grad = result.grad_fn, 0, True
        return self

    def __iadd__(self, other: Any) -> Tensor:
        return self._inplace(other, np.add, operator.add)

    def __isub__(self, other: Any) -> Tensor:
        return self._inplace(other, np.subtract, operator.sub)

    def __imul__(self, other: Any) -> Tensor:
        return self._inplace(other, np.multiply, operator.mul)

    def __itruediv__(self, other: Any) -> Tensor:
        return self._inplace(other, np.divide, operator.truediv)

    def add_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        """self += alpha * other (an SGD step: p.add_(g, alpha=-lr))."""
        return self._inplace(scaled_by_alpha(self, other, alpha), np.add, operator.add)

    def sub_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        """self -= alpha * other."""
        return self._inplace(scaled_by_alpha(self, other, alpha), np.subtract, operator.sub)

    mul_ = __imul__
    div_ = __itruediv__


def scaled_by_alpha(x: Any, y: Any, alpha: Any) -> Any:
    """y * alpha for torch's x + alpha * y (add, sub, add_, sub_ with alpha=); recorded where y
    requires grad. As torch, a float alpha is an error when x and y are integers."""
    if alpha == 1:
        return y
    if isinstance(alpha, float) and not any(_floating(v) for v in (x, y)):
        raise RuntimeError(
            "For integral input tensors, argument alpha must not be a floating point number."
        )
    if isinstance(y, (Tensor, int, float)):
        return y * alpha  # (a python number stays one: it adopts the tensor's dtype)
    return np.asarray(y) * alpha


def _floating(v: Any) -> bool:
    return isinstance(v, float) or np.asarray(v.data if isinstance(v, Tensor) else v).dtype.kind == "f"


class _RetainGrad:
    """The hook retain_grad() installs: stores the final gradient on the tensor (runs last)."""

    def __init__(self, tensor: Tensor) -> None:
        self.ref = weakref.ref(tensor)

    def __call__(self, grad: Tensor) -> None:
        t = self.ref()
        if t is None:
            return
        if t._grad is not None:
            # as torch's var.grad + grad: under create_graph the sum keeps both graphs
            graphs = t._grad.requires_grad or grad.requires_grad
            t._grad = t._grad + grad if graphs else Tensor._make(t._grad.data + grad.data)
        elif not grad.requires_grad:  # a copy, as torch's clone: g may be the caller's, or a view
            t._grad = Tensor._make(np.array(grad.data))
        else:  # under create_graph: a recorded clone, as torch's (shared, as it came, with the
            # caller's v or another tensor's gradient, a later accumulation changed both)
            t._grad = grad.clone()
