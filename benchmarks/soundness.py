"""Soundness of the verdict: does check() catch every kind of wrong rule, blame the right node,
and leave correct gradients alone?

    .venv/bin/python -m benchmarks.soundness            # full (at most ~25 minutes on 2 cores)
    .venv/bin/python -m benchmarks.soundness --quick    # about 3 minutes
    .venv/bin/python -m benchmarks.soundness --seed 7 --random 200 --parts random
    .venv/bin/python -m benchmarks.soundness --program 123 --seed 0   # replay one random program

It measures the in-process core, crossgrad.server.check.check, in four parts:

1. Mutation table. Every differentiable op of the table (crossgrad.engine.OPS) sits in a small
   chain, `z = OP(...)` then `y = sum(sin(z) * v)` (benchmarks/soundness_programs.py), and its
   VJP rule is corrupted by monkeypatching the engine's OpImpl.vjp (restored on exit) in one of
   nine ways (classes()). For each: detection (verdict FAIL with the engine failing) and blame
   (report.points[0].blame[0] names a node of the mutated op). A corruption that never changes
   a value (a unary op asked for broadcasting, a rule whose result is zero) is "n/a".
2. Random programs: seeded, through the unmodified engine, float64 / float32 / mixed and
   moderate / large / tiny / near-singular values, vjp / jacobian / hessian, and the audit's
   examples from issue 8. Programs are also built in torch 2.13 from the parsed IR (every one in
   the full run; in --quick those that do not pass): a FAIL where the engine equals torch is a
   false FAIL of the verifier, a FAIL where it differs is an engine bug (or a torch difference).
3. Kink programs at and next to their kinks, with wrong claimed values (must FAIL) and
   admissible ones (must not FAIL), and a few engine rules corrupted at a kink.
4. The warm worked example (benchmarks.verify_bench.worked_example), median of 15.

Then one line per target of issue 8. Every check runs under its own Budget(seconds=...);
exceptions out of check() are caught and counted, never fatal. Verdicts this file does not
know (UNVERIFIED, ...) are counted in columns of their own.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import sys
import textwrap
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from crossgrad.engine.ops import IMPLS, NumpyOps
from crossgrad.engine.tensor import Tensor
from crossgrad.server.check import check
from crossgrad.server.deadline import OutOfTime
from crossgrad.server.ir import Program, evaluate
from crossgrad.server.language import RequestError, index_for_numpy, parse
from crossgrad.server.model import Budget, CheckRequest, InputSpec

from .soundness_programs import (
    DIFFERENTIABLE,
    DTYPE_MODES,
    MAGNITUDES,
    NOT_DIFFERENTIABLE,
    Generator,
    KinkCase,
    OpCase,
    RandomProgram,
    kink_cases,
    named_programs,
    op_cases,
)

FAIL, PASS, CONV, ERROR = "FAIL", "PASS", "PASS_WITH_CONVENTION_DIFFERENCES", "ERROR"
KNOWN = (PASS, CONV, FAIL, ERROR)
SHORT = {PASS: "PASS", CONV: "PASS_CONV", FAIL: "FAIL", ERROR: "ERROR"}


def is_pass(verdict: str) -> bool:
    """PASS, PASS_WITH_CONVENTION_DIFFERENCES and any other PASS_WITH_... verdict added later."""
    return verdict == PASS or verdict.startswith("PASS_")


def verdict_name(report: Any) -> str:
    v = getattr(report, "verdict", None)
    return str(getattr(v, "value", v))


def engine_fails(report: Any) -> bool:
    """Some derivative block where the engine disagrees with the references."""
    for point in getattr(report, "points", [])[:1]:
        for b in getattr(point, "blocks", []):
            if getattr(b, "failing", {}).get("engine", 0) and getattr(b, "status", "fail") == "fail":
                return True
    return False


def claim_fails(report: Any) -> bool:
    for point in getattr(report, "points", [])[:1]:
        for b in getattr(point, "blocks", []):
            if getattr(b, "failing", {}).get("claimed", 0) and getattr(b, "status", "fail") == "fail":
                return True
    return False


def first_blame(report: Any) -> Any:
    points = getattr(report, "points", [])
    blame = getattr(points[0], "blame", []) if points else []
    return blame[0] if blame else None


def short(text: str, width: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def array_text(a: Any) -> str:
    a = np.asarray(a)
    body = np.array2string(a, precision=17, separator=", ", max_line_width=10_000, threshold=200)
    return f"np.array({' '.join(body.split())}, dtype='{a.dtype}')"


# ---------------------------------------------------------------- mutations


@dataclass(frozen=True)
class MutationClass:
    key: str
    label: str  # column heading
    rel: float  # relative error (0: sign flip)
    dtype: str = "float64"
    checks: tuple[str, ...] = ("vjp",)
    frozen: bool = False  # run with the op's other operand frozen
    description: str = ""


def classes(conditional_rel: float) -> list[MutationClass]:
    c = conditional_rel
    return [
        MutationClass(
            "rel3", "rel1e-3", 1e-3, description="every entry of the rule's result x (1 + 1e-3)"
        ),
        MutationClass("rel6", "rel1e-6", 1e-6, description="x (1 + 1e-6)"),
        MutationClass("sign", "sign", 0.0, description="the sign of one entry (the largest) flipped"),
        MutationClass(
            "bcast", "bcast", c, description=f"x (1 + {c:g}) only for an operand that was broadcast"
        ),
        MutationClass(
            "f32",
            "f32",
            1e-3,
            "float32",
            description="x (1 + 1e-3) only for float32 operands (float32 inputs)",
        ),
        MutationClass(
            "cg",
            "cgraph",
            c,
            checks=("vjp", "hessian"),
            description=f"x (1 + {c:g}) only under create_graph (run with the Hessian check)",
        ),
        MutationClass("ndim", "ndim", c, description=f"x (1 + {c:g}) only for operands of rank >= 2"),
        MutationClass(
            "batch",
            "batched",
            c,
            checks=("jacobian",),
            description=f"x (1 + {c:g}) only for batched cotangents (run with the Jacobian check)",
        ),
        MutationClass(
            "frozen",
            "frozen",
            c,
            frozen=True,
            description=f"x (1 + {c:g}) only when another tensor operand does not require grad (run so)",
        ),
    ]


def _batch_dims(node: Any, g: Any) -> int:
    first = g[0] if isinstance(g, (list, tuple)) else g
    return int(np.ndim(first.data if isinstance(first, Tensor) else first)) - len(node._out_meta[0][0])


def _is_float(meta: Any) -> bool:
    return meta[1] is not None and np.dtype(meta[1]).kind == "f"


def _targets(key: str, node: Any, nb: int, create_graph: bool) -> list[int]:
    """The operands whose gradient this class corrupts at this node (and this call)."""
    meta, needs, spec = node._in_meta, node._needs, node.impl.spec
    every = list(range(len(meta)))
    if key in ("rel3", "rel6", "sign", "affine", "x10", "sign-all"):
        return every
    if key == "f32":
        return [k for k in every if meta[k][1] == np.float32]
    if key == "cg":
        return every if create_graph else []
    if key == "batch":
        return every if nb > 0 else []
    if key == "ndim":
        return [k for k in every if len(meta[k][0]) >= 2]
    if key == "bcast":
        out = tuple(node._out_meta[0][0])
        rule = spec.shape_rule.__name__
        found = []
        for k in every:
            shape = tuple(meta[k][0])
            if not _is_float(meta[k]) or k in spec.no_grad_operands:
                continue
            if spec.name == "matmul":
                if len(shape) >= 2 and len(out) > 2 and shape[:-2] != out[:-2]:
                    found.append(k)
            elif rule in ("_broadcast", "_where", "_expand") and shape != out:
                found.append(k)
        return found
    if key == "frozen":
        frozen_other = any(
            not needs[j] and _is_float(meta[j]) and j not in spec.no_grad_operands for j in every
        )
        return [k for k in every if needs[k]] if frozen_other else []
    raise ValueError(key)


def _corrupt(key: str, rel: float, gk: Any, arr: np.ndarray, nb: int) -> Any:
    if key in ("sign", "sign-all"):
        if key == "sign-all":
            return -gk
        flat = np.abs(np.nan_to_num(arr, posinf=0, neginf=0)).reshape(arr.shape[:nb] + (-1,))
        flat = flat.reshape(-1, flat.shape[-1]).sum(axis=0) if nb else flat.reshape(-1)
        mask = np.ones(arr.shape[nb:], dtype=arr.dtype)
        mask.reshape(-1)[int(np.argmax(flat))] = -1
        return gk * mask
    if key == "affine":
        return gk * 1.1 + 0.01
    if key == "x10":
        return gk * 10.0
    return gk * (1.0 + rel)


@contextmanager
def mutated(impl_name: str, key: str, rel: float) -> Iterator[dict[str, int]]:
    """The op's VJP rule corrupted as `key` says, restored on exit whatever happens. Yields a
    counter of the calls where the corruption changed a value ('fired')."""
    impl = IMPLS[impl_name]
    original = impl.vjp
    counter = {"fired": 0, "calls": 0}

    def vjp(B: Any, node: Any, g: Any, s: Any) -> Any:
        grads = original(B, node, g, s)
        counter["calls"] += 1
        create_graph = B is not NumpyOps
        nb = _batch_dims(node, g)
        out = list(grads)
        for k in _targets(key, node, nb, create_graph):
            gk = out[k] if k < len(out) else None
            if gk is None:
                continue
            arr = np.asarray(gk.data if isinstance(gk, Tensor) else gk)
            if key not in ("affine",) and not np.any(np.isfinite(arr) & (arr != 0)):
                continue  # a zero (or non-finite) gradient: scaling or flipping changes nothing
            out[k] = _corrupt(key, rel, gk, arr, nb)
            counter["fired"] += 1
        return tuple(out)

    impl.vjp = vjp
    try:
        yield counter
    finally:
        impl.vjp = original


# ---------------------------------------------------------------- running checks


@dataclass
class Outcome:
    verdict: str  # a verdict name, or "crash", "out of time", "refused"
    report: Any = None
    error: str = ""
    seconds: float = 0.0


def run_check(request: CheckRequest) -> Outcome:
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            report = check(request)
    except OutOfTime as exc:
        return Outcome("out of time", error=f"OutOfTime: {exc}", seconds=time.perf_counter() - start)
    except RequestError as exc:
        return Outcome(
            "refused", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start
        )
    except Exception as exc:  # a crash: an exception out of check()
        tb = traceback.format_exc(limit=-3)
        return Outcome(
            "crash", error=f"{type(exc).__name__}: {exc}\n{tb}", seconds=time.perf_counter() - start
        )
    return Outcome(verdict_name(report), report, seconds=time.perf_counter() - start)


def _spec(name: str, v: np.ndarray, dtype: str, requires_grad: bool) -> InputSpec:
    if np.asarray(v).dtype.kind in "iu":
        return InputSpec(name, np.asarray(v), dtype="int64", requires_grad=False)
    return InputSpec(name, np.asarray(v, dtype), dtype=dtype, requires_grad=requires_grad)


def op_request(case: OpCase, cls: MutationClass, seconds: float) -> CheckRequest:
    frozen = set(case.no_grad) | ({case.freeze} if cls.frozen and case.freeze else set())
    inputs = [_spec(n, v, cls.dtype, n not in frozen) for n, v in case.inputs.items()]
    return CheckRequest(case.source, inputs, checks=cls.checks, budget=Budget(seconds=seconds))


# ---------------------------------------------------------------- part 1: the mutation table


@dataclass
class Cell:
    op: str
    variant: str
    cls: str
    status: str  # "+", "d", "x", "-", "E", "n/a", "b" (baseline not PASS)
    verdict: str = ""
    blamed: str = ""
    summary: str = ""
    source: str = ""


SYMBOL = {"+": "+", "d": "d", "x": "x", "-": "-", "E": "E", "n/a": ".", "b": "b"}
LEGEND = (
    "+ caught and blamed on the op's node   d caught, nothing blamed   x caught, another node "
    "blamed first\n- missed (not FAIL with the engine failing)   E exception out of check() or out "
    "of time\n. n/a (the corruption never changed a value)   b the unmutated program does not PASS "
    "in that configuration"
)


def run_table(
    cases: list[OpCase], cls_list: list[MutationClass], seconds: float
) -> tuple[list[Cell], dict]:
    cells: list[Cell] = []
    baselines: dict[tuple[str, str, str], Outcome] = {}
    start = time.perf_counter()
    for done, case in enumerate(cases, 1):
        for cls in cls_list:
            config = (cls.dtype, cls.checks, cls.frozen and case.freeze is not None)
            key = (case.op, case.variant, repr(config))
            if key not in baselines:
                baselines[key] = run_check(op_request(case, cls, seconds))
            base = baselines[key]
            with mutated(case.impl, cls.key, cls.rel) as counter:
                out = run_check(op_request(case, cls, seconds))
            cell = Cell(case.op, case.variant, cls.key, "-", out.verdict, source=case.source)
            blame = first_blame(out.report)
            cell.blamed = f"{blame.op} ({blame.node_name})" if blame is not None else ""
            cell.summary = out.error or getattr(out.report, "summary", "")
            if out.verdict in ("crash", "out of time", "refused"):
                cell.status = "E"
            elif counter["fired"] == 0:
                cell.status = "n/a"
            elif not is_pass(base.verdict):
                cell.status = "b"
                cell.summary = (
                    f"unmutated: {base.verdict}: {base.error or getattr(base.report, 'summary', '')}"
                )
            elif out.verdict == FAIL and engine_fails(out.report):
                cell.status = (
                    "+" if blame is not None and blame.op == case.op else ("x" if blame else "d")
                )
            cells.append(cell)
        if done % 10 == 0:
            print(f"  ... {done}/{len(cases)} chains ({time.perf_counter() - start:.0f} s)", flush=True)
    return cells, baselines


def print_table(
    cells: list[Cell], cls_list: list[MutationClass], variants: int
) -> dict[str, tuple[int, int, int]]:
    by = defaultdict(list)
    for c in cells:
        by[(c.op, c.cls)].append(c)
    width = max(7, variants + 1)
    print(
        "\n1. Mutation table: each op's VJP corrupted, inside z = OP(...); y = sum(sin(z) * v)\n"
        "   (tanh for sin, mean for sum, / for mul: the op under test appears once)"
    )
    for cls in cls_list:
        print(f"   {cls.label:8s} {cls.description}")
    print(textwrap.indent(LEGEND, "   "))
    print(f"   (one symbol per program: {variants} per op)\n")
    head = f"   {'op':34s}" + "".join(f"{c.label:>{width}s}" for c in cls_list)
    print(head)
    print("   " + "-" * (len(head) - 3))
    for op in DIFFERENTIABLE:
        if not any(by[(op, cls.key)] for cls in cls_list):
            continue  # not run (--ops)
        row = f"   {op:34s}"
        for cls in cls_list:
            row += f"{''.join(SYMBOL[c.status] for c in by[(op, cls.key)]):>{width}s}"
        print(row)
    print(f"   not differentiable (no VJP to corrupt): {', '.join(NOT_DIFFERENTIABLE)}")

    rates: dict[str, tuple[int, int, int]] = {}
    print(
        "\n   per class         applicable  detected          blamed            n/a  "
        "worst (missed or not blamed)"
    )
    for cls in cls_list:
        mine = [c for c in cells if c.cls == cls.key]
        app = [c for c in mine if c.status not in ("n/a", "b")]
        det = sum(c.status in ("+", "d", "x") for c in app)
        bl = sum(c.status == "+" for c in app)
        na = sorted({c.op for c in mine if c.status == "n/a"})
        bad = sorted({c.op for c in app if c.status != "+"})
        rates[cls.key] = (len(app), det, bl)
        print(
            f"   {cls.label:17s} {len(app):10d}  {det:4d} ({pct(det, len(app)):>6s})  {bl:4d} "
            f"({pct(bl, len(app)):>6s})  {len(na):4d}  {short(', '.join(bad), 70) or '-'}"
        )
    base_bad = [c for c in cells if c.status == "b"]
    if base_bad:
        print(
            f"   unmutated program not PASS (excluded): {len(base_bad)} cells, e.g. "
            + "; ".join(f"{c.op}/{c.cls}: {short(c.summary, 120)}" for c in base_bad[:3])
        )
    na_by_cls = {
        cls.label: sorted({c.op for c in cells if c.cls == cls.key and c.status == "n/a"})
        for cls in cls_list
    }
    print("   n/a by class: " + "; ".join(f"{k}: {len(v)}" for k, v in na_by_cls.items()))
    for k in ("rel1e-3", "sign"):
        if na_by_cls.get(k):
            print(f"     {k} n/a (zero gradient): {', '.join(na_by_cls[k])}")

    worst = Counter()
    for c in cells:
        if c.status in ("-", "d", "x", "E"):
            worst[c.op] += 1
    if worst:
        print(
            "   worst ops (cells missed or not blamed): "
            + ", ".join(f"{op} {n}" for op, n in worst.most_common(12))
        )
    missed_any = any(c.status in ("-", "d", "x", "E") for c in cells)
    print(
        "\n   first misses per class (program, verdict, what blame said):"
        + ("" if missed_any else " none")
    )
    for cls in cls_list:
        missed = [c for c in cells if c.cls == cls.key and c.status in ("-", "d", "x", "E")]
        for c in missed[:2]:
            print(f"   [{cls.label}] {c.op} {c.variant}: {c.verdict}; blamed: {c.blamed or 'none'}")
            print(f"       {c.source!r}")
            print(f"       {short(c.summary, 300)}")
    return rates


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "n/a"


# ---------------------------------------------------------------- torch, from the IR


def torch_lowering() -> dict[str, Callable[[list[Any], dict[str, Any]], Any]]:
    import torch
    import torch.nn.functional as F

    def tensors(o: list[Any]) -> list[Any]:
        ref = next(x for x in o if isinstance(x, torch.Tensor))
        return [x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=ref.dtype) for x in o]

    def dims(x: Any, axis: Any) -> tuple[int, ...]:
        if axis is None:
            return tuple(range(x.ndim))
        return (axis,) if isinstance(axis, int) else tuple(axis)

    def one_at_a_time(fn: Callable[..., Any]) -> Callable[[list[Any], dict[str, Any]], Any]:
        def lower(o: list[Any], a: dict[str, Any]) -> Any:
            x, axis, keep = o[0], a.get("axis"), a.get("keepdims", False)
            if axis is None:
                out = fn(x)
                return out.reshape((1,) * x.ndim) if keep else out
            for d in sorted((v % max(x.ndim, 1) for v in dims(x, axis)), reverse=True):
                x = fn(x, d, keep)
            return x

        return lower

    def values_of(fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda x, *d: fn(x) if not d else fn(x, *d).values

    def sum_like(fn: Callable[..., Any]) -> Callable[[list[Any], dict[str, Any]], Any]:
        def lower(o: list[Any], a: dict[str, Any]) -> Any:
            x, axis, keep = o[0], a["axis"], a["keepdims"]
            if axis is None and not keep:
                return fn(x)
            return fn(x, dim=dims(x, axis), keepdim=keep)

        return lower

    def getitem(o: list[Any], a: dict[str, Any]) -> Any:
        index = index_for_numpy(a["index"])
        items = tuple(torch.from_numpy(np.asarray(i)) if isinstance(i, np.ndarray) else i for i in index)
        return o[0][items]

    unary = {
        n: (lambda f: lambda o, a: f(o[0]))(getattr(torch, n))
        for n in (
            "abs",
            "exp",
            "log",
            "log1p",
            "expm1",
            "sqrt",
            "reciprocal",
            "sin",
            "cos",
            "tan",
            "tanh",
            "sigmoid",
            "relu",
            "sign",
            "floor",
            "round",
            "clone",
        )
    }
    return {
        **unary,
        "add": lambda o, a: o[0] + o[1],
        "sub": lambda o, a: o[0] - o[1],
        "mul": lambda o, a: o[0] * o[1],
        "div": lambda o, a: o[0] / o[1],
        "neg": lambda o, a: -o[0],
        "pow_tensor": lambda o, a: o[0] ** o[1],
        "pow": lambda o, a: o[0] ** a["exponent"],
        "rpow": lambda o, a: torch.pow(a["base"], o[0]),
        "rsub": lambda o, a: a["other"] - o[0],
        "maximum": lambda o, a: torch.maximum(*tensors(o)),
        "minimum": lambda o, a: torch.minimum(*tensors(o)),
        "leaky_relu": lambda o, a: F.leaky_relu(o[0], a["negative_slope"]),
        "softplus": lambda o, a: F.softplus(o[0], a["beta"], a["threshold"]),
        "silu": lambda o, a: F.silu(o[0]),
        "gelu": lambda o, a: F.gelu(o[0], approximate=a["approximate"]),
        "clamp": lambda o, a: torch.clamp(o[0], a["min"], a["max"]),
        "sum": sum_like(torch.sum),
        "mean": sum_like(torch.mean),
        "prod": one_at_a_time(torch.prod),
        "max": one_at_a_time(values_of(torch.max)),
        "min": one_at_a_time(values_of(torch.min)),
        "amax": lambda o, a: torch.amax(o[0], dims(o[0], a["axis"]), a["keepdims"]),
        "amin": lambda o, a: torch.amin(o[0], dims(o[0], a["axis"]), a["keepdims"]),
        "logsumexp": lambda o, a: torch.logsumexp(o[0], dims(o[0], a["axis"]), a["keepdims"]),
        "var": lambda o, a: torch.var(
            o[0], a["axis"], correction=a["correction"], keepdim=a["keepdims"]
        ),
        "std": lambda o, a: torch.std(
            o[0], a["axis"], correction=a["correction"], keepdim=a["keepdims"]
        ),
        "norm": lambda o, a: torch.linalg.vector_norm(o[0], a["ord"], a["axis"], a["keepdims"]),
        "matmul": lambda o, a: torch.matmul(o[0], o[1]),
        "dot": lambda o, a: torch.dot(o[0], o[1]),
        "outer": lambda o, a: torch.outer(o[0], o[1]),
        "reshape": lambda o, a: torch.reshape(o[0], tuple(a["shape"])),
        "flatten": lambda o, a: torch.flatten(o[0], a["start_dim"], a["end_dim"]),
        "squeeze": lambda o, a: (
            torch.squeeze(o[0]) if a["axis"] is None else torch.squeeze(o[0], a["axis"])
        ),
        "unsqueeze": lambda o, a: torch.unsqueeze(o[0], a["axis"]),
        "transpose": lambda o, a: torch.transpose(o[0], a["dim0"], a["dim1"]) if o[0].ndim else o[0],
        "permute": lambda o, a: torch.permute(o[0], tuple(a["dims"])),
        "expand": lambda o, a: o[0].expand(*a["shape"]),
        "broadcast_to": lambda o, a: torch.broadcast_to(o[0], tuple(a["shape"])),
        "concat": lambda o, a: torch.cat(list(o), a["axis"]),
        "stack": lambda o, a: torch.stack(list(o), a["axis"]),
        "split": lambda o, a: torch.split(
            o[0], a["sections"] if isinstance(a["sections"], int) else list(a["sections"]), a["axis"]
        ),
        "getitem": getitem,
        "flip": lambda o, a: torch.flip(o[0], dims(o[0], a["axis"])),
        "pad": lambda o, a: F.pad(o[0], tuple(a["pad"]), value=a["value"]),
        "where": lambda o, a: torch.where(o[0], o[1], o[2]),
        "masked_fill": lambda o, a: o[0].masked_fill(o[1], a["value"]),
        "softmax": lambda o, a: torch.softmax(o[0], a["axis"]),
        "log_softmax": lambda o, a: torch.log_softmax(o[0], a["axis"]),
        "mse_loss": lambda o, a: F.mse_loss(o[0], o[1], reduction=a["reduction"]),
        "binary_cross_entropy_with_logits": lambda o, a: F.binary_cross_entropy_with_logits(
            o[0], o[1], reduction=a["reduction"]
        ),
        "nll_loss": lambda o, a: F.nll_loss(o[0], o[1], reduction=a["reduction"]),
        "cross_entropy": lambda o, a: F.cross_entropy(o[0], o[1], reduction=a["reduction"]),
        "lt": lambda o, a: operator.lt(o[0], o[1]),
        "le": lambda o, a: operator.le(o[0], o[1]),
        "gt": lambda o, a: operator.gt(o[0], o[1]),
        "ge": lambda o, a: operator.ge(o[0], o[1]),
        "eq": lambda o, a: operator.eq(o[0], o[1]),
        "ne": lambda o, a: operator.ne(o[0], o[1]),
        "argmax": lambda o, a: torch.argmax(o[0], a["axis"], a["keepdims"]),
        "argmin": lambda o, a: torch.argmin(o[0], a["axis"], a["keepdims"]),
    }


_TORCH: dict[str, Any] = {}


def torch_derivatives(
    program: Program,
    values: dict[str, np.ndarray],
    wrt: list[str],
    checks: tuple[str, ...],
    cotangents: dict[str, np.ndarray],
) -> dict[tuple[str, str, str], np.ndarray]:
    """torch's value, vjp, jacobian and hessian blocks, keyed as the report's (quantity, output,
    input); hessian inputs as 'a,b'. Raises whatever torch raises."""
    import torch

    if not _TORCH:
        _TORCH.update(torch_lowering())
    lowering = _TORCH
    consts = {n: torch.from_numpy(np.array(v)) for n, v in values.items() if n not in wrt}
    outs_names = [n for n, _ in program.outputs]

    def f(*xs: Any) -> tuple[Any, ...]:
        env = evaluate(
            program,
            {**consts, **dict(zip(wrt, xs))},
            lambda node, o: lowering[node.op](o, node.attr_dict),
        )
        return tuple(env[i] for _, i in program.outputs)

    xs = [torch.from_numpy(np.array(values[n])).requires_grad_(True) for n in wrt]
    result: dict[tuple[str, str, str], np.ndarray] = {}
    outs = f(*xs)
    for n, o in zip(outs_names, outs):
        result[("value", n, "")] = o.detach().numpy().copy()
    if "vjp" in checks:
        live = [
            (o, torch.from_numpy(np.asarray(cotangents[n])).to(o.dtype))
            for n, o in zip(outs_names, outs)
            if o.requires_grad
        ]
        if live:
            grads = torch.autograd.grad(
                [o for o, _ in live],
                xs,
                [c for _, c in live],
                allow_unused=True,
                materialize_grads=True,
                retain_graph=True,
            )
        else:
            grads = [torch.zeros_like(x) for x in xs]
        for n, g in zip(wrt, grads):
            result[("vjp", "", n)] = g.detach().numpy().copy()
    if "jacobian" in checks:
        jac = torch.autograd.functional.jacobian(f, tuple(x.detach() for x in xs))
        for k, n in enumerate(outs_names):
            for j, w in enumerate(wrt):
                result[("jacobian", n, w)] = jac[k][j].detach().numpy().copy()
    if "hessian" in checks:
        hes = torch.autograd.functional.hessian(
            lambda *a: f(*a)[0].reshape(()), tuple(x.detach() for x in xs)
        )
        for i, a in enumerate(wrt):
            for j, b in enumerate(wrt):
                result[("hessian", "", f"{a},{b}")] = hes[i][j].detach().numpy().copy()
    return result


AGREE = {"float32": (1e-3, 1e-5), "float64": (1e-6, 1e-9)}
"""(rtol, atol) for 'the engine equals torch': ten times the verifier's default tolerances in that
dtype (compare.Tolerance: 1e-4 and 1e-6 for float32, 1e-7 and 1e-10 for float64)."""


def agree(a: np.ndarray, b: np.ndarray, dtype: str) -> tuple[bool, float]:
    """Whether two implementations agree as computations in `dtype` may (rounding, op order):
    |a - b| <= atol + rtol |b| + 1e-12 max|b| per entry, NaN with NaN and an infinity with the
    same one; and the largest difference relative to that tolerance's rtol part."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False, np.inf
    rtol, atol = AGREE[dtype]
    finite = np.isfinite(a) & np.isfinite(b)
    same_special = (np.isnan(a) & np.isnan(b)) | ((a == b) & ~np.isnan(a))
    fb = np.abs(np.where(finite, b, 0.0))
    scale = float(np.max(fb, initial=0.0))
    with np.errstate(all="ignore"):
        diff = np.where(finite, np.abs(a - b), np.where(same_special, 0.0, np.inf))
        ok = same_special | (finite & (diff <= atol + rtol * fb + 1e-12 * scale))
        rel = float(np.max(diff / np.maximum(fb, atol / rtol), initial=0.0))
    return bool(np.all(ok)), rel


# ---------------------------------------------------------------- part 2: random programs


@dataclass
class RandomResult:
    program: RandomProgram
    outcome: Outcome
    torch: str = ""  # "agrees", "differs", "torch raised: ...", "not compared"
    torch_detail: str = ""
    failing_blocks: list[str] = field(default_factory=list)
    torch_vs_reference: str = ""


def random_request(p: RandomProgram, seconds: float) -> CheckRequest:
    inputs = [_spec(n, v, d if d != "int64" else "int64", rg) for n, v, d, rg in p.inputs]
    return CheckRequest(
        p.source,
        inputs,
        outputs=["y"],
        cotangents=p.cotangents,
        checks=p.checks,
        budget=Budget(seconds=seconds, sympy_seconds=min(5.0, seconds / 3)),
    )


def compare_with_torch(p: RandomProgram, out: Outcome) -> tuple[str, str, str]:
    """(status, detail, torch vs the verifier's reference on the failing blocks)."""
    decls = {n: (v.shape, d) for n, v, d, _ in p.inputs}
    values = {n: v for n, v, _, _ in p.inputs}
    wrt = [n for n, v, d, rg in p.inputs if rg and d != "int64"]
    try:
        program = parse(p.source, decls, outputs=["y"])
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            theirs = torch_derivatives(program, values, wrt, p.checks, p.cotangents)
    except Exception as exc:
        return f"torch raised {type(exc).__name__}", short(str(exc), 200), ""
    if out.report is None or not getattr(out.report, "points", None):
        return "not compared", "no engine values in the report", ""
    details, vs_ref = [], []
    all_ok = True
    compared = 0
    for b in out.report.points[0].blocks:
        key = (b.quantity, b.output or "", b.input) if b.quantity != "value" else ("value", b.output, "")
        engine = b.sources.get("engine")
        if key not in theirs or engine is None:
            continue
        # the precision it was computed in (the report keeps some blocks as float64 copies; the
        # verifier's block dtype also knows of float32 ops on the way)
        dtypes = {str(np.asarray(engine.values).dtype), str(np.asarray(theirs[key]).dtype), b.dtype}
        dtype = "float32" if "float32" in dtypes else "float64"
        ok, rel = agree(engine.values, theirs[key], dtype)
        compared += 1
        out_part = b.output + "/" if b.output and b.quantity != "value" else ""
        label = f"{b.quantity} {out_part}{b.input or b.output}"
        if not ok:
            all_ok = False
            details.append(f"{label}: engine vs torch, worst relative difference {rel:.3g}")
        if getattr(b, "status", "") == "fail" or getattr(b, "failing", {}).get("engine", 0):
            worst = getattr(b, "worst", None) or []
            if worst:
                e = worst[0]
                t = np.asarray(theirs[key])
                tv = t[tuple(e.index)] if t.shape == tuple(b.shape) else "?"
                vals = ", ".join(f"{k} {v!r}" for k, v in e.values.items())
                vs_ref.append(f"{label} at {e.index}: {vals}, torch {float(tv)!r}")
    if not compared:
        return "not compared", "no block in common", ""
    return ("agrees" if all_ok else "differs"), "; ".join(details), "; ".join(vs_ref)


def run_random(
    n: int, seed: int, seconds: float, torch_all: bool
) -> tuple[list[RandomResult], Generator, list[RandomResult]]:
    """The named programs (the audit's examples), then n seeded random programs."""
    gen = Generator(seed)
    named = [run_one(p, seconds, True) for p in named_programs()]
    results = []
    start = time.perf_counter()
    for i in range(n):
        results.append(run_one(gen.program(i), seconds, torch_all))
        if (i + 1) % 100 == 0:
            print(f"  ... {i + 1}/{n} programs ({time.perf_counter() - start:.0f} s)", flush=True)
    return results, gen, named


def run_one(p: RandomProgram, seconds: float, torch_all: bool) -> RandomResult:
    out = run_check(random_request(p, seconds))
    r = RandomResult(p, out)
    if out.report is not None and out.report.points:
        r.failing_blocks = [
            f"{b.quantity} {b.output or ''}/{b.input}"
            for b in out.report.points[0].blocks
            if getattr(b, "status", "") == "fail"
        ]
    if not is_pass(out.verdict) or torch_all:
        r.torch, r.torch_detail, r.torch_vs_reference = compare_with_torch(p, out)
    return r


def kind_of(r: RandomResult) -> str:
    v = r.outcome.verdict
    if v == FAIL:
        if r.torch == "agrees":
            return "false FAIL (engine = torch)"
        if r.torch == "differs":
            return "FAIL, engine != torch"
        return "FAIL, torch not compared"
    if v == ERROR:
        return "false ERROR" if not r.torch.startswith("torch raised") else "ERROR, torch raises too"
    if v == "crash":
        return "crash"
    if v in ("out of time", "refused"):
        return v
    if is_pass(v) and r.torch == "differs":
        return f"{v}, engine != torch"
    return v


def describe_program(p: RandomProgram) -> str:
    lines = [f"program #{p.index} ({p.dtype_mode}, {p.magnitude}, checks {', '.join(p.checks)}):"]
    lines += ["    " + line for line in p.source.splitlines()]
    for n, v, _, rg in p.inputs:
        lines.append(f"    {n} = {array_text(v)}{'' if rg else '  (requires_grad=False)'}")
    if "vjp" in p.checks:
        lines.append(f"    cotangent y = {array_text(p.cotangents['y'])}")
    return "\n".join(lines)


def print_random(
    results: list[RandomResult], gen: Generator, seed: int, examples: int
) -> dict[str, int]:
    n = len(results)
    verdicts = Counter(r.outcome.verdict for r in results)
    columns = [*KNOWN, *sorted(v for v in verdicts if v not in KNOWN)]
    print(
        f"\n2. Random programs: {n}, seed {seed}, unmodified engine "
        f"(replay one: --program K --seed {seed})"
    )

    def row(label: str, rs: list[RandomResult]) -> str:
        c = Counter(r.outcome.verdict for r in rs)
        return f"   {label:22s}{len(rs):6d}" + "".join(
            f"{c.get(v, 0):>{max(10, len(SHORT.get(v, v)) + 1)}d}" for v in columns
        )

    print(
        f"   {'':22s}{'count':>6s}"
        + "".join(f"{SHORT.get(v, v):>{max(10, len(SHORT.get(v, v)) + 1)}s}" for v in columns)
    )
    print(row("all", results))
    for mode in DTYPE_MODES:
        print(row(f"dtype {mode}", [r for r in results if r.program.dtype_mode == mode]))
    for mag in MAGNITUDES:
        print(row(f"values {mag}", [r for r in results if r.program.magnitude == mag]))
    for chk in ("jacobian", "hessian"):
        print(row(f"with {chk}", [r for r in results if chk in r.program.checks]))
    print(row("vjp only", [r for r in results if r.program.checks == ("vjp",)]))

    kinds = Counter(kind_of(r) for r in results)
    counts = {
        "false FAIL": kinds.get("false FAIL (engine = torch)", 0),
        "engine bug": kinds.get("FAIL, engine != torch", 0),
        "false ERROR": kinds.get("false ERROR", 0),
        "crash": kinds.get("crash", 0),
        "out of time": kinds.get("out of time", 0),
        "refused": kinds.get("refused", 0),
        "n": n,
    }
    print("\n   Kinds (programs built in torch 2.13 from the IR and compared block by block):")
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"   {k:34s} {v:6d}  ({pct(v, n)})")
    built = Counter(r.torch.split(":")[0] for r in results if r.torch)
    if built:
        print("   torch: " + ", ".join(f"{k} {v}" for k, v in built.most_common()))
    compared = [r for r in results if r.torch in ("agrees", "differs")]
    if any(is_pass(r.outcome.verdict) for r in compared):
        passing = sum(is_pass(r.outcome.verdict) for r in compared)
        print(f"   (passing programs compared with torch too: {passing})")

    bad = [r for r in results if not is_pass(kind_of(r))]
    if bad:
        print(
            "\n   Where the programs that do not pass are (not passing / using the op, or in the mode):"
        )
        use = Counter(op for r in results for op in set(r.program.ops))
        hit = Counter(op for r in bad for op in set(r.program.ops))
        ranked = sorted(hit, key=lambda op: (-hit[op] / use[op], -hit[op]))[:12]
        print("   ops:   " + ", ".join(f"{op} {hit[op]}/{use[op]}" for op in ranked))
        for attr, modes in (("magnitude", MAGNITUDES), ("dtype_mode", DTYPE_MODES)):
            parts = []
            for m in modes:
                tot = sum(getattr(r.program, attr) == m for r in results)
                b = sum(getattr(r.program, attr) == m for r in bad)
                parts.append(f"{m} {b}/{tot}")
            print(f"   {attr + ':':14s}" + ", ".join(parts))
        fails = Counter(blk.split()[0] for r in bad for blk in r.failing_blocks)
        if fails:
            print(
                "   failing blocks by quantity: " + ", ".join(f"{k} {v}" for k, v in fails.most_common())
            )

    order = [
        "false FAIL (engine = torch)",
        "FAIL, engine != torch",
        "false ERROR",
        "crash",
        "out of time",
        "refused",
        "FAIL, torch not compared",
        "ERROR, torch raises too",
    ]
    order += sorted(k for k in kinds if k not in order and k not in (PASS, CONV))
    for kind in order:
        rs = [r for r in results if kind_of(r) == kind]
        if not rs:
            continue
        print(f"\n   --- {kind}: {len(rs)}; the first {min(examples, len(rs))}:")
        for r in rs[:examples]:
            print(textwrap.indent(describe_program(r.program), "   "))
            print(
                f"       verdict {r.outcome.verdict} in {r.outcome.seconds:.2f} s: "
                f"{short(r.outcome.error or getattr(r.outcome.report, 'summary', ''), 500)}"
            )
            if r.torch:
                print(f"       torch: {r.torch}{': ' + r.torch_detail if r.torch_detail else ''}")
            if r.torch_vs_reference:
                print(f"       worst failing entries with torch's value: {r.torch_vs_reference}")
    if gen.rejected_steps:
        top = sorted(gen.rejected_steps.items(), key=lambda kv: -kv[1])[:10]
        print("\n   generator: steps redrawn (op: count): " + ", ".join(f"{k} {v}" for k, v in top))
    return counts


def print_named(named: list[RandomResult]) -> None:
    print(
        "\n   The audit's examples (issue 8) through the correct engine: none may FAIL, ERROR or crash"
    )
    for r in named:
        p = r.program
        values = "; ".join(f"{n} = {np.asarray(v).tolist()} {d}" for n, v, d, _ in p.inputs)
        verdict = SHORT.get(r.outcome.verdict, r.outcome.verdict)
        source = p.source.replace(chr(10), "; ")
        checks = ", ".join(p.checks)
        print(f"   {source:36s} {values:50s} {checks:14s} {verdict:10s} torch {r.torch or '-'}")
        if not is_pass(r.outcome.verdict):
            print(f"       {short(r.outcome.error or getattr(r.outcome.report, 'summary', ''), 300)}")
            if r.torch_vs_reference:
                print(f"       worst failing entries, with torch's: {short(r.torch_vs_reference, 300)}")


# ---------------------------------------------------------------- part 3: kink programs


@dataclass
class KinkResult:
    case: KinkCase
    label: str
    must_fail: bool
    verdict: str
    ok: bool
    kind: str  # "ok", "false PASS", "false FAIL", "not FAIL (...)", "FAIL, but not the claim"
    summary: str


def run_kinks(seconds: float) -> list[KinkResult]:
    results = []
    for case in kink_cases():
        for claim in case.claims:
            inputs = [_spec(n, np.asarray(v, float), case.dtype, True) for n, v in case.inputs.items()]
            request = CheckRequest(
                case.source,
                inputs,
                claimed_vjp=dict(claim.claimed or {}),
                budget=Budget(seconds=seconds),
            )
            if case.mutation is not None:
                op, key, rel = case.mutation
                with mutated(op, key, rel):
                    out = run_check(request)
            else:
                out = run_check(request)
            v = out.verdict
            summary = out.error or getattr(out.report, "summary", "")
            if claim.must_fail:
                rejected = claim_fails(out.report) if claim.claimed else engine_fails(out.report)
                if v == FAIL and rejected:
                    kind = "ok"
                elif v == FAIL:
                    kind = "FAIL, but not the claim"
                elif is_pass(v):
                    kind = "false PASS"
                else:
                    kind = f"not FAIL ({v})"
            elif v == FAIL:
                kind = "false FAIL"
            elif v in ("crash", "out of time", "refused", ERROR):
                kind = f"error ({v})"
            else:  # a pass, or a verdict that is no failure (UNVERIFIED)
                kind = "ok" if is_pass(v) else f"ok ({v})"
            ok = kind.startswith("ok")
            results.append(KinkResult(case, claim.label, claim.must_fail, v, ok, kind, summary))
    return results


def print_kinks(results: list[KinkResult], examples: int) -> dict[str, int]:
    print(
        "\n3. Kink programs, at and next to their kinks (and two ill-conditioned ones): wrong "
        "claims and corrupted rules must FAIL, admissible claims and the correct engine must not"
    )
    print(f"   {'program':46s} {'where':8s} {'claim':34s} {'expected':9s} {'verdict':18s} result")
    for r in results:
        src = short(r.case.source.replace("\n", "; "), 46)
        print(
            f"   {src:46s} {r.case.where:8s} {short(r.label, 34):34s} "
            f"{'FAIL' if r.must_fail else 'not FAIL':9s} {SHORT.get(r.verdict, r.verdict):18s} "
            f"{r.kind if r.ok else r.kind.upper()}"
        )
    must = [r for r in results if r.must_fail]
    must_not = [r for r in results if not r.must_fail]
    counts = {
        "must FAIL": len(must),
        "false PASS": sum(r.kind == "false PASS" for r in must),
        "not FAIL other": sum(not r.ok and r.kind != "false PASS" for r in must),
        "must not FAIL": len(must_not),
        "false FAIL": sum(r.kind == "false FAIL" for r in must_not),
        "errors": sum(r.kind.startswith("error") for r in must_not),
        "crash": sum(r.verdict == "crash" for r in results),
    }
    others = Counter(r.kind for r in must if not r.ok and r.kind != "false PASS")
    print(
        f"   wrong claims and corrupted rules caught (FAIL): {sum(r.ok for r in must)}/{len(must)}; "
        f"false PASS {counts['false PASS']}" + "".join(f"; {k} {v}" for k, v in others.items())
    )
    unsettled = Counter(r.verdict for r in must_not if r.ok and not is_pass(r.verdict))
    print(
        f"   admissible claims and the engine alone not FAIL: "
        f"{len(must_not) - counts['false FAIL'] - counts['errors']}/{len(must_not)}; false FAIL "
        f"{counts['false FAIL']}; errors {counts['errors']}"
        + (
            f" (not FAIL but not PASS: {', '.join(f'{k} {v}' for k, v in unsettled.items())})"
            if unsettled
            else ""
        )
    )
    shown = [r for r in results if not r.ok][:examples]
    if shown:
        print("   examples:")
        for r in shown:
            print(f"   [{r.kind}] {r.case.source!r} at {r.case.inputs}, claim {r.label!r}: {r.verdict}")
            print(f"       {short(r.summary, 300)}")
    return counts


# ---------------------------------------------------------------- part 4: the warm worked example


def warm_worked_example() -> float:
    from .verify_bench import worked_example

    for _ in range(3):
        check(worked_example())
    times = []
    for _ in range(15):
        start = time.perf_counter()
        check(worked_example())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------- main


def replay(index: int, seed: int, seconds: float) -> None:
    gen = Generator(seed)
    p = gen.program(index)
    print(describe_program(p))
    out = run_check(random_request(p, seconds))
    print(f"verdict {out.verdict} in {out.seconds:.2f} s\n{out.error or out.report.summary}")
    status, detail, vs_ref = compare_with_torch(p, out)
    print(f"torch: {status} {detail}\n{vs_ref}")
    if out.report is not None:
        for b in out.report.points[0].blocks:
            print(
                f"  {b.quantity} {b.output or ''}/{b.input}: status {getattr(b, 'status', '')}, "
                f"failing {getattr(b, 'failing', {})}"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="about 3 minutes: one chain per op, fewer programs"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the random programs")
    ap.add_argument(
        "--random", type=int, default=None, help="number of random programs (full 1200, quick 150)"
    )
    ap.add_argument(
        "--variants", type=int, default=None, help="chains per op in the table (full 2, quick 1)"
    )
    ap.add_argument("--parts", default="table,random,kinks,timing", help="comma-separated parts to run")
    ap.add_argument(
        "--conditional-error",
        type=float,
        default=1e-6,
        help="relative error of the conditional float64 classes (default 1e-6)",
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="budget of each check")
    ap.add_argument("--examples", type=int, default=3, help="examples printed per kind of problem")
    ap.add_argument(
        "--torch",
        choices=("all", "failing"),
        default=None,
        help="random programs compared with torch: all (full's default) or those not passing (quick's)",
    )
    ap.add_argument("--ops", default=None, help="comma-separated ops: only their chains in the table")
    ap.add_argument("--program", type=int, default=None, help="replay one random program verbosely")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.program is not None:
        replay(args.program, args.seed, args.seconds)
        return 0
    n_random = args.random if args.random is not None else (150 if args.quick else 1200)
    variants = args.variants or (1 if args.quick else 2)
    parts = set(args.parts.split(","))
    start = time.perf_counter()
    print(
        f"crossgrad verdict soundness ({'quick' if args.quick else 'full'}; seed {args.seed}; "
        f"{len(DIFFERENTIABLE)} differentiable ops, {variants} chain(s) each; "
        f"{n_random} random programs)"
    )
    cls_list = classes(args.conditional_error)
    rates: dict[str, tuple[int, int, int]] = {}
    rnd: dict[str, int] = {}
    kinks: dict[str, int] = {}
    crashes: dict[str, int] = {}
    warm = None
    timings = {}
    if "table" in parts:
        t = time.perf_counter()
        cases = op_cases(variants)
        if args.ops:
            cases = [c for c in cases if c.op in args.ops.split(",")]
        cells, baselines = run_table(cases, cls_list, args.seconds)
        rates = print_table(cells, cls_list, variants)
        crashes["table"] = sum(c.verdict == "crash" for c in cells) + sum(
            o.verdict == "crash" for o in baselines.values()
        )
        timings["table"] = time.perf_counter() - t
        print(f"   ({len(cells)} mutated checks + {len(baselines)} unmutated, {timings['table']:.0f} s)")
    if "random" in parts:
        t = time.perf_counter()
        torch_all = (args.torch or ("failing" if args.quick else "all")) == "all"
        results, gen, named = run_random(n_random, args.seed, args.seconds, torch_all)
        rnd = print_random(results, gen, args.seed, args.examples)
        print_named(named)
        crashes["random"] = rnd["crash"] + sum(r.outcome.verdict == "crash" for r in named)
        rnd["named bad"] = sum(r.outcome.verdict in (FAIL, ERROR, "crash") for r in named)
        rnd["named"] = len(named)
        timings["random"] = time.perf_counter() - t
        print(f"   ({timings['random']:.0f} s)")
    if "kinks" in parts:
        t = time.perf_counter()
        kr = run_kinks(args.seconds)
        kinks = print_kinks(kr, args.examples * 3)
        crashes["kinks"] = kinks["crash"]
        timings["kinks"] = time.perf_counter() - t
        print(f"   ({timings['kinks']:.0f} s)")
    if "timing" in parts:
        warm = warm_worked_example()
        print(f"\n4. Warm worked example (Q = 3*a**3 - b**2, VJP): median {warm * 1e3:.2f} ms of 15")

    print("\nTargets (issue 8)")

    def line(label: str, value: str, met: bool | None) -> None:
        status = "n/a" if met is None else ("met" if met else "MISSED")
        print(f"  {label:62s} {value:>26s}  {status}")

    for cls in cls_list:
        if cls.key not in rates:
            continue
        app, det, bl = rates[cls.key]
        in_scope = (cls.dtype == "float64" and (cls.rel >= 1e-6 or cls.rel == 0)) or (
            cls.dtype == "float32" and cls.rel >= 1e-3
        )
        size = "sign flip" if cls.rel == 0 else f"rel {cls.rel:g}"
        line(
            f"class {cls.label} ({size}, {cls.dtype}): detection / blame 100%",
            f"{pct(det, app)} / {pct(bl, app)} of {app}",
            (det == app and bl == app) if in_scope else None,
        )
    if kinks:
        line(
            "kink and edge programs: no false PASS among wrong claims, rules",
            f"{kinks['false PASS']} false PASS of {kinks['must FAIL']}",
            kinks["false PASS"] == 0,
        )
        line(
            "kink and edge programs: every wrong claim and rule FAILs",
            f"{kinks['must FAIL'] - kinks['false PASS'] - kinks['not FAIL other']} "
            f"of {kinks['must FAIL']}",
            kinks["false PASS"] == 0 and kinks["not FAIL other"] == 0,
        )
        line(
            "kink and edge programs: admissible claims, engine do not FAIL",
            f"{kinks['false FAIL']} false FAIL of {kinks['must not FAIL']}",
            kinks["false FAIL"] == 0 and kinks["errors"] == 0,
        )
    if rnd:
        n = rnd["n"]
        line(
            "random programs: false FAIL <= 0.1%",
            f"{rnd['false FAIL']} of {n} ({pct(rnd['false FAIL'], n)})",
            rnd["false FAIL"] <= 0.001 * n,
        )
        line("random programs: false ERROR (info)", f"{rnd['false ERROR']} of {n}", None)
        line(
            "the audit's example programs: none FAILs, ERRORs or crashes",
            f"{rnd['named bad']} of {rnd['named']} do",
            rnd["named bad"] == 0,
        )
        line(
            "random programs: FAIL where the engine differs from torch (info)",
            f"{rnd['engine bug']} of {n}",
            None,
        )
    if crashes:
        total = sum(crashes.values())
        line(
            "no crash (exception out of check())",
            f"{total} ({', '.join(f'{k} {v}' for k, v in crashes.items())})",
            total == 0,
        )
    if warm is not None:
        line("warm worked example <= 2 ms", f"{warm * 1e3:.2f} ms", warm <= 2e-3)
    print(
        f"\nelapsed {time.perf_counter() - start:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
