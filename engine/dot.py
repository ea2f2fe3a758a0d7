"""A picture of the backward graph, like torchviz: Graphviz DOT, rendered to SVG when `dot` exists."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .graph import AccumulateGrad
from .tensor import Tensor


def _label(*lines: str) -> str:
    """A quoted DOT label with one line per argument."""
    escaped = (line.replace("\\", "\\\\").replace('"', '\\"') for line in lines)
    return '"' + "\\n".join(escaped) + '"'


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def to_dot(
    roots: Tensor | Sequence[Tensor],
    params: Mapping[str, Tensor] | None = None,
    max_nodes: int = 10_000,
    node_ids: Mapping[Any, int] | None = None,
) -> str:
    """DOT source for the graph behind `roots`: one box per backward node (its name), one per leaf
    (its name from `params`, shape, and whether it requires grad); masked leaves (with hooks) are
    marked. Leaves that do not require grad are not in the graph, as in PyTorch. A root named in
    `params` is labelled with its name; node_ids: the DOT ids (n<id>) of nodes numbered already
    (a DAG message's)."""
    roots = (roots,) if isinstance(roots, Tensor) else tuple(roots)
    names = {id(t): name for name, t in (params or {}).items()}
    lines = [
        "digraph backward {",
        '  graph [rankdir=BT, fontname="Helvetica"];',
        '  node [shape=box, style="rounded,filled", fillcolor="#dddddd", fontname="Helvetica", '
        "fontsize=11];",
    ]
    ids: dict[Any, str] = {}

    def node_id(node: Any) -> str:
        if node not in ids:
            if node_ids is None:
                ids[node] = f"n{len(ids)}"
            else:  # (a node past a truncated DAG's end has no number there)
                ids[node] = f"n{node_ids[node]}" if node in node_ids else f"x{len(ids)}"
        return ids[node]

    for k, root in enumerate(roots):
        label = names.get(id(root), f"output {k}" if len(roots) > 1 else "output")
        text = _label(label, _shape(root.shape))
        lines.append(f'  r{k} [label={text}, fillcolor="#a3d9a5"];')
        if root.grad_fn is not None:
            lines.append(f"  {node_id(root.grad_fn)} -> r{k};")
    stack = [r.grad_fn for r in roots if r.grad_fn is not None]
    seen = set(stack)
    while stack:
        if len(seen) > max_nodes:
            lines.append(f'  truncated [label="... more than {max_nodes} nodes", shape=plaintext];')
            break
        node = stack.pop()
        nid = node_id(node)
        if isinstance(node, AccumulateGrad):
            t = node.variable
            hooked = " (hooked)" if t._hooks else ""
            name = names.get(id(t), "leaf")
            text = _label(name, _shape(t.shape), f"requires_grad=True{hooked}")
            lines.append(f'  {nid} [label={text}, fillcolor="#a8c8f0"];')
            continue
        src = (node._metadata or {}).get("source")
        text = _label(node.name(), src) if src else _label(node.name())
        lines.append(f"  {nid} [label={text}];")
        for child, _ in node.next_functions:
            if child is None:
                continue
            lines.append(f"  {node_id(child)} -> {nid};")
            if child not in seen:
                seen.add(child)
                stack.append(child)
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(
    roots: Tensor | Sequence[Tensor],
    path: str | Path,
    params: Mapping[str, Tensor] | None = None,
) -> list[Path]:
    """Write path.dot and, when Graphviz's `dot` is installed, path.svg; returns what was written."""
    base = Path(path).with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    dot_path = base.with_suffix(".dot")
    dot_path.write_text(to_dot(roots, params))
    written = [dot_path]
    exe = shutil.which("dot")
    if exe:
        svg = base.with_suffix(".svg")
        subprocess.run([exe, "-Tsvg", str(dot_path), "-o", str(svg)], check=True, timeout=60)
        written.append(svg)
    return written
