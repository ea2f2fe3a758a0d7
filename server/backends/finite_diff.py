"""Finite differences: a fourth witness, mainly where sympy is skipped.

Central differences at steps h and h/2 combined by Richardson extrapolation (error O(h^4)), with an
error estimate from the difference of the two (plus rounding). The function values come from JAX's
compiled forward pass, all perturbations at once with vmap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np

STEP = 1e-3  # relative step; Richardson's error is about STEP**4 times the 5th derivative


@dataclass
class FDResult:
    """Columns of the Jacobian (output entries x sampled input entries) and their error bounds."""

    columns: np.ndarray  # (m, k): d output / d input entry, for the k entries in `entries`
    error: np.ndarray  # (m, k) estimated absolute error
    entries: np.ndarray  # (k,) flat indices of the input entries


def jacobian_columns(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, entries: np.ndarray
) -> FDResult:
    """d f / d x[entries] for a function of one flat float64 vector returning a flat vector."""
    n = x.size
    k = len(entries)
    h = STEP * np.maximum(1.0, np.abs(x[entries]))
    eye = np.zeros((k, n))
    eye[np.arange(k), entries] = 1.0
    steps = np.concatenate([eye * h[:, None] * s for s in (1.0, -1.0, 0.5, -0.5)])
    values = np.asarray(jax.vmap(f)(x[None, :] + steps))  # (4k, m)
    fp, fm, fp2, fm2 = (values[i * k : (i + 1) * k] for i in range(4))
    d1 = (fp - fm) / (2 * h[:, None])
    d2 = (fp2 - fm2) / h[:, None]
    rich = (4 * d2 - d1) / 3
    scale = np.abs(values).max(axis=0, initial=0.0)
    rounding = 16 * np.finfo(np.float64).eps * scale[None, :] / h[:, None]
    error = np.abs(d2 - d1) + rounding
    return FDResult(rich.T, error.T, np.asarray(entries))


def hessian_entries(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, entries: np.ndarray
) -> FDResult:
    """d^2 f / d x_i d x_j for a scalar f, for all i and the j of `entries` (columns), from
    central differences of the gradient estimate along each pair of directions."""
    n = x.size
    cols, errs = [], []
    for j in entries:
        hj = STEP * max(1.0, abs(x[j]))
        ej = np.zeros(n)
        ej[j] = hj

        def g(v: np.ndarray, ej: np.ndarray = ej) -> np.ndarray:
            return f(v + ej) - f(v - ej)

        res = jacobian_columns(g, x, np.arange(n))
        cols.append(res.columns[0] / (2 * hj))
        errs.append(res.error[0] / (2 * hj) + np.abs(res.columns[0]) * STEP**2)
    return FDResult(np.array(cols).T, np.array(errs).T, np.asarray(entries))
