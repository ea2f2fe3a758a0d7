"""JAX as a reference: every op lowered to jax.numpy (float64); derivatives by jax.vjp, Jacobian
rows as batches of VJPs and Hessian columns as batches of Hessian-vector products (forward over
reverse), so that no batch holds more than BATCH_ELEMENTS per array. Small programs are compiled
once per (program, shapes, dtypes, what is differentiated) and cached; large ones run op by op
(see JIT_MAX_NODES), which bounds XLA's compile time and reaches the deadline at every node."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from crossgrad.engine import OPS
from crossgrad.engine.optable import normalize_axes
from jax.scipy.special import logsumexp as _logsumexp

from .. import caches, deadline
from ..compare import SourceValues
from ..derivatives import Derivatives, Point
from ..ir import IRNode, Program, evaluate
from ..language import apply_index
from . import JIT_MAX_NODES, batch_size, intermediate_sizes, operation_count

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")


def _start_with_one_thread() -> None:
    """Start JAX's CPU client while this thread may run on one core only: XLA sizes its pool by
    the cores it may use, so the pool has one thread and nothing races (see backends/__init__).
    The thread may use every core again afterwards. A client started earlier keeps its pool."""
    if not hasattr(os, "sched_setaffinity"):  # not Linux: XLA's pool as it comes
        jax.devices()
        return
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        jax.devices()
    finally:
        os.sched_setaffinity(0, cores)


_start_with_one_thread()


def _softmax_axis(x: Any, attrs: dict[str, Any]) -> Any:
    """A 0-d tensor's softmax is over its one entry (torch takes axis 0 or -1 there; JAX's axis
    0 is out of bounds, and the whole JAX reference was lost to one such op)."""
    return None if jnp.ndim(x) == 0 else attrs["axis"]


def _shape(op: str, x: Any, attrs: dict[str, Any]) -> tuple[int, ...]:
    return OPS[op].shape_rule(op, tuple(x.shape), **attrs)


def _ax(x: Any, attrs: dict[str, Any]) -> Any:
    """The reduction's axes, non-negative; none for a 0-d tensor (which accepts 0 and -1)."""
    axis = attrs["axis"]
    return None if axis is None else normalize_axes("reduce", axis, x.ndim)


def _reduce(loss: Any, reduction: str) -> Any:
    return jnp.mean(loss) if reduction == "mean" else jnp.sum(loss) if reduction == "sum" else loss


def _nll(logp: Any, target: Any, reduction: str) -> Any:
    picked = -jnp.take_along_axis(logp, target[:, None].astype(jnp.int32), axis=1)[:, 0]
    return _reduce(picked, reduction)


def _split(x: Any, sections: Any, axis: int) -> tuple[Any, ...]:
    sizes = [s[axis] for s in _shape("split", x, {"sections": sections, "axis": axis})]
    return tuple(jnp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def _pad(x: Any, pad: Sequence[int], value: float) -> Any:
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    return jnp.pad(x, widths, constant_values=value)


def _norm(x: Any, ord: float, axis: Any, keepdims: bool) -> Any:
    return jnp.linalg.vector_norm(x, ord=ord, axis=axis, keepdims=keepdims)


L = Callable[[list[Any], dict[str, Any]], Any]
LOWERING: dict[str, L] = {
    "add": lambda o, a: o[0] + o[1],
    "sub": lambda o, a: o[0] - o[1],
    "mul": lambda o, a: o[0] * o[1],
    "div": lambda o, a: o[0] / o[1],
    "neg": lambda o, a: -o[0],
    "pow": lambda o, a: o[0] ** a["exponent"],
    "pow_tensor": lambda o, a: o[0] ** o[1],
    "rpow": lambda o, a: a["base"] ** o[0],
    "rsub": lambda o, a: a["other"] - o[0],
    "maximum": lambda o, a: jnp.maximum(o[0], o[1]),
    "minimum": lambda o, a: jnp.minimum(o[0], o[1]),
    "abs": lambda o, a: jnp.abs(o[0]),
    "exp": lambda o, a: jnp.exp(o[0]),
    "log": lambda o, a: jnp.log(o[0]),
    "log1p": lambda o, a: jnp.log1p(o[0]),
    "expm1": lambda o, a: jnp.expm1(o[0]),
    "sqrt": lambda o, a: jnp.sqrt(o[0]),
    "reciprocal": lambda o, a: 1 / o[0],
    "sin": lambda o, a: jnp.sin(o[0]),
    "cos": lambda o, a: jnp.cos(o[0]),
    "tan": lambda o, a: jnp.tan(o[0]),
    "tanh": lambda o, a: jnp.tanh(o[0]),
    "sigmoid": lambda o, a: jax.nn.sigmoid(o[0]),
    "relu": lambda o, a: jax.nn.relu(o[0]),
    "leaky_relu": lambda o, a: jax.nn.leaky_relu(o[0], a["negative_slope"]),
    "softplus": lambda o, a: jnp.where(
        o[0] * a["beta"] > a["threshold"], o[0], jax.nn.softplus(o[0] * a["beta"]) / a["beta"]
    ),
    "silu": lambda o, a: jax.nn.silu(o[0]),
    "gelu": lambda o, a: jax.nn.gelu(o[0], approximate=a["approximate"] == "tanh"),
    "clamp": lambda o, a: jnp.clip(o[0], a["min"], a["max"]),
    "sign": lambda o, a: jnp.sign(o[0]),
    "floor": lambda o, a: jnp.floor(o[0]),
    "round": lambda o, a: jnp.round(o[0]),
    "sum": lambda o, a: jnp.sum(o[0], _ax(o[0], a), keepdims=a["keepdims"]),
    "mean": lambda o, a: jnp.mean(o[0], _ax(o[0], a), keepdims=a["keepdims"]),
    "prod": lambda o, a: jnp.prod(o[0], _ax(o[0], a), keepdims=a["keepdims"]),
    "max": lambda o, a: jnp.max(o[0], _ax(o[0], a), keepdims=a["keepdims"]),
    "min": lambda o, a: jnp.min(o[0], _ax(o[0], a), keepdims=a["keepdims"]),
    "amax": lambda o, a: jnp.max(o[0], _ax(o[0], a), keepdims=a["keepdims"]),
    "amin": lambda o, a: jnp.min(o[0], _ax(o[0], a), keepdims=a["keepdims"]),
    "logsumexp": lambda o, a: _logsumexp(o[0], axis=_ax(o[0], a), keepdims=a["keepdims"]),
    "var": lambda o, a: jnp.var(o[0], _ax(o[0], a), keepdims=a["keepdims"], ddof=a["correction"]),
    "std": lambda o, a: jnp.std(o[0], _ax(o[0], a), keepdims=a["keepdims"], ddof=a["correction"]),
    "norm": lambda o, a: _norm(o[0], a["ord"], _ax(o[0], a), a["keepdims"]),
    "matmul": lambda o, a: jnp.matmul(o[0], o[1]),
    "dot": lambda o, a: jnp.dot(o[0], o[1]),
    "outer": lambda o, a: jnp.outer(o[0], o[1]),
    "reshape": lambda o, a: jnp.reshape(o[0], _shape("reshape", o[0], a)),
    "flatten": lambda o, a: jnp.reshape(o[0], _shape("flatten", o[0], a)),
    "squeeze": lambda o, a: jnp.reshape(o[0], _shape("squeeze", o[0], a)),
    "unsqueeze": lambda o, a: jnp.expand_dims(o[0], a["axis"]),
    "transpose": lambda o, a: jnp.swapaxes(o[0], a["dim0"], a["dim1"]) if o[0].ndim else o[0],
    "permute": lambda o, a: jnp.transpose(o[0], a["dims"]),
    "expand": lambda o, a: jnp.broadcast_to(o[0], _shape("expand", o[0], a)),
    "broadcast_to": lambda o, a: jnp.broadcast_to(o[0], _shape("broadcast_to", o[0], a)),
    "concat": lambda o, a: jnp.concatenate(o, axis=a["axis"]),
    "stack": lambda o, a: jnp.stack(o, axis=a["axis"]),
    "split": lambda o, a: _split(o[0], a["sections"], a["axis"]),
    "getitem": lambda o, a: apply_index(o[0], a["index"]),
    "flip": lambda o, a: jnp.flip(o[0], a["axis"]),
    "pad": lambda o, a: _pad(o[0], a["pad"], a["value"]),
    "where": lambda o, a: jnp.where(o[0], o[1], o[2]),
    "masked_fill": lambda o, a: jnp.where(o[1], a["value"], o[0]),
    "clone": lambda o, a: o[0],
    "softmax": lambda o, a: jax.nn.softmax(o[0], axis=_softmax_axis(o[0], a)),
    "log_softmax": lambda o, a: jax.nn.log_softmax(o[0], axis=_softmax_axis(o[0], a)),
    "mse_loss": lambda o, a: _reduce((o[0] - o[1]) ** 2, a["reduction"]),
    "nll_loss": lambda o, a: _nll(o[0], o[1], a["reduction"]),
    "cross_entropy": lambda o, a: _nll(jax.nn.log_softmax(o[0], axis=1), o[1], a["reduction"]),
    "binary_cross_entropy_with_logits": lambda o, a: _reduce(
        (1 - o[1]) * o[0] + jnp.maximum(-o[0], 0) + jnp.log1p(jnp.exp(-jnp.abs(o[0]))), a["reduction"]
    ),
    "lt": lambda o, a: o[0] < o[1],
    "le": lambda o, a: o[0] <= o[1],
    "gt": lambda o, a: o[0] > o[1],
    "ge": lambda o, a: o[0] >= o[1],
    "eq": lambda o, a: o[0] == o[1],
    "ne": lambda o, a: o[0] != o[1],
    "argmax": lambda o, a: jnp.argmax(o[0], axis=a["axis"], keepdims=a["keepdims"]),
    "argmin": lambda o, a: jnp.argmin(o[0], axis=a["axis"], keepdims=a["keepdims"]),
}
"""How JAX evaluates each op of the table."""


def apply_op(node: IRNode, operands: list[Any]) -> Any:
    return LOWERING[node.op](operands, node.attr_dict)


def apply_in_dtype(node: IRNode, operands: list[Any]) -> Any:
    """apply_op in the node's own dtype, the engine's: torch's promotion, which a 0-d float64
    tensor beside float32 ones with dimensions does not widen (JAX's does)."""
    if OPS[node.op].promotes and node.dtype in ("float32", "float64"):
        operands = [
            o.astype(node.dtype)
            if hasattr(o, "dtype") and jnp.issubdtype(o.dtype, jnp.floating) and o.dtype != node.dtype
            else o
            for o in operands
        ]
    return apply_op(node, operands)


def _checkpoint(node: IRNode, value: Any) -> None:
    deadline.checkpoint()  # run op by op, JAX evaluates each node here: a long program stops


Apply = Callable[[IRNode, list[Any]], Any]


def program_function(
    program: Program, wrt: Sequence[str], apply: Apply = apply_op
) -> Callable[..., tuple[Any, ...]]:
    """f(*wrt_values, *other_values) -> outputs: the program as a function JAX can transform."""
    others = [n for n in program.input_names if n not in wrt]
    names = list(wrt) + others

    def f(*values: Any) -> tuple[Any, ...]:
        env = evaluate(program, dict(zip(names, values)), apply, _checkpoint)
        return tuple(env[i] for _, i in program.outputs)

    return f


# Compiled with jax.jit only when XLA's compile time is small and predictable: it grows faster
# than the program (and cannot be interrupted). Measured (XLA CPU, fusion on), seconds to compile:
#   nodes, kind          value/vjp     Jacobian rows    Hessian (hvp or jacfwd(jacrev))
#   ~66, chain of sin     0.06          0.09             250 nodes: 8.7-11.5, 1,000: 173 (4.4 GB)
#   67, tanh(W @ v)       0.64          0.61             19 nodes: 1.0; 103 nodes: 7.5
#   1,002 chain           1.05          6.45
#   3,002 tanh(v)*x+v     > 300 ("Very slow compile?"); the audit's 2,000-statement program
#                         with a Hessian aborted the process (std::bad_alloc) after 131 s
# Bigger programs run op by op (JAX's eager mode: every primitive compiled once per shape and
# cached by JAX): linear in the program, ~0.2 ms a node for a VJP (4,000-node chain: 0.7 s; its
# Hessian of 1,000 nodes: 0.7-1.4 s), and it reaches the deadline at every node. The thresholds
# are backends.JIT_MAX_NODES (64 nodes; 16 for the Hessian).

_COMPILED = caches.register("jax", 256)  # jitted functions, by program, what is differentiated, kind


def _function(
    program: Program, wrt: tuple[str, ...], what: Any, apply: Apply = apply_op
) -> Callable[..., Any]:
    """The function of (wrt values, other values[, cotangents or directions]) for `what`:
    "value"; "vjp" (one cotangent per output); ("jac_rows", B): B rows of the Jacobian of all
    outputs flattened, from B flat unit cotangents; ("hvp_cols", B): B columns of the Hessian
    of the scalar output 0, from B flat unit directions; ("flat", shapes): all outputs
    flattened, at a batch of flat points (finite differences)."""
    f = program_function(program, wrt, apply)
    k, n_out = len(wrt), len(program.outputs)
    if what == "value":
        return f
    if what == "vjp":

        def vjp(*args: Any) -> Any:
            values, cots = args[:-n_out], args[-n_out:]
            outs, pullback = jax.vjp(lambda *w: f(*w, *values[k:]), *values[:k])
            return outs, pullback(tuple(cots))

        return vjp
    kind, param = what
    if kind == "jac_rows":

        def rows(*args: Any) -> Any:
            values, cots = args[:-1], args[-1]
            outs, pullback = jax.vjp(lambda *w: f(*w, *values[k:]), *values[:k])
            shapes, dtypes = [o.shape for o in outs], [o.dtype for o in outs]
            return jax.vmap(lambda c: pullback(_unflatten(c, shapes, dtypes)))(cots)

        return rows
    if kind == "hvp_cols":

        def columns(*args: Any) -> Any:
            values, dirs = args[:-1], args[-1]
            grad = jax.grad(lambda *w: jnp.reshape(f(*w, *values[k:])[0], ()), argnums=tuple(range(k)))
            shapes, dtypes = [v.shape for v in values[:k]], [v.dtype for v in values[:k]]
            tangents = lambda d: _unflatten(d, shapes, dtypes)  # noqa: E731
            return jax.vmap(lambda d: jax.jvp(grad, tuple(values[:k]), tangents(d))[1])(dirs)

        return columns
    shapes = param  # ("flat", shapes): all outputs flattened, at a batch of flat points

    def flat(v: Any, *others: Any) -> Any:
        parts = _unflatten(v, shapes)
        return jnp.concatenate([jnp.ravel(o).astype(jnp.float64) for o in f(*parts, *others)])

    return jax.vmap(flat, in_axes=(0,) + (None,) * (len(program.inputs) - k))


def _unflatten(v: Any, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[Any] = ()) -> tuple[Any, ...]:
    """v's consecutive pieces in the given shapes (and dtypes, where given)."""
    parts, start = [], 0
    for k, shape in enumerate(shapes):
        size = math.prod(shape)
        part = jnp.reshape(v[start : start + size], shape)
        parts.append(part.astype(dtypes[k]) if dtypes else part)
        start += size
    return tuple(parts)


def jitted(program: Program, what: Any) -> bool:
    """Whether `what` is compiled for this program (else it runs op by op)."""
    kind = what if isinstance(what, str) else what[0]
    return operation_count(program) <= JIT_MAX_NODES[kind]


def call(program: Program, wrt: Sequence[str], what: Any, *args: Any, apply: Apply | None = None) -> Any:
    """Run `what` for this program: compiled once per (program, shapes, dtypes, what) when it is
    small, op by op otherwise; or op by op with `apply` (JAX's own apply_op, or one that adds
    rounding noise) when it is given: XLA may rewrite a compiled program, e.g. fold log(exp(x))
    into x, which op by op never does."""
    if apply is not None or not jitted(program, what):
        return _function(program, tuple(wrt), what, apply or apply_op)(*map(jnp.asarray, args))
    key = (program, tuple(wrt), what)
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn(*args)
    fn = jax.jit(_function(program, tuple(wrt), what))
    result = fn(*args)  # compiles
    _COMPILED.put(key, fn)  # kept once it compiled and ran
    return result


def _memory_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """XLA's allocator running out is a JaxRuntimeError to Python; here it becomes MemoryError,
    as numpy's does, so every stage treats it alike: a resource error for the request, never a
    reference that "failed" or an internal error."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except jax.errors.JaxRuntimeError as exc:
            text = str(exc)
            if "RESOURCE_EXHAUSTED" in text or "Out of memory" in text:
                raise MemoryError(f"JAX ran out of memory: {text.splitlines()[0]}") from None
            raise

    return wrapped


def _as_jax(value: np.ndarray, native: bool = False) -> Any:
    return jnp.asarray(_host(value, native))


def _host(value: np.ndarray, native: bool = False) -> np.ndarray:
    """An argument for `call`, in the dtype JAX computes in: numpy, which a compiled function
    takes in its C++ fast path (jnp.asarray costs about 20 µs an array; the worked example's
    check makes six)."""
    value = np.asarray(value)
    return value.astype(np.float64, copy=False) if value.dtype.kind == "f" and not native else value


@_memory_errors
def derivatives(point: Point, native: bool = False, apply: Apply | None = None) -> Derivatives:
    """JAX's values and derivatives at a point (masks multiply the gradients, as hooks do).
    JAX is a float64 reference whatever the request's dtypes (the engine keeps float32);
    native=True computes in the inputs' own dtypes instead, op by op: the same computation the
    engine does, done by another implementation, for judging floating point's own errors.
    `apply` evaluates each op instead of apply_op (op by op): see noisy()."""
    eager = apply or (apply_in_dtype if native else None)
    program, wrt, checks = point.program, point.wrt, point.checks
    args = [_host(point.values[n], native) for n in wrt]
    args += [_host(v, native) for v in point.fixed.values()]
    names = program.output_names
    d = Derivatives()
    if "vjp" not in checks or not wrt:
        outs = call(program, wrt, "value", *args, apply=eager)
        d.values = {n: np.asarray(o) for n, o in zip(names, outs)}
    if not wrt:
        return d

    def masked(name: str, g: Any) -> SourceValues:
        return SourceValues(point.masked(name, np.asarray(g, dtype=np.float64)))

    if "vjp" in checks:
        dtypes = [program.node(i).dtype if native else "float64" for _, i in program.outputs]
        cots = [np.asarray(c, dtype) for c, dtype in zip(point.cotangents, dtypes)]
        outs, grads = call(program, wrt, "vjp", *args, *cots, apply=eager)
        d.values = {n: np.asarray(o) for n, o in zip(names, outs)}
        d.vjp = {n: masked(n, g) for n, g in zip(wrt, grads)}
    if "jacobian" in checks:
        rows = _jacobian_rows(point, args, eager)
        start = 0
        for oname, oshape in point.output_shapes():
            size = math.prod(oshape)
            for n in wrt:
                block = rows[n][start : start + size].reshape(oshape + point.shape(n))
                d.jacobian[(oname, n)] = masked(n, block)
            start += size
    if "hessian" in checks:
        h = _hessian(point, args, eager)
        offsets = np.cumsum([0] + [int(np.size(point.values[n])) for n in wrt])
        for a, na in enumerate(wrt):
            for b, nb in enumerate(wrt):
                block = h[offsets[a] : offsets[a + 1], offsets[b] : offsets[b + 1]]
                d.hessian[(na, nb)] = SourceValues(block.reshape(point.shape(na) + point.shape(nb)))
    return d


def _jacobian_rows(point: Point, args: list[Any], eager: Apply | None = None) -> dict[str, np.ndarray]:
    """Every output entry's gradient (all outputs flattened), per input: shape (m,) + input's,
    in batches of rows whose cotangents and intermediates stay within BATCH_ELEMENTS."""
    program, wrt = point.program, point.wrt
    m = sum(math.prod(s) for _, s in point.output_shapes())
    _, largest = intermediate_sizes(program)
    step = batch_size(max(largest, m, *(int(np.size(point.values[n])) for n in wrt)), m)
    rows = {n: np.zeros((m, *point.shape(n))) for n in wrt}
    for start in range(0, m, step):
        deadline.checkpoint()
        stop = min(start + step, m)
        cot = np.zeros((step, m))
        cot[np.arange(stop - start), np.arange(start, stop)] = 1.0
        grads = call(program, wrt, ("jac_rows", step), *args, cot, apply=eager)
        for n, g in zip(wrt, grads):
            rows[n][start:stop] = np.asarray(g, dtype=np.float64)[: stop - start]
    return rows


def _hessian(point: Point, args: list[Any], eager: Apply | None = None) -> np.ndarray:
    """The Hessian of the scalar output over every differentiated entry (n x n), from batches
    of Hessian-vector products with unit directions (forward over reverse, as jax.hessian)."""
    program, wrt = point.program, point.wrt
    n = sum(int(np.size(point.values[name])) for name in wrt)
    _, largest = intermediate_sizes(program)
    step = batch_size(max(largest, n), n)
    h = np.zeros((n, n))
    for start in range(0, n, step):
        deadline.checkpoint()
        stop = min(start + step, n)
        dirs = np.zeros((step, n))
        dirs[np.arange(stop - start), np.arange(start, stop)] = 1.0
        cols = call(program, wrt, ("hvp_cols", step), *args, dirs, apply=eager)
        flat = np.concatenate([np.asarray(c, np.float64).reshape(step, -1) for c in cols], axis=1)
        h[:, start:stop] = flat[: stop - start].T
    return h


def flat_function(point: Point) -> Callable[[np.ndarray], np.ndarray]:
    """All outputs, flattened and concatenated, at each of a batch of points (a point: every wrt
    entry, flattened; other inputs fixed): compiled once, then fast for many points."""
    what = ("flat", tuple(point.shape(n) for n in point.wrt))
    others = [_as_jax(v) for v in point.fixed.values()]
    return _memory_errors(
        lambda xs: np.asarray(call(point.program, point.wrt, what, jnp.asarray(xs), *others))
    )


def noisy(eps: float, seed: int) -> Apply:
    """An apply that rounds every op's result to a random nearby value (relative error up to
    eps): Monte Carlo arithmetic. A few runs show how far rounding in this very computation can
    move each result, entry by entry: cancellation between ops included, and, for the ops that
    subtract an intermediate of their own (a mean, a log-sum-exp), inside them too."""
    rng = np.random.default_rng(seed)

    def jiggle(v: Any) -> Any:
        if not jnp.issubdtype(jnp.result_type(v), jnp.floating):
            return v
        return v * jnp.asarray(1.0 + eps * rng.uniform(-1.0, 1.0, jnp.shape(v)), jnp.result_type(v))

    def centred(x: Any, axis: Any, keepdims: bool, correction: int, root: bool) -> Any:
        m = jiggle(jnp.mean(x, axis=axis, keepdims=True))
        d = jiggle(x - m)
        count = x.size if axis is None else math.prod(x.shape[a] for a in np.atleast_1d(axis))
        v = jiggle(jnp.sum(d * d, axis=axis, keepdims=keepdims)) / (count - correction)
        return jnp.sqrt(v) if root else v

    def log_softmax(x: Any, axis: Any) -> Any:
        return jiggle(x - jiggle(jax.nn.logsumexp(x, axis=axis, keepdims=True)))

    inside = {
        "var": lambda o, a: centred(o[0], _ax(o[0], a), a["keepdims"], a["correction"], False),
        "std": lambda o, a: centred(o[0], _ax(o[0], a), a["keepdims"], a["correction"], True),
        "log_softmax": lambda o, a: log_softmax(o[0], _softmax_axis(o[0], a)),
        "softmax": lambda o, a: jnp.exp(log_softmax(o[0], _softmax_axis(o[0], a))),
    }

    def apply(node: IRNode, operands: list[Any]) -> Any:
        lower = inside.get(node.op)
        out = lower(operands, node.attr_dict) if lower else apply_op(node, operands)
        return tuple(jiggle(o) for o in out) if isinstance(out, tuple) else jiggle(out)

    return apply


@_memory_errors
def shifted_derivatives(point: Point, shifts: dict[int, dict[int, np.ndarray]]) -> Derivatives:
    """The VJP and Jacobian (as the point's checks ask) with some nodes' operands shifted: node id
    -> operand index -> what to add. Just off a kink this gives one side's derivatives. Compiled
    for a small program, once per (program, which operands are shifted, shapes): a check at a
    kink evaluates it a dozen times with other amounts (op by op, each cost 40 ms of JAX's
    dispatch for a 2-layer MLP, and each new shape compiled primitive by primitive)."""
    program, wrt = point.program, tuple(point.wrt)
    others = tuple(n for n in program.input_names if n not in wrt)
    layout = tuple(sorted((i, k) for i, s in shifts.items() for k in s))
    checks = tuple(q for q in ("vjp", "jacobian") if q in point.checks)
    run = functools.partial(_shifted_run, program, wrt, others, layout, checks)
    fn: Callable[..., Any] = run
    key = (program, wrt, ("shifted", layout, checks))
    if jitted(program, "jac_rows" if "jacobian" in checks else "vjp"):
        fn = _COMPILED.get(key) or jax.jit(run)
    outs, grads, rows = fn(
        [_host(point.values[n]) for n in wrt],
        [_host(point.values[n]) for n in others],
        [np.asarray(c) for c in point.cotangents] if "vjp" in checks else [],
        [np.asarray(shifts[i][k], np.float64) for i, k in layout],
    )
    if fn is not run:
        _COMPILED.put(key, fn)  # kept once it compiled and ran
    d = Derivatives(values={n: np.asarray(o) for n, o in zip(program.output_names, outs)})

    def masked(name: str, g: Any) -> SourceValues:
        return SourceValues(point.masked(name, np.asarray(g, dtype=np.float64)))

    if grads is not None:
        d.vjp = {n: masked(n, g) for n, g in zip(wrt, grads)}
    if rows is not None:
        start = 0
        for oname, o in zip(program.output_names, outs):
            size = math.prod(o.shape)
            for n, r in zip(wrt, rows):
                block = np.asarray(r)[start : start + size].reshape(o.shape + point.shape(n))
                d.jacobian[(oname, n)] = masked(n, block)
            start += size
    return d


def _shifted_run(
    program: Program,
    wrt: tuple[str, ...],
    others: tuple[str, ...],
    layout: tuple[tuple[int, int], ...],
    checks: tuple[str, ...],
    wrt_values: list[Any],
    other_values: list[Any],
    cotangents: list[Any],
    amounts: list[Any],
) -> tuple[Any, Any, Any]:
    """The outputs, their VJP with `cotangents` and every row of their Jacobian (None where
    `checks` do not ask), with the operands in `layout` (node id, operand) shifted by `amounts`."""
    shifts: dict[int, dict[int, Any]] = {}
    for (node, k), amount in zip(layout, amounts):
        shifts.setdefault(node, {})[k] = amount

    def f(*w: Any) -> tuple[Any, ...]:
        values = dict(zip(wrt, w)) | dict(zip(others, other_values))
        env = evaluate(program, values, _shifted(shifts), _checkpoint)
        return tuple(env[i] for _, i in program.outputs)

    outs, pullback = jax.vjp(f, *wrt_values)
    grads = rows = None
    if "vjp" in checks:
        grads = pullback(tuple(jnp.asarray(c, o.dtype) for c, o in zip(cotangents, outs)))
    if "jacobian" in checks:
        shapes = [o.shape for o in outs]
        m = sum(math.prod(s) for s in shapes)
        rows = jax.vmap(lambda c: pullback(_unflatten(c, shapes)))(jnp.eye(m))
    return outs, grads, rows


def shifted_hessian(point: Point, shifts: dict[int, dict[int, np.ndarray]]) -> np.ndarray:
    """The Hessian (n x n over every differentiated entry) with some nodes' operands shifted, as
    shifted_derivatives: one side's second derivatives just off a kink."""
    args = [_as_jax(point.values[n]) for n in point.wrt] + [_as_jax(v) for v in point.fixed.values()]
    return _hessian(point, args, _shifted(shifts))


def _shifted(shifts: dict[int, dict[int, np.ndarray]]) -> Apply:
    def apply(node: IRNode, operands: list[Any]) -> Any:
        return apply_op(node, _shift_operands(shifts, node, operands))

    return apply


def _shift_operands(
    shifts: dict[int, dict[int, np.ndarray]], node: IRNode, operands: list[Any]
) -> list[Any]:
    shift = shifts.get(node.id)
    if not shift:
        return operands
    return [o + jnp.asarray(shift[k]) if k in shift else o for k, o in enumerate(operands)]


# A kinked quantity: (node id, kind, operand k, flat entry j, second entry): "entry", operand k's
# entry j; "tie", operand k minus the other at entry j; "diff", operand k's entry j minus its
# entry j2 (tied entries of a max). An elementwise op's entries index its operands broadcast
# together (kinks.sides(spread=True) moves them so).
Pick = tuple[int, str, int, int, int]


def kinked_jacobian(point: Point, picks: Sequence[Pick]) -> np.ndarray:
    """One row per pick: the derivative of its kinked quantity with respect to every entry of
    the differentiated inputs (flattened, in order). Run op by op, as shifted_derivatives."""
    args = [_as_jax(point.values[n]) for n in point.wrt]
    rows = jax.jacrev(_kinked_quantities(point, picks), argnums=tuple(range(len(args))))(*args)
    return np.concatenate([np.asarray(r, np.float64).reshape(len(picks), -1) for r in rows], axis=1)


def kinked_moved(point: Point, picks: Sequence[Pick], seed: int = 0) -> np.ndarray:
    """Per pick, whether its kinked quantity changes when the differentiated inputs move a
    little (each entry by 1e-4 of its size, in a random direction): a quantity whose
    derivative is 0 may still flip (x * x == 0), one that never changes cannot (x == x)."""
    rng = np.random.default_rng(seed)
    here = [np.asarray(point.values[n], np.float64) for n in point.wrt]
    moved = [v + 1e-4 * np.maximum(1.0, np.abs(v)) * rng.choice([-1.0, 1.0], v.shape) for v in here]
    f = _kinked_quantities(point, picks)
    before = np.asarray(f(*map(_as_jax, here)))
    return np.asarray(f(*map(_as_jax, moved))) != before


def kinked_values(
    point: Point, picks: Sequence[Pick], shifts: dict[int, dict[int, np.ndarray]]
) -> np.ndarray:
    """Per pick, its kinked quantity with some nodes' operands shifted (as shifted_derivatives):
    where a run just off the kinks put it."""
    args = [_as_jax(point.values[n]) for n in point.wrt]
    return np.asarray(_kinked_quantities(point, picks, shifts)(*args), np.float64)


def _kinked_quantities(
    point: Point, picks: Sequence[Pick], shifts: dict[int, dict[int, np.ndarray]] | None = None
) -> Callable[..., Any]:
    program, wrt = point.program, point.wrt
    others = [n for n in program.input_names if n not in wrt]
    wanted = {p[0] for p in picks}

    def quantities(*w: Any) -> Any:
        seen: dict[int, list[Any]] = {}

        def apply(node: IRNode, operands: list[Any]) -> Any:
            # (the kinked operands as the shifted run sees them)
            operands = _shift_operands(shifts or {}, node, operands)
            if node.id in wanted:
                seen[node.id] = operands
            return apply_op(node, operands)

        values = dict(zip(wrt, w)) | {n: _as_jax(point.values[n]) for n in others}
        evaluate(program, values, apply, _checkpoint)
        out = []
        for node_id, kind, k, j, j2 in picks:
            x = seen[node_id][k]
            if kind != "diff":  # an elementwise op's entries index its operands broadcast together
                spread = jnp.broadcast_arrays(*seen[node_id])
                x = spread[k] - spread[1 - k] if kind == "tie" else spread[k]
            flat = jnp.ravel(jnp.asarray(x, jnp.float64))
            out.append(flat[j] - flat[j2] if kind == "diff" else flat[j])
        return jnp.stack(out)

    return quantities
