"""The DAG in one line of text, shared by clients and server: the Dag message and the core's
report.Dag have the same fields (nodes with id, name and next; leaves with id and name)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def dag_edges(nodes: Sequence[Any], leaves: Sequence[Any], max_nodes: int = 8) -> str:
    """The DAG in one line, each node with its next_functions (a DAG, not a chain):
    "SubBackward0 -> MulBackward0, PowBackward0; MulBackward0 -> PowBackward0; ...". Takes the
    report's nodes and leaves or the message's (id, name, next)."""
    names = {n.id: n.name for n in nodes} | {leaf.id: f"AccumulateGrad({leaf.name})" for leaf in leaves}
    parts = [
        f"{n.name} -> {', '.join(names.get(k, '?') for k in n.next)}" if n.next else n.name
        for n in nodes[:max_nodes]
    ]
    more = len(nodes) - max_nodes
    return "; ".join(parts) + (f"; ... {more} more node{'s' if more > 1 else ''}" if more > 0 else "")
