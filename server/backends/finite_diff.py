"""Finite differences: a fourth witness, mainly where sympy is skipped.

Central differences at steps h and h/2 combined by Richardson extrapolation (error O(h^4)), with an
error estimate from the difference of the two (plus rounding). The function values come from the
engine's forward pass (itself checked against sympy and JAX), all perturbations in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

STEP = 1e-3  # relative step; Richardson's error is about STEP**4 times the 5th derivative


@dataclass
class FDResult:
    """Columns of the Jacobian (output entries x sampled input entries) and their error bounds."""

    columns: np.ndarray  # (m, k): d output / d input entry, for the k entries in `entries`
    error: np.ndarray  # (m, k) estimated absolute error
    entries: np.ndarray  # (k,) flat indices of the input entries


Batched = Callable[[np.ndarray], np.ndarray]  # (points, n) -> (points, m)


def jacobian_columns(f: Batched, x: np.ndarray, entries: np.ndarray) -> FDResult:
    """d f / d x[entries], f taking a batch of flat float64 points to a batch of flat outputs."""
    n = x.size
    k = len(entries)
    h = STEP * np.maximum(1.0, np.abs(x[entries]))
    eye = np.zeros((k, n))
    eye[np.arange(k), entries] = 1.0
    steps = np.concatenate([eye * h[:, None] * s for s in (1.0, -1.0, 0.5, -0.5)])
    values = np.asarray(f(x[None, :] + steps))  # (4k, m)
    fp, fm, fp2, fm2 = (values[i * k : (i + 1) * k] for i in range(4))
    d1 = (fp - fm) / (2 * h[:, None])
    d2 = (fp2 - fm2) / h[:, None]
    rich = (4 * d2 - d1) / 3
    scale = np.abs(values).max(axis=0, initial=0.0)
    rounding = 16 * np.finfo(np.float64).eps * scale[None, :] / h[:, None]
    error = np.abs(d2 - d1) + rounding
    return FDResult(rich.T, error.T, np.asarray(entries))


def hessian_entries(f: Batched, x: np.ndarray, entries: np.ndarray) -> FDResult:
    """d^2 f_0 / d x_i d x_j (f_0: the first output) for all i and the j of `entries`: central
    differences along j (at steps h and h/2, Richardson again) of the first derivatives along i."""
    columns, errors = [], []
    for j in entries:
        hj = STEP * max(1.0, abs(x[j]))
        pair = []
        for step in (hj, hj / 2):
            ej = np.zeros(x.size)
            ej[j] = step

            def g(points: np.ndarray, ej: np.ndarray = ej) -> np.ndarray:
                return f(points + ej)[:, :1] - f(points - ej)[:, :1]

            res = jacobian_columns(g, x, np.arange(x.size))
            pair.append((res.columns[0] / (2 * step), res.error[0] / (2 * step)))
        (c1, e1), (c2, e2) = pair
        columns.append((4 * c2 - c1) / 3)
        errors.append(np.abs(c2 - c1) + e1 + e2)
    return FDResult(np.array(columns).T, np.array(errors).T, np.asarray(entries))
