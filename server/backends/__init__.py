"""The sources a check compares: the engine under test, and sympy, JAX and finite differences.

Shared here: how big one batch of rows, columns or perturbed points may be, so that the backends
and the cost estimate (validate.estimate_cost) agree on it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import TypeVar

from ..ir import Program

# XLA's CPU runtime runs large loops on a pool of threads, and a reduction over a broadcast races
# in it (jax-ml/jax#39741, tensorflow/tensorflow#126812): sum(gelu(gelu(gelu(broadcast_to(X,
# (4, 1000, 1000)))))) gave up to 35 different sums in 40 calls on this machine under load, up to
# 15 % off: a reference that changes its mind is a false FAIL. jax_backend starts JAX's CPU client
# with a pool of one thread, and Eigen's own pool is off (set here, before JAX reads its flags).
# The workers run so too (transport.workers.SINGLE_THREADED).
_SINGLE_THREADED_XLA = "--xla_cpu_multi_thread_eigen=false"
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SINGLE_THREADED_XLA}".strip()

T = TypeVar("T")

BATCH_ELEMENTS = 1 << 22
"""Elements of one batched array (items x the elements each needs): 32 MiB of float64."""


def batch_size(per_item: int, items: int) -> int:
    """How many items (Jacobian rows, Hessian columns, perturbed points) one batch computes when
    each needs arrays of `per_item` elements: at least one, at most `items`."""
    return max(1, min(items, BATCH_ELEMENTS // max(1, per_item)))


def node_elements(shape: object) -> int:
    """Elements of a node's result (a split's results together)."""
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        return sum(math.prod(s) for s in shape)
    return math.prod(shape)  # type: ignore[arg-type]


def per_program(measure: Callable[[Program], T]) -> Callable[[Program], T]:
    """Compute measure(program) once per program and keep it on the program (in its __dict__, as
    functools.cached_property does), so it lives and dies with it. A program's measures are asked
    for by the cost estimate and by several stages, for every request; a program is immutable."""
    key = f"_measure_{measure.__module__}.{measure.__qualname__}"

    @functools.wraps(measure)
    def once(program: Program) -> T:
        memo = program.__dict__
        if key not in memo:
            memo[key] = measure(program)
        return memo[key]

    return once


@per_program
def intermediate_sizes(program: Program) -> tuple[int, int]:
    """(sum, largest) of the elements of every node's result, inputs included."""
    sizes = [node_elements(n.shape) for n in program.nodes if n.op != "take"]
    return sum(sizes), max(sizes, default=0)


@per_program
def estimate_scalar_ops(program: Program) -> int:
    """About how many scalar definitions sympy's straight-line program will have."""
    total = 0
    for node in program.nodes:
        if node.op in ("matmul", "dot"):
            shapes = [program.node(a.id).shape for a in node.args]
            total += math.prod(node.shape) * (shapes[0][-1] if shapes[0] else 1)
        elif node.op != "split":
            total += math.prod(node.shape) if isinstance(node.shape, tuple) else 0
    return total


# JAX compiles a program with jax.jit only when it has at most this many nodes (by what it
# computes); bigger ones run op by op. See jax_backend for the measurements.
JIT_MAX_NODES = {"value": 64, "vjp": 64, "jac_rows": 64, "flat": 64, "hvp_cols": 16}


@per_program
def operation_count(program: Program) -> int:
    """Nodes that compute something (not inputs, nor the parts of a split)."""
    return sum(1 for n in program.nodes if n.op not in ("input", "take"))


SYMPY_SAMPLED_MAX_SCALAR_OPS = 2_000_000
"""Past this size sympy does not even check a sample: its sampled program still evaluates every
other entry as an exact number (measured 7.7 s and 450 MB for 720,000 scalar operations)."""
