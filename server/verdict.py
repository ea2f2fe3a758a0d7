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

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from crossgrad.engine import OPS

from . import deadline
from .backends import intermediate_sizes, jax_backend, operation_count
from .backends.sympy_backend import SETTLED_DIGITS
from .compare import STATUSES, Block, Interval, SourceValues, Tolerance, close, summarize
from .derivatives import Derivatives, Point
from .ir import Program, Ref
from .kinks import TIES, Kink, sides
from .model import ConventionNote, NumericalNote, ReferenceNote, Verdict

MAX_SIDE_RUNS = 128  # evaluations of the program just off the kinks (groups x their sides)
MAX_KINK_WORK = 100_000  # nodes x those evaluations
MAX_NOTES = 20
PROBES = 4  # runs of Monte Carlo arithmetic, to see how far rounding moves a derivative
SPREAD_SHARE = 0.5  # of the time left, at most, for them: past it the noise is not measured
# Rounding noise beyond this fraction of a value: the entry cannot be verified (in float64, 1 %
# let tanh's rule 1 % off pass as a note under 1e13 sin(x) - 1e13 sin(x); float32's saturated
# tanh is 0.1-0.3 % off by rounding alone)
NOISE_LIMIT = {"float64": 1e-3, "float32": 1e-2}

Key = tuple[str, Any]  # (quantity, key in Derivatives' table)


# Ops whose VJP reads no operand value (only shapes, indices or a boolean condition): a float32
# operand of theirs off the path to the input rounds nothing in that input's gradient.
_VALUE_FREE_VJP = frozenset(
    {
        *("add", "sub", "rsub", "neg", "sum", "mean", "clone", "where", "masked_fill"),
        *("broadcast_to", "expand", "reshape", "flatten", "squeeze", "unsqueeze", "permute"),
        *("transpose", "flip", "getitem", "pad", "concat", "stack", "split", "take"),
    }
)


def block_dtype(quantity: str, output: str | None, inputs: str, point: Point) -> str:
    """The precision a block is computed in: float32 when its result is cast to float32 (a
    float32 input's gradient, a float32 output) or when float32 rounding reaches it: a float32
    op on the way from its inputs to its outputs, or one whose value a VJP on that way reads
    (a float64 loss of sin(float32 x) and float64 t: d/dt = -sin(x) carries float32's error).
    A float32 input alone rounds nothing: float64 holds its values exactly."""
    if not point.program.has_float32:
        return "float64"
    if _cast_to_float32(output, inputs, point):
        return "float32"
    program = point.program
    out_ids, starts = _ends(program, output, inputs)
    return "float32" if _reaches(program, out_ids, starts, _computed_in_float32) else "float64"


def _cast_to_float32(output: str | None, inputs: str, point: Point) -> bool:
    """Whether a block's own values are float32: a float32 input's gradient, a float32 output."""
    program = point.program
    out_ids, _ = _ends(program, output, inputs)
    dtypes = {point.values[n].dtype.name for n in inputs.split(",") if n in point.values}
    return "float32" in dtypes | {program.node(i).dtype for i in out_ids}


def float32_reached(
    blocks: list[Block],
    fp: FloatingPoint,
    tolerance: Callable[[Block], Tolerance],
    float64: Callable[[Block], Tolerance],
) -> None:
    """A float64 block that float32 rounding reaches has float32's tolerance, however little of
    it reaches: a float32 term weighted 1e-3 let a float64 gradient 5e-5 off pass. How far that
    rounding moves each entry is measured (JAX op by op in the same dtypes, its distance from the
    exact value); an entry passing further from the exact value than float64's tolerance and ten
    times that is unverified: rounding may not explain it."""
    pass_ = STATUSES.index("pass")
    for block in blocks:
        if block.dtype != "float32" or block.reference is None:
            continue
        if _cast_to_float32(block.output, block.input, fp.point):
            continue
        if not any((s == pass_).any() for s in block.status_map.values()):
            continue
        same = fp.same_precision(block)
        if same is None:
            continue
        exact = block.reference.reshape(-1)
        # per entry (the block's largest, from a term of exp(20) in float32, excused a rule 190
        # tolerances off in another entry), as measured: a floor of float32's rounding of the
        # whole entry let a rule 12 float64 tolerances off pass where float32 reached it through
        # a term weighted 1e-5 (and, where it did not reach, through none at all)
        with np.errstate(invalid="ignore", over="ignore"):
            moved = np.nan_to_num(np.abs(same.reshape(-1) - exact), nan=np.inf)
        block.float32_reached += _unverified_past(block, float64(block), exact, moved, tolerance(block))


def small_blocks(
    blocks: list[Block],
    fp: FloatingPoint,
    tolerance: Callable[[Block], Tolerance],
    tight: Callable[[Block], Tolerance],
) -> None:
    """A float32 block is judged with float32's absolute tolerance however small its entries:
    the rounding of intermediates of order 1 is that large (a saturated sigmoid's 1 - s). So an
    entry of a block of small entries (a mean's 1/N: 3e-4) could pass 0.3 % off, as a tanh rule
    0.2 % wrong did; and a block of entries below the floor of its absolute tolerance (float32:
    1e-9, float64: 1e-13) passed any claim, negated or 0. An entry that passes only by that,
    further from the exact value than the block's own scale allows (`tight`) and ten times as
    far as the same computation in its precision departs from it, is unverified; the same
    computation as far off (torch's and JAX's sigmoid gradient at 12, 0.9 % off the exact one)
    still passes."""
    pass_ = STATUSES.index("pass")
    for block in blocks:
        if block.reference is None:
            continue
        if block.dtype == "float32" and not _cast_to_float32(block.output, block.input, fp.point):
            continue  # (float64 values that float32 reaches: float32_reached)
        strict = tight(block)
        if strict.atol >= tolerance(block).atol:
            continue  # the block's scale tightens nothing
        if not any((s == pass_).any() for s in block.status_map.values()):
            continue
        exact = block.reference.reshape(-1)
        if not any(far.any() for far in _passing_far(block, strict, exact, 0.0).values()):
            continue  # within the block's own scale: no rounding to measure (JAX op by op cost
            # 0.7 s on 8 nested gelu)
        # JAX flushes subnormals to 0: where one bears on the block, its values measure
        # nothing (a float32 block of 1e-40 passed a negated claim as "rounding"). Nor do
        # they for a float64 block JAX judged throughout: it would be JAX against itself
        # (a Hessian of sixty entries computed op by op again for nothing: 2 s).
        inexact = block.reference_name != "sympy" if block.reference_name is not None else None
        judged_by_jax = block.dtype == "float64" and inexact is not None and inexact.all()
        flushed = fp.flushed(block)
        same = None if flushed or judged_by_jax else fp.same_precision(block)
        with np.errstate(invalid="ignore", over="ignore"):
            moved = (
                np.zeros(exact.shape)
                if same is None  # nothing to say it is rounding
                else np.nan_to_num(np.abs(same.reshape(-1) - exact), nan=np.inf)
            )
        # Entries no exact value judged: the reference is JAX's, and how far rounding moves it
        # (Monte Carlo runs) is what sets them apart from a wrong value (a sign flipped or 0 is
        # as far off as the values are large). A hundred times that: two implementations' sums
        # round apart by more than the runs see (numpy's sum of a thousand tanh terms
        # cancelling to 1e-14 was 47 times its spread away from JAX's). Not measured where the
        # runs would cost too much, nor where subnormals bear: those entries are unverified.
        # (Not a run in float32: its comparisons of frozen data could flip, 0.1 + 1e-12 > 0.1,
        # and excuse a negated claim.)
        if (
            inexact is not None
            and inexact.any()
            and not flushed
            and _measurable(block, fp.point)
            and any(far.any() for far in _passing_far(block, strict, exact, moved).values())
        ):
            spread = fp.spread(block)
            if spread is not None:
                spread = 100 * np.where(np.isfinite(spread), spread, 0.0).reshape(-1)
                moved = np.where(inexact, np.maximum(moved, spread), moved)
        block.small += _unverified_past(block, strict, exact, moved, tolerance(block))


_PASSING = (STATUSES.index("pass"), STATUSES.index("convention"))  # statuses of entries that pass


def blind_tolerance(
    blocks: list[Block], fp: FloatingPoint, tolerance: Callable[[Block], Tolerance]
) -> None:
    """A tolerance the request gave (atol) that admits 0 for every entry of a block of
    derivatives whose values are not 0 (nor, at a kink, their one-sided ones) cannot tell them
    from 0 or from their negation (torch.gradcheck's atol 1e-5 passed a negated 1e-6 * cos(x)):
    the block's passing entries are unverified. Not where the values are rounding noise about 0
    (sympy's exact value is 0; JAX's within what rounding moves it): there atol says
    what the caller takes for 0, as it is meant to. Per block, as atol is meant: an entry far
    below the rest of its block is judged by atol alone. (Values are not derivatives: a small
    loss near an optimum says nothing of its gradients.)"""
    for block in blocks:
        if block.quantity == "value" or block.reference is None or block.reference_name is None:
            continue
        if not any(np.isin(s, _PASSING).any() for s in block.status_map.values()):
            continue
        tol = tolerance(block)
        exact = block.reference.reshape(-1)
        size = np.where(np.isfinite(exact), np.abs(exact), 0.0)
        kinked = np.zeros(size.shape, bool)
        if block.interval is not None:  # abs'(0) is 0 at the point, and +-1 either side of it
            # (a kink whose sides differ by less than the tolerance "reaches" no entry)
            for side in (block.interval.low, block.interval.high):
                side = np.abs(side.reshape(-1))
                grow = np.isfinite(side) & (side > size)
                size, kinked = np.where(grow, side, size), kinked | grow
        if not size.any() or (size > tol.atol + tol.rtol * size).any():
            continue  # zeros throughout, or a claim of 0 fails somewhere: the check can fail
        signal = (size > 0) & ((block.reference_name == "sympy") | kinked)
        by_jax = (size > 0) & (block.reference_name == "jax") & ~kinked
        if by_jax.any() and not signal.any():
            measurable = not fp.flushed(block) and _measurable(block, fp.point)
            spread = fp.spread(block) if measurable else None
            if spread is None:  # nothing says the values are rounding noise
                signal = by_jax
            else:  # noise: rounding could give it either sign (1e8 * x - 1e8 * x spreads by
                # 1e-8 and 1e9 * x - 1e9 * x by 5e-7: ten times that took 1e-7 and 1e-6 for noise)
                noise = np.where(np.isfinite(spread), spread, 0.0).reshape(-1)
                signal = by_jax & (size > noise)
        if not signal.any():
            continue
        marks = {src: np.isin(s.reshape(-1), _PASSING) for src, s in block.status_map.items()}
        block.blind = _make_unverified(block, marks, tol)


def flushed_references(
    blocks: list[Block], fp: FloatingPoint, tolerance: Callable[[Block], Tolerance]
) -> None:
    """JAX flushes subnormals to 0: in a block whose values are all that small (below the
    smallest normal number over epsilon, where a subnormal is not negligible beside the
    block's largest entry), with a subnormal bearing on it, JAX's values measure nothing, and
    the entries it alone judged are unverified (a claimed -1e-310 for a gradient of 1e-310
    passed against JAX's 0, without sympy). A softmax's probability of 1e-40 beside entries of
    order 1 leaves them judged."""
    for block in blocks:
        if block.reference_name is None:
            continue
        by_jax = block.reference_name == "jax"
        marks = {src: np.isin(s.reshape(-1), _PASSING) & by_jax for src, s in block.status_map.items()}
        if not any(m.any() for m in marks.values()):
            continue
        info = np.finfo(block.dtype)
        with np.errstate(invalid="ignore"):
            own = [np.abs(np.asarray(v.values, np.float64)).reshape(-1) for v in block.sources.values()]
            own = np.concatenate([*own, np.abs(block.reference.reshape(-1))])
            own = own[np.isfinite(own)]
        if own.size and own.max() >= info.tiny / info.eps:
            continue
        subnormal = ((own > 0) & (own < info.tiny)).any()
        if not (subnormal or fp.flushed(block)):
            continue
        block.flushed = _make_unverified(block, marks, tolerance(block))


def undefined_outputs(
    blocks: list[Block], point: Point, tolerance: Callable[[Block], Tolerance]
) -> None:
    """Where an output's value is nan at the point (log(-1): the function is not defined
    there), a nan derivative of it is IEEE's answer, not a wrong one: unverified, as where the
    reference's own derivative is nan (sqrt at -1), not failed against sympy's formula carried
    there (log's 1/x at -1, which torch's and JAX's rules give too). Only the entries that
    derive from such a value: a Jacobian's rows of nan outputs; a VJP's entries that JAX's VJP
    of the nan outputs' own cotangents reaches (a cotangent of 0 there weighs nothing, as a
    Jacobian row of a defined output); every entry of a Hessian of a nan output."""
    nan_values = {
        b.output: np.isnan(b.reference.reshape(-1)) & (b.reference_name != "")
        for b in blocks
        if b.quantity == "value" and b.reference is not None and b.reference_name is not None
    }
    if not any(v.any() for v in nan_values.values()):
        return
    program = point.program
    unused = unused_inputs(program)
    fail = STATUSES.index("fail")
    weighed = _vjp_of_undefined(point, nan_values)
    for block in blocks:
        if block.quantity == "value":
            continue
        size = int(np.prod(block.shape))
        if block.quantity == "jacobian":  # entry (i, j): output entry i's value
            rows = nan_values.get(block.output, np.zeros(1, bool))
            reached = np.repeat(rows, size // max(rows.size, 1))
        elif block.quantity == "vjp" and weighed is not None:
            found = weighed.vjp.get(block.input)
            values = None if found is None else np.asarray(found.values, np.float64).reshape(-1)
            reached = np.zeros(size, bool) if values is None else values != 0  # (nan too)
        else:  # every output that depends on the input
            inputs = set(block.input.split(","))
            hit = any(v.any() for o, v in nan_values.items() if not inputs <= unused.get(o, set()))
            reached = np.full(size, hit)
        if reached.size != size or not reached.any():
            continue
        marks = {
            src: (status.reshape(-1) == fail)
            & np.isnan(np.asarray(block.sources[src].values, np.float64).reshape(-1))
            & reached
            for src, status in block.status_map.items()
        }
        if any(m.any() for m in marks.values()):
            block.undefined += _make_unverified(block, marks, tolerance(block))


def _vjp_of_undefined(point: Point, nan_values: dict[str | None, np.ndarray]) -> Derivatives | None:
    """JAX's VJP with the request's cotangents kept only at the nan entries of the outputs: the
    entries it reaches derive from a value that is not defined (None if JAX cannot say)."""
    if "vjp" not in point.checks:
        return None
    cotangents = []
    for (name, _), c in zip(point.output_shapes(), point.cotangents):
        nan = nan_values.get(name)
        keep = np.zeros(np.shape(c), bool) if nan is None else nan.reshape(np.shape(c))
        cotangents.append(np.where(keep, c, 0).astype(np.asarray(c).dtype))
    try:
        asked = dataclasses.replace(point, cotangents=cotangents, checks=("vjp",))
        return jax_backend.derivatives(asked)
    except (deadline.OutOfTime, deadline.Cancelled, MemoryError):
        raise
    except Exception:  # (it ran once already; if it cannot now, every entry is excused)
        return None


MAX_MEASURED_WORK = 10_000_000  # a Jacobian's rows times the largest intermediate, measured
MAX_MEASURED_HESSIAN = 16  # differentiated entries of a Hessian measured (op by op, five times:
# sixty entries took 13 s)


def _measurable(block: Block, point: Point) -> bool:
    """Whether a block's quantity is cheap enough to evaluate op by op the five more times
    measuring its rounding takes: values and VJPs always; a Jacobian by its rows (one VJP
    each) times the largest intermediate; a small Hessian."""
    if block.quantity in ("value", "vjp"):
        return True
    if block.quantity == "jacobian":
        rows = sum(math.prod(shape) for _, shape in point.output_shapes())
        return rows * intermediate_sizes(point.program)[1] <= MAX_MEASURED_WORK
    return sum(int(np.size(point.values[n])) for n in point.wrt) <= MAX_MEASURED_HESSIAN


def _unverified_past(
    block: Block, strict: Tolerance, exact: np.ndarray, moved: np.ndarray, tol: Tolerance
) -> int:
    """Passing entries further from the exact value than `strict` allows and ten times as far
    as rounding `moved` them: unverified (the block summarised again under `tol`). Returns how
    many entries (of the sources under test at once) it made unverified."""
    return _make_unverified(block, _passing_far(block, strict, exact, moved), tol)


def _make_unverified(block: Block, marks: dict[str, np.ndarray], tol: Tolerance) -> int:
    """Per source under test, its marked entries (flat) unverified, and the block summarised
    again under `tol`. Returns how many entries (of the sources at once) it marked."""
    unverified = STATUSES.index("unverified")
    made = np.zeros(int(np.prod(block.shape)), bool)
    for src, mark in marks.items():
        block.status_map[src].reshape(-1)[mark] = unverified
        made |= mark
    summarize(block, tol)
    return int(made.sum())


def _passing_far(
    block: Block, strict: Tolerance, exact: np.ndarray, moved: np.ndarray | float
) -> dict[str, np.ndarray]:
    """Per source under test, its passing entries further from the exact value than `strict`
    allows and ten times as far as rounding `moved` them, or, for sympy's exact values, half as
    far as their own size: past that a claim is no closer to them than to 0 or to their
    negation, whatever rounding does (float32's tanh'(9) is 6.1e-8: its own rounding gives
    1.2e-7 or 0, and ten times that passed -6.1e-8; float64's tanh'(19), 1.3e-16, JAX computes
    1.4e-15). Not where sympy's value is 0 to its own precision, SETTLED_DIGITS below the terms
    rounding in the block's precision reveals (a softmax's gradient that cancels to 0 came out
    of sympy as 3e-52), and not for values, which are no derivatives. JAX's values that
    rounding reaches 0 from are noise about 0: see blind_tolerance."""
    pass_ = STATUSES.index("pass")
    by_sympy = (
        np.asarray(block.reference_name).reshape(-1) == "sympy"
        if block.reference_name is not None
        else False
    )
    with np.errstate(invalid="ignore", over="ignore"):
        terms = moved / float(np.finfo(block.dtype).eps)  # what rounding by `moved` rounds
        settled = by_sympy & (np.abs(exact) > terms * 10.0**-SETTLED_DIGITS)
        settled &= block.quantity != "value"  # (a value is no claim: the forward pass's own
        # rounding of a loss that cancels to 6e-29 gave 4e-28, a faithful float64 computation)
        allowance = np.where(settled, np.minimum(10 * moved, np.abs(exact) / 2), 10 * moved)
    found = {}
    for src, status in block.status_map.items():
        value = np.asarray(block.sources[src].values, np.float64).reshape(-1)
        with np.errstate(invalid="ignore", over="ignore"):
            off = np.abs(value - exact)
            found[src] = (status.reshape(-1) == pass_) & (
                off > strict.atol + strict.rtol * np.abs(exact) + allowance
            )
    return found


# Ops whose float32 results round nothing: they move, copy or negate their operands' values
# (a frozen float32 input reshaped made a float64 block float32, rtol 1e-4 for 1e-7).
_EXACT = frozenset(
    {
        *("neg", "clone", "broadcast_to", "expand", "reshape", "flatten", "squeeze", "unsqueeze"),
        *("permute", "transpose", "flip", "getitem", "concat", "stack", "split", "take"),
    }
)


def _computed_in_float32(node: Any) -> bool:
    return node.op != "input" and node.dtype == "float32" and node.op not in _EXACT


def _ends(program: Program, output: str | None, inputs: str) -> tuple[list[int], set[int]]:
    """A block's output nodes (every output when it names none; of a derivative's, those that
    depend on its inputs: another output's overflow or float32 has no part in it) and its
    input nodes."""
    outs = [output] if output else list(program.output_names)
    names = set(inputs.split(","))
    starts = {i for n, i in program.inputs if n in names}
    out_ids = [i for n, i in program.outputs if n in outs]
    if starts:
        after = _downstream(program, starts)
        out_ids = [i for i in out_ids if i in after]
    return out_ids, starts


def _downstream(program: Program, ids: set[int]) -> set[int]:
    """The nodes whose value depends on one of `ids` (those included)."""
    out = set(ids)
    for node in program.nodes:  # in order: operands come first
        if any(isinstance(a, Ref) and a.id in out for a in node.args):
            out.add(node.id)
    return out


def _reaches(
    program: Program,
    out_ids: list[int],
    starts: set[int],
    found: Callable[[Any], bool],
    read_only: bool = False,
) -> bool:
    """Whether a node where `found` holds bears on the derivative of out_ids with respect to the
    input nodes `starts` (on every value of the outputs' forward pass when there are none): it
    lies on the way (`read_only`: and its own VJP may read its value), or a VJP on the way reads
    its value. A float32 node on the way rounds the cotangents passing through it; a non-finite
    value only matters where it is read (an output of inf passes add's cotangent on intact)."""
    on_path = _downstream(program, starts)  # nodes that depend on an input of the block
    # node id -> whether a VJP on the way reads its value (a value block reads the outputs')
    read = dict.fromkeys(out_ids, not starts)
    todo = list(out_ids)
    while todo:  # each node once, again if it turns out to be read
        node = program.node(todo.pop())
        counts = read[node.id] or not read_only or node.op not in _VALUE_FREE_VJP
        if found(node) and counts:
            return True
        # off the path every operand's rounding reaches the node's value, which a VJP reads
        reads_values = node.id not in on_path or node.op not in _VALUE_FREE_VJP
        for a in node.args:
            if not isinstance(a, Ref) or not (reads_values or a.id in on_path):
                continue
            if a.id not in read or (reads_values and not read[a.id]):
                read[a.id] = reads_values or read.get(a.id, False)
                todo.append(a.id)
    return False


def unused_inputs(program: Program) -> dict[str, set[str]]:
    """output -> the inputs it does not depend on through differentiable ops (no gradient:
    torch's .grad stays None). A comparison's result and where's condition carry no gradient,
    so `where(x > 0, a, b)` leaves x without one."""
    inputs_of: dict[int, set[str]] = {}
    for node in program.nodes:  # in order: operands come first
        deps = {node.name} if node.op == "input" else set()
        spec = OPS.get(node.op)
        if spec is None or spec.differentiable:
            skipped = () if spec is None else spec.no_grad_operands
            for k, a in enumerate(node.args):
                if isinstance(a, Ref) and k not in skipped:
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
    """Per vjp and jacobian block, what the point's kinks admit (empty when there are none), and
    a word on how it was found. The derivatives with every kinked group on its first side (the
    base), then with one group at a time on each other side: the admissible derivatives are the
    base plus, per group, a convex combination of its sides' differences from the base."""
    checks = [q for q in ("vjp", "jacobian") if q in point.checks]
    if not kinks or not checks or not point.wrt:
        return {}, ""
    found = [sides(k, operand_values[k.node.id], spread=True) for k in kinks]
    groups = [(k, g) for k, s in zip(kinks, found) if s is not None for g in s.groups]
    runs = _runs(groups)
    if not groups:  # (0 ** v: a constant base has no side to step to)
        return _unknown(point, checks), "the kinks' sides could not be stepped to"
    if runs > MAX_SIDE_RUNS or operation_count(point.program) * runs > MAX_KINK_WORK:
        return _unknown(point, checks), "too many kinks to find their one-sided derivatives"
    complete = all(s is not None and s.complete for s in found)
    spans = [s.hull for s in found if s is not None for _ in s.groups]
    moved = [(kink, moves) for kink, s in zip(kinks, found) if s is not None for moves in s.moves]
    rows, flips, picks, owners = _kinked_rows(moved, point)
    # a kinked quantity that no differentiated input moves is no kink of the function of the
    # inputs (relu of a frozen input; where(x == x, ...), whose tie never flips): not stepped
    # off. One whose derivative is 0 but that moves further off (x * x == 0) is one.
    kept = [g for g, f in enumerate(flips) if f]
    if not kept:
        return {}, "no kink that the differentiated inputs move"
    groups, spans, rows = [groups[g] for g in kept], [spans[g] for g in kept], [rows[g] for g in kept]
    picks = [p for p, o in zip(picks, owners) if o in kept]
    owners = np.asarray([kept.index(o) for o in owners if o in kept], int)
    unbounded = any(s is not None and s.unbounded for s in found)
    # One kink's step moves another's operand where they are nested: a step may then take the
    # outer kink back onto its tie (u = x - abs(z) at 0: abs stepped to +d makes u -d, the outer
    # sign(u) * abs(u) stepped by +d puts u back at 0), and the sides are the point's own
    # derivative (sign(u) * abs(u) is u, d/dx 1; the engine's 0 passed). Every run checks that
    # each kinked quantity lies on the side its own step points to.
    nested_kinks = _nested([k for k, _ in groups], point.program)
    landing = _Landing(point, groups, picks, owners) if nested_kinks else None

    def derivatives(choice: dict[int, int], scale: float = 1.0) -> Derivatives:
        deadline.checkpoint()
        shifts = _shifts(groups, choice, scale)
        if landing is not None:
            landing.check(choice, shifts)
        return jax_backend.shifted_derivatives(point, shifts)

    value_steps: dict[float, list[list[np.ndarray]]] = {}  # scale -> group -> output -> |step|

    def intervals_at(scale: float) -> dict[Key, Interval]:
        base = derivatives({}, scale)
        offsets = [
            [derivatives({g: j}, scale) for j in range(1, len(alts))]
            for g, (_, alts) in enumerate(groups)
        ]
        value_steps[scale] = [_value_steps(base, group) for group in offsets]
        out = {}
        for quantity in checks:
            for key in getattr(base, quantity):

                def flat(d: Derivatives, key: Any = key, quantity: str = quantity) -> np.ndarray:
                    return np.asarray(getattr(d, quantity)[key].values, np.float64).reshape(-1)

                b = flat(base)
                sides_ = [
                    np.vstack([np.zeros_like(b)] + [flat(d) - b for d in group]) for group in offsets
                ]
                towards = None
                if closer is not None:
                    towards = _towards(flat(closer), flat(at_point), b)
                shape = getattr(base, quantity)[key].values.shape
                interval = _interval(b, sides_, towards, shape, tolerance((quantity, key)), complete)
                interval.sides, interval.spans = sides_, spans
                interval.owners = [kink.node.id for kink, _ in groups]
                out[(quantity, key)] = interval
        return out

    # the derivatives at the point itself (JAX's: at a pole, the limit's infinity, with its sign)
    at_point = derivatives({}, 0.0)
    # slopes that diverge at the kink: the same sides ten orders of magnitude closer to it
    closer = derivatives({}, 1e-10) if unbounded else None
    intervals = intervals_at(1.0)
    # Each kinked group is stepped off on its own, as if its sides were independent of the
    # others'. They are not when the inputs cannot move them independently: abs(x) - abs(x) is 0
    # whatever the side, but each abs stepped alone admitted anything in [-2, 2]. Their combined
    # range is then not known.
    # A group counts when its sides move a derivative by more than the tolerance shared among
    # all groups: 40 relus each under the tolerance, all driven by one input, added up 15 times
    # the tolerance without ever being tested for coupling.
    # A slope that diverges dwarfs every scale, and may be one of a kink's sides alone: the
    # divisor of sin(x) / x stepped off 0 without its numerator, under where(x != 0, ., 1),
    # whose own sides moved nothing (sinc is smooth: any claim passed in (-inf, inf)). Then every
    # group counts, and the ranges they add up to bound nothing (their finite ends are lost in
    # the diverging sides' rounding: where(x > 0, 1 / x, x) at 0 had [-inf, 0], and its 1 failed).
    diverges = any(iv.diverging is not None and iv.diverging.any() for iv in intervals.values())
    scales = {key: _scale(iv, tolerance(key)) / len(groups) for key, iv in intervals.items()}
    active = [
        diverges or any((~(np.abs(iv.sides[g]) <= scales[key])).any() for key, iv in intervals.items())
        for g in range(len(groups))
    ]
    # Coupled but not nested, each kink's choice enters the derivative times factors no other
    # kink changes: the chain rule's set, each group anywhere in its range, holds every
    # admissible value (abs(x) - abs(x): [-2, 2] holds 0), so a value outside its range per
    # entry is still wrong. Nested, the ranges bound nothing. (Coupling is tested over every
    # block at once: blocks are fitted to the kinks' hull together, and abs(x) as two outputs,
    # one kink each, passed rows taking opposite sides of it.)
    moving = [kink for (kink, _), on in zip(groups, active) if on]
    nested = _nested(moving, point.program)
    if nested or _coupled([r for r, on in zip(rows, active) if on]):
        for interval in intervals.values():
            interval.complete = False
            interval.bounds &= not nested and not diverges
    # The sides are one-sided limits only if the step is small enough for the program: a factor
    # that changes over the step (exp(1e9 * relu(y)) * x: d/dx is 1 at the kink, e one step off)
    # would widen an entry's range to excuse wrong values. Half the step must give the same range.
    # Unless the sides move in proportion to the step, as they do where the function is smooth
    # across the kink (relu(x) ** 2: 2 * step off 0): then their limit at the kink is the range
    # (a correct 0 was unverified).
    halves = intervals_at(0.5)
    # Added up, the groups' sides assume each kink's choice adds its own difference; where one
    # kink's choice multiplies another's slope (where(z > 0, relu(x), 0 * x): d/dx is [z > 0]
    # [x > 0]), the sum holds values no side gives (-1 passed) and may miss one that some
    # sides give together. Where the program lets them multiply (_may_interact), every choice
    # of the groups' sides must give the base plus their differences (a mismatch that halves
    # with the step is the step's own); too many choices to try: the range is not known. (Four
    # of them tried missed three comparisons whose products cancelled in those four.)
    on = [g for g, a in enumerate(active) if a]
    if len(on) > 1 and _may_interact(point.program, [groups[g][0] for g in on]):
        choices = math.prod(len(groups[g][1]) for g in on)
        affordable = (
            choices <= MAX_SIDE_RUNS and operation_count(point.program) * choices <= MAX_KINK_WORK
        )
        if not affordable or _interacting(on, groups, derivatives, intervals, halves, tolerance):
            for interval in intervals.values():
                interval.complete = interval.bounds = False
    step_dependent = [
        key for key, half in halves.items() if not _same_range(intervals[key], half, tolerance(key))
    ]
    quarters = intervals_at(0.25) if step_dependent else {}
    for key in step_dependent:
        full = intervals[key]
        limit = _limit(full, halves[key], quarters[key], tolerance(key))
        if limit is None:
            full.complete = full.bounds = False
        else:
            full.low, full.high, full.reached, full.base, full.sides = limit
    # A kink can take a value at the point that holds nowhere else (a where condition x == 0,
    # sign, floor): the derivative there differs from the one on every side, and nothing says
    # which is right (masked_fill(x, x == 0, 0) * 3 and sign(x) * abs(x) are smooth, but the
    # point's own value said 0 for each: they passed). Compared with the sides' limit where
    # they move with the step (d/dw of abs(x) * w at x = 0 is 0, and |step| one step off).
    for (quantity, key), iv in intervals.items():
        here = np.asarray(getattr(at_point, quantity)[key].values, np.float64).reshape(-1)
        with np.errstate(invalid="ignore"):
            apart = ~close(here, iv.base, tolerance((quantity, key))) & np.isfinite(iv.base)
        iv.isolated = (apart & ~iv.reached.reshape(-1)).reshape(iv.reached.shape)
    # A kink where the value jumps (where(x > 1, x, 2x) at 1): the derivative at the point is
    # its branch's, and nothing between the sides' derivatives is one of a jump (1.5 passed as
    # a convention). Stepping off, such a value changes as much at half the step.
    jumps = [_jumps(full, half) for full, half in zip(value_steps[1.0], value_steps[0.5])]
    for key, iv in intervals.items():
        moved = [np.abs(side) > scales[key] for side in iv.sides]
        # A kink the block's input does not move (d/dx of where(z > 0, x, -x) at z = 0, or of
        # where(z + 0 * x > 0, ...): its kinked quantity's derivative in x is 0) is no kink of
        # the function of that input: with the kinked operand held, it is smooth in x, and the
        # partial derivative is the point's own. The sides' range comes from stepping z, which
        # makes the value jump wherever x != 0 (at x = 0 exactly it did not: a negated or
        # zeroed claim passed as a convention).
        columns = _input_columns(point, key)
        apart = [j or not _moves(row, columns) for j, row in zip(jumps, rows)]
        iv.jump = np.logical_or.reduce(
            [m.any(axis=0) for m, j in zip(moved, apart) if j] + [np.zeros(iv.low.size, bool)]
        ).reshape(iv.low.shape)
    if landing is not None and landing.missed:
        return _unknown(point, checks), "nested kinks whose steps put one back on its tie"
    runs = _runs(groups, steps=3 if quarters else 2)
    how = f"JAX just off each kink: {len(groups)} group(s), {runs} evaluation(s)"
    return intervals, how


def _input_columns(point: Point, key: Key) -> slice:
    """The columns of _kinked_rows' rows that are a vjp block's input (keyed by it) or a
    jacobian block's ((output, input))."""
    quantity, name = key
    name = name if quantity == "vjp" else name[1]
    start = 0
    for n in point.wrt:
        size = int(np.size(point.values[n]))
        if n == name:
            return slice(start, start + size)
        start += size
    return slice(0, 0)


def _moves(row: np.ndarray, columns: slice) -> bool:
    """Whether the kinked quantities' derivatives in these columns are not all 0."""
    part = row[:, columns]
    return not (np.isfinite(part).all() and not part.any())


class _Landing:
    """Checks that each run around nested kinks puts every kinked quantity on the side of its
    kink its own step points to; `missed` once one did not."""

    def __init__(
        self, point: Point, groups: list[tuple[Kink, Any]], picks: list[Any], owners: np.ndarray
    ) -> None:
        self.point, self.picks, self.owners, self.missed = point, picks, owners, False
        self.here = self._quantities({})
        # per group and side, the direction its step alone moves its kinked quantities
        self.towards = [
            [self._direction(_shifts([group], {0: j})) for j in range(len(group[1]))] for group in groups
        ]

    def _direction(self, shifts: dict[int, dict[int, np.ndarray]]) -> np.ndarray:
        return np.sign(self._quantities(shifts) - self.here)

    def _quantities(self, shifts: dict[int, dict[int, np.ndarray]]) -> np.ndarray:
        return jax_backend.kinked_values(self.point, self.picks, shifts)

    def check(self, choice: dict[int, int], shifts: dict[int, dict[int, np.ndarray]]) -> None:
        if self.missed or not self.picks:
            return
        where = self._direction(shifts)
        for g, towards in enumerate(self.towards):
            mine = self.owners == g
            want = towards[choice.get(g, 0)][mine]
            self.missed |= bool(np.any((want != 0) & (where[mine] != want)))


def _towards(closer: np.ndarray, at_point: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per entry, the infinity a diverging slope reaches (+1, -1; 0: none): JAX's at the point
    where it is infinite there, else that of the sides closer to the kink where they grew past
    the base. (The range one step off chose it: 1e-8 * sqrt(x) - relu(x + z) at 0 admitted -inf,
    the relu's -1 outweighing the sqrt's slope there.)"""
    with np.errstate(invalid="ignore", over="ignore"):
        grew = np.abs(closer) > 100 * np.abs(base) + 1.0
        return np.where(np.isinf(at_point), np.sign(at_point), np.where(grew, np.sign(closer), 0.0))


def _interacting(
    on: list[int],
    groups: list[tuple[Kink, Any]],
    derivatives: Callable[[dict[int, int], float], Derivatives],
    full: dict[Key, Interval],
    half: dict[Key, Interval],
    tolerance: Callable[[Key], Tolerance],
) -> bool:
    """Whether the kinked groups `on`, moved together, give other derivatives than their sides'
    differences added to the base: every choice of two or more of them off the base."""
    every = itertools.product(*(range(len(groups[g][1])) for g in on))
    choices = [dict(zip(on, picks)) for picks in every if sum(j > 0 for j in picks) > 1]
    for choice in choices:
        # per block, how far the derivatives are from the sum, at the step (and at half of it
        # where they are apart: the sum may miss by the step's own amount)
        off = _off_sum(derivatives(choice, 1.0), full, choice, tolerance)
        if not any((at_step != 0).any() for at_step in off):
            continue
        halved = _off_sum(derivatives(choice, 0.5), half, choice, tolerance)
        for at_step, at_half in zip(off, halved):
            apart = at_step > 0
            # (nan: an infinity that no sum of sides gives)
            if np.isnan(at_step).any() or np.any(~(at_half[apart] < 0.75 * at_step[apart])):
                return True
    return False


# ops whose value jumps at their kink: their side multiplies the slope of what consumes them
# (where(z > 0, x, 0 * x): d/dx is [z > 0])
_JUMPING = {"lt", "le", "gt", "ge", "eq", "ne", "sign", "floor", "round"}


def _may_interact(program: Program, kinks: list[Kink]) -> bool:
    """Whether one kink's choice may multiply another's slope: a path from an input to an
    output meets the factors both change (a kink's own derivative; for one whose value jumps,
    also everything that consumes it). Kinks of one elementwise node or one reduction never
    do: each path meets one entry of it."""
    factors: dict[int, set[int]] = {}
    for kink in kinks:
        own = {kink.node.id}
        factors[kink.node.id] = _downstream(program, own) if kink.node.op in _JUMPING else own
    for a, b in itertools.combinations(factors.values(), 2):
        if _downstream(program, a) & b or _downstream(program, b) & a:
            return True
    return False


def _off_sum(
    got: Derivatives,
    intervals: dict[Key, Interval],
    choice: dict[int, int],
    tolerance: Callable[[Key], Tolerance],
) -> list[np.ndarray]:
    """Per block, |derivatives - (base + the chosen sides' differences)| where not close."""
    out = []
    for (quantity, key), iv in intervals.items():
        value = np.asarray(getattr(got, quantity)[key].values, np.float64).reshape(-1)
        added = iv.base + sum(iv.sides[g][j] for g, j in choice.items())
        with np.errstate(invalid="ignore", over="ignore"):
            out.append(
                np.where(close(value, added, tolerance((quantity, key))), 0.0, np.abs(value - added))
            )
    return out


def _value_steps(base: Derivatives, sides: list[Derivatives]) -> list[np.ndarray]:
    """Per output, how far a group's other sides move its value from the base (the largest), in
    units of a thousand rounding errors of 1 + |value| (only the kinked operand is stepped: a
    jump of 1 in a loss of 1e7 is a jump; a millionth of the value as the unit missed it)."""
    steps = []
    for name, value in base.values.items():
        v = np.asarray(value, np.float64)
        eps = np.finfo(np.float32 if np.asarray(value).dtype == np.float32 else np.float64).eps
        unit = 1e3 * eps * (1 + np.abs(v))
        with np.errstate(invalid="ignore", over="ignore"):
            moved = [np.abs(np.asarray(d.values[name], np.float64) - v) / unit for d in sides]
            steps.append(np.max(moved, axis=0) if moved else np.zeros_like(v))
    return steps


def _jumps(full: list[np.ndarray], half: list[np.ndarray]) -> bool:
    """Whether a group's value step, more than a unit (see _value_steps), stays as large at half
    the step: a jump, not a slope (a slope's halves)."""
    with np.errstate(invalid="ignore"):
        return any(((f > 1) & (h >= 0.75 * f)).any() for f, h in zip(full, half))


def _shifts(
    groups: list[tuple[Kink, Any]], choice: dict[int, int], scale: float = 1.0
) -> dict[int, dict[int, np.ndarray]]:
    """What to add to the kinked nodes' operands: every group on its first side, or the side
    `choice` gives it (group -> side), `scale` times the step."""
    # (every side of a kink moves the same operand: each choice shifts the same operands, and
    # one compiled function serves them all)
    shifts: dict[int, dict[int, np.ndarray]] = {}
    for g, (kink, alternatives) in enumerate(groups):
        for operand, step in alternatives[choice.get(g, 0)].items():
            node = shifts.setdefault(kink.node.id, {})
            node[operand] = node.get(operand, 0.0) + scale * step
    return shifts


def _runs(groups: list[Any], steps: int = 2) -> int:
    """Evaluations around the kinks: every group on its first side, then each other side of
    each group, at the step and at half of it (and at a quarter, where the range moved with
    the step); and the point itself."""
    return steps * (1 + sum(len(g) - 1 for _, g in groups)) + 1


def _kinked_rows(
    groups: list[tuple[Kink, list[tuple[int, int, float]]]], point: Point
) -> tuple[list[np.ndarray], list[bool], list[jax_backend.Pick], np.ndarray]:
    """Per kinked group, the derivatives of its kinked quantities with respect to every entry of
    the differentiated inputs (one row each): the moved operand entry; for a tie of two
    operands, their difference; for tied entries of a max, their differences from the first;
    for a zero norm or a std of equal entries, every entry. And whether the inputs move them:
    a derivative that is not 0, or a change when the inputs move a little. And the kinked
    quantities themselves (jax_backend.Pick), with the group each belongs to."""
    picks: list[jax_backend.Pick] = []
    owner: list[int] = []
    for g, (kink, moves) in enumerate(groups):
        node, op = kink.node.id, kink.node.op
        entries = list(dict.fromkeys((k, j) for k, j, _ in moves))  # distinct, in order
        if kink.entries is not None:  # elementwise: one entry, moved both ways
            (k, j), kind = entries[0], "tie" if op in TIES else "entry"
            found = [(node, kind, k, j, j)]
        elif op in ("max", "amax", "min", "amin"):  # which tied entry wins
            found = [(node, "diff", k, j, entries[0][1]) for k, j in entries[1:]]
        else:
            found = [(node, "entry", k, j, j) for k, j in entries]
        picks.extend(found)
        owner.extend([g] * len(found))
    if not picks:
        return [np.zeros((0, 0)) for _ in groups], [False] * len(groups), [], np.zeros(0, int)
    jacobian = jax_backend.kinked_jacobian(point, picks)
    owners = np.asarray(owner)
    rows = [jacobian[owners == g] for g in range(len(groups))]
    flips = [not (np.isfinite(r).all() and not r.any()) for r in rows]
    if not all(flips):
        changed = jax_backend.kinked_moved(point, picks)
        flips = [f or bool(changed[owners == g].any()) for g, f in enumerate(flips)]
    return rows, flips, picks, owners


def _coupled(rows: list[np.ndarray]) -> bool:
    """Whether the differentiated inputs cannot move these kinked groups (those whose sides
    change a derivative) to their sides independently: the derivatives of their kinked
    quantities are linearly dependent (relu(x) - relu(-x), two rows of one amax tied opposite
    ways), or not finite."""
    stacked = np.concatenate(rows) if rows else np.zeros((0, 0))
    if not np.isfinite(stacked).all():
        return True
    stacked = stacked[np.abs(stacked).max(axis=1, initial=0.0) > 0]
    return stacked.size > 0 and bool(np.linalg.matrix_rank(stacked) < len(stacked))


def _nested(kinks: list[Kink], program: Program) -> bool:
    """Whether a kink's operand depends on another kink's result: then the outer kink's sides
    depend on the inner one's (relu(relu(x) - z) at 0: d/dx of the outer quantity is 0 or 1
    as the inner relu goes), and their ranges do not add up (d/dx -1 was admitted, where the
    function never decreases in x)."""
    after = _downstream(program, {k.node.id for k in kinks})
    return any(isinstance(a, Ref) and a.id in after for k in kinks for a in k.node.args)


def _interval(
    base: np.ndarray,
    groups: list[np.ndarray],
    towards: np.ndarray | None,
    shape: tuple[int, ...],
    tol: Tolerance,
    complete: bool,
) -> Interval:
    """Per entry, the range of the base plus one of each group's differences."""
    with np.errstate(invalid="ignore", over="ignore"):
        low, high = base.copy(), base.copy()
        for g in groups:
            finite = np.where(np.isfinite(g), g, np.nan)
            low += np.nan_to_num(np.nanmin(finite, axis=0), nan=0.0)
            high += np.nan_to_num(np.nanmax(finite, axis=0), nan=0.0)
        unknown = ~np.isfinite(low) | ~np.isfinite(high)  # a side nan or infinite there
        low, high = np.where(unknown, -np.inf, low), np.where(unknown, np.inf, high)
        # (a side that overflowed bounds nothing: exp(maximum(x, c)) at c = 709.78 admitted
        # any claim, and maximum's rule sign-flipped)
        complete = complete and not unknown.any()
        diverging = None
        if towards is not None:  # a side's slope grows without bound: it reaches infinity
            diverging = towards != 0
            low = np.where(towards < 0, -np.inf, low)
            high = np.where(towards > 0, np.inf, high)
        scale = np.maximum(
            np.abs(np.nan_to_num(low, posinf=0, neginf=0)),
            np.abs(np.nan_to_num(high, posinf=0, neginf=0)),
        )
        reached = ~(high - low <= tol.atol + tol.rtol * scale)  # nan and infinite count as reached
    return Interval(
        low.reshape(shape),
        high.reshape(shape),
        reached.reshape(shape),
        complete,
        complete,
        base=base,
        diverging=None if diverging is None else diverging.reshape(shape),
    )


def _limit(full: Interval, half: Interval, quarter: Interval, tol: Tolerance) -> tuple[Any, ...] | None:
    """The range at the kink itself where the sides' derivatives move in proportion to the step
    (their change halves with the step: Richardson's limit from the half and the quarter step);
    None where they do not (exp(1e9 relu(z)) is e, e^0.5 and e^0.25 off z = 0: no limit)."""
    if not all(np.isfinite(iv.low).all() and np.isfinite(iv.high).all() for iv in (full, half, quarter)):
        return None
    assert full.sides is not None and half.sides is not None and quarter.sides is not None
    triples = [(full.base, half.base, quarter.base), *zip(full.sides, half.sides, quarter.sides)]
    with np.errstate(invalid="ignore", over="ignore"):
        for f, h, q in triples:
            first, second = f - h, h - q
            if not np.all(np.abs(first - 2 * second) <= 0.1 * np.abs(first) + tol.atol):
                return None
        base = 2 * quarter.base - half.base
        sides = [2 * q - h for h, q in zip(half.sides, quarter.sides)]
    limit = _interval(base, sides, None, full.low.shape, tol, full.complete)
    return limit.low, limit.high, limit.reached, base, sides


def _same_range(a: Interval, b: Interval, tol: Tolerance) -> bool:
    """Whether two ranges agree within the tolerance at the entries where both are bounded (a
    slope that diverges has its finite end anywhere; the closer look judges those)."""
    bounded = np.isfinite(a.low) & np.isfinite(a.high) & np.isfinite(b.low) & np.isfinite(b.high)
    same = close(a.low, b.low, tol) & close(a.high, b.high, tol)
    return bool(np.all(same | ~bounded))


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
    """Each kink, with what every party actually returned at the first derivative entry it
    moves (a convention entry if there is one; else the first any kink moves), and the range
    admissible there."""
    notes = []
    for kink in kinks:
        at = _first_reached(blocks, intervals, kink.node.id) or _first_reached(blocks, intervals)
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
    blocks: list[Block], intervals: dict[Key, Interval], node: int | None = None
) -> tuple[Block, int, Interval] | None:
    """The first entry the kinks (or the kink at `node`: its groups' sides) move."""
    convention = STATUSES.index("convention")
    found = None
    for b in blocks:
        interval = intervals.get((b.quantity, _key(b)))
        if interval is None or not interval.reached.any():
            continue
        reached = interval.reached.reshape(-1)
        if node is not None and interval.sides is not None and interval.owners is not None:
            own = [side for side, owner in zip(interval.sides, interval.owners) if owner == node]
            reached = reached & np.logical_or.reduce(
                [(np.abs(side) > 0).any(axis=0) for side in own] + [np.zeros_like(reached)]
            )
        flat = np.flatnonzero(reached)
        if not flat.size:
            continue
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


def hull_check(
    blocks: list[Block], intervals: dict[Key, Interval], tolerance: Callable[[Block], Tolerance]
) -> None:
    """The generalized gradient is not a box per entry: the entries one kinked group moves move
    together (relu(sum(x) - 1) gives every entry the same relu'). For each source under test,
    the nearest admissible derivatives over every entry a kink moves, in every block at once
    (each group's weights >= 0 summing to 1; least squares in units of each entry's tolerance);
    an entry those miss by more than its tolerance fails, one equal to sympy's value at the point
    too (sympy's 1/4 for each of max's three tied entries is no admissible gradient). Groups
    whose sides do not span their part (the ball of a norm at zero or of a std of equal
    entries) are left out, with the entries they move: another kink's entries are still tested
    (amax(x) + norm(z) at ties and zeros). Then every group is fitted with the sides it has: a
    ball's sides are points of it, so their hull lies inside it; an entry outside that hull is
    unverified (an engine giving [0.9, 0.9] for norm at zero, inside the box and outside the
    ball, passed)."""
    _fit_hulls(blocks, intervals, tolerance, spanning_only=True, mark="fail")
    if any(iv.spans is not None and not all(iv.spans) for iv in intervals.values()):
        _fit_hulls(blocks, intervals, tolerance, spanning_only=False, mark="unverified")


def _fit_hulls(
    blocks: list[Block],
    intervals: dict[Key, Interval],
    tolerance: Callable[[Block], Tolerance],
    spanning_only: bool,
    mark: str,
) -> None:
    parts = []
    for b in blocks:
        interval = intervals.get((b.quantity, _key(b)))
        if interval is None or interval.sides is None or interval.spans is None or not interval.complete:
            continue
        scale = _scale(interval, tolerance(b))
        reached = interval.reached.reshape(-1)
        if spanning_only:
            reached = reached & ~_boxed(interval, scale)
        scale = _range_scale(interval, tolerance(b))
        reached = np.flatnonzero(reached)
        kept = [g for g, spans in zip(interval.sides, interval.spans) if spans or not spanning_only]
        groups = [g[:, reached] for g in kept]
        if reached.size and groups:
            parts.append((b, reached, interval.base[reached], groups, scale[reached]))
    if not parts:
        return
    # Every entry the kinks reach is fitted, those equal to sympy's value at the point too: that
    # value is sympy's own convention there (a three-way tie of max: 1/4 each, summing to 3/4),
    # not always an admissible one; and where the fit misses, the entries it misses fail whatever
    # their status (least squares may put a claim's misfit on an entry that matched sympy).
    # The VJP and the Jacobian are fitted apart: each is one choice of the generalized
    # derivative, not necessarily the same one (torch's VJP at a tie with another tool's
    # one-sided Jacobian FAILed the VJP, equal to every reference).
    for quantity in sorted({p[0].quantity for p in parts}):
        _fit_parts([p for p in parts if p[0].quantity == quantity], tolerance, mark)


def _fit_parts(parts: list[Any], tolerance: Callable[[Block], Tolerance], mark: str) -> None:
    judged = np.array([STATUSES.index("pass"), STATUSES.index("convention")])
    marked, unverified = STATUSES.index(mark), STATUSES.index("unverified")
    for src in ("engine", "claimed"):
        rows = [p for p in parts if src in p[0].status_map]
        if not any(np.isin(b.status_map[src][r], judged).any() for b, r, *_ in rows):
            continue
        value = np.concatenate(
            [np.asarray(b.sources[src].values, np.float64).reshape(-1)[r] for b, r, *_ in rows]
        )
        base = np.concatenate([p[2] for p in rows])
        scale = np.concatenate([p[4] for p in rows])
        groups = [np.concatenate([p[3][g] for p in rows], axis=1) for g in range(len(rows[0][3]))]
        fit, mark_here = hull_misfit(base, groups, value, scale), marked
        if fit is None:  # no fit in float64 (a slope of 1e300): nothing is excused
            fit, mark_here = (np.ones(value.shape, bool), np.zeros(value.shape, bool)), unverified
        misfit, unsure = fit
        start = 0
        for b, r, *_ in rows:
            status = b.status_map[src]
            bad = misfit[start : start + r.size] & np.isin(status[r], judged)
            doubt = unsure[start : start + r.size] & np.isin(status[r], judged)
            status[r[doubt]] = unverified
            status[r[bad]] = mark_here
            if mark_here == STATUSES.index("fail"):
                b.off_hull[src] = b.off_hull.get(src, 0) + int(bad.sum())
            start += r.size
            if bad.any() or doubt.any():
                summarize(b, tolerance(b))


def masked_claims(
    blocks: list[Block], masks: dict[str, np.ndarray], tolerance: Callable[[Block], Tolerance]
) -> None:
    """A gradient mask's hook zeroes its entries exactly (g * 0, or its Jacobian's columns): a
    claimed value there other than 0 means the mask was not applied, however small it is (the
    tolerance passed a claim that ignored the mask wherever the masked gradients were below
    atol: a frozen weight on an input feature of 3e-12). nan is left to the comparison: a hook
    gives nan where the gradient it masks is infinite (0 * inf)."""
    fail = STATUSES.index("fail")
    for b in blocks:
        status = b.status_map.get("claimed")
        mask = masks.get(b.input)
        if b.quantity not in ("vjp", "jacobian") or status is None or mask is None:
            continue
        masked = np.broadcast_to(np.asarray(mask) == 0, b.shape).reshape(-1)  # (Jacobian: columns)
        claimed = np.asarray(b.sources["claimed"].values, np.float64).reshape(-1)
        bad = masked & (claimed != 0) & ~np.isnan(claimed)
        if bad.any():
            status.reshape(-1)[bad] = fail
            b.masked_nonzero["claimed"] = int(bad.sum())
            summarize(b, tolerance(b))


def uncoupled_claims(
    blocks: list[Block], intervals: dict[Key, Interval], tolerance: Callable[[Block], Tolerance]
) -> None:
    """Where the one-sided derivatives do not span the generalized gradient (the ball of a
    norm at zero or of a std of equal entries), the range per entry is a box around a set it
    cannot test: [1, 1] is in the box of norm's unit ball and not in the ball. There a claimed
    value that is not the engine's own convention is unverified, never a convention difference."""
    convention, unverified = STATUSES.index("convention"), STATUSES.index("unverified")
    for b in blocks:
        interval = intervals.get((b.quantity, _key(b)))
        status = b.status_map.get("claimed")
        if interval is None or interval.hull or interval.base is None:  # unknown: unverified
            continue
        if status is None or "engine" not in b.sources:
            continue
        claimed = np.asarray(b.sources["claimed"].values, np.float64).reshape(-1)
        engine = np.asarray(b.sources["engine"].values, np.float64).reshape(-1)
        tol = tolerance(b)
        boxed = _boxed(interval, _scale(interval, tol))
        other = boxed & (status == convention) & ~close(claimed, engine, tol)
        if other.any():
            status[other] = unverified
            summarize(b, tol)


def kinked_hessians(
    blocks: list[Block],
    kinks: list[Kink],
    point: Point,
    operand_values: dict[int, list[Any]],
    tolerance: Callable[[Block], Tolerance],
) -> None:
    """Second derivatives at a kink: sympy's value there is its conventions multiplied through
    (Heaviside(0) = 1/2, sign(0) = 0), no reference (|x| * |x| is x^2, whose 2 sympy and an
    engine both gave as 0). JAX just off the kinks, on every combination of their sides, gives
    the one-sided Hessians: where they all agree, a value equal to them passes and another is
    unverified; where they differ (relu(x)^2 at 0: 0 and 2), every value is unverified. So are
    the Hessian entries of an input a kink depends on when the sides cannot all be found.
    Every combination, not one kink moved at a time as for first derivatives: two kinks'
    slopes multiply in a second derivative (min(x, 0)^2 + max(x, 0)^2 is x^2, whose 2 only
    shows with both kinks moved)."""
    hessians = [b for b in blocks if b.quantity == "hessian"]
    if not kinks or not hessians:
        return
    found = [sides(k, operand_values[k.node.id], spread=True) for k in kinks]
    groups = [(k, g) for k, s in zip(kinks, found) if s is not None for g in s.groups]
    runs = math.prod(len(alts) for _, alts in groups)
    hessian = None
    if all(s is not None and s.complete for s in found) and runs <= MAX_SIDE_RUNS:
        # (the first choice is every group on its first side)
        every = itertools.product(*(range(len(alts)) for _, alts in groups))
        choices = [{g: j for g, j in enumerate(picks) if j} for picks in every]

        def on_sides_at(scale: float) -> np.ndarray:
            out = []
            for choice in choices:
                deadline.checkpoint()
                out.append(jax_backend.shifted_hessian(point, _shifts(groups, choice, scale)))
            return np.stack(out)

        hessian = on_sides_at(1.0)
        closer: list[np.ndarray] = []  # at half and a quarter of the step, once some side differs
        # where the gradient itself jumps at the kink (abs(x): -1 and 1), no second derivative
        # exists: the one-sided Hessians (0 and 0) passed abs(x) + relu(x)^3's 0
        plain = dataclasses.replace(point, checks=("jacobian",), masks={})
        jumps = _gradient_jumps(
            lambda scale: np.stack([_gradient(plain, _shifts(groups, c, scale)) for c in choices]),
            tolerance(hessians[0]),  # (the precision's tolerance: the gradients' is no other)
        )
    offsets = dict(zip(point.wrt, np.cumsum([0] + [int(np.size(point.values[n])) for n in point.wrt])))
    moving = _inputs_of(point.program, kinks)
    pass_, unverified = STATUSES.index("pass"), STATUSES.index("unverified")
    for b in hessians:
        a, c = b.input.split(",")
        if not moving & {a, c}:
            continue
        agreed = None
        if hessian is not None:
            rows = slice(offsets[a], offsets[a] + int(np.size(point.values[a])))
            cols = slice(offsets[c], offsets[c] + int(np.size(point.values[c])))
            on_sides = hessian[:, rows, cols].reshape(len(hessian), -1)
            tol = tolerance(b)
            agreed = on_sides[0]
            same = np.all(close(on_sides, agreed, tol), axis=0) & np.isfinite(agreed)
            values = [np.asarray(b.sources[src].values, np.float64).reshape(-1) for src in b.status_map]
            if not all((same & close(v, agreed, tol)).all() for v in values):
                # sides measured one step off the kink are off by what the step itself makes
                # (relu(x)^3 at 0: 6 * step and 0; abs(x)^3: 6 * step on both): their limits
                # at the kink may still agree, on the value given
                closer = closer or [on_sides_at(0.5), on_sides_at(0.25)]
                half, quarter = (h[:, rows, cols].reshape(len(h), -1) for h in closer)
                limit, settled = _hessian_limit(on_sides, half, quarter, tol)
                agreed = np.where(settled, limit, agreed)
                same |= settled
            same &= ~(jumps[rows][:, None] | jumps[cols][None, :]).reshape(-1)
        sided = np.zeros(int(np.prod(b.shape)), bool)
        for src, status in b.status_map.items():
            if agreed is None:
                status[:] = unverified
                sided[:] = True
                continue
            value = np.asarray(b.sources[src].values, np.float64).reshape(-1)
            like = same & close(value, agreed, tol)
            # where the sides agree with sympy's value at the point too, no kink is felt: the
            # comparison with sympy stands (a wrong entry far from the kink fails)
            felt = ~(same & close(b.reference.reshape(-1), agreed, tol))
            status[like] = pass_
            status[~like & felt] = unverified
            sided |= ~like & felt
        b.sided = int(sided.sum())
        summarize(b, tolerance(b))


def _gradient(point: Point, shifts: dict[int, dict[int, np.ndarray]]) -> np.ndarray:
    """The Jacobian of every output over every differentiated entry (m x n), shifted."""
    deadline.checkpoint()
    d = jax_backend.shifted_derivatives(point, shifts)
    n = point.wrt
    return np.vstack(
        [
            np.hstack(
                [
                    np.asarray(d.jacobian[(o, x)].values, np.float64).reshape(int(np.prod(shape)), -1)
                    for x in n
                ]
            )
            for o, shape in point.output_shapes()
        ]
    )


def _gradient_jumps(on_sides: Callable[[float], np.ndarray], tol: Tolerance) -> np.ndarray:
    """Per differentiated entry, whether the first derivatives on the kinks' sides (at a
    scale of the step) differ, by as much at half the step (a gradient continuous across the
    kink differs by the step's own amount, halving with it: relu(x)^2)."""
    full = on_sides(1.0)
    apart = ~np.all(close(full, full[0], tol), axis=0)
    if not apart.any():
        return apart.any(axis=0)
    half = on_sides(0.5)
    with np.errstate(invalid="ignore", over="ignore"):
        spread_full = np.nanmax(full, axis=0) - np.nanmin(full, axis=0)
        spread_half = np.nanmax(half, axis=0) - np.nanmin(half, axis=0)
        jump = apart & ~(spread_half < 0.75 * spread_full)
    return jump.any(axis=0)


def _hessian_limit(
    full: np.ndarray, half: np.ndarray, quarter: np.ndarray, tol: Tolerance
) -> tuple[np.ndarray, np.ndarray]:
    """Per entry, the one-sided Hessians' common limit at the kink (Richardson's, from the half
    and the quarter step), and where there is one: every side changes in proportion to the step
    and their limits agree. A side that changes otherwise (a jump, a curve) settles nothing."""
    with np.errstate(invalid="ignore", over="ignore"):
        first, second = full - half, half - quarter
        linear = np.all(np.abs(first - 2 * second) <= 0.1 * np.abs(first) + tol.atol, axis=0)
        limits = 2 * quarter - half
        limit = limits[0]
        agree = np.all(close(limits, limit, tol), axis=0) & np.isfinite(limit)
    return limit, linear & agree


def _inputs_of(program: Program, kinks: list[Kink]) -> set[str]:
    """The inputs the kinked nodes' values depend on."""
    depends: dict[int, set[str]] = {}
    for node in program.nodes:  # in order: operands come first
        found = {node.name} if node.op == "input" else set()
        for a in node.args:
            if isinstance(a, Ref):
                found |= depends[a.id]
        depends[node.id] = found
    return set().union(*(depends[k.node.id] for k in kinks))


def _scale(interval: Interval, tol: Tolerance) -> np.ndarray:
    """Per flat entry, the tolerance at the base derivatives."""
    return tol.atol + tol.rtol * np.abs(np.nan_to_num(interval.base, posinf=0.0, neginf=0.0))


def _range_scale(interval: Interval, tol: Tolerance) -> np.ndarray:
    """Per flat entry, the tolerance at the largest admissible value (as `within` allows): an
    entry whose base derivative is 0 has atol alone there, and a tie's sides thousands of times
    larger made the fit's system too wide to solve within a tolerance (a gradient counted
    twice at a tie passed)."""
    largest = np.max(
        np.abs(np.stack([interval.base, interval.low.reshape(-1), interval.high.reshape(-1)])), axis=0
    )
    return tol.atol + tol.rtol * np.nan_to_num(largest, posinf=0.0)


def _boxed(interval: Interval, scale: np.ndarray) -> np.ndarray:
    """Per flat entry, whether a kinked group whose sides do not span its part of the
    generalized gradient moves it (there only its range per entry is known)."""
    if interval.sides is None or interval.spans is None:
        return np.ones(interval.reached.size, bool)
    boxed = np.zeros(interval.reached.size, bool)
    for g, spans in zip(interval.sides, interval.spans):
        if not spans:
            with np.errstate(invalid="ignore"):
                boxed |= (np.abs(g) > scale).any(axis=0)
    return boxed


def hull_misfit(
    base: np.ndarray, groups: list[np.ndarray], value: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per entry, whether the value is off the admissible set (base + per group a convex
    combination of its rows), and whether that is unsure; None where the fit itself overflows
    float64. A fit passes only on proof: weights that sum to exactly 1 per group and land
    within twice the tolerance of every entry. Where the solver's own rounding could account
    for a miss (it solves the sums as heavily weighted equations, to about 1e-9 of the system's
    scale), the entry is unsure, never a pass: a slack of that size let a tie's gradient counted
    twice pass (max at a tie with gradient 1000: [0, 1000, 1000] for [0, 500, 500])."""
    from scipy.optimize import nnls

    usable = (
        np.isfinite(value)
        & np.isfinite(base)
        & np.all([np.isfinite(g).all(axis=0) for g in groups], axis=0)
    )
    misfit, unsure = np.zeros(value.shape, bool), np.zeros(value.shape, bool)
    if not usable.any():
        return misfit, unsure
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        columns = np.hstack([g[:, usable].T for g in groups]) / scale[usable, None]
        target = (value[usable] - base[usable]) / scale[usable]
        weight = 1e3 * max(
            1.0, float(np.abs(columns).max(initial=0.0)), float(np.abs(target).max(initial=0.0))
        )
    if not (np.isfinite(columns).all() and np.isfinite(target).all() and math.isfinite(weight)):
        return None
    sums = np.zeros((len(groups), columns.shape[1]))  # each group's weights sum to 1
    start = 0
    for k, g in enumerate(groups):
        sums[k, start : start + g.shape[0]] = weight
        start += g.shape[0]
    lam, _ = nnls(
        np.vstack([columns, sums]),
        np.concatenate([target, np.full(len(groups), weight)]),
        maxiter=50 * columns.shape[1],
    )
    # the proof: the weights made to sum to exactly 1 (equal weights for a group left at 0)
    start = 0
    for g in groups:
        part = lam[start : start + g.shape[0]]
        total = part.sum()
        part[:] = part / total if total > 0 else 1.0 / part.size
        start += g.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        miss = np.abs(columns @ lam - target)
        # float64's rounding of the product itself: its terms' size times a few ulps
        rounding = 1e-13 * (np.abs(columns) @ lam + np.abs(target))
    fits = miss <= 2.0 + rounding
    near = miss <= 2.0 + 1e-9 * (np.abs(target) + weight)
    misfit[usable] = ~near
    unsure[usable] = near & ~fits
    _unconserved(base, groups, value, scale, usable, misfit)
    return misfit, unsure


def _unconserved(
    base: np.ndarray,
    groups: list[np.ndarray],
    value: np.ndarray,
    scale: np.ndarray,
    usable: np.ndarray,
    misfit: np.ndarray,
) -> None:
    """Mark misfit the entries of a group whose sides all add up to the same total (a tie's
    shares: each side gives the whole gradient to one entry) where the value's shares do not:
    every weighting of such sides sums to that total, so the value's own sum is off by the same
    amount whichever admissible point is nearest. Entry by entry, each share may be off by twice
    the tolerance at the whole gradient, so the sum could drift by 2n of them (one share of ten
    1 % too large passed); the sum gets that tolerance once. Groups that share entries with
    another are left to the fit."""
    supports = [np.flatnonzero((g != 0).any(axis=0)) for g in groups]
    counted = np.bincount(np.concatenate(supports), minlength=value.size) if supports else None
    for g, support in zip(groups, supports):
        if support.size < 2 or not usable[support].all() or (counted[support] > 1).any():
            continue
        totals = g[:, support].sum(axis=1)
        if np.ptp(totals) > 1e-9 * np.abs(totals).max():  # sides of different sums: no tie
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            off = abs(float(np.sum(value[support] - base[support])) - float(totals.mean()))
            rounding = 1e-12 * float(np.sum(np.abs(value[support]) + np.abs(base[support])))
        if not off <= 2.0 * float(scale[support].max()) + rounding:
            misfit[support] = True


# ---------------------------------------------------------------- floating point


class FloatingPoint:
    """What the engine's precision itself does at this point, computed when a failing entry
    needs it: JAX op by op in the inputs' own dtypes, how far rounding moves its values (Monte
    Carlo arithmetic), and the exact formula computed in that precision (sympy at 53 or 24 bits).
    `rounded(bits)` gives that last one (None where sympy has no exact formula)."""

    def __init__(
        self,
        point: Point,
        derivs: dict[str, Derivatives],
        engine_values: dict[int, Any],
        rounded: Callable[[int], Derivatives | None],
    ) -> None:
        self.point, self.derivs, self._rounded_at = point, derivs, rounded
        self._rounded: dict[int, Derivatives | None] = {}
        self._non_finite = _overflowed(point.program, engine_values)
        self.overflowed = bool(self._non_finite)
        self._engine_values = engine_values
        self._native: Derivatives | None = None
        # by dtype and quantity (None: not measured within its share of the time left)
        self._spread: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.unmeasured = False  # a spread was not measured in time

    def ieee_non_finite(self, block: Block) -> bool:
        """Whether an overflowed value of the forward pass bears on this block (on the way from
        its inputs to its outputs, or read by a VJP on the way): IEEE arithmetic then gives
        non-finite derivatives (the chain rule's 0 * inf is nan, as in torch), whatever the
        exact value; JAX, which skips zero derivatives, can stay finite."""
        program = self.point.program
        out_ids, starts = _ends(program, block.output, block.input)
        return self.overflowed and _reaches(
            program, out_ids, starts, lambda n: n.id in self._non_finite, read_only=True
        )

    @functools.cached_property
    def _subnormal(self) -> set[int]:
        """The nodes whose forward values hold a subnormal (asked only for failing blocks)."""
        program = self.point.program
        return {
            i
            for i, v in self._engine_values.items()
            if isinstance(v, np.ndarray)
            and v.dtype.kind == "f"
            and (_has_subnormal(v) or _root_of_subnormal(program.node(i), v))
        }

    def flushed(self, block: Block) -> bool:
        """Whether a subnormal value of the forward pass bears on this block: JAX flushes
        subnormals to zero (its value in the same precision is then no IEEE computation: a claim
        of 0 for exp(-710) * 1e300 passed as a numerical note), and IEEE's gradual underflow
        keeps few bits (the engine's norm of [1e-162, 2e-162] is 0.6 % off, as torch's is)."""
        if not self._subnormal:
            return False
        program = self.point.program
        out_ids, starts = _ends(program, block.output, block.input)
        return _reaches(program, out_ids, starts, lambda n: n.id in self._subnormal)

    def same_precision(self, block: Block) -> np.ndarray | None:
        """JAX's values of the block computed op by op in the inputs' own dtypes (JAX's
        compiled reference would not do: XLA rewrites, e.g. log(exp(x)) into x)."""
        if self._native is None:
            self._native = jax_backend.derivatives(self.point, native=True)
        source = _lookup(self._native, block)
        return None if source is None else np.asarray(source.values, np.float64)

    def formula_error(self, block: Block, exact: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """How far the exact formula lands from the exact value when computed in the block's
        precision, per entry: the largest over that precision and one bit less, and over those
        and two bits less. One rounding of a saturated tanh, one ulp either way, can move
        1 - tanh^2 by its whole size: a single evaluation's luck is no measure; another
        implementation in the same precision (a tanh a few ulps off) can land further still, as
        the coarser measure does."""
        bits = int(np.finfo(block.dtype).nmant) + 1
        errors = []
        for b in (bits, bits - 1, bits - 2):
            if b not in self._rounded:
                self._rounded[b] = self._rounded_at(b)
            found = None if self._rounded[b] is None else _lookup(self._rounded[b], block)
            if found is None:
                return None
            with np.errstate(invalid="ignore", over="ignore"):
                error = np.abs(np.asarray(found.values, np.float64).reshape(exact.shape) - exact)
            errors.append(np.where(np.isnan(error), np.inf, error))
        near = np.maximum(errors[0], errors[1])
        return near, np.maximum(near, errors[2])

    def spread(self, block: Block) -> np.ndarray | None:
        """Per entry, how far rounding in this very computation moves JAX's value: a few runs
        of Monte Carlo arithmetic (every op's result rounded at random to within the block's
        precision, computing in float64) against the same computation without it."""
        key = (block.dtype, block.quantity)
        if key not in self._spread:
            eps = float(np.finfo(block.dtype).eps)
            point = self._asking(block.quantity)
            try:
                # (op by op, five times: 50 s for a wrong claim on 1,000 statements, and the
                # request ran out of time instead of getting its verdict)
                with deadline.within(SPREAD_SHARE * deadline.remaining()):
                    base = jax_backend.derivatives(point, apply=jax_backend.apply_op)
                    runs = []
                    for k in range(PROBES):
                        deadline.checkpoint()
                        runs.append(jax_backend.derivatives(point, apply=jax_backend.noisy(eps, k)))
                self._spread[key] = {"base": base, "runs": runs}
            except deadline.OutOfTime:
                if deadline.remaining() <= 0:  # the request's own time, not the share
                    raise
                self._spread[key] = None
                self.unmeasured = True
        got = self._spread[key]
        if got is None:
            return None
        base = _lookup(got["base"], block)
        if base is None:
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            diffs = [np.abs(np.asarray(_lookup(r, block).values) - base.values) for r in got["runs"]]
            return np.nan_to_num(np.max(diffs, axis=0), nan=np.inf)

    def _asking(self, quantity: str) -> Point:
        """The point asking only for `quantity` (the values come with any): a value block of a
        Jacobian request had the whole Jacobian computed op by op, five times over."""
        return dataclasses.replace(self.point, checks=() if quantity == "value" else (quantity,))


def undefined_nodes(program: Program, values: dict[int, Any]) -> list[Any]:
    """The forward pass's nodes whose value is nan from finite operands: where they are not
    defined (sqrt(-9), log(-1), 0 / 0)."""
    return [node for node in program.nodes if _nan_of_finite(node, values)]


def _nan_of_finite(node: Any, values: dict[int, Any]) -> bool:
    v = values.get(node.id)
    is_nan = isinstance(v, np.ndarray) and v.dtype.kind == "f" and bool(np.isnan(v).any())
    return is_nan and _finite_operands(node, values)


def _finite_operands(node: Any, values: dict[int, Any]) -> bool:
    operands = [np.asarray(values.get(a.id)) for a in node.args if isinstance(a, Ref)]
    return all(np.all(np.isfinite(o)) for o in operands if o.dtype.kind == "f")


def _overflowed(program: Program, values: dict[int, Any]) -> set[int]:
    """The forward pass's nodes with a value past the float range (exp(1000); 1 / (x * x - z)
    where the divisor rounds to 0), or non-finite from one: IEEE's 0 * inf is nan in the chain
    rule, where the exact function is finite. Not a nan of finite operands, nor what follows
    from one: sqrt(-9) has no derivative at all, and torch's 0 * nan through where(x > 5,
    sqrt(x - 10), x) at 1 is no rounding of the exact 1 (it passed as "overflow"). (A nan that
    rounding made, sqrt of a difference rounded below 0, is then a failure, not a note.)"""
    out: set[int] = set()
    for node in program.nodes:
        v = values.get(node.id)
        if not (isinstance(v, np.ndarray) and v.dtype.kind == "f") or np.all(np.isfinite(v)):
            continue
        from_overflow = any(isinstance(a, Ref) and a.id in out for a in node.args)
        if from_overflow or (np.isinf(v).any() and _finite_operands(node, values)):
            out.add(node.id)
    return out


def _nonzero_below(v: np.ndarray, bound: float) -> bool:
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(v)
        return bool(((magnitude > 0) & (magnitude < bound)).any())


def _has_subnormal(v: np.ndarray) -> bool:
    return _nonzero_below(v, float(np.finfo(v.dtype).tiny))


def _root_of_subnormal(node: Any, v: np.ndarray) -> bool:
    """Whether a p-norm or std is the root of a subnormal sum of powers (|x| under 1.5e-154 in
    float64 for p = 2): the node's value is normal, the sum it took the root of kept few bits."""
    if node.op not in ("norm", "std"):
        return False
    p = float(node.attr_dict.get("ord", 2.0)) if node.op == "norm" else 2.0
    return 1.0 < p < math.inf and _nonzero_below(v, float(np.finfo(v.dtype).tiny) ** (1 / p))


def _lookup(d: Derivatives, block: Block) -> SourceValues | None:
    if block.quantity == "value":
        v = d.values.get(block.output)
        return None if v is None else SourceValues(np.asarray(v, np.float64))
    return getattr(d, block.quantity).get(_key(block))


# Why a failing entry rounding may or may not explain is unverified (numerical_notes), as the
# summary says it.
DOUBTS = {
    "coarser": "further from the exact value than its formula computed in that precision, but "
    "within what a less accurate implementation might give",
    "zero_times_inf": "non-finite after an overflow where JAX's same computation gives 0 "
    "(IEEE's 0 * inf, or a wrong rule)",
    "no_formula": "where the exact formula itself overflows or underflows in that precision",
    "subnormal": "near a subnormal value (JAX flushes them to 0; IEEE keeps few bits)",
    "unmeasured": "off the reference values where the time budget left no time to measure how "
    "far rounding moves them (a larger budget settles it)",
}


def numerical_notes(
    blocks: list[Block],
    fp: FloatingPoint,
    tolerance: Callable[[Block], Tolerance],
    intervals: dict[Key, Interval],
) -> list[NumericalNote]:
    """Turn failing entries that floating point explains into numerical notes (see the module's
    docstring); the others stay failures. Entries a kink moves are judged by its one-sided
    derivatives alone (near a kink rounding jumps across it: no measure of noise there). Where
    rounding noise would be more than NOISE_LIMIT of the value, nothing can be verified: the entry
    is unverified rather than a note."""
    fail, numerical = STATUSES.index("fail"), STATUSES.index("numerical")
    unverified = STATUSES.index("unverified")
    notes: list[NumericalNote] = []
    for block in blocks:
        interval = intervals.get((block.quantity, _key(block)))
        kinked = np.zeros(block.shape, bool) if interval is None else interval.reached
        if not any(
            ((s.reshape(block.shape) == fail) & ~kinked).any() for s in block.status_map.values()
        ):
            continue
        same = fp.same_precision(block)
        if same is None:
            continue
        tol = tolerance(block)
        exact = block.reference.reshape(same.shape)
        spread = fp.spread(block)
        unmeasured = spread is None and fp.unmeasured  # (nothing says how noisy it is)
        spread = np.zeros(exact.shape) if spread is None else spread.reshape(exact.shape)
        found = fp.formula_error(block, exact)
        near, formula = (np.zeros(exact.shape),) * 2 if found is None else found
        info = np.finfo(block.dtype)
        # past the range of the block's own values (a float64 gradient that float32 rounding
        # reaches holds up to 1.8e308: its inf for an exact 2e156 was excused as "overflow in
        # float32"); an overflow on the way in float32 is the same computation's (ieee, below)
        largest = np.finfo(
            np.float32 if _cast_to_float32(block.output, block.input, fp.point) else np.float64
        ).max
        ieee = fp.ieee_non_finite(block)  # an overflowed value bears on this block
        flushed = fp.flushed(block)  # and a subnormal one
        margin = tol.atol + tol.rtol * np.abs(np.nan_to_num(exact))
        with np.errstate(invalid="ignore", over="ignore"):
            ill = (spread > margin) | (formula > margin)
            huge = np.abs(exact) > largest
            tiny = (exact != 0) & (np.abs(exact) < info.tiny * 2**16)
        engine = block.sources.get("engine")
        engine_value = None if engine is None else np.asarray(engine.values, np.float64)
        # (for the summary's reasons)
        made_noisy = np.zeros(same.shape, bool)
        made_doubtful = {why: np.zeros(same.shape, bool) for why in DOUBTS}
        for src, status in block.status_map.items():
            value = np.asarray(block.sources[src].values, np.float64)
            failing = (status.reshape(same.shape) == fail) & ~kinked
            # an overflow that bears on the block is known per block, not per entry: it excuses
            # the engine's non-finite values (IEEE's 0 * inf, as torch gives), and another
            # source's only where the engine's IEEE computation is non-finite too (a claimed
            # nan next to a finite engine value is not IEEE's answer)
            ieee_here = ieee
            if src != "engine" and engine_value is not None:
                ieee_here = ieee & ~np.isfinite(engine_value.reshape(same.shape))
            with np.errstate(invalid="ignore", over="ignore"):
                inexact = ~np.isfinite(value) | ~np.isfinite(same)
                # the exact value past the dtype's range (sympy's float of it is then infinite)
                beyond = huge | np.isinf(exact)
                overflow = (inexact & np.isfinite(exact)) | beyond | (fp.overflowed & inexact)
                # or the same computation in the same precision itself misses the exact value
                # by half the tolerance or more: another implementation's rounding may miss it
                # by all of it (float32 attention: the engine 4e-9 from JAX's float32 value,
                # both 1.4e-6 off the exact one, tolerance 1e-6, the spread 9e-7: FAIL)
                # (or its rounding noise is half the tolerance: the engine 1.0e-6 off, JAX's
                # float32 value 4e-7, the spread 5e-7)
                departs = np.isfinite(same) & (np.abs(same - exact) > margin / 2) | (spread > margin / 2)
                evidence = overflow | tiny | ill | departs
            # the same computation in the same precision, equal up to twice its rounding noise
            # (Monte Carlo arithmetic's spread); or no further from the exact value than twice
            # the exact formula computed there. Ten times each let a claim 9 % off pass where the
            # spread was near 1 % of the value. Within twice the coarser measure only, it may be
            # rounding or a wrong value: unverified (a float32 claim 1 % off for d/dx tanh at 6,
            # where the formula in float32 is 0.08 % off, was a numerical note).
            with np.errstate(invalid="ignore", over="ignore"):
                # (an exact value past the range has no formula error to compare with)
                off = np.abs(value - exact)
                # (nor does a formula that is not finite there: its error, counted as infinite,
                # excused any value, a claim of 0 for 1 beside an overflow)
                like_formula = ~beyond & np.isfinite(near) & (off <= 2 * near + margin)
                like_coarser = ~beyond & np.isfinite(formula) & (off <= 2 * formula + margin)
                # past the range, IEEE's answer is the exact value's own infinity; where an
                # overflowed value bears on the block, any non-finite value (0 * inf is nan). A
                # claim's must be the engine's: -inf or nan for exp(710) is no overflow of e^710.
                # Per entry: the same computation in JAX is non-finite there too (an overflow in
                # one entry excused a wrong rule's nan in another), and an infinity keeps its
                # sign (a sign-flipped rule's -inf passed for e^710). Where JAX gives 0 (it skips
                # a zero derivative IEEE may multiply by inf, or the rule is wrong) nothing tells
                # them apart: unverified.
                non_finite = fp.overflowed & ieee_here & ~np.isfinite(value)
                signed = np.isnan(value) | np.isnan(same) | (value == same)
                ieee_answer = (beyond & (value == np.copysign(np.inf, exact))) | (
                    non_finite & ~np.isfinite(same) & signed
                )
                zero_times_inf = non_finite & (same == 0)
                if src != "engine" and engine_value is not None:
                    engine_here = engine_value.reshape(same.shape)
                    ieee_answer &= (value == engine_here) | (np.isnan(value) & np.isnan(engine_here))
            # (equal to JAX's nan or inf is no excuse but after an overflow: ieee_answer)
            like_same = close(value, same, tol, 2 * spread) & np.isfinite(value)
            excuse = failing & evidence & (like_same | like_formula | ieee_answer)
            noise = np.maximum(spread, np.where(np.isfinite(formula), formula, 0.0))
            with np.errstate(invalid="ignore", over="ignore"):
                limit = NOISE_LIMIT[block.dtype] * np.abs(exact)
                noisy = excuse & (ill | departs) & ~overflow & (noise > limit)
            # the engine's value where the exact formula itself cannot be computed in this
            # precision, its forward pass finite (the backward overflows or underflows: 1 /
            # sigmoid(-90) in float32 is inf, as torch's gradient of log(sigmoid(x)) is, and log
            # of sigmoid(-740)'s subnormal is 0.003 off): IEEE's answer and a wrong rule's look
            # alike (JAX flushes subnormals): unverified
            engine_alone = src == "engine" and not fp.overflowed
            no_formula = engine_alone & ~np.isfinite(near) & np.isfinite(exact)
            doubts = {
                "coarser": like_coarser,
                "zero_times_inf": zero_times_inf,
                "no_formula": no_formula,
                "subnormal": np.zeros(same.shape, bool),
            }
            doubts = {why: failing & evidence & m & ~excuse for why, m in doubts.items()}
            if unmeasured:  # a failure, a note, or noise past any verdict: not known
                doubts["unmeasured"] = failing
                excuse &= ~failing
            if flushed:  # JAX's values are no IEEE computation, IEEE's own keep few bits: a
                # value like JAX's, or like the engine's (torch's), may be either's rounding
                like_engine = src == "engine" or (
                    engine_value is not None and close(value, engine_value.reshape(same.shape), tol)
                )
                doubts["subnormal"] = failing & (excuse | like_engine)
                excuse &= ~doubts["subnormal"]
            doubt = np.logical_or.reduce(list(doubts.values()))
            status.reshape(same.shape)[noisy | doubt] = unverified
            made_noisy |= noisy
            for why, m in doubts.items():
                made_doubtful[why] |= m & ~noisy
            excuse &= ~noisy
            if not excuse.any():
                continue
            status.reshape(same.shape)[excuse] = numerical
            for flat in np.flatnonzero(excuse)[: max(0, MAX_NOTES - len(notes))]:
                idx = np.unravel_index(flat, same.shape)
                # (an overflow on the way that bears on the block: norm([1e200, 1e200])'s
                # gradient 0 was put down to "ill-conditioning")
                why = (
                    "overflow"
                    if overflow[idx] or ieee
                    else "underflow"
                    if tiny[idx]
                    else "ill-conditioning"
                )
                scale = max(abs(float(np.nan_to_num(exact[idx]))), info.tiny)
                condition = float(noise[idx]) / (float(info.eps) * scale)
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
        block.noisy += int(made_noisy.sum())
        counted = made_noisy.copy()  # each entry under its first reason
        for why, m in made_doubtful.items():
            block.doubtful[why] = block.doubtful.get(why, 0) + int((m & ~counted).sum())
            counted |= m
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


def unverified_entries(block: Block) -> int:
    """Entries unverified for any source (an entry the engine and a claim share counts once:
    "2 entries" were one)."""
    code = STATUSES.index("unverified")
    maps = [m.reshape(-1) == code for m in block.status_map.values()]
    if maps:
        return int(np.logical_or.reduce(maps).sum())
    return max((c.get("unverified", 0) for c in block.counts.values()), default=0)


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
        count = sum(unverified_entries(b) for b in blocks)
        reasons = (
            (
                sum(b.unsettled for b in blocks),
                "where JAX is unconfirmed (finite differences disagree, or its inf or nan stands alone)",
            ),
            (sum(b.judged_by.get("none", 0) for b in blocks), "that no reference checked"),
            (
                sum(b.undefined for b in blocks),
                "where the reference value is nan (not defined there, or IEEE's 0 * inf on the way), "
                "or nan where the function's value is (log(-1))",
            ),
            (
                sum(b.isolated for b in blocks),
                "where the derivative at the point differs from the one on every side (a value "
                "of the point's alone: a where condition like x == 0, sign, floor)",
            ),
            (
                sum(b.jumped for b in blocks),
                "at a kink where the value jumps, other than the derivative at the point (a "
                "where branch's): no derivative of a jump, or a tie taken the other way",
            ),
            (
                sum(b.sided for b in blocks),
                "second derivatives at a kink that JAX just off it, on every side, does not "
                "settle: the gradient jumps there (abs(x) at 0: no second derivative), the "
                "one-sided Hessians differ (as relu(x)^2's at 0: 0 and 2), could not all be "
                "found, or agree but not with the value given",
            ),
            (
                sum(b.unsure for b in blocks),
                "at kinks whose admissible derivatives are not known exactly: kinks the same "
                "inputs move together, nested kinks, kinks whose choices multiply, too many of "
                "them, or sides that could not be stepped to",
            ),
            (
                sum(b.small for b in blocks),
                "that pass only by the absolute tolerance, in a block of values that small "
                "(further from the reference values, exact or JAX's, than rounding explains, "
                "or from exact ones by half their size, where rounding leaves even their sign "
                "in doubt; an atol below the values judges them by an absolute error)",
            ),
            (
                sum(b.blind for b in blocks),
                "that pass by the atol given, which admits 0 for every entry of their block "
                "(its values are smaller than atol): it cannot tell them from 0 or their "
                "negation; give an atol below the values",
            ),
            (
                sum(b.flushed for b in blocks),
                "judged by JAX alone in a block of values about as small as subnormal ones, "
                "where one bears on them (JAX flushes subnormals to 0: its values say nothing "
                "there)",
            ),
            (
                sum(b.float32_reached for b in blocks),
                "of float64 values that float32 rounding reaches (a float32 input or cast on "
                "the way), within float32's tolerance but further from the exact value than "
                "float64's and ten times what that rounding moves them",
            ),
            (
                sum(b.noisy for b in blocks),
                "whose rounding noise in their precision is larger than the values allow "
                "(past a thousandth of them in float64, a hundredth in float32): nothing there "
                "can tell a right value from a wrong one",
            ),
            *((sum(b.doubtful.get(why, 0) for b in blocks), text) for why, text in DOUBTS.items()),
            (
                sum(b.loose for b in blocks),
                "that only finite differences checked (neither sympy nor JAX), agreeing with "
                "them: they can agree with a wrong value (a step that aliases the function, a "
                "kink within it)",
            ),
        )
        why = [f"{n} {text}" for n, text in reasons if n]
        # (what the counts above leave: kink verdicts made by fitting the sides' hull)
        why = why or [
            "at kinks whose admissible derivatives the one-sided ones do not pin down (the "
            "ball of a norm at 0 or of a std of equal entries; a combination of sides no fit "
            "settles)"
        ]
        return f"{count} {'entry' if count == 1 else 'entries'} could not be verified ({'; '.join(why)})"
    calm = not any(b.references_disagree for b in blocks)
    return {
        Verdict.PASS: "every source agrees within the tolerance"
        if calm
        else "the engine agrees with the exact reference (a witness disagrees in places: see notes)",
        Verdict.PASS_WITH_NUMERICAL_NOTES: "equal to the exact values except where floating point "
        "itself departs from them (numerical notes)",
        Verdict.PASS_WITH_CONVENTION_DIFFERENCES: "differences only at non-differentiable points, "
        "within the one-sided derivatives there",
        Verdict.ERROR: "error",
    }[verdict]
