"""A report as text, for people: verdict, what disagrees and why, and what each reference did."""

from __future__ import annotations

import math
from collections.abc import Sequence

from crossgrad.v1.dag import dag_edges

from .compare import Block
from .ir import Position
from .model import Report


def _num(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else str(x)


def _at(position: Position | None) -> str:
    return f" at {position}" if position else ""


def _block_line(block: Block) -> str:
    if block.unused and block.quantity != "value":
        return f"  {block.label}: no gradient (unused)"
    pairs = ", ".join(
        f"{p.a}~{p.b} {_num(p.max_abs)}" + (f" ({p.disagreeing} off)" if p.disagreeing else "")
        for p in block.pairs
        if "engine" in (p.a, p.b) or "claimed" in (p.a, p.b)
    )
    judged = ", ".join(f"{n} {c}" for n, c in block.judged_by.items() if c)
    counts = "; ".join(
        f"{src}: " + ", ".join(f"{c} {status}" for status, c in by.items() if c)
        for src, by in block.counts.items()
        if any(by.values())
    )
    return (
        f"  {block.label} {block.shape} {block.dtype}: {block.status}; {pairs}"
        + (f" [judged by {judged}]" if judged else "")
        + (f" [{counts}]" if counts else "")
    )


def _symbolic_lines(symbolic: Sequence[dict[str, str]], shown: int = 4, width: int = 160) -> list[str]:
    """sympy's derivatives, the first few that are not 0, each cut to `width` characters (an
    input held fixed enters as a 50-digit constant), and how many more there are."""
    nonzero = [e for e in symbolic if e["text"].strip() != "0"]
    lines = []
    for e in nonzero[:shown]:
        text = e["text"] if len(e["text"]) <= width else e["text"][: width - 3] + "..."
        lines.append(f"    {e['entry']} = {text}")
    more = len(nonzero) - shown
    zeros = len(symbolic) - len(nonzero)
    rest = [f"{more} more" if more > 0 else "", f"{zeros} equal to 0" if zeros else ""]
    if any(rest):
        lines.append(f"    ({', '.join(r for r in rest if r)} not shown)")
    return lines


def format_report(report: Report, max_blocks: int = 20) -> str:
    lines = [f"verdict: {report.verdict.value}", f"summary: {report.summary}"]
    point = report.points[0] if report.points else None
    if point is not None:
        lines.append("blocks (max |difference| between sources, entries that disagree):")
        for block in point.blocks[:max_blocks]:
            lines.append(_block_line(block))
            for entry in block.worst[:3]:
                values = ", ".join(f"{k} {_num(v)}" for k, v in entry.values.items())
                agree = ", ".join(entry.agree) or "none"
                if entry.admissible:
                    low, high = (_num(v) for v in entry.admissible)
                    judged = f"within the one-sided derivatives' range [{low}, {high}]: {agree}"
                elif entry.reference:
                    judged = f"agree with {entry.reference}: {agree}"
                else:
                    judged = "no reference checked it"
                lines.append(f"    {entry.status} at {entry.index}: {values}; {judged}")
        for note in point.conventions:
            lines.append(f"  non-differentiable point: {note.op}{_at(note.position)} ({note.text})")
            for party, returned in note.conventions.items():
                lines.append(f"    {party} returned {returned}")
            if note.admissible:
                lines.append(f"    admissible: {note.admissible}")
        for n in point.numerical[:5]:
            lines.append(
                f"  numerical note: {n.block} {n.index}: {n.source} {_num(n.value)}, exact "
                f"{_num(n.exact)}, JAX in the same precision {_num(n.same_precision)}: {n.why} "
                f"(condition {_num(n.condition)})"
            )
        for r in point.reference_notes[:5]:
            values = ", ".join(f"{k} {_num(v)}" for k, v in r.values.items())
            lines.append(
                f"  witness: {r.reference} disagrees with {r.against} on {r.entries} entries of "
                f"{r.block} (at {r.index}: {values})"
            )
        for blame in point.blame:
            lines.append(
                f"  blame: {blame.node_name} ({blame.op}){_at(blame.position)}: "
                f"{blame.text!r}: {blame.detail}"
            )
    for status in report.references.values():
        state = "ran" if status.ran else "did not run"
        lines.append(f"reference {status.name}: {state}" + (f" ({status.note})" if status.note else ""))
        lines.extend(_symbolic_lines(status.symbolic))
    if report.dag.nodes:
        lines.append(f"engine DAG: {dag_edges(report.dag.nodes, report.dag.leaves)}")
    timing = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in report.timings.items())
    lines.append(f"time: {timing}")
    return "\n".join(lines)
