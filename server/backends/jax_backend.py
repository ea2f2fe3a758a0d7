"""JAX as a reference: every op lowered to jax.numpy (float64), derivatives by jax.vjp, jax.jacrev
and jax.hessian, compiled once per (program, shapes, dtypes, what is differentiated) and cached."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from crossgrad.engine import OPS
from crossgrad.engine.optable import normalize_axes
from jax.scipy.special import logsumexp as _logsumexp

from ..compare import SourceValues
from ..derivatives import Derivatives, Point
from ..ir import IRNode, Program, evaluate
from ..language import apply_index

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")


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
    "gelu": lambda o, a: jax.nn.gelu(o[0], approximate=True),
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
    "softmax": lambda o, a: jax.nn.softmax(o[0], axis=a["axis"]),
    "log_softmax": lambda o, a: jax.nn.log_softmax(o[0], axis=a["axis"]),
    "mse_loss": lambda o, a: _reduce((o[0] - o[1]) ** 2, a["reduction"]),
    "nll_loss": lambda o, a: _nll(o[0], o[1], a["reduction"]),
    "cross_entropy": lambda o, a: _nll(jax.nn.log_softmax(o[0], axis=1), o[1], a["reduction"]),
    "binary_cross_entropy_with_logits": lambda o, a: _reduce(
        jnp.maximum(o[0], 0) - o[0] * o[1] + jnp.log1p(jnp.exp(-jnp.abs(o[0]))), a["reduction"]
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


def program_function(program: Program, wrt: Sequence[str]) -> Callable[..., tuple[Any, ...]]:
    """f(*wrt_values, *other_values) -> outputs: the program as a function JAX can transform."""
    others = [n for n in program.input_names if n not in wrt]
    names = list(wrt) + others

    def f(*values: Any) -> tuple[Any, ...]:
        env = evaluate(program, dict(zip(names, values)), apply_op)
        return tuple(env[i] for _, i in program.outputs)

    return f


@functools.lru_cache(maxsize=256)
def _function(program: Program, wrt: tuple[str, ...], what: Any) -> Callable[..., Any]:
    """The (uncompiled) function of (wrt values, other values[, cotangents]) for `what`:
    "value", "vjp" (one cotangent per output), "jacobian", "hessian" (scalar output 0), or
    ("flat", shapes): all outputs flattened, at a batch of flat points (finite differences)."""
    f = program_function(program, wrt)
    k, n_out = len(wrt), len(program.outputs)
    argnums = tuple(range(k))
    if what == "value":
        return f
    if what == "vjp":

        def vjp(*args: Any) -> Any:
            values, cots = args[:-n_out], args[-n_out:]
            outs, pullback = jax.vjp(lambda *w: f(*w, *values[k:]), *values[:k])
            return outs, pullback(tuple(cots))

        return vjp
    if what == "jacobian":
        return jax.jacrev(f, argnums=argnums)
    if what == "hessian":
        return jax.hessian(lambda *a: f(*a)[0], argnums=argnums)
    _, shapes = what  # ("flat", shapes): all outputs flattened, at a batch of flat points
    sizes = [int(np.prod(s)) for s in shapes]

    def flat(v: Any, *others: Any) -> Any:
        parts, start = [], 0
        for shape, size in zip(shapes, sizes):
            parts.append(v[start : start + size].reshape(shape))
            start += size
        return jnp.concatenate([jnp.ravel(o).astype(jnp.float64) for o in f(*parts, *others)])

    return jax.vmap(flat, in_axes=(0,) + (None,) * (len(program.inputs) - k))


@functools.lru_cache(maxsize=256)
def _compiled(program: Program, wrt: tuple[str, ...], what: Any) -> Callable[..., Any]:
    return jax.jit(_function(program, wrt, what))


def call(program: Program, wrt: Sequence[str], what: Any, *args: Any) -> Any:
    """Run `what` for this program, compiled once per (program, shapes, dtypes, what)."""
    return _compiled(program, tuple(wrt), what)(*args)


def _as_jax(value: np.ndarray) -> Any:
    value = np.asarray(value)
    return jnp.asarray(value, jnp.float64 if value.dtype.kind == "f" else value.dtype)


def derivatives(point: Point) -> Derivatives:
    """JAX's values and derivatives at a point (masks multiply the gradients, as hooks do)."""
    program, wrt, checks = point.program, point.wrt, point.checks
    # JAX is a float64 reference whatever the request's dtype (the engine keeps float32).
    args = [_as_jax(point.values[n]) for n in wrt] + [_as_jax(v) for v in point.fixed.values()]
    names = program.output_names
    d = Derivatives()
    if "vjp" not in checks or not wrt:
        outs = call(program, wrt, "value", *args)
        d.values = {n: np.asarray(o) for n, o in zip(names, outs)}
    if not wrt:
        return d

    def masked(name: str, g: Any) -> SourceValues:
        return SourceValues(point.masked(name, np.asarray(g, dtype=np.float64)))

    if "vjp" in checks:
        cots = [jnp.asarray(c, jnp.float64) for c in point.cotangents]
        outs, grads = call(program, wrt, "vjp", *args, *cots)
        d.values = {n: np.asarray(o) for n, o in zip(names, outs)}
        d.vjp = {n: masked(n, g) for n, g in zip(wrt, grads)}
    if "jacobian" in checks:
        jac = call(program, wrt, "jacobian", *args)
        for oname, per_input in zip(names, jac):
            for n, block in zip(wrt, per_input):
                d.jacobian[(oname, n)] = masked(n, block)
    if "hessian" in checks:
        hess = call(program, wrt, "hessian", *args)
        for a, row in zip(wrt, hess):
            for b, block in zip(wrt, row):
                d.hessian[(a, b)] = SourceValues(np.asarray(block, dtype=np.float64))
    return d


def flat_function(point: Point) -> Callable[[np.ndarray], np.ndarray]:
    """All outputs, flattened and concatenated, at each of a batch of points (a point: every wrt
    entry, flattened; other inputs fixed): compiled once, then fast for many points."""
    what = ("flat", tuple(point.shape(n) for n in point.wrt))
    others = [_as_jax(v) for v in point.fixed.values()]
    return lambda xs: np.asarray(call(point.program, point.wrt, what, jnp.asarray(xs), *others))
