"""A report as text, for people: verdict, what disagrees and why, and what each reference did."""

from __future__ import annotations

import numpy as np

from .ir import Position
from .model import Report


def _num(x: float) -> str:
    return f"{x:.6g}" if np.isfinite(x) else str(x)


def _at(position: Position | None) -> str:
    return f" at {position}" if position else ""


def format_report(report: Report, max_blocks: int = 20) -> str:
    lines = [f"verdict: {report.verdict.value}", f"summary: {report.summary}"]
    point = report.points[0] if report.points else None
    if point is not None:
        lines.append("blocks (max |difference| between sources, entries that disagree):")
        for block in point.blocks[:max_blocks]:
            pairs = ", ".join(
                f"{p.a}~{p.b} {_num(p.max_abs)}" + (f" ({p.disagreeing} off)" if p.disagreeing else "")
                for p in block.pairs
                if "engine" in (p.a, p.b) or "claimed" in (p.a, p.b)
            )
            lines.append(f"  {block.label} {block.shape}: {block.status}; {pairs}")
            for entry in block.worst[:3]:
                values = ", ".join(f"{k} {_num(v)}" for k, v in entry.values.items())
                lines.append(
                    f"    at {entry.index}: {values}; agree with {entry.reference}: "
                    f"{', '.join(entry.agree) or 'none'}"
                )
        for note in point.conventions:
            lines.append(f"  non-differentiable point: {note.op}{_at(note.position)} ({note.text})")
            for party, convention in note.conventions.items():
                lines.append(f"    {party}: {convention}")
        for blame in point.blame:
            lines.append(
                f"  blame: {blame.node_name} ({blame.op}){_at(blame.position)}: "
                f"{blame.text!r}: {blame.detail}"
            )
    for status in report.references.values():
        state = "ran" if status.ran else "did not run"
        lines.append(f"reference {status.name}: {state}" + (f" ({status.note})" if status.note else ""))
        for entry in status.symbolic[:4]:
            lines.append(f"    {entry['entry']} = {entry['text']}")
    if report.dag.nodes:
        names = " -> ".join(n.name for n in report.dag.nodes[:8])
        lines.append(f"engine DAG: {names}{' ...' if len(report.dag.nodes) > 8 else ''}")
    timing = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in report.timings.items())
    lines.append(f"time: {timing}")
    return "\n".join(lines)
