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


_NO_EDGE = (None, 0)


def _leaf_edge(t: Tensor) -> tuple[Any, int]:
    return (t._accumulator(), 0)


def record(impl: OpImpl, operands: tuple[Any, ...], attrs: dict[str, Any] | None = None) -> Any:
    """Run impl's forward on the operands' data; record a node when some operand requires grad.

    Operands are Tensors or constants (python numbers, numpy arrays); constants get no edge.
    """
    args = []
    any_need = False
    for x in operands:
        if type(x) is Tensor:
            args.append(x.data)
            if x.requires_grad:
                any_need = True
        else:
            args.append(x)
    try:
        out = impl.forward(*args, **attrs) if attrs else impl.forward(*args)
    except (ValueError, IndexError, TypeError):
        # Let the op's shape rule name the problem (op, shapes) before numpy's message does.
        impl.spec.shape_rule(impl.spec.name, *(np.shape(a) for a in args), **(attrs or {}))
        raise
    single = impl.n_outputs == 1
    if not (any_need and _state.enabled and impl.vjp is not None):
        return _make(out) if single else tuple(_make(o) for o in out)

    needs = []
    edges = []
    in_meta = []
    for x, a in zip(operands, args):
        if type(x) is Tensor:
            in_meta.append((a.shape, a.dtype))
            if x.requires_grad:
                needs.append(True)
                edges.append((x.grad_fn, x._output_nr) if x.grad_fn is not None else _leaf_edge(x))
                continue
        else:
            in_meta.append(((), None) if type(x) in _NUMBERS else (np.shape(x), x.dtype))
        needs.append(False)
        edges.append(_NO_EDGE)

    outs = (out,) if single else out
    cls = impl.fixed_class or impl.node_class(attrs, tuple(m[0] for m in in_meta))
    node = cls()
    node._seq = next(_sequence)
    node._attrs = attrs or _EMPTY
    node._needs = needs
    node._metadata = None
    node._tensor_hooks = None
    node.next_functions = tuple(edges)
    node._in_meta = in_meta
    # forward returns numpy arrays or numpy scalars, both of which have shape and dtype
    node._out_meta = [(out.shape, out.dtype)] if single else [(o.shape, o.dtype) for o in outs]
    save = impl.save
    if save == "none":
        saved = [None] * len(operands)
    elif save == "all":
        saved = list(operands)
    else:  # "other" (binary ops): keep an operand only if the other one needs its gradient
        saved = [operands[0] if needs[1] else None, operands[1] if needs[0] else None]
    # else backward need not unpack them
    node._has_tensors = save != "none" and Tensor in map(type, saved)
    # The result is saved as a bare array: a Tensor here would make a cycle through its grad_fn.
    saved.append(outs[0] if impl.save_output else None)
    node._saved = saved
    if single:
        return _make(out, node, 0)
    return tuple(_make(o, node, k) for k, o in enumerate(outs))
