"""Finite differences: a fourth witness, mainly where sympy is skipped.

Central differences at steps h and h/2 combined by Richardson extrapolation (error O(h^4)), with an
error estimate from the difference of the two (plus rounding); a third step, h/4, tests that the
quotients converge as that estimate assumes (an entry where they do not is left unchecked). The
function values come from the engine's forward pass (itself checked against sympy and JAX), or
JAX's for many entries, the perturbed points in batches that bound memory (backends.batch_size: a
batch's points times the program's intermediates per point). Every batch and every Hessian column
reaches the deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import deadline
from ..compare import SourceValues
from ..derivatives import Derivatives, Point
from ..model import ReferenceStatus
from . import BATCH_ELEMENTS, batch_size, intermediate_sizes, jax_backend
from . import engine as engine_backend

STEP = 1e-3  # relative step; Richardson's error is about STEP**4 times the 5th derivative


@dataclass
class FDResult:
    """Columns of the Jacobian (output entries x sampled input entries) and their error bounds."""

    columns: np.ndarray  # (m, k): d output / d input entry, for the k entries asked for
    error: np.ndarray  # (m, k) estimated absolute error (truncation and rounding)
    rounding: np.ndarray  # (m, k) the rounding part of it


Batched = Callable[[np.ndarray], np.ndarray]  # (points, n) -> (points, m)


def jacobian_columns(f: Batched, x: np.ndarray, entries: np.ndarray, per_point: int = 0) -> FDResult:
    """d f / d x[entries], f taking a batch of flat float64 points to a batch of flat outputs;
    per_point: the elements one evaluation of f holds (its intermediates), for the batch size."""
    n = x.size
    h = STEP * np.maximum(1.0, np.abs(x[entries]))
    chunk = batch_size(len(STEPS) * max(n, per_point), len(entries))
    parts = []
    for i in range(0, len(entries), chunk):
        deadline.checkpoint()
        parts.append(_values_at_steps(f, x, entries[i : i + chunk], h[i : i + chunk]))
    values = [np.concatenate([p[j] for p in parts]) for j in range(len(STEPS))]
    fp, fm, fp2, fm2, fp4, fm4 = values
    d1 = (fp - fm) / (2 * h[:, None])
    d2 = (fp2 - fm2) / h[:, None]
    d4 = (fp4 - fm4) / (h[:, None] / 2)
    rich = (4 * d2 - d1) / 3
    # rounding: the size of each entry's own function values (one entry's overflow or domain edge
    # must not spoil the estimate of the others)
    scale = np.max(np.abs(values), axis=0)
    rounding = 16 * np.finfo(np.float64).eps * scale / h[:, None]
    error = np.abs(d2 - d1) + rounding
    # Richardson's estimate holds where the quotients converge: at steps h, h/2, h/4 their
    # differences shrink by about 4. A function that changes faster than the step (sin(1e6 x):
    # the quotients alias) or a kink inside the step breaks that; such an entry's estimate and
    # error bound say nothing (an infinite error leaves the entry unchecked).
    with np.errstate(invalid="ignore"):
        converged = np.abs(d4 - d2) <= 0.5 * np.abs(d2 - d1) + 2 * rounding
    error = np.where(converged, error, np.inf)
    return FDResult(rich.T, error.T, np.broadcast_to(rounding, error.shape).T)


STEPS = (1.0, -1.0, 0.5, -0.5, 0.25, -0.25)  # multiples of h at which f is evaluated


def _values_at_steps(
    f: Batched, x: np.ndarray, entries: np.ndarray, h: np.ndarray
) -> tuple[np.ndarray, ...]:
    """f at x + s h e_j for each s of STEPS and each entry j."""
    k = len(entries)
    eye = np.zeros((k, x.size))
    eye[np.arange(k), entries] = 1.0
    steps = np.concatenate([eye * h[:, None] * s for s in STEPS])
    values = np.asarray(f(x[None, :] + steps))  # (len(STEPS) k, m)
    return tuple(values[i * k : (i + 1) * k] for i in range(len(STEPS)))


def hessian_entries(f: Batched, x: np.ndarray, entries: np.ndarray, per_point: int = 0) -> FDResult:
    """d^2 f_0 / d x_i d x_j (f_0: the first output) for all i and the j of `entries`: central
    differences along j (at steps h and h/2, Richardson again, and h/4 to test that they
    converge) of the first derivatives along i."""
    columns, errors = [], []
    h = STEP * np.maximum(1.0, np.abs(x))
    # the rounding of f itself, divided twice by the steps: the differences of f cancel, so the
    # first derivatives' own estimates (from the differences' size) would miss it
    size = float(np.max(np.abs(f(x[None, :])[:, :1]), initial=0.0))
    for j in entries:
        deadline.checkpoint()
        hj = h[j]
        pair = []
        for step in (hj, hj / 2, hj / 4):
            ej = np.zeros(x.size)
            ej[j] = step

            def g(points: np.ndarray, ej: np.ndarray = ej) -> np.ndarray:
                return f(points + ej)[:, :1] - f(points - ej)[:, :1]

            res = jacobian_columns(g, x, np.arange(x.size), 2 * per_point)
            pair.append((res.columns[0] / (2 * step), res.error[0] / (2 * step)))
        (c1, e1), (c2, e2), (c4, e4) = pair
        rounding = 64 * np.finfo(np.float64).eps * size / (h * hj)
        error = np.abs(c2 - c1) + e1 + e2 + rounding
        # as for first derivatives: a kink within the step along j (|x| x at 1e-5) gives
        # quotients that do not converge, and whose difference says nothing of their error
        # (both steps landed on the same wrong value: "fd 0.0552" against the true 2, failed)
        with np.errstate(invalid="ignore"):
            converged = np.isfinite(e4) & (np.abs(c4 - c2) <= 0.5 * np.abs(c2 - c1) + 2 * rounding)
        columns.append((4 * c2 - c1) / 3)
        errors.append(np.where(converged, error, np.inf))
    return FDResult(np.array(columns).T, np.array(errors).T, np.zeros((len(entries), x.size)).T)


ENGINE_ENTRIES = 16  # up to this many entries: the engine's forward pass (nothing to compile)


def derivatives(point: Point, budget: Any, seed: int) -> tuple[Derivatives, ReferenceStatus]:
    """The VJP, Jacobian and Hessian by finite differences, over a seeded sample of the input
    entries when there are more than the budget allows (the status says so)."""
    d = Derivatives()
    wrt, checks = point.wrt, point.checks
    sizes = [int(np.size(point.values[n])) for n in wrt]
    total = sum(sizes)
    if not wrt:
        return d, ReferenceStatus("fd", True, "nothing to differentiate")
    if not {"vjp", "jacobian", "hessian"} & set(checks):
        return d, ReferenceStatus("fd", True, "no derivatives asked for")
    if total <= budget.fd_max_entries:
        entries, note = np.arange(total), "all entries"
    else:
        k = min(budget.fd_sample_entries, total)
        entries = np.sort(np.random.default_rng(seed).choice(total, k, replace=False))
        note = (
            f"over budget ({total} input entries > {budget.fd_max_entries}): checked "
            f"{len(entries)} entries, chosen with seed {seed}"
        )
    x = np.concatenate([np.asarray(point.values[n], np.float64).ravel() for n in wrt])
    f = (engine_backend if len(entries) <= ENGINE_ENTRIES else jax_backend).flat_function(point)
    per_point, _ = intermediate_sizes(point.program)
    cot = np.concatenate([c.ravel() for c in point.cotangents])
    # only vᵀJ of many outputs: differentiate vᵀf (one output instead of every output's columns,
    # which took outputs x entries x 8 arrays), and |v|ᵀ|f| for the scale of its rounding error
    projected = "jacobian" not in checks and cot.size * len(entries) > BATCH_ELEMENTS
    if projected:
        res = jacobian_columns(
            lambda xs: np.stack([(v := f(xs)) @ cot, np.abs(v) @ np.abs(cot)], axis=1),
            x,
            entries,
            per_point,
        )
    elif {"vjp", "jacobian"} & set(checks):
        res = jacobian_columns(f, x, entries, per_point)
    offsets = np.cumsum([0, *sizes])
    everything = len(entries) == total

    def columns_of(a: int, cols: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, ...]:
        """The sampled columns that belong to input a, put in place (zeros elsewhere)."""
        lo, hi = offsets[a], offsets[a + 1]
        sel = (entries >= lo) & (entries < hi)
        full, full_err = np.zeros(cols.shape[:-1] + (hi - lo,)), np.zeros(cols.shape[:-1] + (hi - lo,))
        checked = np.zeros(hi - lo, bool)
        full[..., entries[sel] - lo], full_err[..., entries[sel] - lo] = cols[..., sel], err[..., sel]
        checked[entries[sel] - lo] = True
        return full, full_err, checked

    for a, n in enumerate(wrt):
        shape = point.shape(n)
        if "vjp" in checks and projected:
            error = res.error[0] - res.rounding[0] + res.rounding[1]
            g, e, ch = columns_of(a, res.columns[0], error)
            d.vjp[n] = SourceValues(
                point.masked(n, g.reshape(shape)),
                None if everything else ch.reshape(shape),
                e.reshape(shape),
            )
        elif "vjp" in checks:
            g, e, ch = columns_of(a, cot @ res.columns, np.abs(cot) @ res.error)
            d.vjp[n] = SourceValues(
                point.masked(n, g.reshape(shape)),
                None if everything else ch.reshape(shape),
                e.reshape(shape),
            )
        if "jacobian" in checks:
            start = 0
            for oname, oshape in point.output_shapes():
                m = math.prod(oshape)
                g, e, ch = columns_of(a, res.columns[start : start + m], res.error[start : start + m])
                full = oshape + shape
                checked = None if everything else np.broadcast_to(ch.reshape(shape), full).copy()
                d.jacobian[(oname, n)] = SourceValues(
                    point.masked(n, g.reshape(full)), checked, e.reshape(full)
                )
                start += m
    if "hessian" in checks and total <= budget.hessian_max_inputs:
        h = hessian_entries(f, x, np.arange(total), per_point)
        for a, n in enumerate(wrt):
            for b, k in enumerate(wrt):
                rows, cols = slice(offsets[a], offsets[a + 1]), slice(offsets[b], offsets[b + 1])
                shape = point.shape(n) + point.shape(k)
                d.hessian[(n, k)] = SourceValues(
                    h.columns[rows, cols].reshape(shape), None, h.error[rows, cols].reshape(shape)
                )
    _unchecked_where_not_finite(d)
    return d, ReferenceStatus("fd", True, note)


def _unchecked_where_not_finite(d: Derivatives) -> None:
    """An entry whose quotient or error estimate is not finite (near an overflow, off the
    domain) says nothing: it is left unchecked rather than counted as a disagreement."""
    for table in (d.vjp, d.jacobian, d.hessian):
        for source in table.values():
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(source.values)
                if source.error is not None:
                    bad |= ~np.isfinite(source.error)
            if bad.any():
                checked = np.ones(bad.shape, bool) if source.checked is None else source.checked
                source.checked = checked & ~bad
