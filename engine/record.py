"""record(): run an op forward and, when grad is on, add its backward node to the graph.

This is the hot path of every operation, so it is written for speed: one pass over the operands,
no generator expressions, attributes set directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .grad_mode import _state
from .graph import Node, OpImpl, _sequence
from .tensor import Tensor, _versions, version_of

_EMPTY: dict[str, Any] = {}
_NUMBERS = (float, int, bool)
_ndarray = np.ndarray
_make = Tensor._make
_next_seq = _sequence.__next__
_new = object.__new__


_NO_EDGE = (None, 0)
_NUMBER_META = ((), None)  # a python number operand: no shape, no dtype of its own
_NEEDS_FIRST = ((True,), (True, False))  # by operand count: the tensor needs grad, a number not


def _leaf_edge(t: Tensor) -> tuple[Any, int]:
    return (t._accumulator(), 0)


# Nodes share their (shape, dtype) metadata tuples. Fewer objects per node means fewer passes of
# Python's garbage collector, which with a large heap (jax, torch or sympy loaded) cost more than
# the ops themselves: an op allocated 11 tracked objects before, torch's 1.
_METAS: dict[tuple[Any, Any], tuple[Any, ...]] = {}  # ((shape, dtype),), by (shape, dtype)
_NUMBER_METAS: dict[tuple[Any, Any], tuple[Any, ...]] = {}  # ((shape, dtype), _NUMBER_META)
_METAS_LIMIT = 10_000  # distinct (shape, dtype) pairs shared; past it each node builds its own
_metas_get, _number_metas_get = _METAS.get, _NUMBER_METAS.get


def _one_meta(shape: tuple[int, ...], dtype: Any) -> tuple[tuple[Any, Any]]:
    """((shape, dtype),): the metadata of one array (the inputs of a unary op, or an output)."""
    key = (shape, dtype)
    return _metas_get(key) or _share(_METAS, key, (key,))


def _share(cache: dict[Any, Any], key: Any, meta: Any) -> Any:
    if len(cache) < _METAS_LIMIT:
        cache[key] = meta
    return meta


def record(impl: OpImpl, operands: tuple[Any, ...], attrs: dict[str, Any] | None = None) -> Any:
    """Run impl's forward on the operands' data; record a node when some operand requires grad.

    Operands are Tensors or constants (python numbers, numpy arrays); constants get no edge.
    """
    args = []
    needs = []
    edges = []
    in_meta = []
    any_need = False
    for x in operands:
        if type(x) is Tensor:
            a = x.data
            args.append(a)
            in_meta.append(_one_meta(a.shape, a.dtype)[0])
            if x._requires_grad:
                any_need = True
                needs.append(True)
                edges.append((x.grad_fn, x._output_nr) if x.grad_fn is not None else _leaf_edge(x))
                continue
        else:
            args.append(x)
            in_meta.append(_NUMBER_META if type(x) in _NUMBERS else (np.shape(x), x.dtype))
        needs.append(False)
        edges.append(_NO_EDGE)
    if impl.spec.promotes:
        if len(args) == 2:
            dtype = _torch_result_dtype(args[0], args[1])
            if dtype is not None:
                args = [a.astype(dtype) if type(a) is _ndarray else a for a in args]
        else:  # where's branches, concat's and stack's tensors
            args = _promoted(args, impl.spec.no_grad_operands)
    try:
        out = impl.forward(*args, **attrs) if attrs else impl.forward(*args)
    except (ValueError, IndexError, TypeError):
        _explain_failure(impl, [m[0] for m in in_meta], attrs)
        raise
    single = impl.n_outputs == 1
    if not (any_need and _state.enabled and impl.vjp is not None):
        return _make(out) if single else tuple(_make(o) for o in out)

    save, save_output = impl.save, impl.save_output
    if callable(save):  # what the VJP needs depends on the attributes (max over all or one axis)
        save, save_output = save(attrs or _EMPTY)
    if save_output and type(out) is not _ndarray and single:
        out = np.asarray(out)  # a 0-d result: saved as the tensor's own array (see below)
    outs = (out,) if single else out
    cls = impl.fixed_class or impl.node_class(attrs, tuple(m[0] for m in in_meta))
    node = cls()
    node._seq = _next_seq()
    node._attrs = attrs or _EMPTY
    node._needs = needs
    node._metadata = None
    node._tensor_hooks = None
    node._edges = tuple(edges)
    node._in_meta = in_meta
    # forward returns numpy arrays or numpy scalars, both of which have shape and dtype
    node._out_meta = (
        _one_meta(out.shape, out.dtype)
        if single
        else tuple(_one_meta(o.shape, o.dtype)[0] for o in outs)
    )
    if save == "none":
        saved = [None] * len(operands)
    elif save == "all":
        saved = list(operands)
    elif save == "other":  # binary ops: keep an operand only if the other one needs its gradient
        saved = [operands[0] if needs[1] else None, operands[1] if needs[0] else None]
    elif save == "divisor":  # x / y: y for either gradient, x only for y's
        saved = [operands[0] if needs[1] else None, operands[1]]
    else:  # the operands at these positions (a condition, a mask)
        saved = [x if k in save else None for k, x in enumerate(operands)]
    # Tensors must be unpacked for a plain backward. Whatever was saved is freed after it, numbers
    # too: as in torch, a second backward through a node that saved something is an error.
    has_tensors = False
    saves = save_output
    if save != "none":
        for x in saved:
            if type(x) is Tensor:
                has_tensors = saves = True
            elif x is not None:
                saves = True
    node._has_tensors = has_tensors
    node._saves_values = saves
    # The result is saved as a bare array: a Tensor here would make a cycle through its grad_fn.
    saved.append(outs[0] if save_output else None)
    node._saved = saved
    node._versions = _saved_versions(saved) if _versions else None
    if single:
        return _make(out, node)
    return tuple(_make(o, node, k) for k, o in enumerate(outs))


def record_on_tensor(impl: OpImpl, x: Tensor, operands: tuple[Any, ...]) -> Any:
    """record() for the commonest case, written straight through: operands are x (a Tensor) and at
    most one python int or float after it, no attributes, one output (the caller checks this)."""
    cls = impl.fixed_class
    if cls is None or impl.n_outputs != 1:
        return record(impl, operands)
    a = x.data
    unary = len(operands) == 1
    try:
        out = impl.forward(a) if unary else impl.forward(a, operands[1])
    except (ValueError, IndexError, TypeError):
        _explain_failure(impl, [a.shape] + [()] * (len(operands) - 1), None)
        raise
    if not (x._requires_grad and _state.enabled):
        return _make(out)
    node = cls()
    node._seq = _next_seq()
    node._attrs = _EMPTY
    node._metadata = None
    node._tensor_hooks = None
    node._needs = _NEEDS_FIRST[len(operands) - 1]
    edge = (x.grad_fn, x._output_nr) if x.grad_fn is not None else _leaf_edge(x)
    save = impl.save
    if type(out) is not _ndarray:
        # a 0-d result comes back as a numpy scalar: the saved output must be the tensor's own
        # array, or an in-place change of it under no_grad escapes the version check (torch's
        # "modified by an inplace operation")
        out = np.asarray(out)
    result = out if impl.save_output else None
    key = (a.shape, a.dtype)
    # x op c: the number c is kept for x's gradient ("other", "divisor"); x only for c's, not needed
    keeps_number = not unary and save in ("other", "divisor")
    if unary:
        node._edges = (edge,)
        node._in_meta = _metas_get(key) or _share(_METAS, key, (key,))
        node._saved = (x, result) if save == "all" else (None, result)
    else:
        node._edges = (edge, _NO_EDGE)
        node._in_meta = _number_metas_get(key) or _share(_NUMBER_METAS, key, (key, _NUMBER_META))
        c = operands[1]
        node._saved = (x, c, result) if save == "all" else (None, c if keeps_number else None, result)
    node._versions = _saved_versions(node._saved) if _versions else None
    keeps_x = save == "all"
    node._has_tensors = keeps_x
    node._saves_values = keeps_x or result is not None or keeps_number
    key = (out.shape, out.dtype)
    node._out_meta = _metas_get(key) or _share(_METAS, key, (key,))
    t = _new(Tensor)  # Tensor._make, inlined: this is the hot path of every operation
    t.data = out  # an ndarray: made one above
    t._grad = None
    t.grad_fn = node
    t._requires_grad = True
    t._output_nr = 0
    t._acc = None
    t._hooks = None
    t._retains_grad = False
    t._view = False
    return t


def save_also(node: Node, values: Sequence[Tensor]) -> None:
    """Save tensors the node's VJP does not take from its operands (getitem's index tensors), as
    torch's node saves them: one changed in place since the forward pass is the version error at
    backward, and like every saved value they are freed by a backward without retain_graph."""
    # after the operands and before the result: the VJP reads operand k at s[k], the result at s[-1]
    saved = [*node._saved[:-1], *values, node._saved[-1]]
    node._saved = saved
    node._versions = _saved_versions(saved) if _versions else None
    node._has_tensors = node._saves_values = True


def _saved_versions(saved: Any) -> tuple[int, ...]:
    """The version of each saved array as the node saved it (see tensor._versions)."""
    return tuple(version_of(x.data if type(x) is Tensor else x) for x in saved)


def _category(dtype: np.dtype) -> int:
    return 2 if dtype.kind in "fc" else 1 if dtype.kind in "iu" else 0


def _torch_result_dtype(x: Any, y: Any) -> Any:
    """The dtype torch computes x (op) y in, where numpy's differs; else None.

    numpy and torch agree on python numbers (weak: float32 * 2.5 stays float32) and within a
    category (float32 + float64 is float64). They differ when categories mix (torch: int64 tensor
    * float32 tensor is float32) and for 0-d tensors, which in torch only decide the dtype when
    their category is higher (float32 tensor * float64 0-d tensor is float32).
    """
    if type(x) is not _ndarray or type(y) is not _ndarray or x.dtype == y.dtype:
        return None
    cx, cy = _category(x.dtype), _category(y.dtype)
    if (x.ndim == 0) != (y.ndim == 0):
        dim, zero = (x, y) if y.ndim == 0 else (y, x)
        return dim.dtype if _category(dim.dtype) >= _category(zero.dtype) else zero.dtype
    return None if cx == cy else (x.dtype if cx > cy else y.dtype)


def _promoted(args: list[Any], skip: tuple[int, ...]) -> list[Any]:
    """Several operands in torch's result dtype (see _torch_result_dtype): the highest category
    among tensors with dimensions decides, unless a 0-d tensor's category is higher; within a
    category the widest (float32 and int64 tensors concatenate to float32, numpy's float64).
    Operands in `skip` (where's condition) keep their dtype."""
    arrays = [a for k, a in enumerate(args) if k not in skip and type(a) is _ndarray]
    if len({a.dtype for a in arrays}) < 2:
        return args

    def top(group: list[np.ndarray]) -> np.dtype | None:
        if not group:
            return None
        best = max(_category(a.dtype) for a in group)
        return np.result_type(*[a.dtype for a in group if _category(a.dtype) == best])

    dims, zero = top([a for a in arrays if a.ndim]), top([a for a in arrays if not a.ndim])
    dtype = zero if dims is None or (zero is not None and _category(zero) > _category(dims)) else dims
    return [
        a.astype(dtype) if k not in skip and type(a) is _ndarray and a.dtype != dtype else a
        for k, a in enumerate(args)
    ]


def _explain_failure(impl: OpImpl, shapes: list[Any], attrs: dict[str, Any] | None) -> None:
    """Let the op's shape rule name the problem (op, shapes) before numpy's message does."""
    impl.spec.shape_rule(impl.spec.name, *shapes, **(attrs or {}))
