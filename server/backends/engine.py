"""Run a program through crossgrad's own engine, building its DAG with source positions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from crossgrad import engine as cg
from crossgrad.engine.functional import identity_rows
from crossgrad.engine.functional import jacobian as engine_jacobian

from .. import deadline
from ..compare import SourceValues
from ..derivatives import Derivatives, Point
from ..ir import IRNode, Program, evaluate
from ..language import index_for_numpy
from . import batch_size, intermediate_sizes


def _call(fn: Callable[..., Any]) -> Callable[[list[Any], dict[str, Any]], Any]:
    return lambda operands, attrs: fn(*operands, **attrs)


_SPECIAL: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "pow": lambda o, a: cg.pow(o[0], a["exponent"]),
    "pow_tensor": lambda o, a: cg.pow(o[0], o[1]),
    "rpow": lambda o, a: cg.pow(a["base"], o[0]),
    "rsub": lambda o, a: cg.sub(a["other"], o[0]),
    "concat": lambda o, a: cg.concat(o, **a),
    "stack": lambda o, a: cg.stack(o, **a),
    "getitem": lambda o, a: cg.getitem(o[0], index_for_numpy(a["index"])),
}
LOWERING: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    name: _SPECIAL.get(name) or _call(getattr(cg, name))
    for name, spec in cg.OPS.items()
    if not spec.internal
}
"""How the engine evaluates each op of the table."""


@dataclass
class EngineRun:
    """A program evaluated by the engine: leaves, outputs, and every IR node's tensor."""

    program: Program
    leaves: dict[str, cg.Tensor]
    values: dict[int, Any]  # IR node id -> Tensor (a tuple for split)

    @property
    def outputs(self) -> list[cg.Tensor]:
        return [self.values[i] for _, i in self.program.outputs]


def run(
    program: Program,
    inputs: Mapping[str, np.ndarray],
    requires_grad: Mapping[str, bool],
    masks: Mapping[str, np.ndarray | None] | None = None,
) -> EngineRun:
    """Evaluate the program; masks are applied through hooks (their gradient times the mask)."""
    leaves = {}
    for name in program.input_names:
        t = cg.tensor(inputs[name], requires_grad=requires_grad.get(name, False))
        mask = (masks or {}).get(name)
        if mask is not None and t.requires_grad:
            t.register_hook(_mask_hook(np.asarray(mask, dtype=t.dtype)))
        leaves[name] = t

    def apply(node: IRNode, operands: list[Any]) -> Any:
        return LOWERING[node.op](operands, node.attr_dict)

    def tag(node: IRNode, value: Any) -> None:
        deadline.checkpoint()
        # Each DAG node learns where it came from: the blame names the source line and column.
        fn = getattr(value, "grad_fn", None)
        if fn is not None and fn.metadata.get("ir_node") is None and node.op != "input":
            fn.metadata.update(ir_node=node.id, source=str(node.pos) if node.pos else "", text=node.text)

    with cg.enable_grad():
        values = evaluate(program, leaves, apply, tag)
    return EngineRun(program, leaves, values)


def _mask_hook(mask: np.ndarray) -> Callable[[cg.Tensor], cg.Tensor]:
    return lambda g: g * mask


def function_of(
    program: Program, wrt: list[str], constants: Mapping[str, np.ndarray]
) -> Callable[..., Any]:
    """The program as a function of the wrt tensors (for hessian, which re-runs it)."""

    def f(*xs: cg.Tensor) -> Any:
        leaves = {**{n: cg.tensor(v) for n, v in constants.items()}, **dict(zip(wrt, xs))}
        env = evaluate(
            program, leaves, lambda node, o: LOWERING[node.op](o, node.attr_dict), _checkpoint
        )
        return env[program.outputs[0][1]]

    return f


def _checkpoint(node: IRNode, value: Any) -> None:
    deadline.checkpoint()


def flat_function(point: Point) -> Callable[[np.ndarray], np.ndarray]:
    """All outputs, flattened and concatenated, at each of a batch of points (a point: every wrt
    entry, flattened; other inputs fixed): the forward passes finite differences perturb. No
    graph is recorded, and nothing is compiled (a one-off request pays no compile time)."""
    program, wrt = point.program, point.wrt
    shapes = [point.shape(n) for n in wrt]
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    # in float64 throughout, as the points are: a reference of the exact derivative (and a
    # float32 operand beside a float64 one would make matmul raise, as torch's does)
    fixed = {n: v.astype(np.float64) if v.dtype.kind == "f" else v for n, v in point.fixed.items()}

    def apply(node: IRNode, operands: list[Any]) -> Any:
        return LOWERING[node.op](operands, node.attr_dict)

    def f(points: np.ndarray) -> np.ndarray:
        with cg.no_grad():
            if _elementwise(program):  # all points at once, along a leading batch axis
                return _outputs(
                    evaluate(program, leaves(points, batch=True), apply, _checkpoint),
                    program,
                    len(points),
                )
            return np.concatenate(
                [
                    _outputs(evaluate(program, leaves(p, batch=False), apply, _checkpoint), program, 1)
                    for p in points
                ]
            )

    def leaves(points: np.ndarray, batch: bool) -> dict[str, cg.Tensor]:
        lead = (len(points),) if batch else ()
        out = {n: cg.Tensor._make(v[None] if batch else v) for n, v in fixed.items()}
        for n, shape, lo, hi in zip(wrt, shapes, offsets[:-1], offsets[1:]):
            out[n] = cg.Tensor._make(points[..., lo:hi].reshape(lead + tuple(shape)))
        return out

    return f


_ELEMENTWISE = {n for n, spec in cg.OPS.items() if spec.shape_rule.__name__ in ("_same", "_broadcast")}


def _elementwise(program: Program) -> bool:
    """Every op elementwise and every input of one shape: a leading batch axis then means a
    batch of points (reductions, matmuls or broadcasting between shapes would mix them up)."""
    shapes = {program.node(i).shape for _, i in program.inputs}
    return len(shapes) == 1 and all(
        n.op in _ELEMENTWISE for n in program.nodes if n.op not in ("input", "take")
    )


def _outputs(env: dict[int, Any], program: Program, count: int) -> np.ndarray:
    """Every output, flattened per point: (count, total output entries)."""
    return np.concatenate(
        [
            np.broadcast_to(env[i].data, (count, *program.node(i).shape)).reshape(count, -1)
            for _, i in program.outputs
        ],
        axis=1,
    )


def derivatives(engine_run: EngineRun, point: Point) -> Derivatives:
    """The engine's values and derivatives (masks were applied by hooks when it ran)."""
    program, outs, wrt = engine_run.program, engine_run.outputs, point.wrt
    leaves = [engine_run.leaves[n] for n in wrt]
    d = Derivatives(values={n: o.detach().numpy().copy() for (n, _), o in zip(program.outputs, outs)})
    if not wrt:
        return d
    for (oname, _), out in zip(program.outputs, outs):
        used = _leaves_reached(out)
        d.unused |= {(oname, n) for n, leaf in zip(wrt, leaves) if id(leaf) not in used}
    # An output that requires no grad (it depends on no differentiated input: y = sum(c) with c
    # frozen) has no graph: torch's backward refuses it, and its derivatives are zero.
    live = [k for k, o in enumerate(outs) if o.requires_grad]
    if "vjp" in point.checks:
        if live:
            grads = cg.grad(
                [outs[k] for k in live],
                leaves,
                [cg.tensor(point.cotangents[k]) for k in live],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            d.vjp = {n: SourceValues(g.data.copy()) for n, g in zip(wrt, grads)}
        else:
            d.vjp = {n: SourceValues(np.zeros_like(leaf.data)) for n, leaf in zip(wrt, leaves)}
    _, largest = intermediate_sizes(program)
    if "jacobian" in point.checks:
        biggest = max([1, largest, *(leaf.data.size for leaf in leaves)])
        for (oname, _), out in zip(program.outputs, outs):
            m = out.data.size
            if not out.requires_grad:
                for n, leaf in zip(wrt, leaves):
                    zero = np.zeros(out.shape + leaf.shape, leaf.dtype)
                    d.jacobian[(oname, n)] = SourceValues(zero)
                continue
            # a batch of rows carries its cotangents through every node: rows x the largest
            # intermediate bounds it (a Jacobian through outer(x, y) of 2000x2000 asked for 60 GiB)
            step = batch_size(max(m, biggest), m)
            rows: list[list[np.ndarray]] = [[] for _ in wrt]
            for start in range(0, m, step):
                deadline.checkpoint()
                cot = identity_rows(start, min(start + step, m), m, out.dtype)
                gs = cg.grad(
                    out,
                    leaves,
                    cot.reshape(-1, *out.shape),
                    retain_graph=True,
                    allow_unused=True,
                    materialize_grads=True,
                    is_grads_batched=True,
                )
                for r, g in zip(rows, gs):
                    r.append(g.data)
            for n, r, leaf in zip(wrt, rows, leaves):
                full = np.concatenate(r) if r else np.zeros(0)  # an empty output has no rows
                full = full.reshape(out.shape + leaf.shape)
                d.jacobian[(oname, n)] = SourceValues(full)
    if "hessian" in point.checks:
        values = tuple(cg.tensor(engine_run.leaves[n].data) for n in wrt)
        f = function_of(program, wrt, point.fixed)
        n_in = sum(v.data.size for v in values)
        step = batch_size(max(largest, n_in), n_in)
        if step >= n_in:
            h = cg.hessian(f, values)
        else:  # the engine's hessian is the Jacobian of the gradient: in bounded batches of rows
            h = engine_jacobian(_gradient(f), values, chunk_size=step)
        for i, a in enumerate(wrt):
            for j, b in enumerate(wrt):
                d.hessian[(a, b)] = SourceValues(np.asarray(h[i][j].data))
    return d


def received_cotangents(
    engine_run: EngineRun, point: Point, cotangents: list[np.ndarray] | None = None
) -> dict[int, list[np.ndarray | None]]:
    """The cotangent each op of the program received in the engine's VJP of the request (or of
    `cotangents`, one per output), per output of the op (None where none flowed): what its rule
    was given. Empty where the VJP has nothing to differentiate, or the engine raised (blame goes
    on without it)."""
    cotangents = point.cotangents if cotangents is None else cotangents
    outs = engine_run.outputs
    live = [k for k, o in enumerate(outs) if o.requires_grad]
    leaves = [engine_run.leaves[n] for n in point.wrt]
    received: dict[int, list[np.ndarray | None]] = {}
    if not live or not leaves:
        return received
    handles = []
    for node in engine_run.program.nodes:
        value = engine_run.values.get(node.id)
        parts = value if isinstance(value, tuple) else (value,)
        for j, t in enumerate(parts):
            if node.op != "input" and isinstance(t, cg.Tensor) and t.requires_grad:

                def keep(g: cg.Tensor | None, i: int = node.id, j: int = j, n: int = len(parts)) -> None:
                    if g is not None:  # (None: an output of split that nothing used)
                        received.setdefault(i, [None] * n)[j] = np.array(g.data)

                handles.append(t.register_hook(keep))
    try:
        cg.grad(
            [outs[k] for k in live],
            leaves,
            [cg.tensor(cotangents[k]) for k in live],
            retain_graph=True,
            allow_unused=True,
        )
    except Exception:  # a rule that breaks backward: blamed by the other checks
        received.clear()
    finally:
        for handle in handles:
            handle.remove()
    return received


def _leaves_reached(out: cg.Tensor) -> set[int]:
    """The ids of the leaf tensors the output's graph leads back to (itself, for a leaf)."""
    if out.grad_fn is None:
        return {id(out)} if out.requires_grad else set()
    found, seen, stack = set(), {out.grad_fn}, [out.grad_fn]
    while stack:
        node = stack.pop()
        if isinstance(node, cg.AccumulateGrad):
            found.add(id(node.variable))
            continue
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                stack.append(child)
    return found


def _gradient(f: Callable[..., Any]) -> Callable[..., Any]:
    """The gradient of a scalar f, differentiable again (what cg.hessian takes the Jacobian of)."""

    def gradient(*xs: cg.Tensor) -> Any:
        out = f(*xs)
        if not out.requires_grad:  # independent of the inputs: a zero gradient, a zero Hessian
            return tuple(cg.Tensor._make(np.zeros_like(x.data)) for x in xs)
        return cg.grad(out.reshape(()), xs, create_graph=True, allow_unused=True, materialize_grads=True)

    return gradient
