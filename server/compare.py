"""Entry-by-entry comparison of the sources of one derivative block (an output by an input).

An entry agrees with a reference when |x - ref| <= atol + rtol*|ref| (finite differences also get
their own error estimate); NaN agrees only with NaN and an infinity only with the same infinity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Exact references first: the verdict is taken against the best reference that checked an entry.
REFERENCE_ORDER = ("sympy", "jax", "fd")
UNDER_TEST = ("engine", "claimed")


@dataclass
class Tolerance:
    rtol: float
    atol: float

    @staticmethod
    def for_dtype(dtype: str, rtol: float | None = None, atol: float | None = None) -> Tolerance:
        default = (1e-4, 1e-6) if dtype == "float32" else (1e-7, 1e-10)
        return Tolerance(
            rtol if rtol is not None else default[0], atol if atol is not None else default[1]
        )


@dataclass
class SourceValues:
    values: np.ndarray  # the block, shaped like the engine's
    checked: np.ndarray | None = None  # bool mask of the entries this source computed (sampled)
    error: np.ndarray | None = None  # an absolute error bound per entry (finite differences)


@dataclass
class Entry:
    index: tuple[int, ...]
    values: dict[str, float]
    agree: list[str]  # sources that agree with the reference value
    disagree: list[str]
    reference: str
    abs_error: float
    rel_error: float


@dataclass
class PairStat:
    a: str
    b: str
    max_abs: float
    max_rel: float
    disagreeing: int
    compared: int


@dataclass
class Block:
    quantity: str  # "vjp", "jacobian" or "hessian"
    output: str | None
    input: str
    shape: tuple[int, ...]
    sources: dict[str, SourceValues]
    pairs: list[PairStat] = field(default_factory=list)
    worst: list[Entry] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)  # source under test -> bad entries
    references_disagree: int = 0
    status: str = "pass"
    bad: np.ndarray | None = None  # entries where a source under test disagrees (block's shape)

    @property
    def label(self) -> str:
        if self.quantity == "value":
            return f"value of {self.output}"
        if self.quantity == "hessian":
            return f"hessian d2 / d {self.input.replace(',', ' d ')}"
        return (
            f"{self.quantity} d {self.output} / d {self.input}"
            if self.output
            else (f"{self.quantity} d / d {self.input}")
        )


def close(a: np.ndarray, b: np.ndarray, tol: Tolerance, extra: np.ndarray | float = 0.0) -> np.ndarray:
    """Entrywise agreement of a with the reference b (NaN and infinities compared explicitly)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(a - b) <= tol.atol + tol.rtol * np.abs(b) + extra
        if np.isfinite(a).all() and np.isfinite(b).all():
            return ok
        finite = np.isfinite(a) & np.isfinite(b)
        special = (np.isnan(a) & np.isnan(b)) | ((a == b) & np.isinf(a))
    return np.where(finite, ok, special)


def _mask(s: SourceValues) -> np.ndarray:
    return np.ones(s.values.shape, bool) if s.checked is None else s.checked


def _errors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute and relative differences; a NaN or infinite difference counts as infinite."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(a - b)
        if not np.isfinite(diff).all():
            diff = np.where(np.isfinite(diff), diff, np.inf)
        return diff, diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)


_VECTORIZED_ENTRIES = 200_000  # sources x sources x entries compared in one numpy expression


def compare_block(block: Block, tol: Tolerance, worst: int = 5) -> Block:
    names = list(block.sources)
    shape = block.shape
    values = np.stack([np.asarray(s.values, np.float64).reshape(-1) for s in block.sources.values()])
    masks = np.stack([_mask(s).reshape(-1) for s in block.sources.values()])
    errors = np.stack(
        [
            np.zeros(values.shape[1]) if s.error is None else s.error.reshape(-1)
            for s in block.sources.values()
        ]
    )
    _pair_stats(block, names, values, masks, errors, tol)

    # The reference for each entry: the first reference, in REFERENCE_ORDER, that computed it.
    n = values.shape[1]
    ref_value, ref_extra = np.full(n, np.nan), np.zeros(n)
    ref_name = np.full(n, "", dtype=object)
    have = np.zeros(n, bool)
    for r in (r for r in REFERENCE_ORDER if r in block.sources):
        k = names.index(r)
        take = masks[k] & ~have
        ref_value[take], ref_extra[take], ref_name[take] = values[k, take], errors[k, take], r
        have |= take

    # References that disagree among themselves on an entry make it uncertain.
    conflict = np.zeros(n, bool)
    for r in (r for r in REFERENCE_ORDER if r in block.sources):
        k = names.index(r)
        conflict |= masks[k] & have & ~close(values[k], ref_value, tol, ref_extra + errors[k])
    block.references_disagree = int(conflict.sum())

    flagged = conflict.copy()
    any_bad = np.zeros(n, bool)
    refs = [names.index(r) for r in REFERENCE_ORDER if r in block.sources]
    for src in (u for u in UNDER_TEST if u in block.sources):
        k = names.index(src)
        bad = have & masks[k] & ~close(values[k], ref_value, tol, ref_extra)
        if conflict.any():  # where the references disagree, agreeing with any of them is enough
            for r in refs:
                bad &= ~(conflict & masks[r] & close(values[k], values[r], tol, errors[r]))
        block.failing[src] = int(bad.sum())
        flagged |= bad
        any_bad |= bad
    block.bad = any_bad.reshape(shape)
    block.worst = _worst_entries(
        block,
        ref_value.reshape(shape),
        ref_name.reshape(shape),
        flagged.reshape(shape),
        tol,
        ref_extra.reshape(shape),
        worst,
    )
    return block


def _pair_stats(
    block: Block,
    names: list[str],
    values: np.ndarray,
    masks: np.ndarray,
    errors: np.ndarray,
    tol: Tolerance,
) -> None:
    """Max absolute and relative difference, and disagreeing entries, for every pair of sources
    (on the entries both computed; the second of a pair is taken as the reference)."""
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    if not pairs:
        return
    if len(names) ** 2 * values.shape[1] <= _VECTORIZED_ENTRIES:
        a = values[[i for i, _ in pairs]]
        b = values[[j for _, j in pairs]]
        both = masks[[i for i, _ in pairs]] & masks[[j for _, j in pairs]]
        extra = errors[[i for i, _ in pairs]] + errors[[j for _, j in pairs]]
        agree = close(a, b, tol, extra)
        diff, rel = _errors(a, b)
        rows = zip(pairs, both, agree, diff, rel)
    else:  # large blocks: one pair at a time, to bound memory
        rows = (
            (
                p,
                masks[p[0]] & masks[p[1]],
                close(values[p[0]], values[p[1]], tol, errors[p[0]] + errors[p[1]]),
                *_errors(values[p[0]], values[p[1]]),
            )
            for p in pairs
        )
    for (i, j), both_k, agree_k, diff_k, rel_k in rows:
        block.pairs.append(
            PairStat(
                names[i],
                names[j],
                float(diff_k[both_k].max(initial=0.0)),
                float(rel_k[both_k].max(initial=0.0)),
                int((~agree_k & both_k).sum()),
                int(both_k.sum()),
            )
        )


def _worst_entries(
    block: Block,
    ref_value: np.ndarray,
    ref_name: np.ndarray,
    flagged: np.ndarray,
    tol: Tolerance,
    ref_extra: np.ndarray,
    limit: int,
) -> list[Entry]:
    if not flagged.any():
        return []
    # Ranked by how far any source is from the reference (where references disagree, their
    # spread counts); equal values, both NaN or the same infinity, are no distance.
    diff = np.full(block.shape, -np.inf)
    for s in block.sources.values():
        v = np.asarray(s.values, np.float64)
        d, _ = _errors(v, ref_value)
        d = np.where((v == ref_value) | (np.isnan(v) & np.isnan(ref_value)) | ~_mask(s), 0.0, d)
        diff = np.maximum(diff, np.where(flagged, d, -1.0))  # flagged entries sort first
    order = np.argsort(-diff, axis=None, kind="stable")[: int(min(limit, flagged.sum()))]
    entries = []
    for flat in order:
        idx = np.unravel_index(flat, block.shape)
        values = {n: float(s.values[idx]) for n, s in block.sources.items() if _mask(s)[idx]}
        ref = float(ref_value[idx])
        agree = [n for n in values if bool(close(values[n], ref, tol, ref_extra[idx]))]
        errors = [abs(v - ref) for v in values.values()]
        abs_error = max((e if np.isfinite(e) else np.inf for e in errors), default=0.0)
        rel_error = abs_error / abs(ref) if np.isfinite(ref) and ref != 0 else np.inf
        entries.append(
            Entry(
                tuple(int(i) for i in idx),
                values,
                agree,
                [n for n in values if n not in agree],
                str(ref_name[idx]),
                float(abs_error),
                float(rel_error) if abs_error else 0.0,
            )
        )
    return entries
