"""The engine's DAG as the report shows it: nodes with PyTorch's names, edges, leaves, DOT text."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from crossgrad import engine as cg

from . import deadline
from .backends import engine as engine_backend
from .limits import DEFAULT_LIMITS, Limits
from .model import CheckRequest, Dag, DagLeaf, DagNode
from .validate import Prepared, prepare

MAX_DAG_NODES = 100_000  # a program has at most Limits.max_nodes operations; this bounds the walk
KNOWN_DAGS = 256  # DAGs kept for programs checked again (each is its program's nodes and DOT)

_known: OrderedDict[Any, Dag] = OrderedDict()
_known_lock = threading.Lock()


def dag_of(run: engine_backend.EngineRun, masks: dict[str, np.ndarray]) -> Dag:
    """The engine's graph as the report shows it. The graph's shape is the program's (its text,
    shapes and dtypes), which inputs require grad and which are masked, never the values: a
    program checked again at new values has the same DAG, kept (the same object: not to be
    changed by its users)."""
    if not run.program.cache_key:  # a program built by hand, not parsed: nothing to know it by
        return _walk(run, masks)
    key = (
        run.program.cache_key,
        tuple((n, t.requires_grad) for n, t in run.leaves.items()),
        tuple(sorted(masks)),
    )
    with _known_lock:
        dag = _known.get(key)
        if dag is not None:
            _known.move_to_end(key)
            return dag
    dag = _walk(run, masks)
    with _known_lock:
        _known[key] = dag
        while len(_known) > KNOWN_DAGS:
            _known.popitem(last=False)
    return dag


def _walk(run: engine_backend.EngineRun, masks: dict[str, np.ndarray]) -> Dag:
    """Walk the engine's graph from the outputs toward the leaves (grad_fn.next_functions)."""
    dag = Dag()
    ids: dict[Any, int] = {}
    leaf_names = {id(t): n for n, t in run.leaves.items()}
    stack = [o.grad_fn for o in run.outputs if o.grad_fn is not None]
    order = []
    while stack and len(ids) < MAX_DAG_NODES:
        node = stack.pop()
        if node in ids:
            continue
        ids[node] = len(ids)
        order.append(node)
        stack.extend(c for c, _ in node.next_functions if c is not None and c not in ids)
    for node in order:
        if isinstance(node, cg.AccumulateGrad):
            name = leaf_names.get(id(node.variable), "leaf")
            dag.leaves.append(DagLeaf(ids[node], name, tuple(node.variable.shape), True, name in masks))
            continue
        meta = node.metadata
        ir_node = meta.get("ir_node")
        dag.nodes.append(
            DagNode(
                ids[node],
                node.name(),
                node.op,
                run.program.node(ir_node).pos if ir_node is not None else None,
                meta.get("text", ""),
                [ids[c] for c, _ in node.next_functions if c is not None],
            )
        )
    for out in run.outputs:  # an output that is an input itself (out = x): a leaf, no grad_fn
        name = leaf_names.get(id(out))
        if out.grad_fn is None and out.requires_grad and name not in {f.name for f in dag.leaves}:
            dag.leaves.append(
                DagLeaf(len(ids) + len(dag.leaves), name, tuple(out.shape), True, name in masks)
            )
    dag.frozen = [n for n, t in run.leaves.items() if not t.requires_grad]
    outputs = {name: run.values[i] for name, i in run.program.outputs}
    dag.dot = cg.to_dot(run.outputs, {**outputs, **run.leaves}, node_ids=ids)
    return dag


def prepare_description(request: CheckRequest, limits: Limits = DEFAULT_LIMITS) -> Prepared:
    """The request validated for a forward pass alone (no derivatives: no cotangent needed)."""
    return prepare(dataclasses.replace(request, checks=()), limits)


def describe_graph(
    request: CheckRequest, limits: Limits = DEFAULT_LIMITS
) -> tuple[Dag, dict[str, np.ndarray]]:
    """Parse the request and run the engine's forward pass only: the DAG and the output values."""
    with deadline.stage("parse"):
        prepared = prepare_description(request, limits)
    with deadline.stage("engine"), np.errstate(all="ignore"):
        run = engine_backend.run(
            prepared.program,
            prepared.values,
            {n: n in prepared.wrt for n in prepared.program.input_names},
            prepared.masks,
        )
        outputs = {name: np.asarray(run.values[i].data) for name, i in prepared.program.outputs}
        return dag_of(run, prepared.masks), outputs
