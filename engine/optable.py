"""The op set, declared once: name, tensor arity, attributes, shape rule, smoothness, backward node name.

Every backend (the engine here; sympy and JAX in crossgrad.server) implements exactly this table, and a
test fails when one lacks an op. Shape rules raise ShapeError with a message naming the op and shapes, so
a program can be shape-checked before anything is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]


class ShapeError(ValueError, RuntimeError):
    """Operands whose shapes an op cannot combine. A RuntimeError, as torch's are (code ported
    from torch catches those), and a ValueError, as numpy's."""


@dataclass(frozen=True)
class Domain:
    """What an attribute's value must satisfy beyond its kind, for the op to mean anything."""

    text: str  # the condition in words, for messages: "positive", "not 0"
    test: Callable[[Any], bool]
    why: str = ""  # what goes wrong outside it (what torch computes there)

    def problem(self, op: str, name: str, value: Any) -> str | None:
        """A message when value lies outside the domain, else None."""
        if value is None or self.test(value):
            return None
        return f"{op}: {name} must be {self.text}, got {value:g}" + (
            f" ({self.why})" if self.why else ""
        )


SOFTPLUS_BETA = Domain(
    "positive",
    lambda v: v > 0,
    "torch divides by it: 0 gives inf, and a negative beta is another function, not a softplus",
)
NONZERO_ORD = Domain(
    "a nonzero number, inf or -inf",
    lambda v: v != 0,
    "ord=0 counts the nonzero entries, which has no gradient",
)


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str  # "int", "float", "bool", "str", "axis" (int | tuple | None), "shape", "index", "ints",
    # "dtype" (a numpy dtype; internal ops only)
    default: Any = None
    required: bool = False
    domain: Domain | None = None  # what the value must satisfy beyond its kind (None: any)
    infinite: bool = False  # a float that may also be inf or -inf (norm's ord)


@dataclass(frozen=True)
class OpSpec:
    name: str
    arity: int | None  # number of tensor operands; None = a list of tensors (concat, stack)
    attrs: tuple[Attr, ...]
    shape_rule: Callable[..., Any]
    node_name: str | Callable[[dict[str, Any], tuple[Shape, ...]], str]
    nonsmooth: str | None = None  # where the op is not differentiable, in words
    differentiable: bool = True  # False: the result never requires grad (comparisons, argmax)
    internal: bool = False  # used by VJP rules only; not part of the request language
    operands: tuple[str, ...] = field(default=())  # operand names, for messages
    promotes: bool = False  # the operands' dtypes combine by torch's type promotion
    # operands that never carry a gradient (a condition, a mask, class targets): as in torch they
    # are left out of the node's next_functions
    no_grad_operands: tuple[int, ...] = ()

    def node_name_for(self, attrs: dict[str, Any], shapes: tuple[Shape, ...]) -> str:
        """The backward node's name; some depend on attributes or operand ranks, as in torch."""
        return self.node_name if isinstance(self.node_name, str) else self.node_name(attrs, shapes)

    def attr_defaults(self) -> dict[str, Any]:
        return {a.name: a.default for a in self.attrs}


# ---------------------------------------------------------------- shape rules


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def broadcast_shapes(op: str, *shapes: Shape) -> Shape:
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(-ndim, 0):
        size = 1
        for s in shapes:
            d = s[i] if -i <= len(s) else 1
            if d != 1:
                if size not in (1, d):
                    raise ShapeError(
                        f"{op}: shapes {' and '.join(_fmt(s) for s in shapes)} do not broadcast"
                    )
                size = d
        out.append(size)
    return tuple(out)


def normalize_axis(op: str, axis: int, ndim: int) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ShapeError(f"{op}: axis {axis} is out of range for a tensor of {ndim} dimensions")
    return axis % ndim if ndim else 0


def normalize_axes(op: str, axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Non-negative axes. A 0-d tensor accepts axis 0 and -1 (as torch does), which name nothing."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    norm = tuple(normalize_axis(op, a, ndim) for a in axes)
    if ndim == 0:
        return ()
    if len(set(norm)) != len(norm):
        raise ShapeError(f"{op}: axis {axis} names a dimension twice")
    return norm


def _same(op: str, x: Shape, **_: Any) -> Shape:
    return x


def _gelu_shape(op: str, x: Shape, approximate: str = "none", **_: Any) -> Shape:
    if approximate not in ("none", "tanh"):
        raise ShapeError(
            f"{op}: approximate must be 'none' (erf, torch's default) or 'tanh', got {approximate!r}"
        )
    return x


def _broadcast(op: str, *shapes: Shape, **_: Any) -> Shape:
    return broadcast_shapes(op, *shapes)


def _reduce(op: str, x: Shape, axis: Any = None, keepdims: bool = False, **_: Any) -> Shape:
    axes = normalize_axes(op, axis, len(x))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _norm(
    op: str, x: Shape, axis: Any = None, keepdims: bool = False, ord: float = 2.0, **_: Any
) -> Shape:
    """A reduction; the inf, -inf and negative norms have no identity, so (as torch) they refuse
    to reduce an empty dimension."""
    axes = normalize_axes(op, axis, len(x))
    if ord < 0 or math.isinf(ord):
        if axis is None and math.prod(x) == 0:
            raise ShapeError(
                f"{op}: cannot compute the {ord:g} norm on an empty tensor because the operation "
                "does not have an identity"
            )
        for a in axes:
            if x[a] == 0:
                raise ShapeError(
                    f"{op}: cannot compute the {ord:g} norm on the dimension {a} because this "
                    "dimension is empty and the operation does not have an identity"
                )
    return _reduce(op, x, axis, keepdims)


def _reduce_nonempty(op: str, x: Shape, axis: Any = None, keepdims: bool = False, **_: Any) -> Shape:
    axes = normalize_axes(op, axis, len(x))
    if any(x[a] == 0 for a in axes) or (not axes and math.prod(x) == 0):
        raise ShapeError(f"{op}: cannot reduce an empty dimension of shape {_fmt(x)}")
    return _reduce(op, x, axis, keepdims)


def _matmul(op: str, a: Shape, b: Shape, **_: Any) -> Shape:
    if not a or not b:
        raise ShapeError(f"{op}: operands must have at least 1 dimension, got {_fmt(a)} and {_fmt(b)}")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"{op}: inner dimensions differ: {_fmt(a)} @ {_fmt(b)} ({a2[-1]} != {b2[-2]})")
    batch = broadcast_shapes(op, a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _dot(op: str, a: Shape, b: Shape, **_: Any) -> Shape:
    if len(a) != 1 or len(b) != 1 or a[0] != b[0]:
        raise ShapeError(f"{op}: needs two 1-D tensors of equal length, got {_fmt(a)} and {_fmt(b)}")
    return ()


def _outer(op: str, a: Shape, b: Shape, **_: Any) -> Shape:
    if len(a) != 1 or len(b) != 1:
        raise ShapeError(f"{op}: needs two 1-D tensors, got {_fmt(a)} and {_fmt(b)}")
    return (a[0], b[0])


def infer_reshape(op: str, x: Shape, shape: Sequence[int]) -> Shape:
    shape = tuple(int(s) for s in shape)
    size = math.prod(x)
    if shape.count(-1) > 1 or any(s < -1 for s in shape):
        raise ShapeError(f"{op}: invalid target shape {_fmt(shape)}")
    if -1 in shape:
        rest = math.prod(s for s in shape if s != -1)
        if rest == 0 or size % rest:
            raise ShapeError(f"{op}: cannot reshape {_fmt(x)} ({size} elements) to {_fmt(shape)}")
        shape = tuple(size // rest if s == -1 else s for s in shape)
    if math.prod(shape) != size:
        raise ShapeError(f"{op}: cannot reshape {_fmt(x)} ({size} elements) to {_fmt(shape)}")
    return shape


def _reshape(op: str, x: Shape, shape: Sequence[int] = (), **_: Any) -> Shape:
    return infer_reshape(op, x, shape)


def _flatten(op: str, x: Shape, start_dim: int = 0, end_dim: int = -1, **_: Any) -> Shape:
    if not x:
        return (1,)
    s = normalize_axis(op, start_dim, len(x))
    e = normalize_axis(op, end_dim, len(x))
    if s > e:
        raise ShapeError(f"{op}: start_dim {start_dim} comes after end_dim {end_dim}")
    return (*x[:s], math.prod(x[s : e + 1]), *x[e + 1 :])


def _squeeze(op: str, x: Shape, axis: Any = None, **_: Any) -> Shape:
    if axis is None:
        return tuple(d for d in x if d != 1)
    axes = normalize_axes(op, axis, len(x))
    return tuple(d for i, d in enumerate(x) if not (i in axes and d == 1))


def _unsqueeze(op: str, x: Shape, axis: int = 0, **_: Any) -> Shape:
    a = normalize_axis(op, axis, len(x) + 1)
    return (*x[:a], 1, *x[a:])


def _transpose(op: str, x: Shape, dim0: int = 0, dim1: int = 1, **_: Any) -> Shape:
    if not x:
        return x
    a, b = normalize_axis(op, dim0, len(x)), normalize_axis(op, dim1, len(x))
    out = list(x)
    out[a], out[b] = out[b], out[a]
    return tuple(out)


def _permute(op: str, x: Shape, dims: Sequence[int] | int = (), **_: Any) -> Shape:
    dims = (dims,) if isinstance(dims, int) else dims  # x.permute(0), as the engine takes it
    norm = tuple(normalize_axis(op, d, len(x)) for d in dims)
    if sorted(norm) != list(range(len(x))):
        raise ShapeError(f"{op}: dims {tuple(dims)} are not a permutation of {len(x)} dimensions")
    return tuple(x[d] for d in norm)


def _expand(op: str, x: Shape, shape: Sequence[int] = (), **_: Any) -> Shape:
    shape = tuple(int(s) for s in shape)
    if len(shape) < len(x):
        raise ShapeError(f"{op}: cannot expand {_fmt(x)} to fewer dimensions {_fmt(shape)}")
    lead = len(shape) - len(x)
    out = list(shape)
    for i, d in enumerate(x):
        t = shape[lead + i]
        if t == -1:
            out[lead + i] = d
        elif d not in (1, t):
            raise ShapeError(f"{op}: cannot expand {_fmt(x)} to {_fmt(shape)}")
    if any(s < 0 for s in out):
        raise ShapeError(f"{op}: invalid target shape {_fmt(shape)}")
    return tuple(out)


def _concat(op: str, *xs: Shape, axis: int = 0, **_: Any) -> Shape:
    if not xs:
        raise ShapeError(f"{op}: needs at least one tensor")
    nd = len(xs[0])
    if nd == 0:
        raise ShapeError(f"{op}: zero-dimensional tensors cannot be concatenated")
    a = normalize_axis(op, axis, nd)
    for s in xs:
        if len(s) != nd or any(s[i] != xs[0][i] for i in range(nd) if i != a):
            raise ShapeError(f"{op}: shapes {', '.join(map(_fmt, xs))} differ outside axis {axis}")
    return (*xs[0][:a], sum(s[a] for s in xs), *xs[0][a + 1 :])


def _stack(op: str, *xs: Shape, axis: int = 0, **_: Any) -> Shape:
    if not xs:
        raise ShapeError(f"{op}: needs at least one tensor")
    if any(s != xs[0] for s in xs):
        raise ShapeError(f"{op}: all shapes must be equal, got {', '.join(map(_fmt, xs))}")
    a = normalize_axis(op, axis, len(xs[0]) + 1)
    return (*xs[0][:a], len(xs), *xs[0][a:])


def split_sizes(op: str, x: Shape, sections: Any, axis: int) -> list[int]:
    """Sizes of the pieces: an int is a piece size (last piece smaller), a list gives each size."""
    if not x:
        raise ShapeError(f"{op}: cannot split a zero-dimensional tensor")
    n = x[normalize_axis(op, axis, len(x))]
    if isinstance(sections, int):
        if sections <= 0:
            raise ShapeError(f"{op}: split size must be positive, got {sections}")
        return [min(sections, n - i) for i in range(0, n, sections)] or [0]
    sizes = [int(s) for s in sections]
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ShapeError(f"{op}: sizes {sizes} do not add up to {n} along axis {axis}")
    return sizes


def _split(op: str, x: Shape, sections: Any = 1, axis: int = 0, **_: Any) -> tuple[Shape, ...]:
    a = normalize_axis(op, axis, max(len(x), 1))
    return tuple((*x[:a], s, *x[a + 1 :]) for s in split_sizes(op, x, sections, axis))


def _flip(op: str, x: Shape, axis: Any = None, **_: Any) -> Shape:
    normalize_axes(op, axis, len(x))
    return x


def _pad(op: str, x: Shape, pad: Sequence[int] | int = (), **_: Any) -> Shape:
    # torch.nn.functional.pad order: (last_lo, last_hi, second_last_lo, second_last_hi, ...)
    pad = (pad,) if isinstance(pad, int) else pad
    if len(pad) % 2 or len(pad) // 2 > len(x):
        raise ShapeError(f"{op}: pad {tuple(pad)} needs pairs for at most {len(x)} dimensions")
    if any(int(p) < 0 for p in pad):
        raise ShapeError(f"{op}: negative padding {tuple(pad)} is not supported")
    out = list(x)
    for k in range(len(pad) // 2):
        out[len(x) - 1 - k] += int(pad[2 * k]) + int(pad[2 * k + 1])
    return tuple(out)


def _where(op: str, cond: Shape, x: Shape, y: Shape, **_: Any) -> Shape:
    return broadcast_shapes(op, cond, x, y)


def _masked_fill(op: str, x: Shape, mask: Shape, **_: Any) -> Shape:
    out = broadcast_shapes(op, x, mask)
    if out != x:
        raise ShapeError(f"{op}: mask {_fmt(mask)} must broadcast to the input {_fmt(x)}")
    return x


def _softmax(op: str, x: Shape, axis: int = -1, **_: Any) -> Shape:
    a = normalize_axis(op, axis, max(len(x), 1))
    if x and x[a] == 0:  # its log-sum-exp has no identity (numpy's max refuses it)
        raise ShapeError(f"{op}: cannot normalise over an empty dimension of shape {_fmt(x)}")
    return x


def _loss(op: str, x: Shape, y: Shape, reduction: str = "mean", **_: Any) -> Shape:
    if x != y:
        raise ShapeError(f"{op}: input {_fmt(x)} and target {_fmt(y)} must have the same shape")
    if reduction not in ("mean", "sum", "none"):
        raise ShapeError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return x if reduction == "none" else ()


def _nll(op: str, x: Shape, target: Shape, reduction: str = "mean", **_: Any) -> Shape:
    if len(x) != 2 or target != x[:1]:
        raise ShapeError(
            f"{op}: needs input (N, C) and integer target (N,), got {_fmt(x)} and {_fmt(target)}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ShapeError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return x[:1] if reduction == "none" else ()


def _argreduce(op: str, x: Shape, axis: int | None = None, keepdims: bool = False, **_: Any) -> Shape:
    return _reduce_nonempty(op, x, axis, keepdims)


def _getitem(op: str, x: Shape, index: Any = (), **_: Any) -> Shape:
    from .indexing import index_shape  # numpy-level indexing rules live with the engine

    return index_shape(op, x, index)


def _index_scatter(op: str, g: Shape, index: Any = (), shape: Shape = (), **_: Any) -> Shape:
    return tuple(shape)


# ---------------------------------------------------------------- the table

AXIS = Attr("axis", "axis", None)
KEEPDIMS = Attr("keepdims", "bool", False)
REDUCTION = Attr("reduction", "str", "mean")


def _by_axis(full: str, partial: str, keepdims_counts: bool = False) -> Callable[..., str]:
    """torch names the full reduction and the reduction over given dims differently (for sum and
    mean, keepdims=True takes the dims overload even without dims)."""

    def name(attrs: dict[str, Any], shapes: tuple[Shape, ...]) -> str:
        whole = attrs.get("axis") is None and not (keepdims_counts and attrs.get("keepdims"))
        return full if whole else partial

    return name


def _squeeze_node_name(attrs: dict[str, Any], shapes: tuple[Shape, ...]) -> str:
    axis = attrs.get("axis")
    return (
        "SqueezeBackward0"
        if axis is None
        else ("SqueezeBackward1" if isinstance(axis, int) else "SqueezeBackward2")
    )


def _matmul_node_name(attrs: dict[str, Any], shapes: tuple[Shape, ...]) -> str:
    ranks = tuple(len(s) for s in shapes)
    # torch's single-node cases; others (batched, 1-D @ 2-D) are compositions there.
    return {(2, 2): "MmBackward0", (2, 1): "MvBackward0", (1, 1): "DotBackward0"}.get(
        ranks, "MatmulBackward0"
    )


def _op1(
    name: str, attrs: tuple[Attr, ...], rule: Callable[..., Any], node: Any, nonsmooth: str | None = None
) -> OpSpec:
    """An op of one tensor operand."""
    return OpSpec(name, 1, attrs, rule, node, nonsmooth, operands=("x",))


def _unary(name: str, node: str, nonsmooth: str | None = None, *attrs: Attr) -> OpSpec:
    return OpSpec(name, 1, attrs, _same, node, nonsmooth, operands=("x",))


def _binary(name: str, node: str, nonsmooth: str | None = None) -> OpSpec:
    return OpSpec(name, 2, (), _broadcast, node, nonsmooth, operands=("x", "y"), promotes=True)


def _classification_loss(name: str, scores: str) -> OpSpec:
    """Scores (N, C) and integer class targets (N,), which carry no gradient."""
    operands = (scores, "target")
    return OpSpec(
        name, 2, (REDUCTION,), _nll, "NllLossBackward0", operands=operands, no_grad_operands=(1,)
    )


def _reduction(
    name: str, node: Any, nonsmooth: str | None = None, *extra: Attr, shape: Any = _reduce
) -> OpSpec:
    return OpSpec(name, 1, (AXIS, KEEPDIMS, *extra), shape, node, nonsmooth, operands=("x",))


_SPECS = [
    # elementwise arithmetic
    _binary("add", "AddBackward0"),
    _binary("sub", "SubBackward0"),
    _binary("mul", "MulBackward0"),
    _binary("div", "DivBackward0", "where the divisor is 0"),
    _unary("neg", "NegBackward0"),
    _binary("pow_tensor", "PowBackward1", "where the base is 0 or negative"),
    _unary("pow", "PowBackward0", "at 0 for exponents below 1", Attr("exponent", "float", 2.0)),
    _unary("rpow", "PowBackward2", "where the base is 0", Attr("base", "float", 2.0)),
    _unary("rsub", "RsubBackward1", None, Attr("other", "float", 1.0)),
    _binary("maximum", "MaximumBackward0", "at ties (torch and JAX split the gradient 1/2)"),
    _binary("minimum", "MinimumBackward0", "at ties (torch and JAX split the gradient 1/2)"),
    # elementwise functions
    _unary("abs", "AbsBackward0", "at 0 (torch: 0, JAX: 1)"),
    _unary("exp", "ExpBackward0"),
    _unary("log", "LogBackward0", "at 0 and below"),
    _unary("log1p", "Log1PBackward0", "at -1 and below"),
    _unary("expm1", "Expm1Backward0"),
    _unary("sqrt", "SqrtBackward0", "at 0 and below"),
    _unary("reciprocal", "ReciprocalBackward0", "at 0"),
    _unary("sin", "SinBackward0"),
    _unary("cos", "CosBackward0"),
    _unary("tan", "TanBackward0", "at odd multiples of pi/2"),
    _unary("tanh", "TanhBackward0"),
    _unary("sigmoid", "SigmoidBackward0"),
    _unary("relu", "ReluBackward0", "at 0 (torch and JAX: 0, sympy Heaviside(0) = 1/2)"),
    _unary(
        "leaky_relu",
        "LeakyReluBackward0",
        "at 0 (torch: negative_slope)",
        Attr("negative_slope", "float", 0.01),
    ),
    _unary(
        "softplus",
        "SoftplusBackward0",
        "at beta * x = threshold (torch: the value jumps to x past it)",
        Attr("beta", "float", 1.0, domain=SOFTPLUS_BETA),
        Attr("threshold", "float", 20.0),
    ),
    _unary("silu", "SiluBackward0"),
    OpSpec(
        "gelu",
        1,
        (Attr("approximate", "str", "none"),),
        _gelu_shape,
        "GeluBackward0",
        operands=("x",),
    ),
    _unary(
        "clamp",
        "ClampBackward1",
        "at the bounds (torch: gradient 1 on the bound)",
        Attr("min", "float", None),
        Attr("max", "float", None),
    ),
    _unary("sign", "SignBackward0", "at 0 (zero gradient everywhere)"),
    _unary("floor", "FloorBackward0", "at integers (zero gradient everywhere)"),
    _unary("round", "RoundBackward0", "at half-integers (zero gradient everywhere)"),
    # reductions
    _reduction("sum", _by_axis("SumBackward0", "SumBackward1", keepdims_counts=True)),
    _reduction("mean", _by_axis("MeanBackward0", "MeanBackward1", keepdims_counts=True)),
    _reduction("prod", _by_axis("ProdBackward0", "ProdBackward1")),  # smooth: a polynomial
    _op1(
        "max",
        (Attr("axis", "int", None), KEEPDIMS),  # one axis (several: amax)
        _reduce_nonempty,
        _by_axis("MaxBackward1", "MaxBackward0"),
        "at ties (full reduction: split evenly; along an axis: first maximum)",
    ),
    _op1(
        "min",
        (Attr("axis", "int", None), KEEPDIMS),  # one axis (several: amin)
        _reduce_nonempty,
        _by_axis("MinBackward1", "MinBackward0"),
        "at ties (full reduction: split evenly; along an axis: first minimum)",
    ),
    _op1("amax", (AXIS, KEEPDIMS), _reduce_nonempty, "AmaxBackward0", "at ties (split evenly)"),
    _op1("amin", (AXIS, KEEPDIMS), _reduce_nonempty, "AminBackward0", "at ties (split evenly)"),
    # the log of an empty sum is -inf in torch; numpy's max refuses it: refused here
    _reduction("logsumexp", "LogsumexpBackward0", shape=_reduce_nonempty),
    _reduction("var", "VarBackward0", None, Attr("correction", "int", 1)),
    _reduction("std", "StdBackward0", "where all entries are equal", Attr("correction", "int", 1)),
    _op1(
        "norm",
        (AXIS, KEEPDIMS, Attr("ord", "float", 2.0, domain=NONZERO_ORD, infinite=True)),
        _norm,
        "LinalgVectorNormBackward0",
        "at the zero vector; for ord=inf, -inf at ties of |x|; for ord <= 1 at zero entries",
    ),
    # linear algebra
    OpSpec("matmul", 2, (), _matmul, _matmul_node_name, operands=("a", "b")),
    OpSpec("dot", 2, (), _dot, "DotBackward0", operands=("a", "b")),
    OpSpec("outer", 2, (), _outer, "MulBackward0", operands=("a", "b")),  # torch: a mul of views
    # shape
    _op1("reshape", (Attr("shape", "shape", required=True),), _reshape, "ViewBackward0"),
    _op1(
        "flatten", (Attr("start_dim", "int", 0), Attr("end_dim", "int", -1)), _flatten, "ViewBackward0"
    ),
    _op1("squeeze", (AXIS,), _squeeze, _squeeze_node_name),
    _op1("unsqueeze", (Attr("axis", "int", required=True),), _unsqueeze, "UnsqueezeBackward0"),
    _op1(
        "transpose", (Attr("dim0", "int", 0), Attr("dim1", "int", 1)), _transpose, "TransposeBackward0"
    ),
    _op1("permute", (Attr("dims", "ints", required=True),), _permute, "PermuteBackward0"),
    _op1("expand", (Attr("shape", "shape", required=True),), _expand, "ExpandBackward0"),
    _op1("broadcast_to", (Attr("shape", "shape", required=True),), _expand, "ExpandBackward0"),
    OpSpec(
        "concat",
        None,
        (Attr("axis", "int", 0),),
        _concat,
        "CatBackward0",
        operands=("xs",),
        promotes=True,
    ),
    OpSpec(
        "stack",
        None,
        (Attr("axis", "int", 0),),
        _stack,
        "StackBackward0",
        operands=("xs",),
        promotes=True,
    ),
    _op1(
        "split",
        (Attr("sections", "ints", 1), Attr("axis", "int", 0)),
        _split,
        lambda attrs, shapes: (
            "SplitBackward0" if isinstance(attrs["sections"], int) else "SplitWithSizesBackward0"
        ),
    ),
    _op1(
        "getitem",
        (Attr("index", "index", required=True),),
        _getitem,
        lambda attrs, shapes: _index_node_name(attrs, shapes),
    ),
    _op1("flip", (AXIS,), _flip, "FlipBackward0"),
    _op1(
        "pad",
        (Attr("pad", "ints", required=True), Attr("value", "float", 0.0)),
        _pad,
        "ConstantPadNdBackward0",
    ),
    # selection
    OpSpec(
        "where",
        3,
        (),
        _where,
        "WhereBackward0",
        "where both branches meet (the condition gives no gradient)",
        operands=("condition", "x", "y"),
        no_grad_operands=(0,),
        promotes=True,
    ),
    OpSpec(
        "masked_fill",
        2,
        (Attr("value", "float", 0.0, infinite=True),),  # -inf: an attention mask
        _masked_fill,
        "MaskedFillBackward0",
        operands=("x", "mask"),
        no_grad_operands=(1,),
    ),
    _unary("clone", "CloneBackward0"),
    # neural-network functions
    _op1("softmax", (Attr("axis", "int", -1),), _softmax, "SoftmaxBackward0"),
    _op1("log_softmax", (Attr("axis", "int", -1),), _softmax, "LogSoftmaxBackward0"),
    OpSpec(
        "mse_loss",
        2,
        (REDUCTION,),
        _loss,
        "MseLossBackward0",
        operands=("input", "target"),
        promotes=True,
    ),
    _classification_loss("nll_loss", "log_probs"),
    _classification_loss("cross_entropy", "logits"),
    OpSpec(
        "binary_cross_entropy_with_logits",
        2,
        (REDUCTION,),
        _loss,
        "BinaryCrossEntropyWithLogitsBackward0",
        operands=("input", "target"),
    ),
    # no gradient
    *(
        # compared in torch's promoted dtype (float32 [0.1] == float64 0-d 0.1 in float32)
        OpSpec(n, 2, (), _broadcast, "", differentiable=False, operands=("x", "y"), promotes=True)
        for n in ("lt", "le", "gt", "ge", "eq", "ne")
    ),
    *(
        OpSpec(
            n,
            1,
            (Attr("axis", "int", None), KEEPDIMS),
            _argreduce,
            "",
            differentiable=False,
            operands=("x",),
        )
        for n in ("argmax", "argmin")
    ),
    # used by VJP rules: the adjoint of getitem, so that rules stay differentiable
    OpSpec(
        "index_scatter",
        1,
        (Attr("index", "index"), Attr("shape", "shape")),
        _index_scatter,
        "IndexPutBackward0",
        internal=True,
        operands=("g",),
    ),
    # gelu's gradient: the normal distribution's cdf, differentiable under create_graph
    OpSpec("erf", 1, (), _same, "ErfBackward0", internal=True, operands=("x",)),
    # relu's gradient, a function of the result too (with derivative 0 in it), as torch's: under
    # create_graph it requires grad and a second backward reaches the result (and its hooks)
    OpSpec(
        "threshold_backward",
        2,
        (),
        _same,
        "ThresholdBackwardBackward0",
        internal=True,
        operands=("g", "result"),
    ),
    OpSpec(  # the cast torch records when a gradient must return to its input's dtype
        "to_dtype",
        1,
        (Attr("dtype", "dtype", required=True),),
        _same,
        "ToCopyBackward0",
        internal=True,
        operands=("x",),
    ),
]


def _index_node_name(attrs: dict[str, Any], shapes: tuple[Shape, ...]) -> str:
    """The node torch records last for x[index]: it applies the items in order (select for an int,
    slice unless the slice takes everything with step 1, unsqueeze for None), advanced indexing
    after them, and names a view that changed nothing AliasBackward0."""
    index = attrs["index"]
    items = index if isinstance(index, tuple) else (index,)
    if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in items):
        return "IndexBackward0"
    if attrs.get("lone_slice"):
        return "SliceBackward0"  # torch's own path for a lone slice (not in a tuple), whole or not
    shape = tuple(shapes[0])[attrs.get("nb", 0) :] if shapes else ()
    name, dim = "AliasBackward0", 0
    for i in items:
        if i is None:
            name = "UnsqueezeBackward0"
        elif isinstance(i, int):
            name, dim = "SelectBackward0", dim + 1
        elif isinstance(i, slice):
            size = shape[dim] if dim < len(shape) else None
            # torch compares the slice as written: start 0 (or none), stop none or past the end,
            # step 1; a step other than 1 (x[:, ::2] of size 1) or a negative start (x[:, -1:]
            # of size 1) is a slice even where it takes everything
            whole = i.start in (None, 0) and i.step in (None, 1)
            if size is None or not whole or (i.stop is not None and i.stop < size):
                name = "SliceBackward0"
            dim += 1
    return name


OPS: dict[str, OpSpec] = {s.name: s for s in _SPECS}
"""Every op, by name."""


def attribute_problem(op: str, attrs: dict[str, Any], shapes: Sequence[Shape]) -> str | None:
    """Why an op's attributes make no sense for a differentiable function (a message), or None.
    Beyond each attribute's domain: clamp needs a bound, and var and std need degrees of freedom.
    torch accepts some of these and returns inf or nan (beta=0, correction >= N); crossgrad's
    request language refuses them, and the engine computes what torch computes."""
    for attr in OPS[op].attrs:
        if attr.domain is not None:
            problem = attr.domain.problem(op, attr.name, attrs.get(attr.name, attr.default))
            if problem:
                return problem
    if op == "clamp" and attrs.get("min") is None and attrs.get("max") is None:
        return "clamp needs min or max (or both)"
    if op in ("var", "std"):
        shape = tuple(shapes[0]) if shapes else ()
        axes = normalize_axes(op, attrs.get("axis"), len(shape))
        count = math.prod(shape[a] for a in axes)
        correction = attrs.get("correction", 1)
        if correction >= count:
            return (
                f"{op}: correction {correction} leaves no degrees of freedom over {count} "
                f"entr{'y' if count == 1 else 'ies'} (torch returns inf or nan)"
            )
    return None
