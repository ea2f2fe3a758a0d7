"""JSON baselines: each case's output values and derivatives as the engine computed them, and the
entries that moved beyond tolerance since (regressions).

    {"format": "crossgrad-baseline", "version": 1,
     "cases": {"examples::worked example": [
        {"quantity": "vjp", "output": "", "input": "a", "dtype": "float64", "shape": [2],
         "values": [36.0, 81.0]}, ...]}}

Non-finite values are written as the strings "nan", "inf" and "-inf" (strict JSON has no NaN).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from crossgrad.v1.tensors import from_tensor

from .client import Result

FORMAT = "crossgrad-baseline"
VERSION = 1
# Defaults by the dtype a block is computed in; the engine is deterministic, so anything past
# these is a change in the code (or its dependencies), not noise.
DEFAULT_TOLERANCES = {"float64": (1e-9, 1e-12), "float32": (1e-5, 1e-7)}
MAX_REPORTED_PER_BLOCK = 3  # the worst entries of a moved block; the count says how many more


MAX_BASELINE_BYTES = 256 << 20


class BaselineError(ValueError):
    """A baseline file that cannot be read."""


@dataclass
class Regression:
    case: str
    quantity: str
    output: str
    input: str
    index: tuple[int, ...] | None  # None: the block itself changed (missing, new shape)
    old: Any
    new: Any
    note: str = ""
    more: int = 0  # further entries of the block that moved and are not listed

    @property
    def entry(self) -> str:
        of = " ".join(
            p
            for p in (self.output and f"output {self.output}", self.input and f"input {self.input}")
            if p
        )
        at = "" if self.index is None else f" at {self.index}"
        return f"{self.quantity} ({of}){at}"

    def __str__(self) -> str:
        if self.index is None:
            return f"{self.case}: {self.entry}: {self.note}"
        return f"{self.case}: {self.entry}: {_fmt(self.old)} -> {_fmt(self.new)}{self.note}"


def _fmt(value: Any) -> str:
    return f"{value:.12g}" if isinstance(value, float) else str(value)


def _encode(x: float) -> float | str:
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _decode(x: Any) -> float:
    return float(x)  # float() reads "nan", "inf", "-inf"; nothing is evaluated


def _is_value(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) or x in ("nan", "inf", "-inf")


def _key(block: dict[str, Any]) -> tuple[str, str, str]:
    return block["quantity"], block["output"], block["input"]


def snapshot(result: Result, case: str) -> list[dict[str, Any]]:
    """The engine's values of every block of the given point (outputs, gradients, Jacobians);
    none for a refused request. A report whose values the server left out is an error: skipped,
    they made a baseline of nothing, and every later comparison "0 regressed"."""
    blocks = []
    points = result.response.points if result.error is None else ()
    for block in points[0].blocks if points else ():
        if block.values_omitted:
            raise BaselineError(
                f"case {case!r}: the server left the values out of its report (past its "
                "--max-report-values, or half its --max-message-mb), so a baseline can neither "
                "record nor compare them: raise those limits, or run the suite embedded"
            )
        if "engine" not in block.values:
            continue
        values = from_tensor(block.values["engine"]).astype(np.float64)
        blocks.append(
            {
                "quantity": block.quantity,
                "output": block.output,
                "input": block.input,
                "dtype": block.dtype or "float64",
                "shape": list(values.shape),
                "values": [_encode(float(v)) for v in values.ravel()],
            }
        )
    return blocks


def _check_block(path: str | Path, case: str, block: Any) -> None:
    keys = ("quantity", "output", "input", "shape", "values")
    ok = isinstance(block, dict) and all(k in block for k in keys)
    ok = ok and isinstance(block["shape"], list) and isinstance(block["values"], list)
    ok = ok and all(isinstance(n, int) and n >= 0 for n in block["shape"])
    # (a value edited to null or "five" raised a TypeError after the whole suite had run)
    ok = ok and all(_is_value(v) for v in block["values"])
    if not ok or math.prod(block["shape"]) != len(block["values"]):
        raise BaselineError(
            f"{path}: case {case!r}: a malformed block (rewrite it with --update-baseline)"
        )


def load(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read a baseline and check its shape, so that comparing never trips over a hand edit."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_BASELINE_BYTES:
            raise BaselineError(
                f"{path}: {size} bytes; the limit for a baseline is {MAX_BASELINE_BYTES}"
            )
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(
            f"{path}: cannot read the baseline: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}:{exc.lineno}: not a JSON baseline: {exc.msg}") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(data.get("cases"), dict)
    ):
        raise BaselineError(f"{path}: not a crossgrad baseline (written by --update-baseline)")
    if data.get("version") != VERSION:
        raise BaselineError(
            f"{path}: baseline version {data.get('version')!r}; this crossgrad reads {VERSION}"
        )
    for case, blocks in data["cases"].items():
        if not isinstance(blocks, list):
            raise BaselineError(f"{path}: case {case!r}: expected a list of blocks")
        for block in blocks:
            _check_block(path, case, block)
    return data["cases"]


def save(path: str | Path, cases: dict[str, list[dict[str, Any]]]) -> int:
    """Write the baseline, keeping the cases of an existing file that this run did not touch;
    returns how many cases the file holds."""
    path = Path(path)
    if path.is_dir():  # found before anything is written next to it
        raise BaselineError(f"{path}: a directory; --update-baseline takes a file name")
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = load(path)
        except BaselineError:
            merged = {}  # an unreadable old file is replaced, not merged
    merged.update(cases)
    # One block per line: small diffs in review when a baseline is updated on purpose.
    lines = ["{", f'  "format": "{FORMAT}",', f'  "version": {VERSION},', '  "cases": {']
    for k, (case, blocks) in enumerate(sorted(merged.items())):
        lines.append(f"    {json.dumps(case)}: [")
        lines += [
            f"      {json.dumps(b)}" + ("," if j < len(blocks) - 1 else "") for j, b in enumerate(blocks)
        ]
        lines.append("    ]" + ("," if k < len(merged) - 1 else ""))
    lines += ["  }", "}"]
    path.parent.mkdir(parents=True, exist_ok=True)  # as --junit does
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a crashed run never leaves half a baseline
    return len(merged)


def _tolerances(dtype: str, rtol: float | None, atol: float | None) -> tuple[float, float]:
    default_rtol, default_atol = DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES["float64"])
    return (default_rtol if rtol is None else rtol, default_atol if atol is None else atol)


def compare(
    case: str,
    old: list[dict[str, Any]],
    new: list[dict[str, Any]],
    rtol: float | None = None,
    atol: float | None = None,
) -> list[Regression]:
    """Every entry of the baseline that moved beyond |new - old| <= atol + rtol * |old| (NaN equals
    NaN, an infinity itself), and every block that vanished or changed shape. New blocks are not
    regressions: the baseline just did not know them."""
    found: list[Regression] = []
    current = {_key(b): b for b in new}
    for before in old:
        q, o, i = _key(before)
        after = current.get((q, o, i))
        if after is None:
            found.append(Regression(case, q, o, i, None, None, None, "no longer computed"))
            continue
        if list(after["shape"]) != list(before["shape"]):
            note = f"shape {tuple(before['shape'])} -> {tuple(after['shape'])}"
            found.append(Regression(case, q, o, i, None, None, None, note))
            continue
        a = np.array([_decode(v) for v in before["values"]], dtype=np.float64)
        b = np.array([_decode(v) for v in after["values"]], dtype=np.float64)
        r, t = _tolerances(after.get("dtype", "float64"), rtol, atol)
        with np.errstate(invalid="ignore"):
            same = (a == b) | (np.isnan(a) & np.isnan(b)) | (np.abs(b - a) <= t + r * np.abs(a))
        moved = np.flatnonzero(~same)
        if moved.size == 0:
            continue
        with np.errstate(invalid="ignore"):
            size = np.nan_to_num(np.abs(b - a)[moved], nan=np.inf)
        worst = moved[np.argsort(-size, kind="stable")][:MAX_REPORTED_PER_BLOCK]
        shape = tuple(before["shape"])
        for k, flat in enumerate(worst):
            index = tuple(int(n) for n in np.unravel_index(flat, shape)) if shape else ()
            more = moved.size - len(worst)
            note = f" (beyond rtol {r:g}, atol {t:g}" + (
                f"; {more} more entries of this block moved)" if k == 0 and more else ")"
            )
            extra = more if k == 0 else 0
            found.append(Regression(case, q, o, i, index, float(a[flat]), float(b[flat]), note, extra))
    return found
