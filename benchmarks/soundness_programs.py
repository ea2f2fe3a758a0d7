"""Programs for benchmarks/soundness.py: one chain per op of the table (for the mutation table),
kink programs with wrong and admissible claimed values, and seeded random programs.

Everything here is plain data and text in the request language; nothing is checked here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from crossgrad.engine import OPS
from crossgrad.server.language import RequestError, parse

# ---------------------------------------------------------------- op chains (the mutation table)

DIFFERENTIABLE = sorted(n for n, s in OPS.items() if s.differentiable and not s.internal)
NOT_DIFFERENTIABLE = sorted(n for n, s in OPS.items() if not s.differentiable and not s.internal)
MUTATED_IMPL = {"cross_entropy": "nll_loss"}
"""A composite op's own node is the last one the engine builds for it: its rule is the one mutated."""


@dataclass
class OpCase:
    """The op under test as `z = ...` (core), inside y = sum(sin(z) * v)."""

    op: str
    variant: str  # a short description (shapes, attributes)
    core: str
    inputs: dict[str, np.ndarray]  # float64 (int64 for class targets)
    freeze: str | None = None  # the other operand, frozen for the frozen-operand class
    no_grad: tuple[str, ...] = ()  # inputs that never require grad (conditions)
    source: str = ""  # filled by chain()

    @property
    def impl(self) -> str:
        return MUTATED_IMPL.get(self.op, self.op)


def _gen(seed: int) -> Any:
    rng = np.random.default_rng(seed)

    def any_(*shape: int) -> np.ndarray:
        return rng.normal(size=shape)

    def pos(*shape: int) -> np.ndarray:
        return rng.uniform(0.5, 2.0, size=shape)

    def away(*shape: int, points: tuple[float, ...] = (0.0,)) -> np.ndarray:
        """Normal values at least 0.15 away from every kink point."""
        x = rng.normal(size=shape)
        for p in points:
            near = np.abs(x - p) < 0.15
            x = np.where(near, p + np.sign(x - p + 1e-9) * (0.15 + np.abs(x - p)), x)
        return x

    def distinct(*shape: int) -> np.ndarray:
        n = int(np.prod(shape))
        return ((rng.permutation(n) - n / 2 + 0.37) * 0.3 + rng.uniform(-0.05, 0.05, n)).reshape(shape)

    def apart(ref: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Values that differ from ref (broadcast) by 0.2 to 1 everywhere: no ties."""
        d = rng.uniform(0.2, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
        return np.broadcast_to(ref, shape) + d

    return rng, any_, pos, away, distinct, apart


def op_cases(variants: int = 1) -> list[OpCase]:
    """One (or more) chain per differentiable op: operands of rank 2 where the op takes them, a
    broadcast operand and a second tensor operand to freeze where the op has them."""
    rng, any_, pos, away, distinct, apart = _gen(20240601)
    cases: list[OpCase] = []

    def add(op: str, variant: str, core: str, inputs: dict[str, np.ndarray], **kw: Any) -> None:
        cases.append(OpCase(op, variant, core, inputs, **kw))

    # elementwise arithmetic: x (2, 3) and a broadcast w (3,), frozen in the frozen class
    for op, sym in (("add", "+"), ("sub", "-"), ("mul", "*")):
        add(op, "(2,3) & (3,)", f"z = x {sym} w", {"x": any_(2, 3), "w": any_(3)}, freeze="w")
        add(op, "(3,1) & (1,2)", f"z = w {sym} x", {"x": any_(3, 1), "w": any_(1, 2)}, freeze="w")
    add("div", "(2,3) / (3,)", "z = x / w", {"x": any_(2, 3), "w": pos(3)}, freeze="w")
    add("div", "(3,) / (2,3)", "z = x / w", {"x": any_(3), "w": pos(2, 3)}, freeze="w")
    add("pow_tensor", "(2,3) ** (3,)", "z = x ** w", {"x": pos(2, 3), "w": any_(3)}, freeze="w")
    add("pow_tensor", "(3,) ** (2,3)", "z = x ** w", {"x": pos(3), "w": any_(2, 3)}, freeze="w")
    for op in ("maximum", "minimum"):
        w = any_(3)
        add(op, "(2,3) & (3,)", f"z = {op}(x, w)", {"x": apart(w, (2, 3)), "w": w}, freeze="w")
        x = any_(2, 1)
        add(op, "(2,1) & (2,3)", f"z = {op}(x, w)", {"x": x, "w": apart(x, (2, 3))}, freeze="w")
    # unary functions, on (2, 3)
    smooth = {
        "neg": ("z = -x", any_),
        "pow": ("z = x ** 3", any_),
        "rpow": ("z = 2 ** x", any_),
        "rsub": ("z = 1 - x", any_),
        "exp": ("z = exp(x)", any_),
        "log": ("z = log(x)", pos),
        "log1p": ("z = log1p(x)", pos),
        "expm1": ("z = expm1(x)", any_),
        "sqrt": ("z = sqrt(x)", pos),
        "reciprocal": ("z = reciprocal(x)", pos),
        "sin": ("z = sin(x)", any_),
        "cos": ("z = cos(x)", any_),
        "tan": ("z = tan(x)", lambda *s: any_(*s) * 0.3),
        "tanh": ("z = tanh(x)", any_),
        "sigmoid": ("z = sigmoid(x)", any_),
        "softplus": ("z = softplus(x, beta=2.0)", any_),
        "silu": ("z = silu(x)", any_),
        "gelu": ("z = gelu(x)", any_),
        "clone": ("z = clone(x)", any_),
        "relu": ("z = relu(x)", away),
        "leaky_relu": ("z = leaky_relu(x, negative_slope=0.2)", away),
        "abs": ("z = abs(x)", away),
        "clamp": ("z = clamp(x, min=-0.4, max=0.4)", lambda *s: away(*s, points=(-0.4, 0.4))),
        "sign": ("z = sign(x)", away),
        "floor": ("z = floor(x)", lambda *s: away(*s) + 0.5),
        "round": ("z = round(x)", lambda *s: away(*s) + 0.25),
    }
    second = {  # a second variant: other attributes or ranks
        "pow": ("z = x ** -1.5", pos),
        "rpow": ("z = 0.5 ** x", any_),
        "rsub": ("z = 2.5 - x", any_),
        "leaky_relu": ("z = leaky_relu(x, negative_slope=0.01)", away),
        "softplus": ("z = softplus(x, beta=0.5, threshold=1.0)", any_),
        "clamp": ("z = clamp(x, min=-0.4)", lambda *s: away(*s, points=(-0.4,))),
    }
    for op, (core, draw) in smooth.items():
        add(op, "(2,3)", core, {"x": draw(2, 3)})
        core2, draw2 = second.get(op, (core, draw))
        add(op, "(2,2,2)" + (" attrs" if op in second else ""), core2, {"x": draw2(2, 2, 2)})
    # reductions
    red = [
        ("sum", "z = sum(x, axis=1)", any_, "z = sum(x)"),
        ("mean", "z = mean(x, axis=0, keepdims=True)", any_, "z = mean(x, axis=(0, 2))"),
        ("prod", "z = prod(x, axis=1)", pos, "z = prod(x)"),
        ("max", "z = max(x, axis=1)", distinct, "z = max(x)"),
        ("min", "z = min(x)", distinct, "z = min(x, axis=0, keepdims=True)"),
        ("amax", "z = amax(x, axis=(0, 1))", distinct, "z = amax(x, axis=-1)"),
        ("amin", "z = amin(x, axis=0)", distinct, "z = amin(x)"),
        ("logsumexp", "z = logsumexp(x, axis=-1)", any_, "z = logsumexp(x)"),
        ("var", "z = var(x, axis=1)", any_, "z = var(x, correction=0)"),
        ("std", "z = std(x)", any_, "z = std(x, axis=(1, 2), keepdims=True)"),
        ("norm", "z = norm(x, axis=0)", any_, "z = norm(x, ord=3.0)"),
    ]
    for op, core, draw, core2 in red:
        add(op, "(2,3)", core, {"x": draw(2, 3)})
        add(op, "(2,3,2)", core2, {"x": draw(2, 3, 2)})
    # linear algebra: a batched matmul broadcasts b over the batch
    add("matmul", "(2,3,4) @ (4,2)", "z = a @ b", {"a": any_(2, 3, 4), "b": any_(4, 2)}, freeze="b")
    add("matmul", "(3,4) @ (4,)", "z = a @ b", {"a": any_(3, 4), "b": any_(4)}, freeze="b")
    add("dot", "(4,) . (4,)", "z = dot(a, b)", {"a": any_(4), "b": any_(4)}, freeze="b")
    add("dot", "(3,) . (3,)", "z = dot(b, a)", {"a": any_(3), "b": any_(3)}, freeze="b")
    add("outer", "(2,) x (3,)", "z = outer(a, b)", {"a": any_(2), "b": any_(3)}, freeze="b")
    add("outer", "(3,) x (1,)", "z = outer(b, a)", {"a": any_(3), "b": any_(1)}, freeze="b")
    # shape
    shape_ops = [
        ("reshape", "z = reshape(x, (3, 2))", (2, 3), "z = reshape(x, (-1,))", (2, 2, 2)),
        ("flatten", "z = flatten(x)", (2, 3), "z = flatten(x, start_dim=1)", (2, 3, 2)),
        ("squeeze", "z = squeeze(x, axis=1)", (3, 1), "z = squeeze(x)", (1, 3, 1)),
        ("unsqueeze", "z = unsqueeze(x, axis=0)", (2, 3), "z = unsqueeze(x, axis=-1)", (3,)),
        ("transpose", "z = transpose(x, 0, 1)", (2, 3), "z = transpose(x, 0, 2)", (2, 3, 2)),
        ("permute", "z = permute(x, (2, 0, 1))", (2, 3, 2), "z = permute(x, (1, 0))", (2, 3)),
        ("expand", "z = expand(x, (4, 3))", (1, 3), "z = expand(x, (2, -1, 3))", (2, 1)),
        (
            "broadcast_to",
            "z = broadcast_to(x, (2, 3))",
            (3,),
            "z = broadcast_to(x, (2, 2, 3))",
            (2, 1, 3),
        ),
        ("getitem", "z = x[1:, [0, 2, 2]]", (3, 3), "z = x[None, ..., ::2]", (2, 3)),
        ("flip", "z = flip(x, axis=0)", (2, 3), "z = flip(x)", (2, 2, 2)),
        ("pad", "z = pad(x, (1, 2))", (2, 3), "z = pad(x, (0, 1, 2, 0), value=0.5)", (2, 3)),
        ("softmax", "z = softmax(x, axis=1)", (2, 3), "z = softmax(x, axis=0)", (3, 2)),
        ("log_softmax", "z = log_softmax(x, axis=0)", (2, 3), "z = log_softmax(x)", (2, 3)),
    ]
    for op, core, shape, core2, shape2 in shape_ops:
        add(op, str(shape), core, {"x": any_(*shape)})
        add(op, str(shape2), core2, {"x": any_(*shape2)})
    add(
        "concat",
        "(2,3) | (1,3)",
        "z = concat([x, w], axis=0)",
        {"x": any_(2, 3), "w": any_(1, 3)},
        freeze="w",
    )
    add(
        "concat",
        "(2,3) | (2,1)",
        "z = concat([w, x], axis=1)",
        {"x": any_(2, 3), "w": any_(2, 1)},
        freeze="w",
    )
    add("stack", "(2,3) x2", "z = stack([x, w], axis=1)", {"x": any_(2, 3), "w": any_(2, 3)}, freeze="w")
    add("stack", "(3,) x2", "z = stack([w, x])", {"x": any_(3), "w": any_(3)}, freeze="w")
    add("split", "(4,2) in 2", "p, q = split(x, 2)\nz = p * q", {"x": any_(4, 2)})
    add("split", "(2,3) sizes", "p, q = split(x, (1, 2), axis=1)\nz = p * q", {"x": any_(2, 3)})
    # selection: the condition comes from an input that never requires grad
    c = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])
    add(
        "where",
        "(2,3) & (3,)",
        "z = where(c > 0, x, w)",
        {"c": c, "x": any_(2, 3), "w": any_(3)},
        freeze="w",
        no_grad=("c",),
    )
    add("where", "(2,3) & 2.0", "z = where(c > 0, 2.0, x)", {"c": c, "x": any_(2, 3)}, no_grad=("c",))
    add(
        "masked_fill",
        "(2,3)",
        "z = masked_fill(x, c > 0, 0.5)",
        {"c": c, "x": any_(2, 3)},
        no_grad=("c",),
    )
    add(
        "masked_fill",
        "(2,3) & (3,) mask",
        "z = masked_fill(x, c[0] > 0, -1.0)",
        {"c": c, "x": any_(2, 3)},
        no_grad=("c",),
    )
    # losses
    add("mse_loss", "(2,3)", "z = mse_loss(x, w)", {"x": any_(2, 3), "w": any_(2, 3)}, freeze="w")
    add(
        "mse_loss",
        "(4,) sum",
        "z = mse_loss(w, x, reduction='sum')",
        {"x": any_(4), "w": any_(4)},
        freeze="w",
    )
    bce = "binary_cross_entropy_with_logits"
    add(bce, "(2,3)", f"z = {bce}(x, w)", {"x": any_(2, 3), "w": rng.uniform(0, 1, (2, 3))}, freeze="w")
    add(
        bce,
        "(4,) none",
        f"z = {bce}(x, w, reduction='none')",
        {"x": any_(4), "w": rng.uniform(0, 1, 4)},
        freeze="w",
    )
    t = np.array([0, 3, 1])
    add("nll_loss", "(3,4)", "z = nll_loss(log_softmax(s, axis=1), t)", {"s": any_(3, 4), "t": t})
    add("nll_loss", "(3,4) sum", "z = nll_loss(s, t, reduction='sum')", {"s": any_(3, 4), "t": t})
    add("cross_entropy", "(3,4)", "z = cross_entropy(s, t)", {"s": any_(3, 4), "t": np.array([2, 0, 1])})
    add(
        "cross_entropy",
        "(3,4) none",
        "z = cross_entropy(s, t, reduction='none')",
        {"s": any_(3, 4), "t": np.array([1, 1, 3])},
    )

    by_op: dict[str, list[OpCase]] = {}
    for case in cases:
        by_op.setdefault(case.op, []).append(case)
    missing = sorted(set(DIFFERENTIABLE) - set(by_op))
    if missing:
        raise RuntimeError(f"no chain program for ops {missing}")
    chosen = [c for op in DIFFERENTIABLE for c in by_op[op][:variants]]
    for case in chosen:
        chain(case, rng)
    return chosen


def _decls(inputs: dict[str, np.ndarray], dtype: str = "float64") -> dict[str, tuple[Any, str]]:
    return {n: (v.shape, "int64" if v.dtype.kind in "iu" else dtype) for n, v in inputs.items()}


def chain(case: OpCase, rng: np.random.Generator) -> None:
    """source = core, then y = sum(sin(z) * v) with v shaped like z (a varied cotangent). sin, not
    tanh: a saturated tanh makes ill-conditioned entries, which belong to the random programs.
    The op under test appears once: tanh for sin, mean for sum, / for mul (two corrupted nodes
    in a row could undo each other: one entry's sign flipped twice)."""
    program = parse(case.core, _decls(case.inputs), outputs=["z"])
    shape = program.node(dict(program.outputs)["z"]).shape
    v = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    case.inputs = {**case.inputs, "v": v}
    f = "tanh" if case.op == "sin" else "sin"
    reduce = "mean" if case.op == "sum" else "sum"
    times = "/" if case.op == "mul" else "*"
    case.source = f"{case.core}\ny = {reduce}({f}(z) {times} v)"


# ---------------------------------------------------------------- kink programs


@dataclass
class KinkClaim:
    label: str
    claimed: dict[str, Any] | None  # None: the engine alone
    must_fail: bool


@dataclass
class KinkCase:
    family: str
    where: str  # "at" the kink or "next to" it
    source: str
    inputs: dict[str, Any]
    claims: list[KinkClaim]
    mutation: tuple[str, str, float] | None = None  # (op, class, rel): the engine's rule corrupted
    dtype: str = "float64"


def _c(label: str, must_fail: bool, **claimed: Any) -> KinkClaim:
    return KinkClaim(label, {k: np.asarray(v, float) for k, v in claimed.items()}, must_fail)


ENGINE = KinkClaim("the engine alone", None, False)
INF = math.inf


def kink_cases() -> list[KinkCase]:
    """Programs at their kinks and 1e-12 next to them, with wrong claims (must FAIL) and
    admissible ones (inside the generalized gradient: must not FAIL)."""
    t = 1e-12
    cos = np.cos
    x_rs = np.array([0.25, 0.75])
    K = KinkCase
    return [
        K(
            "relu",
            "at",
            "y = sum(relu(x))",
            {"x": [0.0, 1.0, -2.0]},
            [
                ENGINE,
                _c("relu'(0) = 17", True, x=[17, 1, 0]),
                _c("relu'(0) = -1", True, x=[-1, 1, 0]),
                _c("off-kink entry wrong", True, x=[0, 1, 0.5]),
                _c("relu'(0) = 0", False, x=[0, 1, 0]),
                _c("relu'(0) = 1/2", False, x=[0.5, 1, 0]),
                _c("relu'(0) = 1", False, x=[1, 1, 0]),
            ],
        ),
        K(
            "relu",
            "next to",
            "y = sum(relu(x))",
            {"x": [t, 1.0, -2.0]},
            [
                ENGINE,
                _c("exact [1, 1, 0]", False, x=[1, 1, 0]),
                _c("finite differences' 1/2", True, x=[0.5, 1, 0]),
                _c("the other side's 0", True, x=[0, 1, 0]),
            ],
        ),
        K(
            "relu",
            "next to",
            "y = sum(relu(x))",
            {"x": [-t, 1.0]},
            [
                ENGINE,
                _c("exact [0, 1]", False, x=[0, 1]),
                _c("1/2", True, x=[0.5, 1]),
            ],
        ),
        K(
            "abs",
            "at",
            "y = sum(abs(x))",
            {"x": [0.0, 1.5, -2.0]},
            [
                ENGINE,
                _c("abs'(0) = -40", True, x=[-40, 1, -1]),
                _c("abs'(0) = 1.5", True, x=[1.5, 1, -1]),
                _c("off-kink entry wrong", True, x=[0, 1, 1]),
                _c("abs'(0) = 0", False, x=[0, 1, -1]),
                _c("abs'(0) = 1", False, x=[1, 1, -1]),
                _c("abs'(0) = -1", False, x=[-1, 1, -1]),
                _c("abs'(0) = 0.3", False, x=[0.3, 1, -1]),
            ],
        ),
        K(
            "abs",
            "next to",
            "y = sum(abs(x))",
            {"x": [t, -t, 1.5]},
            [
                ENGINE,
                _c("exact [1, -1, 1]", False, x=[1, -1, 1]),
                _c("0 next to 0", True, x=[0, 0, 1]),
            ],
        ),
        K(
            "leaky_relu",
            "at",
            "y = sum(leaky_relu(x, negative_slope=0.1))",
            {"x": [0.0, 2.0, -1.0]},
            [
                ENGINE,
                _c("slope 2 at 0", True, x=[2, 1, 0.1]),
                _c("slope 0 at 0", True, x=[0, 1, 0.1]),
                _c("slope 0.1 at 0", False, x=[0.1, 1, 0.1]),
                _c("slope 1 at 0", False, x=[1, 1, 0.1]),
                _c("slope 0.55 at 0", False, x=[0.55, 1, 0.1]),
            ],
        ),
        K(
            "leaky_relu",
            "next to",
            "y = sum(leaky_relu(x, negative_slope=0.1))",
            {"x": [t, 2.0]},
            [
                ENGINE,
                _c("exact [1, 1]", False, x=[1, 1]),
                _c("the average 0.55", True, x=[0.55, 1]),
            ],
        ),
        K(
            "maximum",
            "at",
            "y = sum(maximum(x, w))",
            {"x": [1.0, 2.0], "w": [1.0, 0.5]},
            [
                ENGINE,
                _c("[5, -3] at the tie", True, x=[5, 1], w=[-3, 0]),
                _c("off-tie entry wrong", True, x=[0.5, 1], w=[0.5, 1]),
                _c("ties split 1/2", False, x=[0.5, 1], w=[0.5, 0]),
                _c("all to x", False, x=[1, 1], w=[0, 0]),
                _c("all to w", False, x=[0, 1], w=[1, 0]),
            ],
        ),
        K(
            "maximum",
            "next to",
            "y = sum(maximum(x, w))",
            {"x": [1.0 + t, 2.0], "w": [1.0, 0.5]},
            [
                ENGINE,
                _c("exact", False, x=[1, 1], w=[0, 0]),
                _c("split 1/2", True, x=[0.5, 1], w=[0.5, 0]),
            ],
        ),
        K(
            "minimum",
            "at",
            "y = sum(minimum(x, w))",
            {"x": [1.0, 2.0], "w": [1.0, 3.0]},
            [
                ENGINE,
                _c("[-2, 3] at the tie", True, x=[-2, 1], w=[3, 0]),
                _c("ties split 1/2", False, x=[0.5, 1], w=[0.5, 0]),
                _c("all to w", False, x=[0, 1], w=[1, 0]),
            ],
        ),
        K(
            "clamp",
            "at",
            "y = sum(clamp(x, min=0.0, max=1.0))",
            {"x": [0.0, 1.0, 0.5, 2.0]},
            [
                ENGINE,
                _c("3 on the lower bound", True, x=[3, 1, 1, 0]),
                _c("-2 on the upper bound", True, x=[1, -2, 1, 0]),
                _c("off-bound entry wrong", True, x=[1, 1, 1, 1]),
                _c("1 on the bounds (torch)", False, x=[1, 1, 1, 0]),
                _c("0 on the bounds", False, x=[0, 0, 1, 0]),
                _c("1/2 on the bounds", False, x=[0.5, 0.5, 1, 0]),
            ],
        ),
        K(
            "clamp",
            "next to",
            "y = sum(clamp(x, min=0.0, max=1.0))",
            {"x": [t, 1.0 - 1e-9, 1.0 + 1e-9]},
            [
                ENGINE,
                _c("exact [1, 1, 0]", False, x=[1, 1, 0]),
                _c("1/2 next to the bounds", True, x=[0.5, 0.5, 0.5]),
            ],
        ),
        K(
            "max",
            "at",
            "y = max(x)",
            {"x": [2.0, 2.0, 0.0]},
            [
                ENGINE,
                _c("[5, -3, 0] at a tie", True, x=[5, -3, 0]),
                _c("off-tie entry wrong", True, x=[0.5, 0.5, 1]),
                _c("split evenly", False, x=[0.5, 0.5, 0]),
                _c("first maximum", False, x=[1, 0, 0]),
                _c("second maximum", False, x=[0, 1, 0]),
            ],
        ),
        K(
            "max",
            "next to",
            "y = max(x)",
            {"x": [2.0, 2.0 + 1e-12, 0.0]},
            [
                ENGINE,
                _c("exact [0, 1, 0]", False, x=[0, 1, 0]),
                _c("split evenly", True, x=[0.5, 0.5, 0]),
            ],
        ),
        K(
            "max",
            "at",
            "y = sum(max(x, axis=0))",
            {"x": [[1.0, 2.0], [1.0, 0.0]]},
            [
                ENGINE,
                _c("untied column wrong", True, x=[[1, 1], [0, 1]]),
                _c("first maximum (torch)", False, x=[[1, 1], [0, 0]]),
                _c("split evenly", False, x=[[0.5, 1], [0.5, 0]]),
            ],
        ),
        K(
            "amax",
            "at",
            "y = sum(amax(x, axis=1))",
            {"x": [[1.0, 1.0, 0.0], [3.0, 2.0, 1.0]]},
            [
                ENGINE,
                _c("[5, -3, 0] at a tie", True, x=[[5, -3, 0], [1, 0, 0]]),
                _c("untied row split", True, x=[[0.5, 0.5, 0], [0.5, 0.5, 0]]),
                _c("split evenly", False, x=[[0.5, 0.5, 0], [1, 0, 0]]),
            ],
        ),
        K(
            "min",
            "at",
            "y = min(x)",
            {"x": [0.0, 0.0, 3.0]},
            [
                ENGINE,
                _c("[2, -1, 0] at a tie", True, x=[2, -1, 0]),
                _c("split evenly", False, x=[0.5, 0.5, 0]),
            ],
        ),
        K(
            "norm",
            "at",
            "y = norm(x)",
            {"x": [0.0, 0.0, 0.0]},
            [
                ENGINE,
                _c("[3, 0, 0] at zero", True, x=[3, 0, 0]),
                _c("[0, -5, 2] at zero", True, x=[0, -5, 2]),
                _c("0 (torch)", False, x=[0, 0, 0]),
                _c("a unit vector", False, x=[0.6, 0.8, 0]),
            ],
        ),
        K(
            "norm",
            "at",
            "y = sum(norm(x, axis=1))",
            {"x": [[0.0, 0.0], [3.0, 4.0]]},
            [
                ENGINE,
                _c("non-zero row wrong", True, x=[[0, 0], [0.6, 0.9]]),
                _c("exact off zero, 0 at zero", False, x=[[0, 0], [0.6, 0.8]]),
            ],
        ),
        K(
            "norm",
            "next to",
            "y = norm(x)",
            {"x": [t, 0.0, 0.0]},
            [
                ENGINE,
                _c("exact [1, 0, 0]", False, x=[1, 0, 0]),
                _c("0 next to zero", True, x=[0, 0, 0]),
            ],
        ),
        K(
            "std",
            "at",
            "y = std(x)",
            {"x": [1.0, 1.0, 1.0]},
            [
                ENGINE,
                _c("[10, 0, 0] at equal entries", True, x=[10, 0, 0]),
                _c("0 (torch)", False, x=[0, 0, 0]),
                _c("inside the generalized gradient", False, x=[0.4, -0.2, -0.2]),
            ],
        ),
        K(
            "std",
            "at",
            "y = sum(std(x, axis=1))",
            {"x": [[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]},
            [
                ENGINE,
                _c("unequal row wrong", True, x=[[0, 0, 0], [-0.5, 0, 0.7]]),
                _c("exact off the kink, 0 on it", False, x=[[0, 0, 0], [-0.5, 0, 0.5]]),
            ],
        ),
        K(
            "std",
            "next to",
            "y = std(x)",
            {"x": [1e-9, 0.0, 0.0]},
            [
                ENGINE,
                _c("exact", False, x=[1 / math.sqrt(3), -0.5 / math.sqrt(3), -0.5 / math.sqrt(3)]),
                _c("0 next to equal entries", True, x=[0, 0, 0]),
            ],
        ),
        K(
            "sqrt",
            "at",
            "y = sum(sqrt(x))",
            {"x": [0.0, 4.0]},
            [
                ENGINE,
                _c("-5 at 0", True, x=[-5, 0.25]),
                _c("off-kink entry wrong", True, x=[INF, 0.3]),
                _c("+inf at 0", False, x=[INF, 0.25]),
            ],
        ),
        K(
            "sqrt",
            "next to",
            "y = sum(sqrt(x))",
            {"x": [t, 4.0]},
            [
                ENGINE,
                _c("exact 5e5", False, x=[0.5 / math.sqrt(t), 0.25]),
                _c("0 next to 0", True, x=[0, 0.25]),
            ],
        ),
        K(
            "where",
            "at",
            "y = sum(where(x > 0, x * x, 3 * x))",
            {"x": [0.0, 1.0, -1.0]},
            [
                ENGINE,
                _c("7 where the branches meet", True, x=[7, 2, 3]),
                _c("-1 where the branches meet", True, x=[-1, 2, 3]),
                _c("3 (the branch taken)", False, x=[3, 2, 3]),
                _c("0 (the other branch)", False, x=[0, 2, 3]),
                _c("1.5", False, x=[1.5, 2, 3]),
            ],
        ),
        K(
            "where",
            "next to",
            "y = sum(where(x > 0, x * x, 3 * x))",
            {"x": [t, 1.0]},
            [
                ENGINE,
                _c("exact [2e-12, 2]", False, x=[2 * t, 2]),
                _c("the average 1.5", True, x=[1.5, 2]),
            ],
        ),
        K(
            "relu of a sum",
            "at",
            "y = relu(sum(x) - 1) + sum(sin(x))",
            {"x": x_rs.tolist()},
            [
                ENGINE,
                _c("sin' tripled", True, x=3 * cos(x_rs)),
                _c("sin' negated", True, x=-cos(x_rs)),
                _c("relu' = 0", False, x=cos(x_rs)),
                _c("relu' = 1", False, x=1 + cos(x_rs)),
                _c("relu' = 1/2", False, x=0.5 + cos(x_rs)),
            ],
        ),
        K(
            "relu of a sum",
            "at",
            "y = relu(sum(x) - 1) + sum(sin(x))",
            {"x": x_rs.tolist()},
            [KinkClaim("sin's rule negated (engine)", None, True)],
            ("sin", "sign-all", 0.0),
        ),
        K(
            "relu",
            "at",
            "y = sum(relu(x))",
            {"x": [0.0, 1.0, 2.0, -1.0]},
            [KinkClaim("relu's rule x1.1 + 0.01 (engine)", None, True)],
            ("relu", "affine", 0.0),
        ),
        K(
            "max",
            "at",
            "y = max(x)",
            {"x": [2.0, 2.0, 0.0]},
            [KinkClaim("max's rule x10 (engine)", None, True)],
            ("max", "x10", 0.0),
        ),
        # a[3, 1] and b[1, 3] tied on the diagonal: each tie moved on its own (moving a's entry
        # moved its whole row: only ranges per entry were known, and a rule 10 % off fit them)
        K(
            "maximum, broadcast",
            "at",
            "y = sum(maximum(a, b))",
            {"a": [[1.0], [2.0], [3.0]], "b": [[1.0, 2.0, 3.0]]},
            [
                ENGINE,
                _c("a tie counted twice", True, a=[[1], [2], [3]], b=[[1, 2, 3]]),
                _c("ties each their own way", False, a=[[1], [1], [2]], b=[[0, 2, 3]]),
            ],
        ),
        K(
            "maximum, broadcast",
            "at",
            "y = sum(maximum(a, b))",
            {"a": [[1.0], [2.0], [3.0]], "b": [[1.0, 2.0, 3.0]]},
            [KinkClaim("maximum's rule x1.1 (engine)", None, True)],
            ("maximum", "rel3", 0.1),
        ),
        # no kink, but one entry ill-conditioned (tanh saturated): it must excuse only itself
        K(
            "saturated tanh",
            "near",
            "z = x ** w\ny = sum(tanh(z) * v)",
            {
                "x": [[1.958, 1.799, 1.954], [1.622, 0.761, 1.530]],
                "w": [3.8, 0.146, 1.482],
                "v": [[1.272, 0.660, 0.613], [-0.846, 1.046, -0.900]],
            },
            [KinkClaim("pow_tensor's rule for x x (1 + 1e-6) (engine)", None, True)],
            ("pow_tensor", "ndim", 1e-6),
        ),
        K(
            "saturated tanh",
            "near",
            "z = x ** 3\ny = sum(tanh(z) * v)",
            {
                "x": [[-0.27989608, 0.8336878, 2.0486016], [1.3577194, -1.7099249, -0.06318549]],
                "v": [[-0.77133495, 0.8037407, -1.480771], [-1.2933205, 1.235517, 0.9297876]],
            },
            [ENGINE],
            dtype="float32",
        ),
    ]


# ---------------------------------------------------------------- random programs

MAGNITUDES = ("moderate", "large", "tiny", "near-singular")
DTYPE_MODES = ("float64", "float32", "mixed")


@dataclass
class Value:
    name: str
    shape: tuple[int, ...]
    dtype: str
    positive: bool = False  # every entry > 0
    bounded: bool = False  # every entry in [-1, 1] (safe for tan and as an exponent)


@dataclass
class RandomProgram:
    index: int
    source: str
    inputs: list[tuple[str, np.ndarray, str, bool]]  # name, values, dtype, requires_grad
    checks: tuple[str, ...]
    cotangents: dict[str, np.ndarray]
    dtype_mode: str
    magnitude: str
    ops: list[str] = field(default_factory=list)


MAX_ENTRIES = 36  # per tensor, to keep Jacobians and Hessians small
_BASE_SHAPES = [(3,), (4,), (2, 3), (3, 2), (2, 2), (2, 2, 2), (1, 3)]
_WEIGHTS = {  # how often each op is drawn (the rest 1)
    "add": 2,
    "mul": 2,
    "sub": 1.5,
    "div": 1.5,
    "matmul": 2,
    "sum": 1.5,
    "tanh": 1.5,
    "exp": 1.5,
    "log": 1.5,
    "where": 1.5,
}


class _Reject(Exception):
    """A step the generator cannot make with the values at hand."""


class Generator:
    """Seeded random programs: each from np.random.default_rng([seed, index]), so that one
    program can be regenerated alone."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rejected_steps: dict[str, int] = {}

    def program(self, index: int) -> RandomProgram:
        for attempt in range(50):
            rng = np.random.default_rng([self.seed, index, attempt])
            try:
                return self._draw(rng, index)
            except _Reject as exc:
                key = str(exc).split(":")[0]
                self.rejected_steps[key] = self.rejected_steps.get(key, 0) + 1
        raise RuntimeError(f"random program {index}: no valid program in 50 attempts")

    # -------------------------------------------------------------- one program

    def _draw(self, rng: np.random.Generator, index: int) -> RandomProgram:
        self.rng = rng
        self.dtype_mode = str(rng.choice(DTYPE_MODES, p=[0.5, 0.25, 0.25]))
        self.magnitude = str(rng.choice(MAGNITUDES))
        self.inputs: list[tuple[str, np.ndarray, str, bool]] = []
        self.values: list[Value] = []
        self.lines: list[str] = []
        self.ops: list[str] = []
        self.n_vars = 0
        base = _BASE_SHAPES[rng.integers(len(_BASE_SHAPES))]
        n_inputs = int(rng.integers(2 if self.dtype_mode == "mixed" else 1, 4))
        for k in range(n_inputs):
            shape = base if k == 0 or rng.random() < 0.5 else self._broadcastable(base)
            self._new_input(shape, positive=rng.random() < 0.3)
        if self.dtype_mode == "mixed" and len({d for _, _, d, _ in self.inputs}) < 2:
            name, v, _, rg = self.inputs[-1]
            other = "float32" if self.inputs[0][2] == "float64" else "float64"
            self.inputs[-1] = (name, v.astype(other), other, rg)
            self.values[-1].dtype = other
        n_ops = int(rng.integers(2, 7))
        pool = DIFFERENTIABLE
        weights = np.array([_WEIGHTS.get(op, 1.0) for op in pool])
        steps = 0
        while steps < n_ops:
            op = str(rng.choice(pool, p=weights / weights.sum()))
            try:
                self._step(op)
                steps += 1
            except _Reject as exc:
                key = f"{op}: {exc}".split(":")[0]
                self.rejected_steps[key] = self.rejected_steps.get(key, 0) + 1
                if sum(self.rejected_steps.values()) > 10**7:
                    raise
        last = self.values[-1]
        n_in = sum(int(np.prod(v.shape)) for _, v, d, rg in self.inputs if rg and d != "int64")
        checks = ["vjp"]
        if n_in <= 40 and rng.random() < 0.3:
            checks.append("hessian")
            reduce = "sum" if rng.random() < 0.7 else "mean"
            self.lines.append(f"y = {reduce}({last.name})" if last.shape != () else f"y = {last.name}")
        else:
            self.lines.append(f"y = {last.name}")
        source = "\n".join(self.lines)
        decls = {n: (v.shape, d) for n, v, d, _ in self.inputs}
        try:
            program = parse(source, decls)
        except RequestError as exc:
            raise _Reject(f"final parse: {exc}") from None
        out = program.node(dict(program.outputs)["y"])
        if out.dtype not in ("float32", "float64"):
            raise _Reject("final: output not float")
        if (
            "hessian" not in checks
            and n_in * max(1, int(np.prod(out.shape))) <= 400
            and rng.random() < 0.4
        ):
            checks.append("jacobian")
        cots = {"y": rng.normal(size=out.shape)}
        # freeze one input sometimes (never all of them)
        floats = [i for i, (_, _, d, _) in enumerate(self.inputs) if d != "int64"]
        if len(floats) >= 2 and rng.random() < 0.15:
            i = floats[int(rng.integers(len(floats)))]
            n, v, d, _ = self.inputs[i]
            self.inputs[i] = (n, v, d, False)
        return RandomProgram(
            index, source, self.inputs, tuple(checks), cots, self.dtype_mode, self.magnitude, self.ops
        )

    # -------------------------------------------------------------- values

    def _dtype(self) -> str:
        if self.dtype_mode == "mixed":
            return str(self.rng.choice(["float32", "float64"]))
        return self.dtype_mode

    def _scale(self) -> float:
        return {"moderate": 1.0, "large": 1e4, "tiny": 1e-9, "near-singular": 1.0}[self.magnitude]

    def _draw_values(self, shape: tuple[int, ...], positive: bool) -> np.ndarray:
        rng, n = self.rng, int(np.prod(shape))
        sign = rng.choice([-1.0, 1.0], size=n)
        if self.magnitude == "moderate":
            x = rng.normal(size=n)
        elif self.magnitude == "large":
            x = sign * 10 ** rng.uniform(3, 6, n)
        elif self.magnitude == "tiny":
            x = sign * 10 ** -rng.uniform(6, 12, n)
        else:
            pattern = rng.choice(["near-equal", "near-zero", "ties", "mixed", "overflow edge"])
            if pattern == "near-equal":
                x = 1.0 + 10 ** -rng.uniform(8, 13) * rng.normal(size=n)
            elif pattern == "near-zero":
                x = 10 ** -rng.uniform(10, 14) * rng.normal(size=n)
            elif pattern == "ties":
                x = rng.choice([-1.0, 0.0, 0.5, 1.0], size=n)
            elif pattern == "overflow edge":  # exp overflows float32 past 88.7, float64 past 709.8
                x = rng.choice([1.0, -2.0, 88.0, 90.0, 100.0, 700.0, 710.0, 1000.0], size=n)
            else:
                x = np.where(rng.random(n) < 0.5, rng.normal(size=n), 1e-12 * sign)
        if positive:
            x = np.abs(x) + (1e-13 if self.magnitude in ("tiny", "near-singular") else 0.1)
        return x.reshape(shape)

    def _new_input(
        self,
        shape: tuple[int, ...],
        positive: bool = False,
        dtype: str | None = None,
        values: np.ndarray | None = None,
        bounded: bool = False,
    ) -> Value:
        name = f"x{len(self.inputs)}"
        dtype = dtype or self._dtype()
        v = self._draw_values(shape, positive) if values is None else values
        self.inputs.append((name, np.asarray(v, dtype), dtype, True))
        value = Value(name, tuple(shape), dtype, positive, bounded)
        self.values.append(value)
        return value

    def _int_input(self, n: int, classes: int) -> str:
        name = f"t{len(self.inputs)}"
        self.inputs.append((name, self.rng.integers(0, classes, n).astype(np.int64), "int64", False))
        return name

    def _broadcastable(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A shape that broadcasts against `shape` (trailing dims, some of them 1)."""
        rng = self.rng
        k = int(rng.integers(0, len(shape) + 1))
        out = list(shape[len(shape) - k :])
        for i in range(len(out)):
            if rng.random() < 0.3:
                out[i] = 1
        return tuple(out)

    def _pick(self, pred: Any = None) -> Value:
        choices = [v for v in self.values if pred is None or pred(v)]
        if not choices:
            raise _Reject("no operand")
        if choices[-1] is self.values[-1] and self.rng.random() < 0.7:
            return choices[-1]  # mostly a chain: the newest value feeds the next op
        # prefer recent values: programs become chains rather than unrelated pieces
        w = np.arange(1, len(choices) + 1, dtype=float) ** 2
        return choices[int(self.rng.choice(len(choices), p=w / w.sum()))]

    def _other(self, a: Value, same_shape: bool = False) -> Value:
        """A second operand for a: an existing value that broadcasts with it, or a new input."""
        rng = self.rng
        if rng.random() < 0.5:
            cands = [
                v
                for v in self.values
                if v is not a
                and (v.shape == a.shape or (not same_shape and _broadcasts(v.shape, a.shape)))
            ]
            if cands:
                return cands[int(rng.integers(len(cands)))]
        shape = a.shape if same_shape or rng.random() < 0.5 else self._broadcastable(a.shape)
        return self._new_input(shape, positive=rng.random() < 0.3)

    def _positive(self, a: Value) -> str:
        return a.name if a.positive else f"({a.name} * {a.name} + 0.5)"

    def _bounded(self, a: Value) -> str:
        return a.name if a.bounded else f"tanh({a.name})"

    # -------------------------------------------------------------- one step

    def _emit(
        self, expr: str, op: str, positive: bool = False, bounded: bool = False, names: int = 1
    ) -> None:
        targets = [f"h{self.n_vars + i}" for i in range(names)]
        self.n_vars += names
        line = f"{', '.join(targets)} = {expr}"
        decls = {n: (v.shape, d) for n, v, d, _ in self.inputs}
        source = "\n".join([*self.lines, line])
        try:
            program = parse(source, decls, outputs=targets)
        except RequestError as exc:
            raise _Reject(f"parse: {exc.message}") from None
        new = []
        for t in targets:
            node = program.node(dict(program.outputs)[t])
            if node.dtype not in ("float32", "float64"):
                raise _Reject("not float")
            if int(np.prod(node.shape)) > MAX_ENTRIES:
                raise _Reject("too large")
            new.append(Value(t, tuple(node.shape), node.dtype, positive, bounded))
        self.lines.append(line)
        self.values.extend(new)
        self.ops.append(op)

    def _step(self, op: str) -> None:
        rng = self.rng
        scale = self._scale()
        if op in ("add", "sub", "mul", "div", "maximum", "minimum", "pow_tensor"):
            a = self._pick()
            if rng.random() < 0.2 and op in ("add", "sub", "mul", "div"):
                c = float(np.round(rng.uniform(0.5, 3.0), 2))
                sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
                expr = (
                    f"{c} {sym} {a.name}"
                    if rng.random() < 0.3 and op != "div"
                    else f"{a.name} {sym} {c}"
                )
                self._emit(expr, op, positive=a.positive and op in ("add", "mul", "div"))
                return
            b = self._other(a)
            x, y = (a, b) if rng.random() < 0.5 else (b, a)
            if op == "div":
                self._emit(f"{x.name} / {self._positive(y)}", op, positive=x.positive)
            elif op == "pow_tensor":
                self._emit(f"{self._positive(x)} ** {self._bounded(y)}", op, positive=True)
            elif op in ("maximum", "minimum"):
                self._emit(f"{op}({x.name}, {y.name})", op, positive=x.positive and y.positive)
            else:
                sym = {"add": "+", "sub": "-", "mul": "*"}[op]
                self._emit(
                    f"{x.name} {sym} {y.name}", op, positive=x.positive and y.positive and op != "sub"
                )
            return
        if op == "neg":
            a = self._pick()
            self._emit(f"-{a.name}", op, bounded=a.bounded)
            return
        if op == "rsub":
            a = self._pick()
            self._emit(f"{float(np.round(rng.uniform(-2, 2), 2))} - {a.name}", op)
            return
        if op == "pow":
            a = self._pick()
            p = float(rng.choice([2.0, 3.0, 0.5, -1.0, 1.5, -0.5]))
            base = a.name if p in (2.0, 3.0) else self._positive(a)
            self._emit(f"{base} ** {p}", op, positive=base != a.name or a.positive)
            return
        if op == "rpow":
            a = self._pick()
            b = float(rng.choice([2.0, 0.5, 3.0]))
            self._emit(f"{b} ** {a.name}", op, positive=True)
            return
        unary = {
            "exp": (True, False),
            "expm1": (False, False),
            "sin": (False, True),
            "cos": (False, True),
            "tanh": (False, True),
            "sigmoid": (True, True),
            "relu": (False, False),
            "silu": (False, False),
            "gelu": (False, False),
            "abs": (False, False),
            "sign": (False, True),
            "floor": (False, False),
            "round": (False, False),
            "clone": (None, None),
        }
        if op in unary:
            a = self._pick()
            pos, bnd = unary[op]
            if pos is None:
                pos, bnd = a.positive, a.bounded
            self._emit(f"{op}({a.name})", op, positive=pos, bounded=bnd)
            return
        if op in ("log", "sqrt", "reciprocal", "log1p"):
            a = self._pick()
            self._emit(f"{op}({self._positive(a)})", op, positive=op in ("sqrt", "reciprocal"))
            return
        if op == "tan":
            a = self._pick()
            self._emit(f"tan({self._bounded(a)})", op)
            return
        if op == "leaky_relu":
            a = self._pick()
            self._emit(f"leaky_relu({a.name}, negative_slope={float(rng.choice([0.01, 0.1, 0.3]))})", op)
            return
        if op == "softplus":
            a = self._pick()
            beta, thr = float(rng.choice([0.5, 1.0, 2.0])), float(rng.choice([1.0, 20.0]))
            self._emit(f"softplus({a.name}, beta={beta}, threshold={thr})", op, positive=True)
            return
        if op == "clamp":
            a = self._pick()
            c = float(np.round(rng.uniform(0.2, 1.0), 2)) * scale
            kind = rng.integers(3)
            attrs = [f"min={-c!r}", f"max={c!r}", f"min={-c!r}, max={c!r}"][kind]
            self._emit(f"clamp({a.name}, {attrs})", op)
            return
        if op in (
            "sum",
            "mean",
            "prod",
            "max",
            "min",
            "amax",
            "amin",
            "logsumexp",
            "var",
            "std",
            "norm",
        ):
            a = self._pick(lambda v: len(v.shape) >= 1)
            nd = len(a.shape)
            multi = op not in ("prod", "max", "min")
            r = rng.random()
            if r < 0.35:
                axis = None
            elif r < 0.85 or not multi or nd < 2:
                axis = int(rng.integers(-nd, nd))
            else:
                axis = tuple(sorted(int(i) for i in rng.choice(nd, size=2, replace=False)))
            parts = [a.name]
            if axis is not None:
                parts.append(f"axis={axis}")
            if rng.random() < 0.3:
                parts.append("keepdims=True")
            count = (
                int(np.prod(a.shape))
                if axis is None
                else int(np.prod([a.shape[i] for i in ((axis,) if isinstance(axis, int) else axis)]))
            )
            if op in ("var", "std"):
                corr = int(rng.integers(0, 2))
                if count <= corr + (1 if op == "std" else 0):
                    raise _Reject("too few entries")
                parts.append(f"correction={corr}")
            if op == "norm":
                parts.append(f"ord={rng.choice(['1.0', '2.0', '3.0', 'inf'])}")
            positive = op in ("norm",) or (
                a.positive and op in ("sum", "mean", "prod", "max", "min", "amax", "amin")
            )
            self._emit(f"{op}({', '.join(parts)})", op, positive=positive)
            return
        if op == "matmul":
            a = self._pick(lambda v: 1 <= len(v.shape) <= 3)
            k = a.shape[-1]
            r = int(rng.integers(1, 4))
            form = rng.integers(3)
            if form == 0 and len(a.shape) >= 1:
                b = (
                    self._new_input((k, r), dtype=a.dtype)
                    if rng.random() < 0.7
                    else self._new_input((k,), dtype=a.dtype)
                )
                self._emit(f"{a.name} @ {b.name}", op)
            elif form == 1:
                b = self._new_input((r, a.shape[0]), dtype=a.dtype) if len(a.shape) <= 2 else None
                if b is None:
                    raise _Reject("matmul shape")
                self._emit(f"{b.name} @ {a.name}", op)
            else:
                cands = [
                    v
                    for v in self.values
                    if v is not a
                    and len(v.shape) >= 1
                    and v.shape[0] == k
                    and v.dtype == a.dtype
                    and len(v.shape) <= 2
                ]
                if not cands:
                    raise _Reject("matmul partner")
                b = cands[int(rng.integers(len(cands)))]
                self._emit(f"{a.name} @ {b.name}", op)
            return
        if op in ("dot", "outer"):
            a = self._pick(lambda v: len(v.shape) == 1)
            n = a.shape[0] if op == "dot" else int(rng.integers(1, 4))
            cands = [v for v in self.values if v is not a and v.shape == (n,) and v.dtype == a.dtype]
            b = cands[0] if cands and rng.random() < 0.5 else self._new_input((n,), dtype=a.dtype)
            self._emit(
                f"{op}({a.name}, {b.name})" if rng.random() < 0.5 else f"{op}({b.name}, {a.name})", op
            )
            return
        if op == "reshape":
            a = self._pick(lambda v: len(v.shape) >= 1)
            n = int(np.prod(a.shape))
            divisors = [d for d in range(1, n + 1) if n % d == 0]
            d = int(rng.choice(divisors))
            target = rng.choice([f"({n},)", f"({d}, {n // d})", f"(-1, {d})", f"({d}, 1, {n // d})"])
            self._emit(f"reshape({a.name}, {target})", op, positive=a.positive, bounded=a.bounded)
            return
        if op == "flatten":
            a = self._pick()
            extra = ", start_dim=1" if len(a.shape) >= 2 and rng.random() < 0.4 else ""
            self._emit(f"flatten({a.name}{extra})", op, positive=a.positive, bounded=a.bounded)
            return
        if op == "squeeze":
            a = self._pick(lambda v: 1 in v.shape)
            ones = [i for i, d in enumerate(a.shape) if d == 1]
            extra = f", axis={int(rng.choice(ones))}" if rng.random() < 0.5 else ""
            self._emit(f"squeeze({a.name}{extra})", op, positive=a.positive, bounded=a.bounded)
            return
        if op == "unsqueeze":
            a = self._pick(lambda v: len(v.shape) <= 2)
            axis = int(rng.integers(-len(a.shape) - 1, len(a.shape) + 1))
            self._emit(f"unsqueeze({a.name}, axis={axis})", op, positive=a.positive, bounded=a.bounded)
            return
        if op == "transpose":
            a = self._pick(lambda v: len(v.shape) >= 2)
            d0, d1 = (int(i) for i in rng.choice(len(a.shape), size=2, replace=False))
            self._emit(f"transpose({a.name}, {d0}, {d1})", op, positive=a.positive, bounded=a.bounded)
            return
        if op == "permute":
            a = self._pick(lambda v: len(v.shape) >= 2)
            dims = tuple(int(i) for i in rng.permutation(len(a.shape)))
            self._emit(f"permute({a.name}, {dims})", op, positive=a.positive, bounded=a.bounded)
            return
        if op in ("expand", "broadcast_to"):
            a = self._pick(lambda v: len(v.shape) <= 2)
            target = tuple(int(rng.integers(2, 4)) if d == 1 else d for d in a.shape)
            if rng.random() < 0.5 or target == a.shape:
                target = (2, *target)
            spelled = "(" + ", ".join(map(str, target)) + ("," if len(target) == 1 else "") + ")"
            self._emit(f"{op}({a.name}, {spelled})", op, positive=a.positive, bounded=a.bounded)
            return
        if op in ("concat", "stack"):
            a = self._pick(lambda v: len(v.shape) >= 1) if op == "concat" else self._pick()
            if rng.random() < 0.5:
                b = a
            else:
                shape = list(a.shape)
                axis = int(rng.integers(len(shape))) if op == "concat" else 0
                if op == "concat":
                    shape[axis] = int(rng.integers(1, 3))
                cands = [v for v in self.values if v is not a and v.shape == tuple(shape)]
                b = cands[0] if cands else self._new_input(tuple(shape))
            nd = len(a.shape) + (op == "stack")
            axis = 0
            if op == "concat":
                diff = [i for i, (p, q) in enumerate(zip(a.shape, b.shape)) if p != q]
                axis = diff[0] if diff else int(rng.integers(nd))
            else:
                axis = int(rng.integers(nd))
            self._emit(
                f"{op}([{a.name}, {b.name}], axis={axis})", op, positive=a.positive and b.positive
            )
            return
        if op == "split":
            a = self._pick(lambda v: len(v.shape) >= 1 and max(v.shape) >= 2)
            axes = [i for i, d in enumerate(a.shape) if d >= 2]
            axis = int(rng.choice(axes))
            n = a.shape[axis]
            k = int(rng.integers(1, n))
            sections = f"({k}, {n - k})" if rng.random() < 0.5 or n % 2 else str(n // 2)
            self._emit(
                f"split({a.name}, {sections}, axis={axis})",
                op,
                positive=a.positive,
                bounded=a.bounded,
                names=2,
            )
            return
        if op == "getitem":
            a = self._pick(lambda v: len(v.shape) >= 1)
            items = []
            adv = False
            for d in a.shape:
                r = rng.random()
                if r < 0.25:
                    items.append(str(int(rng.integers(-d, d))))
                elif r < 0.45 and not adv:
                    adv = True
                    idx = rng.integers(-d, d, size=int(rng.integers(1, 4)))
                    items.append("[" + ", ".join(str(int(i)) for i in idx) + "]")
                elif r < 0.8:
                    lo = int(rng.integers(0, d))
                    step = int(rng.choice([1, 1, 2]))
                    items.append(f"{lo}::{step}" if step != 1 else f"{lo}:")
                else:
                    items.append(":")
            if rng.random() < 0.15:
                items.insert(int(rng.integers(len(items) + 1)), "None")
            self._emit(f"{a.name}[{', '.join(items)}]", op, positive=a.positive, bounded=a.bounded)
            return
        if op == "flip":
            a = self._pick(lambda v: len(v.shape) >= 1)
            extra = f", axis={int(rng.integers(len(a.shape)))}" if rng.random() < 0.6 else ""
            self._emit(f"flip({a.name}{extra})", op, positive=a.positive, bounded=a.bounded)
            return
        if op == "pad":
            a = self._pick(lambda v: len(v.shape) >= 1)
            n = int(rng.integers(1, min(2, len(a.shape)) + 1))
            pads = tuple(int(p) for p in rng.integers(0, 3, 2 * n))
            value = float(rng.choice([0.0, 0.5, -1.0]))
            self._emit(f"pad({a.name}, {pads}, value={value})", op)
            return
        if op == "where":
            a = self._pick()
            b = self._other(a)
            cmp = str(rng.choice([">", "<", ">=", "<=", "==", "!="]))
            cond = f"{a.name} {cmp} {b.name if rng.random() < 0.5 else 0}"
            x, y = (a, b) if rng.random() < 0.5 else (b, a)
            y_text = y.name if rng.random() < 0.8 else str(float(np.round(rng.uniform(-1, 1), 2)))
            self._emit(f"where({cond}, {x.name}, {y_text})", op)
            return
        if op == "masked_fill":
            a = self._pick()
            cands = [v for v in self.values if _broadcasts_to(v.shape, a.shape)]
            m = cands[int(rng.integers(len(cands)))]
            cmp = str(rng.choice([">", "<"]))
            self._emit(f"masked_fill({a.name}, {m.name} {cmp} 0, {float(rng.choice([0.0, 0.5]))})", op)
            return
        if op in ("softmax", "log_softmax"):
            a = self._pick(lambda v: len(v.shape) >= 1)
            axis = int(rng.integers(-len(a.shape), len(a.shape)))
            self._emit(
                f"{op}({a.name}, axis={axis})", op, positive=op == "softmax", bounded=op == "softmax"
            )
            return
        if op in ("mse_loss", "binary_cross_entropy_with_logits"):
            a = self._pick()
            if op == "mse_loss":
                b = self._other(a, same_shape=True)
            else:
                b = self._new_input(a.shape, values=self.rng.uniform(0, 1, a.shape), bounded=True)
            red = str(rng.choice(["mean", "sum", "none"]))
            self._emit(f"{op}({a.name}, {b.name}, reduction='{red}')", op, positive=op == "mse_loss")
            return
        if op in ("nll_loss", "cross_entropy"):
            a = self._pick(lambda v: len(v.shape) == 2)
            n, c = a.shape
            red = str(rng.choice(["mean", "sum", "none"]))
            if rng.random() < 0.25:
                b = self._pick(lambda v: v.shape == a.shape)
                t = f"argmax({b.name}, axis=1)"
            else:
                t = self._int_input(n, c)
            x = f"log_softmax({a.name}, axis=1)" if op == "nll_loss" else a.name
            self._emit(f"{op}({x}, {t}, reduction='{red}')", op)
            return
        raise _Reject(f"no builder for {op}")


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


def _broadcasts_to(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return _broadcasts(a, b) and np.broadcast_shapes(a, b) == b


def named_programs() -> list[RandomProgram]:
    """The audit's examples of false FAIL, crash and misleading blame (issue 8), as programs."""

    def p(k: int, source: str, dtype_mode: str, checks: tuple[str, ...], **inputs: Any) -> RandomProgram:
        specs = []
        for name, (values, dtype) in inputs.items():
            specs.append((name, np.asarray(values, dtype), dtype, True))
        program = parse(source, {n: (v.shape, d) for n, v, d, _ in specs}, outputs=["y"])
        shape = program.node(dict(program.outputs)["y"]).shape
        cot = {"y": np.linspace(1.0, 2.0, int(np.prod(shape))).reshape(shape)}
        return RandomProgram(-k, source, specs, checks, cot, dtype_mode, "named")

    return [
        p(1, "y = sum(exp(x))", "float32", ("vjp",), x=([100.0, 1.0], "float32")),
        p(2, "y = sum(log(exp(x)))", "float64", ("vjp",), x=([1000.0, 1.0], "float64")),
        p(3, "y = std(x)", "float64", ("vjp",), x=([1.0 + 1e-12, 1.0, 1.0], "float64")),
        p(
            4,
            "y = sum(x * w)",
            "mixed",
            ("vjp", "jacobian"),
            x=([0.5, -1.0], "float32"),
            w=([1.5, 2.0], "float64"),
        ),
        p(
            5,
            "y = sum(tanh(x) * w)",
            "mixed",
            ("vjp", "hessian"),
            x=([0.5, -1.0, 2.0], "float32"),
            w=([1.5, 2.0, -0.5], "float64"),
        ),
        p(6, "y = norm(x, ord=1.0)", "float64", ("vjp",), x=([0.0, 1.0, -2.0], "float64")),
        p(7, "y = relu(sum(x) - 1) + sum(sin(x))", "float64", ("vjp",), x=([0.25, 0.75], "float64")),
        p(8, "y = sum(relu(x))", "float64", ("vjp",), x=([1e-12, 1.0], "float64")),
    ]
