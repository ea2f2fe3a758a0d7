"""Request validation at the core's boundary: every field typed and checked, limits enforced, the
program parsed and the cost of the check estimated, before any stage runs. A RequestError names
the field (and line and column); a LimitError (a RequestError too) is a request over a limit."""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from typing import Any

import numpy as np

from .backends import (
    BATCH_ELEMENTS,
    JIT_MAX_NODES,
    SYMPY_SAMPLED_MAX_SCALAR_OPS,
    batch_size,
    estimate_scalar_ops,
    intermediate_sizes,
    node_elements,
    operation_count,
    per_program,
)
from .backends.finite_diff import ENGINE_ENTRIES as FD_ENGINE_ENTRIES
from .backends.finite_diff import STEPS as FD_STEPS
from .compare import SourceValues
from .derivatives import Derivatives
from .ir import Program, Ref
from .language import MAX_NAME_CHARS, InputDecl, LimitError, RequestError, parse
from .limits import DEFAULT_LIMITS, Limits
from .model import Budget, CheckRequest

QUANTITIES = ("vjp", "jacobian", "hessian")
REFERENCES = ("sympy", "jax", "fd")


MAX_RTOL = 0.5  # a relative tolerance past it lets a value pass that is off by as much as it


def _array(
    value: Any, dtype: Any, what: str, field: str, finite: bool = True, booleans: bool = False
) -> np.ndarray:
    """value as an array of dtype, or a RequestError saying why it is not one (complex numbers,
    text and, but for masks, booleans are refused, not coerced)."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. ragged nested lists
        raise RequestError(f"{what} is not a numeric array: {exc}", field=field) from None
    if raw.dtype.kind == "c" or (
        raw.dtype.kind == "O" and any(isinstance(v, complex) for v in _flat_objects(value))
    ):
        raise RequestError(f"{what} has complex values: only real numbers are accepted", field=field)
    if raw.dtype.kind in "USV":
        raise RequestError(f"{what} is not a numeric array (it holds text)", field=field)
    if raw.dtype.kind == "b" and not booleans:  # (True as a cotangent of 1, say, is a slip)
        raise RequestError(f"{what} holds booleans: give numbers", field=field)
    try:
        with np.errstate(over="ignore"):  # a value too large for the dtype: said below
            arr = raw.astype(dtype, copy=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(f"{what} is not a numeric array: {exc}", field=field) from None
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        with np.errstate(all="ignore"):
            given_finite = np.all(np.isfinite(np.asarray(raw, np.float64)))
        if given_finite:  # finite as sent, too large for the dtype (1e300 as float32)
            raise RequestError(
                f"{what} has values too large for {arr.dtype} (its largest is "
                f"{np.finfo(arr.dtype).max:.4g})",
                field=field,
            )
        raise RequestError(f"{what} has NaN or infinite values", field=field)
    return arr


def _flat_objects(value: Any, limit: int = 100_000) -> list[Any]:
    """The leaves of nested lists (for the error message only), at most `limit` of them."""
    out, stack = [], [value]
    while stack and len(out) < limit:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        else:
            out.append(v)
    return out


def _number(value: Any, what: str, field: str, low: float = 0.0, high: float = np.inf) -> None:
    if not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and np.isfinite(value)
        and low <= value <= high
    ):
        within = (
            ""
            if low == -np.inf and high == np.inf
            else f" >= {low:g}"
            if high == np.inf
            else f" from {low:g} to {high:g}"
        )
        raise RequestError(f"{what} must be a finite number{within}, got {value!r}", field=field)


def _integer(value: Any, what: str, field: str, low: int = 0, high: int = 2**63 - 1) -> None:
    if not (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and low <= value <= high
    ):
        raise RequestError(f"{what} must be an integer from {low} to {high}, got {value!r}", field=field)


def _capped(value: Any, cap: float, what: str, field: str) -> None:
    """A well-formed value past the server's cap is a LimitError (the cap is a limit)."""
    if value > cap:
        raise LimitError(f"{what} is {value!r}; this server's limit is {cap:g}", field=field)


def _validate_budget(budget: Budget, limits: Limits) -> None:
    if not isinstance(budget, Budget):
        raise RequestError(f"budget must be a Budget, got {type(budget).__name__}", field="budget")
    _number(budget.seconds, "budget.seconds", "budget.seconds", low=-np.inf)
    if budget.seconds <= 0:
        raise RequestError(
            f"budget.seconds must be more than 0, got {budget.seconds!r}", field="budget.seconds"
        )
    _capped(budget.seconds, limits.max_budget_seconds, "budget.seconds", "budget.seconds")
    _number(budget.sympy_seconds, "budget.sympy_seconds", "budget.sympy_seconds")
    _capped(
        budget.sympy_seconds, limits.max_budget_seconds, "budget.sympy_seconds", "budget.sympy_seconds"
    )
    for f in dataclasses.fields(budget):
        if f.name in ("seconds", "sympy_seconds"):
            continue
        value = getattr(budget, f.name)
        # finite differences over no entry at all are no check (they raised inside it)
        low = 1 if f.name == "fd_sample_entries" else 0
        _integer(value, f"budget.{f.name}", f"budget.{f.name}", low=low)
        cap = (
            limits.max_sympy_scalar_ops
            if f.name == "sympy_max_scalar_ops"
            else limits.max_budget_entries
        )
        _capped(value, cap, f"budget.{f.name}", f"budget.{f.name}")


def _validate_samples(request: CheckRequest, limits: Limits) -> None:
    samples = request.samples
    if samples is None:
        return
    _integer(samples.count, "samples.count", "samples.count")
    _capped(samples.count, limits.max_sample_points, "samples.count", "samples.count")
    _integer(samples.seed, "samples.seed", "samples.seed")
    _number(samples.scale, "samples.scale", "samples.scale")
    for name, bound in (("samples.low", samples.low), ("samples.high", samples.high)):
        _number(bound, name, name, low=-np.inf)
    if samples.distribution not in ("normal", "uniform"):
        raise RequestError(
            f"samples.distribution is 'normal' or 'uniform', not {samples.distribution!r}",
            field="samples.distribution",
        )
    if samples.low > samples.high:
        raise RequestError(
            f"samples: low {samples.low:g} is above high {samples.high:g}", field="samples.low"
        )
    if samples.count == 0:
        return
    # Draws must be representable in each differentiated input's dtype: numpy would otherwise
    # give inf (float32) or refuse (a uniform range wider than float64 holds).
    for spec in request.inputs:
        if spec.dtype not in ("float32", "float64") or not spec.requires_grad:
            continue
        largest = float(np.finfo(spec.dtype).max)
        if samples.distribution == "uniform":
            if max(abs(samples.low), abs(samples.high)) > largest or not math.isfinite(
                samples.high - samples.low
            ):
                raise RequestError(
                    f"samples: uniform draws in [{samples.low:g}, {samples.high:g}] overflow "
                    f"{spec.dtype} (input {spec.name!r}; its largest value is {largest:.4g})",
                    field="samples.low" if abs(samples.low) >= abs(samples.high) else "samples.high",
                )
        elif samples.scale * _NORMAL_TAIL > largest:
            raise RequestError(
                f"samples: normal draws with scale {samples.scale:g} overflow {spec.dtype} "
                f"(input {spec.name!r}; its largest value is {largest:.4g}; the scale may be at "
                f"most {largest / _NORMAL_TAIL:.4g})",
                field="samples.scale",
            )


_NORMAL_TAIL = 16.0  # standard deviations: no draw of 64 points x 4e6 entries goes beyond ~7


def _validate_claims(request: CheckRequest) -> None:
    """Claimed derivatives are compared only in the checks that compute them, and only for
    inputs that are differentiated: a claim that would be ignored is an error."""
    for field_name, quantity in (("claimed_vjp", "vjp"), ("claimed_jacobian", "jacobian")):
        if getattr(request, field_name) and quantity not in request.checks:
            raise RequestError(
                f"{field_name} is given but {quantity!r} is not among the checks {list(request.checks)}",
                field=field_name,
            )
    if not isinstance(request.claimed_vjp, dict) or not all(
        isinstance(k, str) for k in request.claimed_vjp
    ):
        raise RequestError("claimed_vjp maps input names to gradients", field="claimed_vjp")
    if not isinstance(request.claimed_jacobian, dict) or not all(
        isinstance(k, tuple) and len(k) == 2 and all(isinstance(n, str) for n in k)
        for k in request.claimed_jacobian
    ):
        raise RequestError(
            "claimed_jacobian maps (output, input) name pairs to Jacobians", field="claimed_jacobian"
        )
    specs = {s.name: s for s in request.inputs}
    frozen = {n for n, s in specs.items() if not s.requires_grad}
    integer = {n for n, s in specs.items() if s.dtype == "int64"} - frozen
    asked = set(request.claimed_vjp) | {name for _, name in request.claimed_jacobian}
    if asked & frozen:
        raise RequestError(
            f"claimed derivatives for {sorted(asked & frozen)}, which do not require grad",
            field=_claim_field(request, min(asked & frozen)),
        )
    if asked & integer:
        raise RequestError(
            f"claimed derivatives for {sorted(asked & integer)}, which are int64 inputs (not "
            "differentiated)",
            field=_claim_field(request, min(asked & integer)),
        )


def _claim_field(request: CheckRequest, name: str) -> str:
    """The request field of a claim for input `name` (as the gRPC request names it)."""
    if name in request.claimed_vjp:
        return f"claimed_vjp[{name}]"
    output = next(o for o, n in request.claimed_jacobian if n == name)
    return f"claimed_jacobian[{output}/{name}]"


def _validate_name(name: Any, seen: set[str], index: int) -> str:
    if not isinstance(name, str):
        raise RequestError(f"an input's name must be a string, got {name!r}", field="inputs")
    if not name:  # (named by its place: "inputs[]" named nothing)
        raise RequestError(f"input {index} has no name", field=f"inputs[{index}]")
    if len(name) > MAX_NAME_CHARS:
        raise RequestError(
            f"input {index}'s name has {len(name)} characters; the limit is {MAX_NAME_CHARS}",
            field=f"inputs[{index}]",
        )
    field = f"inputs[{name}]"
    folded = unicodedata.normalize("NFKC", name)
    if folded != name:
        raise RequestError(
            f"input name {name!r} is not NFKC-normalised: Python reads it as {folded!r} in the "
            f"program, so the two would be one name; call the input {folded!r}",
            field=field,
        )
    if name in seen:
        raise RequestError(f"input {name!r} is given twice", field=field)
    seen.add(name)
    return field


def _validate(request: CheckRequest, limits: Limits) -> tuple[dict[str, np.ndarray], list[InputDecl]]:
    for name in ("checks", "references", "outputs"):
        value = getattr(request, name)
        if isinstance(value, str):
            raise RequestError(f"{name} is a list of names, not the string {value!r}", field=name)
    outputs = list(request.outputs or ())  # (None: the last variable assigned)
    twice = next((o for k, o in enumerate(outputs) if o in outputs[:k]), None)
    if twice is not None:  # its VJP was added twice, as torch adds [z, z]: a slip, surely
        raise RequestError(f"the output {twice!r} is named twice in outputs", field="outputs")
    if not request.references:
        raise RequestError(f"name at least one reference: {', '.join(REFERENCES)}", field="references")
    unknown = set(request.checks) - set(QUANTITIES)
    if unknown:
        raise RequestError(
            f"unknown check(s) {sorted(unknown)}; use {', '.join(QUANTITIES)}", field="checks"
        )
    unknown = set(request.references) - set(REFERENCES)
    if unknown:
        raise RequestError(
            f"unknown reference(s) {sorted(unknown)}; use {', '.join(REFERENCES)}", field="references"
        )
    # a relative tolerance of 1 passes a claimed 0, and of 2 a negated gradient
    for name, high in (("rtol", MAX_RTOL), ("atol", np.inf)):
        if getattr(request, name) is not None:
            _number(getattr(request, name), name, name, high=high)
    _integer(request.seed, "seed", "seed")
    _validate_budget(request.budget, limits)
    _validate_claims(request)
    _validate_samples(request, limits)
    values, decls, seen = {}, [], set()
    for k, spec in enumerate(request.inputs):
        field = _validate_name(spec.name, seen, k)
        try:
            size = np.size(spec.values)
        except ValueError as exc:  # ragged nested lists
            raise RequestError(f"input {spec.name!r} is not an array: {exc}", field=field) from None
        if size > limits.max_input_elements:
            raise LimitError(
                f"input {spec.name!r} has {size} elements; the limit is {limits.max_input_elements}",
                field=field,
            )
        if spec.dtype not in ("float64", "float32", "int64"):
            raise RequestError(
                f"input {spec.name!r}: dtype {spec.dtype!r}; use float64, float32 or int64", field=field
            )
        arr = _array(spec.values, spec.dtype, f"input {spec.name!r}", field)
        if arr.dtype.kind == "i":  # numpy would truncate 1.7 to 1 without a word
            exact = _array(spec.values, np.float64, f"input {spec.name!r}", field)
            if not np.array_equal(exact, arr):
                raise RequestError(
                    f"input {spec.name!r} is int64 but has non-integer values", field=field
                )
        if arr.size == 0:
            raise RequestError(f"input {spec.name!r} is empty", field=field)
        if spec.mask is not None:
            _validate_mask(spec, arr, field)
        values[spec.name] = arr
        decls.append(InputDecl(spec.name, arr.shape, spec.dtype))
    return values, decls


def _validate_mask(spec: Any, arr: np.ndarray, field: str) -> None:
    field = f"{field}.mask"
    if arr.dtype.kind != "f":
        raise RequestError(
            f"input {spec.name!r} is {spec.dtype}: it is not differentiated, so a gradient mask "
            "would be ignored",
            field=field,
        )
    if not spec.requires_grad:
        raise RequestError(
            f"input {spec.name!r} does not require grad: it has no gradient for a mask to act on",
            field=field,
        )
    mask = _array(spec.mask, np.float64, f"the mask of {spec.name!r}", field, booleans=True)
    if mask.shape != arr.shape:
        raise RequestError(
            f"the mask of {spec.name!r} has shape {mask.shape}; the input has shape {arr.shape}",
            field=field,
        )
    other = np.flatnonzero((mask != 0) & (mask != 1))
    if other.size:
        index = tuple(int(i) for i in np.unravel_index(other[0], mask.shape))
        raise RequestError(
            f"the mask of {spec.name!r} holds {float(mask[index]):g} at {list(index)}: a mask "
            "entry is 1 (keep the gradient) or 0 (freeze it)",
            field=field,
        )


def _check_sizes(
    request: CheckRequest,
    program: Program,
    values: dict[str, np.ndarray],
    wrt: list[str],
    limits: Limits,
) -> None:
    """What the parse cannot see: target values, and how big the derivatives would be."""
    for node in program.nodes:
        if node.op in ("nll_loss", "cross_entropy") and isinstance(node.args[1], Ref):
            target = program.node(node.args[1].id)
            classes = program.node(node.args[0].id).shape[-1]
            if target.op == "input" and not np.all(
                (values[target.name] >= 0) & (values[target.name] < classes)
            ):
                raise RequestError(
                    f"{node.op}: targets of {target.name!r} must be class indices 0 to {classes - 1}",
                    node.pos,
                    field=f"inputs[{target.name}]",
                )
    n_in = sum(values[n].size for n in wrt)
    n_out = sum(math.prod(program.node(i).shape) for _, i in program.outputs)
    if "jacobian" in request.checks and n_in * n_out > limits.max_jacobian_entries:
        raise LimitError(
            f"the Jacobian would have {n_in * n_out} entries; the limit is "
            f"{limits.max_jacobian_entries}",
            field="checks",
        )
    if "hessian" in request.checks:
        if len(program.outputs) != 1 or n_out != 1:
            raise RequestError("the Hessian needs a single scalar output", field="checks")
        if n_in * n_in > limits.max_hessian_entries:
            raise LimitError(
                f"the Hessian of {n_in} input entries would have {n_in * n_in} entries; the "
                f"limit is {limits.max_hessian_entries}",
                field="checks",
            )
        if n_in > request.budget.hessian_max_inputs:
            raise LimitError(
                f"the Hessian of {n_in} input entries is over the limit of "
                f"{request.budget.hessian_max_inputs} (budget.hessian_max_inputs)",
                field="checks",
            )


def _cotangents(request: CheckRequest, program: Program) -> list[np.ndarray]:
    if not isinstance(request.cotangents, dict):
        raise RequestError("cotangents map output names to arrays", field="cotangents")
    outputs = dict(program.outputs)
    for name in request.cotangents:
        if name not in outputs:
            raise RequestError(
                f"a cotangent is given for {name!r}, which is not an output (the outputs: "
                f"{', '.join(outputs)})",
                field=f"cotangents[{name}]",
            )
    cots = []
    for name, nid in program.outputs:
        node = program.node(nid)
        field = f"cotangents[{name}]"
        given = request.cotangents.get(name)
        if given is None:
            if math.prod(node.shape) != 1 and "vjp" in request.checks:
                raise RequestError(
                    f"output {name!r} has shape {node.shape}: give a cotangent (the "
                    "gradient flowing in from a later layer), as "
                    "backward(gradient=...) needs",
                    field=field,
                )
            given = np.ones(node.shape)
        arr = _array(given, np.float64, f"the cotangent of {name!r}", field)
        if arr.shape != node.shape:
            raise RequestError(
                f"the cotangent of {name!r} has shape {arr.shape}; the output has shape {node.shape}",
                field=field,
            )
        cots.append(arr)
    return cots


# ---------------------------------------------------------------- cost, before any work

# Element-operations charged per node, for what does not grow with its size (numpy calls and
# the engine's bookkeeping; JAX's dispatch). Measured on chains of sin(h) * 1.0001 over tiny
# arrays, at the ~2.5e8 element-operations per second of numpy on large ones:
ENGINE_NODE_COST = 2_000  # the engine's forward and backward pass: 8 us a node (4,000: 33 ms)
POINT_NODE_COST = 1_000  # the engine's forward pass at one perturbed point: 2.7 us a node
JAX_NODE_COST = 20_000  # JAX op by op (past JIT_MAX_NODES), a pass: 70 us a node (4,000: 0.8 s)
BLAME_NODE_COST = 250_000  # one node judged alone (engine and JAX VJPs of it): 0.5-1 ms
# A matmul's multiply-adds cost less than elementwise element-operations: tanh(A @ B) for A and B
# 1000x1000 (1e9 multiply-adds) ran forward and backward in 0.06-0.15 s, its 1,024 evaluations
# for finite differences in 45 s (2.3e10 a second against numpy's 1-4e8 elementwise).
MATMUL_OPS_PER_ELEMENT = 32
RESULT_COPIES = 24
"""Arrays of a derivative block's size alive at once: each source's values (engine, sympy,
JAX, finite differences, claims), sympy's and finite differences' checked masks and error
bounds, and the comparison's stacks of all of them and its per-entry working arrays."""
LIVE_INTERMEDIATES = 4
"""Copies of the program's intermediates alive at once: the engine's forward values and their
gradients in the backward pass, JAX's residuals and its cotangents."""
SYMPY_BYTES_PER_OP = 3_000  # measured: W 200x200 in sum(tanh(W @ x)), 8e4 scalar ops, 250 MB
SYMPY_SAMPLED_BYTES_PER_OP = 700  # measured: W 600x600 sampled, 7.2e5 scalar ops, 450 MB


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a check will do, estimated before it starts (validate.estimate_cost)."""

    work: int  # one forward and backward pass of the program, in element-operations
    total_work: int  # every evaluation of the check, over every point
    memory_bytes: int  # peak memory of the check
    points: int  # the given point and the extra sample points
    work_parts: dict[str, int]  # total_work by stage: engine, jax, fd, blame
    memory_parts: dict[str, int]  # memory_bytes by what holds it


@per_program
def _elements_work(program: Program) -> int:
    """One forward pass of the program, in element-operations."""
    return sum(_node_work(program, n) for n in program.nodes)


def _node_work(program: Program, node: Any) -> int:
    if node.op in ("input", "take"):
        return 0
    out = node_elements(node.shape)
    operands = [node_elements(program.node(a.id).shape) for a in node.args if isinstance(a, Ref)]
    if node.op in ("matmul", "dot"):  # BLAS: 2-3e10 multiply-adds a second (measured)
        left = program.node(node.args[0].id).shape
        return max([out * (left[-1] if left else 1) // MATMUL_OPS_PER_ELEMENT, out, *operands])
    return max([out, *operands])


def _fd_entries(n_in: int, budget: Budget) -> int:
    return n_in if n_in <= budget.fd_max_entries else min(budget.fd_sample_entries, n_in)


def _derivative_work(
    checks: tuple[str, ...], elements: int, node_cost: Any, sizes: tuple[int, int, int, int, int]
) -> int:
    """One source's values and derivatives at one point; node_cost(kind): per node per pass."""
    m, n_in, leaf, largest, nodes = sizes
    work = elements + nodes * node_cost("value")
    if "vjp" in checks:
        work += 2 * (elements + nodes * node_cost("vjp"))
    if n_in and "jacobian" in checks:
        rows = batch_size(max(largest, m, leaf), m)
        work += 2 * (m * elements + math.ceil(m / rows) * nodes * node_cost("jac_rows"))
    if n_in and "hessian" in checks:
        cols = batch_size(max(largest, n_in), n_in)
        work += 4 * (n_in * elements + math.ceil(n_in / cols) * nodes * node_cost("hvp_cols"))
    return work


def estimate_cost(request: CheckRequest, program: Program, wrt_sizes: dict[str, int]) -> Cost:
    """The work and memory of checking this request, as the stages will do it (with the
    backends' own batch sizes, backends.batch_size, and JAX's choice to compile or not)."""
    checks, refs, budget = request.checks, request.references, request.budget
    nodes = operation_count(program)
    elements = _elements_work(program)
    total_elems, largest = intermediate_sizes(program)
    n_in = sum(wrt_sizes.values())
    leaf = max(wrt_sizes.values(), default=0)
    m = sum(math.prod(program.node(i).shape) for _, i in program.outputs)
    points = 1 + (request.samples.count if request.samples is not None else 0)
    sizes = (m, n_in, leaf, largest, nodes)

    def jax_cost(kind: str) -> int:
        return 0 if nodes <= JIT_MAX_NODES[kind] else JAX_NODE_COST

    parts = {
        "engine": _derivative_work(checks, elements, lambda kind: ENGINE_NODE_COST, sizes),
        "jax": _derivative_work(checks, elements, jax_cost, sizes) if "jax" in refs else 0,
        "fd": 0,
        "blame": 3 * elements + nodes * BLAME_NODE_COST if request.blame else 0,
    }
    fd_evaluations = 0
    if "fd" in refs and wrt_sizes:
        k = _fd_entries(n_in, budget)
        if "vjp" in checks or "jacobian" in checks:
            fd_evaluations += len(FD_STEPS) * k
        if "hessian" in checks and n_in <= budget.hessian_max_inputs:
            # per column: two steps, each a difference of two evaluations at every step
            fd_evaluations += 2 * 2 * len(FD_STEPS) * n_in * n_in
        if k <= FD_ENGINE_ENTRIES:  # the engine, point by point
            calls, node_cost = fd_evaluations, POINT_NODE_COST
        else:  # JAX, on batches of points
            calls = math.ceil(fd_evaluations / batch_size(max(n_in, total_elems), fd_evaluations))
            node_cost = jax_cost("flat")
        parts["fd"] = fd_evaluations * elements + calls * nodes * node_cost
    parts = {k: v * points for k, v in parts.items()}

    memory = {
        "inputs": 3 * 8 * sum(math.prod(program.node(i).shape) for _, i in program.inputs),
        "intermediates": LIVE_INTERMEDIATES * 8 * total_elems,
    }
    if wrt_sizes and "vjp" in checks:
        memory["vjp"] = RESULT_COPIES * 8 * n_in
    if wrt_sizes and "jacobian" in checks:
        rows = batch_size(max(largest, m, leaf), m)
        memory["jacobian"] = RESULT_COPIES * 8 * m * n_in
        memory["jacobian batches"] = LIVE_INTERMEDIATES * 8 * rows * max(largest, m, leaf)
    if wrt_sizes and "hessian" in checks:
        cols = batch_size(max(largest, n_in), n_in)
        memory["hessian"] = RESULT_COPIES * 8 * n_in * n_in
        memory["hessian batches"] = LIVE_INTERMEDIATES * 8 * cols * max(largest, n_in)
    if fd_evaluations:
        k = _fd_entries(n_in, budget)
        per_call = batch_size(max(n_in, total_elems), fd_evaluations)
        columns = m * k
        if "jacobian" not in checks and m * k > BATCH_ELEMENTS:  # a VJP alone: vᵀf and |v|ᵀ|f|
            columns = 2 * k
        memory["finite differences"] = 8 * (
            2 * per_call * max(n_in, total_elems) + 3 * len(FD_STEPS) * columns
        )
        if "hessian" in checks and n_in <= budget.hessian_max_inputs:
            memory["finite differences"] += 8 * 8 * n_in * n_in
    if "sympy" in refs and wrt_sizes:
        ops = estimate_scalar_ops(program)
        if ops <= budget.sympy_max_scalar_ops:
            memory["sympy"] = SYMPY_BYTES_PER_OP * ops
        elif ops <= SYMPY_SAMPLED_MAX_SCALAR_OPS:  # beyond, sympy does not run
            memory["sympy"] = SYMPY_SAMPLED_BYTES_PER_OP * ops
    work = elements + nodes * ENGINE_NODE_COST
    return Cost(work, sum(parts.values()), sum(memory.values()), points, parts, memory)


_ADVICE = {
    "engine": "ask for fewer checks (jacobian, hessian) or smaller inputs",
    "jax": "ask for fewer checks (jacobian, hessian) or leave 'jax' out of references",
    "fd": (
        "ask finite differences for fewer entries (budget.fd_max_entries, "
        "budget.fd_sample_entries, budget.hessian_max_inputs) or leave 'fd' out of references"
    ),
    "blame": "turn blame off",
}
_FIELD = {"engine": "checks", "jax": "references", "fd": "references", "blame": "blame"}


def _check_cost(cost: Cost, limits: Limits) -> None:
    if cost.work > limits.max_work:
        raise LimitError(
            f"one evaluation of the program is about {cost.work:.3g} element-operations (its "
            f"nodes' sizes, plus {ENGINE_NODE_COST} a node); the limit is {limits.max_work:.3g}",
            field="program",
        )
    if cost.total_work > limits.max_total_work:
        top = max(cost.work_parts, key=cost.work_parts.__getitem__)
        parts = ", ".join(f"{k} {v:.2g}" for k, v in cost.work_parts.items() if v)
        points = f" over {cost.points} points" if cost.points > 1 else ""
        advice = _ADVICE[top] + (" or fewer sample points" if cost.points > 1 else "")
        raise LimitError(
            f"the check would take about {cost.total_work:.3g} element-operations ({parts}"
            f"{points}); the limit is {limits.max_total_work:.3g}: {advice}",
            field="samples" if cost.total_work // cost.points <= limits.max_total_work else _FIELD[top],
        )
    if cost.memory_bytes > limits.max_memory_bytes:
        parts = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in cost.memory_parts.items() if v)
        raise LimitError(
            f"the check would need about {cost.memory_bytes / 2**30:.3g} GiB of memory ({parts}); "
            f"the limit is {limits.max_memory_bytes / 2**30:.3g} GiB",
            field="memory",
        )


# ---------------------------------------------------------------- the prepared request


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A request validated and parsed: what every stage works from."""

    program: Program
    values: dict[str, np.ndarray]  # every input's value, as an array of its dtype
    wrt: list[str]  # the inputs differentiated (float, requires_grad)
    masks: dict[str, np.ndarray]  # gradient masks of differentiated inputs
    cotangents: list[np.ndarray]  # one per output
    claimed: Derivatives | None = None  # the claimed derivatives, when the request makes claims
    cost: Cost | None = None  # what the check is estimated to take


def prepare(request: CheckRequest, limits: Limits = DEFAULT_LIMITS) -> Prepared:
    """Validate the request, parse its program and estimate the check's cost (RequestError names
    what is wrong; LimitError what is over a limit)."""
    values, decls = _validate(request, limits)
    program = parse(request.program, decls, request.outputs, limits)
    cotangents = _cotangents(request, program)
    specs = {s.name: s for s in request.inputs}
    wrt = [n for n in program.input_names if specs[n].requires_grad and values[n].dtype.kind == "f"]
    masks = {n: np.asarray(specs[n].mask, dtype=np.float64) for n in wrt if specs[n].mask is not None}
    _check_sizes(request, program, values, wrt, limits)
    claimed = None
    if request.claimed_vjp or request.claimed_jacobian:
        claimed = claimed_derivatives(request, program, values)
    cost = estimate_cost(request, program, {n: values[n].size for n in wrt})
    _check_cost(cost, limits)
    return Prepared(program, values, wrt, masks, cotangents, claimed, cost)


def claimed_derivatives(
    request: CheckRequest, program: Program, values: dict[str, np.ndarray]
) -> Derivatives:
    """The claimed VJP and Jacobians as a source. A claim of None is "no gradient" (what torch's
    .grad holds for an input the outputs do not depend on): recorded in `unused`, with zeros."""
    d = Derivatives()
    for name, g in request.claimed_vjp.items():
        if name not in values:
            raise RequestError(
                f"claimed gradient for unknown input {name!r}", field=f"claimed_vjp[{name}]"
            )
        if g is None:  # recorded as ("", name): a claimed Jacobian of name is another claim
            d.vjp[name] = SourceValues(np.zeros(values[name].shape))
            d.unused.add(("", name))
            continue
        field = f"claimed_vjp[{name}]"
        arr = _array(g, np.float64, f"the claimed gradient of {name!r}", field, finite=False)
        if arr.shape != values[name].shape:
            raise RequestError(
                f"the claimed gradient of {name!r} has shape {arr.shape}; the "
                f"input has shape {values[name].shape}",
                field=field,
            )
        d.vjp[name] = SourceValues(arr)
    outs = dict(program.outputs)
    for (oname, name), j in request.claimed_jacobian.items():
        field = f"claimed_jacobian[{oname}/{name}]"
        if oname not in outs or name not in values:
            raise RequestError(f"claimed Jacobian for unknown pair ({oname!r}, {name!r})", field=field)
        shape = program.node(outs[oname]).shape + values[name].shape
        if j is None:
            d.jacobian[(oname, name)] = SourceValues(np.zeros(shape))
            d.unused.add((oname, name))
            continue
        arr = _array(j, np.float64, f"the claimed Jacobian d {oname}/d {name}", field, finite=False)
        if arr.shape != shape:
            raise RequestError(
                f"the claimed Jacobian d {oname}/d {name} has shape {arr.shape}; expected {shape}",
                field=field,
            )
        d.jacobian[(oname, name)] = SourceValues(arr)
    return d
