"""The verdict of one point: every block judged against the reference hierarchy (compare.judge),
with what is admissible at kinks and what floating point itself does taken into account, then
the notes that say so.

- Kinks: just off each kink the program sits on, on each side (kinks.sides), JAX gives the
  one-sided derivatives; per entry of a block their range is what a framework may return there
  (a convention). An entry no kink moves is judged exactly, so a kink excuses only the entries
  that depend on its kinked entries.
- Floating point: where the engine (or claim) departs from the exact value, but equals the same
  computation done in its own precision by JAX, and the point shows why (overflow, underflow,
  ill-conditioning: rounding-sized changes of the inputs move the derivative by more than the
  tolerance), the entry is a numerical note, not a wrong rule. A wrong rule still FAILs: it
  would not equal JAX's computation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import deadline
from .backends import jax_backend, operation_count
from .compare import STATUSES, Block, Interval, SourceValues, Tolerance, close, summarize
from .derivatives import Derivatives, Point
from .ir import Program, Ref
from .kinks import UNBOUNDED, Kink, Sides, sides
from .model import ConventionNote, NumericalNote, ReferenceNote, Verdict

MAX_COMBINATIONS = 32  # sides of several kinks, all combined, up to this many evaluations
MAX_KINK_WORK = 50_000  # nodes x evaluations of the program for the kinks' sides
MAX_NOTES = 20
DIVERGING = 1e6  # a one-sided slope this many times the reference's scale is taken as infinite

Key = tuple[str, Any]  # (quantity, key in Derivatives' table)


def block_dtype(quantity: str, output: str | None, inputs: str, point: Point) -> str:
    """The precision a block is computed in: float32 when its output or an input is float32."""
    dtypes = {point.values[n].dtype.name for n in inputs.split(",") if n in point.values}
    outs = [output] if output else list(point.program.output_names)
    dtypes |= {point.program.node(i).dtype for n, i in point.program.outputs if n in outs}
    return "float32" if "float32" in dtypes else "float64"


def unused_inputs(program: Program) -> dict[str, set[str]]:
    """output -> the inputs it does not depend on (no gradient: torch's .grad stays None)."""
    inputs_of: dict[int, set[str]] = {}
    for node in program.nodes:  # in order: operands come first
        deps = {node.name} if node.op == "input" else set()
        for a in node.args:
            if isinstance(a, Ref):
                deps |= inputs_of[a.id]
        inputs_of[node.id] = deps
    return {name: set(program.input_names) - inputs_of[i] for name, i in program.outputs}


# ---------------------------------------------------------------- kinks


def kink_intervals(
    point: Point,
    kinks: list[Kink],
    operand_values: dict[int, list[Any]],
    tolerance: Callable[[Key], Tolerance],
) -> tuple[dict[Key, Interval], str]:
    """Per vjp and jacobian block, the range of the one-sided derivatives at the point's kinks
    (empty when there are none), and a word on how they were found."""
    checks = [q for q in ("vjp", "jacobian") if q in point.checks]
    if not kinks or not checks or not point.wrt:
        return {}, ""
    found = [sides(k, operand_values[k.node.id]) for k in kinks]
    known = [(k, s) for k, s in zip(kinks, found) if s is not None and s.patterns]
    combos, complete = _combinations([s for _, s in known])
    complete &= all(s is not None for s in found) and all(s.complete for _, s in known)
    if not combos or operation_count(point.program) * len(combos) > MAX_KINK_WORK:
        return _unknown(point, checks), "too many kinks to find their one-sided derivatives"
    runs: list[Derivatives] = []
    for combo in combos:
        deadline.checkpoint()
        shifts: dict[int, dict[int, np.ndarray]] = {}
        for (kink, _), pattern in zip(known, combo):
            shifts.setdefault(kink.node.id, {}).update(pattern)
        runs.append(jax_backend.shifted_derivatives(point, shifts))
    unbounded = any(k.node.op in UNBOUNDED for k, _ in known)
    intervals = {}
    for quantity in checks:
        for key in getattr(runs[0], quantity):
            stack = np.stack([getattr(r, quantity)[key].values for r in runs])
            intervals[(quantity, key)] = _interval(
                stack, unbounded, tolerance((quantity, key)), complete
            )
    how = f"JAX just off each kink, {len(combos)} side(s)" + (
        "" if complete else ", not every combination"
    )
    return intervals, how


def _combinations(found: list[Sides]) -> tuple[list[tuple[dict, ...]], bool]:
    """Every combination of the kinks' sides when there are few; else each kink's sides in turn
    with the others on their first side (then not every combination is seen)."""
    if not found:
        return [], True
    if math.prod(len(s.patterns) for s in found) <= MAX_COMBINATIONS:
        return list(itertools.product(*(s.patterns for s in found))), True
    first = [s.patterns[0] for s in found]
    combos = [
        tuple(p if j == k else first[j] for j in range(len(found)))
        for k, s in enumerate(found)
        for p in s.patterns
    ]
    return combos[:MAX_COMBINATIONS], False


def _interval(stack: np.ndarray, unbounded: bool, tol: Tolerance, complete: bool) -> Interval:
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.where(np.isfinite(stack), stack, np.nan)
        low, high = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
        none = np.isnan(low)  # every side nan or infinite: anything goes there
        low, high = np.where(none, -np.inf, low), np.where(none, np.inf, high)
        infinite = np.isinf(stack)
        low = np.where(np.any(infinite & (stack < 0), axis=0), -np.inf, low)
        high = np.where(np.any(infinite & (stack > 0), axis=0), np.inf, high)
        if unbounded:  # slopes that diverge at the kink: their side reaches infinity
            big = DIVERGING * (1.0 + np.median(np.abs(np.nan_to_num(finite)), axis=0))
            low = np.where(low < -big, -np.inf, low)
            high = np.where(high > big, np.inf, high)
        spread = high - low
        margin = tol.atol + tol.rtol * np.maximum(
            np.abs(np.nan_to_num(low)), np.abs(np.nan_to_num(high))
        )
        reached = ~(spread <= margin)  # nan and infinite spreads count as reached
    return Interval(low, high, reached, complete)


def _unknown(point: Point, checks: list[str]) -> dict[Key, Interval]:
    """Kinks whose sides could not be found: every entry may be reached and nothing is excused
    (differences there are unverified)."""
    out = {}
    shapes = dict(point.output_shapes())
    for n in point.wrt:
        if "vjp" in checks:
            s = point.shape(n)
            out[("vjp", n)] = Interval(np.full(s, -np.inf), np.full(s, np.inf), np.ones(s, bool), False)
        if "jacobian" in checks:
            for o, oshape in shapes.items():
                s = oshape + point.shape(n)
                out[("jacobian", (o, n))] = Interval(
                    np.full(s, -np.inf), np.full(s, np.inf), np.ones(s, bool), False
                )
    return out


def convention_notes(
    kinks: list[Kink], blocks: list[Block], intervals: dict[Key, Interval], how: str
) -> list[ConventionNote]:
    """Each kink, with what every party actually returned at the first derivative entry the
    kinks move (a convention entry if there is one), and the range admissible there."""
    at = _first_reached(blocks, intervals)
    notes = []
    for kink in kinks:
        returned: dict[str, str] = {}
        admissible = ""
        if at is not None:
            block, flat, interval = at
            idx = tuple(int(i) for i in np.unravel_index(flat, block.shape))
            for src, source in block.sources.items():
                if source.checked is None or source.checked.reshape(-1)[flat]:
                    v = float(np.asarray(source.values).reshape(-1)[flat])
                    returned[src] = f"{v:.6g} at {block.label} {idx}"
            lo, hi = interval.low.reshape(-1)[flat], interval.high.reshape(-1)[flat]
            admissible = f"[{lo:.6g}, {hi:.6g}] at {block.label} {idx} ({how})"
        notes.append(ConventionNote(kink.node.op, kink.node.pos, kink.node.text, returned, admissible))
    return notes


def _first_reached(
    blocks: list[Block], intervals: dict[Key, Interval]
) -> tuple[Block, int, Interval] | None:
    convention = STATUSES.index("convention")
    found = None
    for b in blocks:
        interval = intervals.get((b.quantity, _key(b)))
        if interval is None or not interval.reached.any():
            continue
        flat = np.flatnonzero(interval.reached.reshape(-1))
        for status in b.status_map.values():
            hits = flat[status[flat] == convention]
            if hits.size:
                return b, int(hits[0]), interval
        found = found or (b, int(flat[0]), interval)
    return found


def _key(block: Block) -> Any:
    if block.quantity == "jacobian":
        return (block.output, block.input)
    if block.quantity == "hessian":
        return tuple(block.input.split(","))
    return block.input if block.quantity == "vjp" else block.output


# ---------------------------------------------------------------- floating point


class FloatingPoint:
    """What the engine's precision itself does at this point, computed when a failing entry
    needs it: JAX in the inputs' own dtypes, and how far rounding-sized changes of the inputs
    move JAX's derivatives."""

    def __init__(self, point: Point, derivs: dict[str, Derivatives], engine_values: list[Any]) -> None:
        self.point, self.derivs = point, derivs
        self.overflowed = any(
            isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.all(np.isfinite(v))
            for v in engine_values
        )
        self._native: Derivatives | None = None
        self._spread: dict[str, dict[Any, np.ndarray]] = {}

    def same_precision(self, block: Block) -> np.ndarray | None:
        """JAX's values of the block computed in the block's dtype."""
        if block.dtype == "float64":
            jax = self.derivs.get("jax")
            source = _lookup(jax, block) if jax is not None else None
        else:
            if self._native is None:
                self._native = jax_backend.derivatives(self.point, native=True)
            source = _lookup(self._native, block)
        return None if source is None else np.asarray(source.values, np.float64)

    def spread(self, block: Block) -> np.ndarray | None:
        """Per entry, how far JAX's derivative moves when the inputs move by a few ulps."""
        if block.dtype not in self._spread:
            eps = float(np.finfo(block.dtype).eps)
            base = self.derivs.get("jax") or jax_backend.derivatives(self.point)
            rng = np.random.default_rng(0)
            moved = []
            for _ in range(2):
                deadline.checkpoint()
                values = dict(self.point.values)
                for n in self.point.wrt:
                    x = np.asarray(values[n], np.float64)
                    values[n] = x * (1.0 + 4 * eps * rng.choice([-1.0, 1.0], x.shape))
                moved.append(jax_backend.derivatives(_with_values(self.point, values)))
            self._spread[block.dtype] = {"base": base, "moved": moved}
        got = self._spread[block.dtype]
        base = _lookup(got["base"], block)
        if base is None:
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            diffs = [np.abs(np.asarray(_lookup(m, block).values) - base.values) for m in got["moved"]]
            return np.nan_to_num(np.max(diffs, axis=0), nan=np.inf)


def _with_values(point: Point, values: dict[str, np.ndarray]) -> Point:
    return Point(point.program, point.wrt, values, point.cotangents, point.masks, point.checks)


def _lookup(d: Derivatives, block: Block) -> SourceValues | None:
    if block.quantity == "value":
        v = d.values.get(block.output)
        return None if v is None else SourceValues(np.asarray(v, np.float64))
    return getattr(d, block.quantity).get(_key(block))


def numerical_notes(
    blocks: list[Block], fp: FloatingPoint, tolerance: Callable[[Block], Tolerance]
) -> list[NumericalNote]:
    """Turn failing entries that floating point explains into numerical notes (see the module's
    docstring); the others stay failures."""
    fail, numerical = STATUSES.index("fail"), STATUSES.index("numerical")
    notes: list[NumericalNote] = []
    for block in blocks:
        if not any((s == fail).any() for s in block.status_map.values()):
            continue
        same = fp.same_precision(block)
        if same is None:
            continue
        tol = tolerance(block)
        spread = fp.spread(block)
        spread = np.zeros(same.shape) if spread is None else spread
        exact = block.reference.reshape(same.shape)
        info = np.finfo(block.dtype)
        margin = tol.atol + tol.rtol * np.abs(np.nan_to_num(exact))
        with np.errstate(invalid="ignore", over="ignore"):
            ill = spread > margin
            huge = np.abs(exact) > info.max
            tiny = (exact != 0) & (np.abs(exact) < info.tiny * 2**16)
        for src, status in block.status_map.items():
            value = np.asarray(block.sources[src].values, np.float64)
            failing = status.reshape(same.shape) == fail
            with np.errstate(invalid="ignore", over="ignore"):
                inexact = ~np.isfinite(value) | ~np.isfinite(same)
                overflow = (inexact & np.isfinite(exact)) | huge | (fp.overflowed & inexact)
                evidence = overflow | tiny | ill
            # the same computation in the same precision: equal up to its own rounding noise
            excuse = failing & evidence & close(value, same, tol, 10 * spread)
            if not excuse.any():
                continue
            status.reshape(same.shape)[excuse] = numerical
            for flat in np.flatnonzero(excuse)[: max(0, MAX_NOTES - len(notes))]:
                idx = np.unravel_index(flat, same.shape)
                why = "overflow" if overflow[idx] else "underflow" if tiny[idx] else "ill-conditioning"
                scale = max(abs(float(np.nan_to_num(exact[idx]))), info.tiny)
                condition = float(spread[idx]) / (4 * float(info.eps) * scale)
                notes.append(
                    NumericalNote(
                        block.label,
                        tuple(int(i) for i in idx),
                        src,
                        float(value[idx]),
                        float(exact[idx]),
                        float(same[idx]),
                        f"{why} in {block.dtype}",
                        condition,
                    )
                )
        summarize(block, tol)
    return notes


# ---------------------------------------------------------------- the verdict and its notes


def reference_notes(blocks: list[Block]) -> list[ReferenceNote]:
    """Witnesses that disagree with sympy, and JAX and finite differences disagreeing where sympy
    did not check (those entries are unverified)."""
    notes = []
    for b in blocks:
        for witness, mask in b.witness_disagree.items():
            notes.append(_reference_note(b, witness, "sympy", mask))
    return notes[:MAX_NOTES]


def _reference_note(block: Block, witness: str, against: str, mask: np.ndarray) -> ReferenceNote:
    flat = int(np.flatnonzero(mask)[0])
    idx = tuple(int(i) for i in np.unravel_index(flat, block.shape))
    values = {
        n: float(np.asarray(s.values).reshape(-1)[flat])
        for n, s in block.sources.items()
        if n in (witness, against, "engine", "claimed")
    }
    return ReferenceNote(block.label, witness, against, int(mask.sum()), idx, values)


def point_verdict(blocks: list[Block]) -> Verdict:
    worst = max((STATUSES.index(b.status) for b in blocks if b.status in STATUSES), default=0)
    return {
        "pass": Verdict.PASS,
        "numerical": Verdict.PASS_WITH_NUMERICAL_NOTES,
        "convention": Verdict.PASS_WITH_CONVENTION_DIFFERENCES,
        "unverified": Verdict.UNVERIFIED,
        "fail": Verdict.FAIL,
    }[STATUSES[worst]]


def headline(verdict: Verdict, blocks: list[Block]) -> str:
    """What the verdict means here, in one phrase: whose values are wrong, for a FAIL."""
    if verdict is Verdict.FAIL:
        wrong = [s for s in ("engine", "claimed") if any(b.failing.get(s) for b in blocks)]
        who = {
            ("engine",): "the engine's derivatives are wrong",
            ("claimed",): "the claimed values are wrong",
            ("engine", "claimed"): "the engine's derivatives and the claimed values are wrong",
        }
        return who.get(tuple(wrong), "wrong values")
    if verdict is Verdict.UNVERIFIED:
        unsettled = sum(b.unsettled for b in blocks)
        unchecked = sum(b.judged_by.get("none", 0) for b in blocks)
        parts = [f"{unsettled} entries where JAX and finite differences disagree"] if unsettled else []
        parts += [f"{unchecked} entries no reference checked"] if unchecked else []
        return "not verified: " + (", ".join(parts) or "kinks whose one-sided derivatives are unknown")
    calm = not any(b.references_disagree for b in blocks)
    return {
        Verdict.PASS: "every source agrees"
        if calm
        else "the engine agrees with the exact reference (a witness disagrees in places: see notes)",
        Verdict.PASS_WITH_NUMERICAL_NOTES: "equal to the exact values except where floating point "
        "itself departs from them (numerical notes)",
        Verdict.PASS_WITH_CONVENTION_DIFFERENCES: "differences only at non-differentiable points, "
        "within the one-sided derivatives there",
        Verdict.ERROR: "error",
    }[verdict]
