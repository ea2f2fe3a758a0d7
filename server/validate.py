"""Request validation at the core's boundary: every field typed and checked, limits enforced, the
program parsed, before any stage runs. A RequestError names the field (and line and column)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .compare import SourceValues
from .derivatives import Derivatives
from .ir import Program, Ref
from .language import InputDecl, RequestError, parse
from .limits import DEFAULT_LIMITS, Limits
from .model import Budget, CheckRequest

QUANTITIES = ("vjp", "jacobian", "hessian")
REFERENCES = ("sympy", "jax", "fd")


def _array(value: Any, dtype: Any, what: str, field: str, finite: bool = True) -> np.ndarray:
    """value as an array of dtype, or a RequestError saying why it is not one."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(f"{what} is not a numeric array: {exc}", field=field) from None
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise RequestError(f"{what} has NaN or infinite values", field=field)
    return arr


def _number(value: Any, what: str, field: str, low: float = 0.0, high: float = np.inf) -> None:
    if not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and np.isfinite(value)
        and low <= value <= high
    ):
        within = f">= {low:g}" if high == np.inf else f"from {low:g} to {high:g}"
        raise RequestError(f"{what} must be a finite number {within}, got {value!r}", field=field)


def _integer(value: Any, what: str, field: str, low: int = 0, high: int = 2**63 - 1) -> None:
    if not (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and low <= value <= high
    ):
        raise RequestError(f"{what} must be an integer from {low} to {high}, got {value!r}", field=field)


def _validate_budget(budget: Budget, limits: Limits) -> None:
    if not isinstance(budget, Budget):
        raise RequestError(f"budget must be a Budget, got {type(budget).__name__}", field="budget")
    _number(budget.sympy_seconds, "budget.sympy_seconds", "budget", 0.0, limits.max_budget_seconds)
    for name in (f.name for f in dataclasses.fields(budget) if f.name != "sympy_seconds"):  # counts
        high = limits.max_budget_entries * (10 if name == "sympy_max_scalar_ops" else 1)
        _integer(getattr(budget, name), f"budget.{name}", "budget", 0, high)


def _validate_claims(request: CheckRequest) -> None:
    """Claimed derivatives are compared only in the checks that compute them, and only for
    inputs that are differentiated: a claim that would be ignored is an error."""
    for field_name, quantity in (("claimed_vjp", "vjp"), ("claimed_jacobian", "jacobian")):
        if getattr(request, field_name) and quantity not in request.checks:
            raise RequestError(
                f"{field_name} is given but {quantity!r} is not among the checks {list(request.checks)}",
                field="claimed",
            )
    frozen = {s.name for s in request.inputs if not s.requires_grad}
    asked = set(request.claimed_vjp) | {name for _, name in request.claimed_jacobian}
    if asked & frozen:
        raise RequestError(
            f"claimed derivatives for {sorted(asked & frozen)}, which do not require grad",
            field="claimed",
        )


def _validate(request: CheckRequest, limits: Limits) -> tuple[dict[str, np.ndarray], list[InputDecl]]:
    for name in ("checks", "references", "outputs"):
        value = getattr(request, name)
        if isinstance(value, str):
            raise RequestError(f"{name} is a list of names, not the string {value!r}", field=name)
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
    for name in ("rtol", "atol"):
        if getattr(request, name) is not None:
            _number(getattr(request, name), name, name)
    _integer(request.seed, "seed", "seed")
    _validate_budget(request.budget, limits)
    _validate_claims(request)
    samples = request.samples
    if samples is not None:
        _integer(samples.count, "samples.count", "samples", 0, limits.max_sample_points)
        _integer(samples.seed, "samples.seed", "samples")
        _number(samples.scale, "samples.scale", "samples")
        for bound in (samples.low, samples.high):
            _number(bound, "samples.low and samples.high", "samples", low=-np.inf)
        if samples.distribution not in ("normal", "uniform") or samples.low > samples.high:
            raise RequestError(
                "samples: distribution is 'normal' or 'uniform' (low <= high)", field="samples"
            )
    values, decls = {}, []
    for spec in request.inputs:
        if not isinstance(spec.name, str):
            raise RequestError(f"an input's name must be a string, got {spec.name!r}", field="inputs")
        field = f"inputs[{spec.name}]"
        try:
            size = np.size(spec.values)
        except ValueError as exc:  # ragged nested lists
            raise RequestError(f"input {spec.name!r} is not an array: {exc}", field=field) from None
        if size > limits.max_input_elements:
            raise RequestError(
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
            mask = _array(spec.mask, np.float64, f"the mask of {spec.name!r}", f"{field}.mask")
            if mask.shape != arr.shape:
                raise RequestError(
                    f"the mask of {spec.name!r} has shape {mask.shape}; the input has shape {arr.shape}",
                    field=f"{field}.mask",
                )
        values[spec.name] = arr
        decls.append(InputDecl(spec.name, arr.shape, spec.dtype))
    return values, decls


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
        raise RequestError(
            f"the Jacobian would have {n_in * n_out} entries; the limit is "
            f"{limits.max_jacobian_entries}",
            field="checks",
        )
    if "hessian" in request.checks:
        if len(program.outputs) != 1 or n_out != 1:
            raise RequestError("the Hessian needs a single scalar output", field="checks")
        if n_in > request.budget.hessian_max_inputs:
            raise RequestError(
                f"the Hessian of {n_in} input entries is over the limit of "
                f"{request.budget.hessian_max_inputs}",
                field="checks",
            )


def _cotangents(request: CheckRequest, program: Program) -> list[np.ndarray]:
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


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A request validated and parsed: what every stage works from."""

    program: Program
    values: dict[str, np.ndarray]  # every input's value, as an array of its dtype
    wrt: list[str]  # the inputs differentiated (float, requires_grad)
    masks: dict[str, np.ndarray]  # gradient masks of differentiated inputs
    cotangents: list[np.ndarray]  # one per output


def prepare(request: CheckRequest, limits: Limits = DEFAULT_LIMITS) -> Prepared:
    """Validate the request and parse its program (RequestError names what is wrong)."""
    values, decls = _validate(request, limits)
    program = parse(request.program, decls, request.outputs, limits)
    cotangents = _cotangents(request, program)
    specs = {s.name: s for s in request.inputs}
    wrt = [n for n in program.input_names if specs[n].requires_grad and values[n].dtype.kind == "f"]
    masks = {n: np.asarray(specs[n].mask, dtype=np.float64) for n in wrt if specs[n].mask is not None}
    _check_sizes(request, program, values, wrt, limits)
    return Prepared(program, values, wrt, masks, cotangents)


def claimed_derivatives(
    request: CheckRequest, program: Program, values: dict[str, np.ndarray]
) -> Derivatives:
    d = Derivatives()
    for name, g in request.claimed_vjp.items():
        if name not in values:
            raise RequestError(f"claimed gradient for unknown input {name!r}", field="claimed")
        arr = _array(g, np.float64, f"the claimed gradient of {name!r}", "claimed", finite=False)
        if arr.shape != values[name].shape:
            raise RequestError(
                f"the claimed gradient of {name!r} has shape {arr.shape}; the "
                f"input has shape {values[name].shape}",
                field="claimed",
            )
        d.vjp[name] = SourceValues(arr)
    outs = dict(program.outputs)
    for (oname, name), j in request.claimed_jacobian.items():
        if oname not in outs or name not in values:
            raise RequestError(
                f"claimed Jacobian for unknown pair ({oname!r}, {name!r})", field="claimed"
            )
        shape = program.node(outs[oname]).shape + values[name].shape
        arr = _array(j, np.float64, f"the claimed Jacobian d {oname}/d {name}", "claimed", finite=False)
        if arr.shape != shape:
            raise RequestError(
                f"the claimed Jacobian d {oname}/d {name} has shape {arr.shape}; expected {shape}",
                field="claimed",
            )
        d.jacobian[(oname, name)] = SourceValues(arr)
    return d
