"""record(): run an op forward and, when grad is on, add its backward node to the graph.

This is the hot path of every operation, so it is written for speed: one pass over the operands,
no generator expressions, attributes set directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .grad_mode import _state
from .graph import OpImpl, _sequence
from .tensor import Tensor

_EMPTY: dict[str, Any] = {}
_NUMBERS = (float, int, bool)
_ndarray = np.ndarray
_make = Tensor._make
_next_seq = _sequence.__next__
_new = object.__new__


_NO_EDGE = (None, 0)
_NUMBER_META = ((), None)  # a python number operand: no shape, no dtype of its own


def _leaf_edge(t: Tensor) -> tuple[Any, int]:
    return (t._accumulator(), 0)


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
            in_meta.append((a.shape, a.dtype))
            if x.requires_grad:
                any_need = True
                needs.append(True)
                edges.append((x.grad_fn, x._output_nr) if x.grad_fn is not None else _leaf_edge(x))
                continue
        else:
            args.append(x)
            in_meta.append(_NUMBER_META if type(x) in _NUMBERS else (np.shape(x), x.dtype))
        needs.append(False)
        edges.append(_NO_EDGE)
    try:
        out = impl.forward(*args, **attrs) if attrs else impl.forward(*args)
    except (ValueError, IndexError, TypeError):
        # Let the op's shape rule name the problem (op, shapes) before numpy's message does.
        impl.spec.shape_rule(impl.spec.name, *(m[0] for m in in_meta), **(attrs or {}))
        raise
    single = impl.n_outputs == 1
    if not (any_need and _state.enabled and impl.vjp is not None):
        return _make(out) if single else tuple(_make(o) for o in out)

    outs = (out,) if single else out
    cls = impl.fixed_class or impl.node_class(attrs, tuple(m[0] for m in in_meta))
    node = cls()
    node._seq = _next_seq()
    node._attrs = attrs or _EMPTY
    node._needs = needs
    node._metadata = None
    node._tensor_hooks = None
    node.next_functions = tuple(edges)
    node._in_meta = in_meta
    # forward returns numpy arrays or numpy scalars, both of which have shape and dtype
    node._out_meta = ((out.shape, out.dtype),) if single else tuple((o.shape, o.dtype) for o in outs)
    save = impl.save
    if save == "none":
        saved = [None] * len(operands)
    elif save == "all":
        saved = list(operands)
    else:  # "other" (binary ops): keep an operand only if the other one needs its gradient
        saved = [operands[0] if needs[1] else None, operands[1] if needs[0] else None]
    # Tensors must be unpacked for a plain backward; arrays (not numbers) are freed after it.
    has_tensors = False
    holds = impl.save_output
    if save != "none":
        for x in saved:
            if type(x) is Tensor:
                has_tensors = holds = True
            elif type(x) is _ndarray:
                holds = True
    node._has_tensors = has_tensors
    node._holds_arrays = holds
    # The result is saved as a bare array: a Tensor here would make a cycle through its grad_fn.
    saved.append(outs[0] if impl.save_output else None)
    node._saved = saved
    if single:  # Tensor._make, inlined: this is the hot path of every operation
        t = _new(Tensor)
        t.data = out if type(out) is _ndarray else np.asarray(out)
        t.grad = None
        t.grad_fn = node
        t.requires_grad = True
        t._output_nr = 0
        t._acc = None
        t._hooks = None
        t._retains_grad = False
        return t
    return tuple(_make(o, node, k) for k, o in enumerate(outs))
