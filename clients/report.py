"""Terminal rendering of crossgrad's answers with rich, shared by the `crossgrad` command and the suite
runner (`crossgrad check`).

What it offers:

- `make_console(color)`: a rich Console ("auto" colours a terminal only, "always", "never"; NO_COLOR
  is honoured).
- `verdict_text(verdict)` and `VERDICT_STYLES`: a verdict coloured by how good it is (PASS green,
  notes and conventions yellow, UNVERIFIED magenta, FAIL and ERROR red); `status_style` for a
  block's status.
- `format_array(array)`: numpy values in a compact form ("[36, 81]"), summarised when large.
- `result_renderables(result)` / `print_result(console, result)`: a verification report: the verdict,
  a table of every block's values per source with the largest differences, the worst entries of
  blocks that do not pass, blame, conventions at kinks, numerical and reference notes, what each
  reference did, the engine's DAG and timings.
- `dag_tree(dag)`: the engine's DAG as a tree from the outputs to the leaves.
- `ops_table(ops)`: the op table (ListOps).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from crossgrad.v1 import verifier_pb2
from crossgrad.v1.dag import dag_edges
from crossgrad.v1.tensors import from_tensor
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .client import Result

VERDICT_STYLES = {
    "PASS": "bold green",
    "PASS_WITH_NUMERICAL_NOTES": "bold green",
    "PASS_WITH_CONVENTION_DIFFERENCES": "bold yellow",
    "UNVERIFIED": "bold magenta",
    "FAIL": "bold red",
    "ERROR": "bold red",
}
STATUS_STYLES = {
    "pass": "green",
    "numerical": "cyan",
    "convention": "yellow",
    "unverified": "magenta",
    "references disagree": "magenta",
    "fail": "red",
}
# the order sources are shown in: the ones under test first, then the references
SOURCES = ("engine", "claimed", "sympy", "jax", "fd")
STAGES = ("queue", "worker", "parse", "engine", "sympy", "jax", "fd", "compare", "blame")
MAX_SYMBOLIC = 6  # symbolic derivatives shown (the JSON report has them all) ...
MAX_SYMBOLIC_CHARS = 90  # ... and of each, this much


class PipedConsole(Console):
    """rich's Console, but a reader that went away (crossgrad verify | head) ends the command
    with 141, the shell's code for SIGPIPE, as the commands' BrokenPipeError handler does:
    rich's own SystemExit(1) said "discrepancies" of a run that passed. Off a terminal (a CI
    log, a file) it takes 160 columns, as `check` does, not rich's 80, unless COLUMNS says."""

    def __init__(self, **options: Any) -> None:
        stream = sys.stderr if options.get("stderr") else options.get("file", sys.stdout)
        if "width" not in options and not stream.isatty() and "COLUMNS" not in os.environ:
            options["width"] = 160
        super().__init__(**options)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def make_console(color: str = "auto", stderr: bool = False) -> Console:
    """A console for reports: color "auto" (a terminal only), "always" or "never"."""
    if color == "always":
        return PipedConsole(stderr=stderr, force_terminal=True)
    if color == "never":
        return PipedConsole(stderr=stderr, no_color=True, highlight=False)
    return PipedConsole(stderr=stderr, highlight=False)


def verdict_text(verdict: str) -> Text:
    return Text(verdict, style=VERDICT_STYLES.get(verdict, "bold"))


def status_style(status: str) -> str:
    return STATUS_STYLES.get(status, "")


def format_array(array: Any, threshold: int = 24) -> str:
    """Compact numbers: "[36, 81]", "-12", a matrix on several lines; an array of more than
    `threshold` entries or more than two dimensions as its range (--json has every value)."""
    a = np.asarray(array)
    if a.size > threshold or a.ndim > 2:
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a.ravel()
        if finite.size == 0:
            return f"{a.size} values, none finite"
        low, high = (float(finite.min()) + 0.0, float(finite.max()) + 0.0)
        return f"{a.size} values in [{low:.6g}, {high:.6g}]"
    return np.array2string(
        a,
        separator=", ",
        # + 0.0 turns -0 into 0: a sign on zero is noise in a gradient table
        formatter={"float_kind": lambda x: f"{x + 0.0:.6g}", "int_kind": str},
    )


def _position(position: verifier_pb2.SourcePosition) -> str:
    return f"line {position.line}, column {position.column}" if position.line else ""


def _sources(blocks: Iterable[verifier_pb2.Block]) -> list[str]:
    present = {name for b in blocks for name in b.values}
    return [s for s in SOURCES if s in present] + sorted(present - set(SOURCES))


def _judge(block: verifier_pb2.Block) -> str:
    """The reference that judged most of the block's entries (sympy where it checked)."""
    judges = sorted(((n, r) for r, n in block.judged_by.items() if n and r != "none"), reverse=True)
    return judges[0][1] if judges else ""


def _differences(block: verifier_pb2.Block, reference: str) -> Text:
    """Each source under test against the block's reference: the largest |difference| and how
    many entries are off."""
    text = Text()
    for under_test in [s for s in ("engine", "claimed") if s in block.values]:
        for pair in block.pairs:
            if {pair.a, pair.b} == {under_test, reference}:
                off = f" ({pair.disagreeing} of {pair.compared} off)" if pair.disagreeing else ""
                text.append(("\n" if text else "") + f"{under_test} {pair.max_abs:.3g}{off}")
                if off:
                    text.stylize(status_style(block.status) or "red", len(text) - len(off), len(text))
    if block.unsettled:
        text.append(f"\n{block.unsettled} unsettled", "magenta")
    return text


def _blocks_table(point: verifier_pb2.PointReport) -> Table:
    """One row per block: the values under test (engine, claimed), the reference that judged
    them, and the largest difference (the witnesses' values are in the entries table and --json)."""
    claimed = any("claimed" in b.values for b in point.blocks)
    table = Table(title="values and derivatives", title_justify="left", title_style="bold")
    table.add_column("block")
    table.add_column("status")
    table.add_column("engine", justify="right")
    if claimed:
        table.add_column("claimed", justify="right")
    table.add_column("reference", justify="right")
    table.add_column("max |diff|")
    for block in point.blocks:
        label = Text(block.label)
        label.append(f"\n{tuple(block.shape)} {block.dtype}", "dim")
        if block.unused:
            label.append("\nunused: no gradient", "dim")
        reference = _judge(block)

        def cell(source: str, block: verifier_pb2.Block = block) -> RenderableType:
            if block.values_omitted:
                return Text("(too large)", "dim")
            if source not in block.values:
                return Text("-", "dim")
            return format_array(from_tensor(block.values[source]))

        ref_cell = Text(str(cell(reference))) if reference else Text("-", "dim")
        if reference:
            ref_cell.append(f"\n{reference}", "dim")
        row = [label, Text(block.status, status_style(block.status)), cell("engine")]
        if claimed:
            row.append(cell("claimed"))
        table.add_row(*row, ref_cell, _differences(block, reference))
    return table


def _worst_table(point: verifier_pb2.PointReport) -> Table | None:
    """The worst entries of the blocks that do not pass, with every source's value there."""
    rows = [(b, e) for b in point.blocks if b.status != "pass" for e in b.worst]
    if not rows:
        return None
    sources = _sources(point.blocks)
    kinks = any(e.HasField("admissible_low") for _, e in rows)
    table = Table(title="entries that do not pass", title_justify="left", title_style="bold")
    for name in ("block", "entry", "status", *sources, "judge", *(["admissible"] if kinks else [])):
        table.add_column(name, justify="right" if name in sources else "left")
    for block, entry in rows:
        values = [
            Text(f"{entry.values[s]:.6g}", "red" if s in entry.disagree else "")
            if s in entry.values
            else Text("-", "dim")
            for s in sources
        ]
        admissible = []
        if kinks and entry.HasField("admissible_low"):
            admissible = [f"[{entry.admissible_low:.6g}, {entry.admissible_high:.6g}]"]
        table.add_row(
            block.label,
            str(tuple(entry.index)),
            Text(entry.status, status_style(entry.status)),
            *values,
            entry.reference,
            *admissible,
        )
    return table


def _notes(point: verifier_pb2.PointReport) -> list[Text]:
    lines: list[Text] = []
    for blame in point.blame:
        at = _position(blame.position)
        line = Text("blame: ", "bold red")
        line.append(f"{blame.node_name}", "bold")
        line.append(f" (node {blame.ir_node}, op {blame.op})")
        if at:
            line.append(f" at {at}: {blame.text}")
        line.append(f"; max |error| {blame.max_abs_error:.3g}")
        if blame.detail:
            line.append(f"\n  {blame.detail}")
        lines.append(line)
    for note in point.conventions:
        line = Text("convention: ", "yellow")
        line.append(f"{note.op} at {_position(note.position)} ({note.text})")
        for party in [s for s in SOURCES if s in note.conventions]:
            line.append(f"\n  {party} returned {note.conventions[party]}")
        if note.admissible:
            line.append(f"\n  admissible: {note.admissible}")
        lines.append(line)
    for note in point.numerical:
        line = Text("numerical note: ", "cyan")
        line.append(
            f"{note.block} {tuple(note.index)}: {note.source} {note.value:.6g}, exact {note.exact:.6g}, "
            f"same precision {note.same_precision:.6g} ({note.why})"
        )
        lines.append(line)
    for note in point.reference_notes:
        line = Text("reference note: ", "magenta")
        values = ", ".join(f"{k} {v:.6g}" for k, v in note.values.items())
        line.append(
            f"{note.reference} disagrees with {note.against} on {note.entries} entries of "
            f"{note.block} (first at {tuple(note.index)}: {values})"
        )
        lines.append(line)
    return lines


def _references(response: verifier_pb2.VerifyResponse) -> list[Text]:
    lines = []
    for ref in response.references:
        line = Text(f"{ref.name}: ", "bold")
        line.append("ran" if ref.ran else "did not run", "green" if ref.ran else "yellow")
        if ref.note:
            line.append(f" ({ref.note})")
        lines.append(line)
        shown = [s for s in ref.symbolic if s.text != "0"]
        for s in shown[:MAX_SYMBOLIC]:
            line = f"{s.entry} = {s.text}"
            if len(line) > MAX_SYMBOLIC_CHARS:
                line = line[: MAX_SYMBOLIC_CHARS - 1] + "…"
            lines.append(Text(f"    {line}", "dim"))
        if len(shown) > MAX_SYMBOLIC:
            lines.append(Text(f"    ... {len(shown) - MAX_SYMBOLIC} more (--json has them all)", "dim"))
    return lines


def _header(result: Result) -> Text:
    header = Text("verdict: ")
    header.append(verdict_text(result.verdict))
    summary = result.summary.removeprefix(f"{result.verdict}: ")
    if summary:
        header.append(f"  {summary}")
    return header


def result_renderables(result: Result) -> list[RenderableType]:
    """The report of one verification, top to bottom (print them, or put them in a Group)."""
    if result.error is not None:
        out: list[RenderableType] = [
            Text.assemble(
                ("verdict: ", ""), verdict_text("ERROR"), f"  the request was refused: {result.error}"
            )
        ]
        for field, description in result.error.field_violations:
            out.append(Text(f"  {field}: {description}", "red"))
        return out
    response = result.response
    out = [_header(result)]
    if response.error:
        out.append(Text(f"error: {response.error}", "red"))
    if response.points:
        given = response.points[0]
        if given.blocks:
            out.append(_blocks_table(given))
        worst = _worst_table(given)
        if worst is not None:
            out.append(worst)
        out.extend(_notes(given))
    if len(response.points) > 1:
        points = Table(title="sample points", title_justify="left", title_style="bold")
        for name in ("point", "verdict", "summary"):
            points.add_column(name)
        for point in response.points:
            verdict = verifier_pb2.Verdict.Name(point.verdict).removeprefix("VERDICT_")
            points.add_row(str(point.point), verdict_text(verdict), point.summary)
        out.append(points)
        for point in response.points[1:]:
            out.extend(_notes(point))
    out.extend(_references(response))
    if response.dag.nodes:
        edges = dag_edges(response.dag.nodes, response.dag.leaves, max_nodes=len(response.dag.nodes))
        out.append(Text(f"engine DAG: {edges}", "dim"))
    if response.timings:
        order = {stage: k for k, stage in enumerate(STAGES)}
        stages = sorted(response.timings.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
        times = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in stages)
        out.append(Text(f"time: {times}", "dim"))
    return out


def print_result(console: Console, result: Result, title: str | None = None) -> None:
    if title:
        console.rule(title, align="left")
    console.print(Group(*result_renderables(result)))


def dag_tree(dag: verifier_pb2.Dag, outputs: Sequence[str] = ()) -> Tree:
    """The DAG from its root (the outputs' grad_fn) down next_functions to AccumulateGrad leaves;
    a node reached twice (a shared subexpression) is drawn once and referred to after."""
    nodes = {n.id: n for n in dag.nodes}
    leaves = {leaf.id: leaf for leaf in dag.leaves}
    referenced = {k for n in dag.nodes for k in n.next}
    title = "engine DAG" + (f" of {', '.join(outputs)}" if outputs else "")
    tree = Tree(Text(title, "bold"))
    drawn: set[int] = set()

    def add(parent: Tree, k: int) -> None:
        if k in leaves:
            leaf = leaves[k]
            label = Text("AccumulateGrad ", "bold blue")
            label.append(f"{leaf.name} {tuple(leaf.shape)}")
            if leaf.masked:
                label.append(" masked", "yellow")
            parent.add(label)
            return
        node = nodes.get(k)
        if node is None:
            parent.add(Text(f"node {k}", "dim"))
            return
        label = Text(node.name, "bold")
        label.append(f"  {node.text}")
        if node.position.line:
            label.append(f"  ({_position(node.position)})", "dim")
        if k in drawn:
            label.append("  (shared: drawn above)", "dim")
            parent.add(label)
            return
        drawn.add(k)
        branch = parent.add(label)
        for child in node.next:
            add(branch, child)

    for node in dag.nodes:
        if node.id not in referenced:
            add(tree, node.id)
    for leaf in dag.leaves:
        if leaf.id not in referenced:  # an output that is an input (y = x)
            add(tree, leaf.id)
    if dag.frozen:
        tree.add(Text(f"frozen, left out of the DAG: {', '.join(dag.frozen)}", "dim"))
    return tree


def ops_table(ops: Sequence[verifier_pb2.Op]) -> Table:
    table = Table(title=f"{len(ops)} operations", title_justify="left", title_style="bold")
    for name in ("op", "written as", "backward node", "not smooth"):
        table.add_column(name)
    for op in ops:
        backward = op.backward_node if op.differentiable else Text("not differentiable", "dim")
        table.add_row(Text(op.name, "bold"), op.syntax, backward, op.nonsmooth)
    return table
