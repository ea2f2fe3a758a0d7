"""The backward pass: backward() and grad(), run iteratively over the graph (no recursion)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import ops
from .grad_mode import set_grad_enabled
from .graph import _FREED, SECOND_BACKWARD, AccumulateGrad, Node
from .ops import NumpyOps
from .tensor import Tensor, _RetainGrad, _versions, bump_version, version_of


def _as_tuple(x: Any) -> tuple[Any, ...]:
    if x is None:
        return ()
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _per_output(grads: Any, outputs: Any) -> Any:
    """The gradients as one per output: for a single output torch takes the gradient itself or a
    sequence holding it (a list of numbers is one gradient here, not a sequence of them)."""
    if grads is None or not isinstance(outputs, Tensor):
        return grads
    if isinstance(grads, (list, tuple)) and all(
        g is None or isinstance(g, (Tensor, np.ndarray)) for g in grads
    ):
        return grads
    return (grads,)


def _fmt(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def _root_grads(outputs: tuple[Tensor, ...], grad_outputs: Any, batched: bool) -> list[Any]:
    given = _as_tuple(grad_outputs) if grad_outputs is not None else (None,) * len(outputs)
    if len(given) != len(outputs):
        raise RuntimeError(
            f"grad requires one gradient per output: got {len(given)} gradients "
            f"for {len(outputs)} outputs"
        )
    grads = []
    for i, (out, g) in enumerate(zip(outputs, given)):
        if not isinstance(out, Tensor):
            raise TypeError(f"element {i} of the outputs is a {type(out).__name__}, not a Tensor")
        if not out.requires_grad:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a grad_fn"
            )
        if g is None:
            if out.data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            grads.append(np.ones_like(out.data))
            continue
        if not isinstance(g, Tensor):  # a Tensor is kept: under create_graph it may be in a graph
            g = np.asarray(g, dtype=out.dtype)
        elif g.dtype != out.dtype and not g.requires_grad:
            g = Tensor._make(g.data.astype(out.dtype))
        shape = g.shape[1:] if batched else g.shape
        if shape != out.shape:
            what = "grad_output[{i}] (without its batch dimension)" if batched else "grad_output[{i}]"
            raise RuntimeError(
                f"Mismatch in shape: {what.format(i=i)} has a shape of {_fmt(shape)} "
                f"and output[{i}] has a shape of {_fmt(out.shape)}."
            )
        grads.append(g)
    return grads


def _edge(t: Tensor) -> tuple[Any, int]:
    return (t.grad_fn, t._output_nr) if t.grad_fn is not None else (t._accumulator(), 0)


def _dependencies(roots: list[Any]) -> dict[Any, int]:
    """For every node reachable from the roots, how many edges lead into it (iterative walk)."""
    deps: dict[Any, int] = dict.fromkeys(roots, 0)
    stack = list(deps)
    while stack:
        for child, _ in stack.pop()._edges:
            if child is not None:
                if child in deps:
                    deps[child] += 1
                else:
                    deps[child] = 1
                    stack.append(child)
    return deps


def _topological_order(roots: list[Any]) -> list[Any]:
    """Nodes reachable from the roots, each after every node that feeds it (Kahn's algorithm,
    newest node first among the ready ones, as PyTorch orders them)."""
    deps = _dependencies(roots)
    ready = [(-n._seq, n) for n, d in deps.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = heapq.heappop(ready)[1]
        order.append(node)
        for child, _ in node._edges:
            if child is not None:
                deps[child] -= 1
                if not deps[child]:
                    heapq.heappush(ready, (-child._seq, child))
    return order


def _nodes_leading_to(order: list[Any], targets: set[Any], run_targets: bool) -> set[Any]:
    """The nodes with a path through their inputs to a target: the ones backward must run. As in
    torch, grad() runs a target only when another target lies beyond it, backward() always."""
    needed: set[Any] = set()
    for node in reversed(order):
        if (run_targets and node in targets) or any(c in needed or c in targets for c, _ in node._edges):
            needed.add(node)
    return needed


def _run_hooks(hooks: dict[int, Any], g: Any, create_graph: bool, shape: tuple[int, ...]) -> Any:
    nb = np.ndim(g) - len(shape)
    if nb > 0:  # batched cotangents (jacobian): a hook sees one at a time, as under torch's vmap
        batch = np.shape(g)[:nb]
        rows = [_run_hooks(hooks, g[idx], create_graph, shape) for idx in np.ndindex(*batch)]
        return (ops.stack(rows) if create_graph else np.stack(rows)).reshape(batch + tuple(shape))
    for _key, hook in sorted(hooks.items(), key=lambda kv: kv[0] == -1):  # retain_grad runs last
        gt = g if create_graph else Tensor._make(g)
        new = hook(gt)
        if new is None or isinstance(hook, _RetainGrad):
            continue
        if not isinstance(new, Tensor):  # (an array would be taken as the gradient unchecked)
            kind = type(new)
            given = (
                kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
            )
            raise TypeError(f"expected Variable, but hook returned '{given}'")
        name = getattr(hook, "__name__", type(hook).__name__)
        if np.shape(new) != np.shape(g):
            raise RuntimeError(
                f"hook '{name}' has changed the size of value (was {_fmt(np.shape(g))} "
                f"got {_fmt(np.shape(new))})"
            )
        if new.dtype != g.dtype:
            raise RuntimeError(
                f"hook '{name}' has changed the type of value (was {g.dtype} got {new.dtype})"
            )
        g = new if create_graph else np.asarray(new.data)
    return g


def _run_hooks_on_none(hooks: dict[int, Any]) -> None:
    """As torch: a hook on an output of a multi-output node that no gradient reached is called
    with None (retain_grad leaves .grad None), and may not return a gradient."""
    for _key, hook in sorted(hooks.items(), key=lambda kv: kv[0] == -1):
        if not isinstance(hook, _RetainGrad) and hook(None) is not None:
            raise RuntimeError("can't replace a None gradient with a non-None value")


def _unpack_for_graph(node: Node, saved: list[Any]) -> list[Any]:
    """Saved values as Tensors connected to the graph, so the VJP itself is recorded."""
    s = [Tensor._make(x) if type(x) is np.ndarray else x for x in saved[:-1]]
    s.append(None if saved[-1] is None else Tensor._make(saved[-1], node, 0))
    return s


def _call_node(node: Node, buf: list[Any], create_graph: bool, batched: bool) -> list[Any]:
    saved = node._saved
    if saved is _FREED:
        raise RuntimeError(SECOND_BACKWARD)
    if _versions and node._saves_values:
        _check_versions(node, saved)
    impl = node.impl
    if create_graph:
        B: Any = ops
        s = _unpack_for_graph(node, saved)
    else:
        B = NumpyOps
        # saved operands are Tensors (kept for create_graph); numbers and the result are not
        s = [x.data if type(x) is Tensor else x for x in saved] if node._has_tensors else saved
    single = impl.n_outputs == 1
    if single:
        g = buf[0]
    else:  # several outputs: the ones that got no gradient contribute zeros
        first = next(k for k, b in enumerate(buf) if b is not None)
        nb = buf[first].ndim - len(node._out_meta[first][0])
        ref = buf[first]
        g = [
            b if b is not None else B.zeros_like(np.zeros(ref.shape[:nb] + shape, dtype))
            for b, (shape, dtype) in zip(buf, node._out_meta)
        ]
    grads = impl.vjp(B, node, g, s)
    meta = node._in_meta
    if len(grads) != len(meta):
        raise RuntimeError(
            f"Function {node.name()} returned {len(grads)} gradients; expected {len(meta)}"
        )
    if batched or create_graph:  # cotangents with batch dimensions, or Tensors: the full check
        nb = (g if single else g[0]).ndim - len(node._out_meta[0][0])
        return _checked(node, grads, nb, create_graph)
    # As torch does, check what the rule returned: the cheap test first, the full one if it fails.
    for gi, m in zip(grads, meta):
        if gi is not None and (gi.shape != m[0] or gi.dtype is not m[1]):
            return _checked(node, grads, 0, create_graph)
    return grads


def _check_versions(node: Node, saved: list[Any]) -> None:
    """A value the node saved that was changed in place since: torch's error, not a gradient
    computed from the new values."""
    for k, x in enumerate(saved):
        a = x.data if type(x) is Tensor else x
        expected = node._versions[k] if node._versions is not None else 0
        now = version_of(a)
        if now != expected:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{a.dtype} {list(a.shape)}], which is saved by "
                f"{node.name()}, is at version {now}; expected version {expected} instead. Hint: "
                "the operation that changed it ran after the forward pass; change a copy, or "
                "run it after backward."
            )


def _checked(node: Node, grads: Any, nb: int, create_graph: bool) -> list[Any]:
    """Validate a node's gradients: a wrong shape is an error, another dtype is cast."""
    grads = list(grads)
    for i, (gi, (shape, dtype)) in enumerate(zip(grads, node._in_meta)):
        if gi is None:
            continue
        if gi.shape[nb:] != shape:
            raise RuntimeError(
                f"Function {node.name()} returned an invalid gradient at index {i} - got "
                f"{_fmt(gi.shape[nb:])} but expected shape compatible with {_fmt(shape)}"
            )
        if dtype is not None and gi.dtype != dtype:
            grads[i] = ops.to_dtype(gi, dtype) if create_graph else np.asarray(gi, dtype)
    return grads


def _accumulate(t: Tensor, g: Any, create_graph: bool) -> None:
    if create_graph:
        # the gradient keeps its graph, as a recorded copy (torch's CopyBackwards): stored as
        # it came, it was the caller's own v (backward(v) reaching a leaf as it is), or one
        # tensor shared by two leaves (w + x), or a view of another's or of what a hook kept,
        # and the next accumulation added into all of them at once
        if not (isinstance(g, Tensor) and g.requires_grad):
            g = Tensor._make(np.array(g.data if isinstance(g, Tensor) else g))
        elif t._grad is None:
            with set_grad_enabled(True):
                g = g.clone()
        t._grad = g if t._grad is None else t._grad + g
    elif t._grad is None:
        t._grad = Tensor._make(np.array(g, dtype=t.dtype))  # a copy: g may be a view or shared
    elif not t._grad.data.flags.writeable:  # a broadcast view left by a create_graph backward
        t._grad = Tensor._make((t._grad.data + g).astype(t.dtype, copy=False))
    else:
        np.add(t._grad.data, g, out=t._grad.data, casting="unsafe")
        bump_version(t._grad.data)


def run_backward(
    outputs: tuple[Tensor, ...],
    grads: list[Any],
    retain_graph: bool,
    create_graph: bool,
    inputs: tuple[Tensor, ...] | None,
    accumulate: bool,
    batched: bool = False,
) -> list[Any]:
    """Propagate grads from outputs. With accumulate, add into leaves' .grad (only `inputs` if
    given); otherwise return the gradient of each of `inputs` (None where none flowed)."""
    roots = [_edge(t) for t in outputs]
    root_nodes = [n for n, _ in roots]
    captures: dict[tuple[Any, int], list[int]] = {}
    needed = None
    if inputs is not None:
        for k, t in enumerate(inputs):
            captures.setdefault(_edge(t), []).append(k)  # the same tensor may be asked twice
        targets = {n for n, _ in captures}
        needed = _nodes_leading_to(_topological_order(root_nodes), targets, accumulate)
    captured: list[Any] = [None] * (len(inputs) if inputs is not None else 0)

    buffers: dict[Any, list[Any]] = {}
    for (node, nr), g in zip(roots, grads):
        if create_graph:
            g = g if isinstance(g, Tensor) else Tensor._make(g)
        elif isinstance(g, Tensor):
            g = g.data
        buf = buffers.setdefault(node, [None] * len(node._out_meta))
        buf[nr] = g if buf[nr] is None else buf[nr] + g

    # Kahn's algorithm: a node runs once every node feeding it has run; among ready nodes the
    # newest goes first, as in PyTorch.
    deps = _dependencies(root_nodes)
    ready = [(-n._seq, n) for n, d in deps.items() if d == 0]
    heapq.heapify(ready)
    only_inputs = inputs is not None
    pop, push = heapq.heappop, heapq.heappush
    with set_grad_enabled(bool(create_graph)):
        node = pop(ready)[1] if ready else None
        while node is not None:
            buf = buffers.pop(node, None)
            grads_in = None
            if buf is None:  # no gradient reached this node
                pass
            elif type(node) is AccumulateGrad:
                _leaf(node, buf[0], create_graph, accumulate, only_inputs, captures, captured)
            elif node._tensor_hooks or captures:
                grads_in = _run_node(
                    node, buf, create_graph, retain_graph, captures, captured, needed, batched
                )
            else:
                grads_in = _call_node(node, buf, create_graph, batched)
                if not retain_graph and node._saves_values:
                    node._saved = _FREED  # release saved arrays now, not when the graph dies
            following = None  # a chain's next node skips the heap when nothing else is ready
            k = -1
            for child, nr in node._edges:
                k += 1
                if child is None:
                    continue
                left = deps[child] - 1
                deps[child] = left
                if not left:
                    if following is None and not ready:
                        following = child
                    else:
                        push(ready, (-child._seq, child))
                if grads_in is None or grads_in[k] is None:
                    continue
                gi = grads_in[k]
                cbuf = buffers.get(child)
                if cbuf is None:
                    cbuf = buffers[child] = [None] * len(child._out_meta)
                cbuf[nr] = gi if cbuf[nr] is None else cbuf[nr] + gi
            if following is not None and ready and ready[0][0] < -following._seq:
                push(ready, (-following._seq, following))  # a newer node is ready: it goes first
                following = None
            node = following if following is not None else (pop(ready)[1] if ready else None)

    if accumulate and inputs is not None:  # non-leaf inputs of backward(inputs=...) get .grad
        for t, g in zip(inputs, captured):  # (a retained tensor got its .grad from its hook)
            if g is not None and t.grad_fn is not None and not t._retains_grad:
                _accumulate(t, g, create_graph)
    return captured


def _leaf(
    node: AccumulateGrad,
    g: Any,
    create_graph: bool,
    accumulate: bool,
    only_inputs: bool,
    captures: dict[tuple[Any, int], list[int]],
    captured: list[Any],
) -> None:
    t = node.variable
    ks = captures.get((node, 0))
    if only_inputs and ks is None:  # a leaf that was not asked for: torch does not visit it
        return
    if t._hooks:
        g = _run_hooks(t._hooks, g, create_graph, t.shape)
    if ks is not None and not accumulate:
        for k in ks:
            captured[k] = g
    elif accumulate and t._requires_grad:  # (turned off since the forward: no .grad, as torch)
        _accumulate(t, g, create_graph)


def _run_node(
    node: Node,
    buf: list[Any],
    create_graph: bool,
    retain_graph: bool,
    captures: dict[tuple[Any, int], list[int]],
    captured: list[Any],
    needed: set[Any] | None,
    batched: bool,
) -> list[Any] | None:
    """A node with hooks or a captured output (grad() with respect to an intermediate). With
    inputs given, a node that neither leads to one nor is one does not run, nor do its hooks."""
    target = any((node, nr) in captures for nr in range(len(buf)))
    if needed is not None and node not in needed and not target:
        return None
    if node._tensor_hooks:
        for nr, hooks in node._tensor_hooks.items():
            if buf[nr] is not None and hooks:
                buf[nr] = _run_hooks(hooks, buf[nr], create_graph, node._out_meta[nr][0])
            elif hooks:  # an output no gradient reached, of a node that runs: hooks see None
                _run_hooks_on_none(hooks)
    for nr, g in enumerate(buf):
        for k in captures.get((node, nr), ()):
            captured[k] = g
    if needed is not None and node not in needed:
        return None
    grads_in = _call_node(node, buf, create_graph, batched)
    if not retain_graph and node._saves_values:
        node._saved = _FREED
    return grads_in


def backward(
    tensors: Tensor | Sequence[Tensor],
    grad_tensors: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Tensor | Sequence[Tensor] | None = None,
) -> None:
    """Accumulate the gradients of `tensors` (weighted by `grad_tensors`) into the leaves' .grad."""
    outputs = _as_tuple(tensors)
    grads = _root_grads(outputs, _per_output(grad_tensors, tensors), batched=False)
    if inputs is not None:
        inputs = _as_tuple(inputs)
        if not inputs:
            raise RuntimeError("'inputs' argument to backward() cannot be empty.")
        _check_inputs(inputs)
    run_backward(
        outputs,
        grads,
        create_graph if retain_graph is None else retain_graph,
        create_graph,
        inputs,
        accumulate=True,
    )


def _check_inputs(inputs: tuple[Tensor, ...]) -> None:
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"inputs must be Tensors, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
    is_grads_batched: bool = False,
    materialize_grads: bool = False,
) -> tuple[Tensor | None, ...]:
    """The gradients of outputs with respect to inputs, returned instead of accumulated.

    With is_grads_batched, every grad_output has a leading batch dimension and the result keeps
    it: one backward pass computes many vector-Jacobian products (how jacobian() works).
    """
    outs = _as_tuple(outputs)
    grad_outputs = _per_output(grad_outputs, outputs)
    ins = _as_tuple(inputs)
    if not ins:
        raise RuntimeError("grad requires at least one input")
    _check_inputs(ins)
    if materialize_grads and allow_unused is False:
        raise ValueError(
            "Expected allow_unused to be True or not passed when materialize_grads=True, "
            "but got: allow_unused=False."
        )
    if allow_unused is None:
        allow_unused = materialize_grads
    grads = _root_grads(outs, grad_outputs, batched=is_grads_batched)
    result = run_backward(
        outs,
        grads,
        create_graph if retain_graph is None else retain_graph,
        create_graph,
        ins,
        accumulate=False,
        batched=is_grads_batched,
    )
    final: list[Tensor | None] = []
    batch = grads[0].shape[:1] if is_grads_batched else ()
    for i, (t, g) in enumerate(zip(ins, result)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"The differentiated Tensor at index {i} appears to not have been used in the "
                    "graph. Set allow_unused=True if this is the desired behavior."
                )
            final.append(Tensor._make(np.zeros(batch + t.shape, t.dtype)) if materialize_grads else None)
        else:
            final.append(g if isinstance(g, Tensor) else Tensor._make(g))
    return tuple(final)
