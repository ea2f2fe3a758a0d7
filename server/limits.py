"""Limits on what a request may ask for: every loop over a user-controlled size is bounded by one.

A request over any of them is refused before work starts with a LimitError (gRPC
RESOURCE_EXHAUSTED). The cost and memory limits apply to validate.estimate_cost(), which models
what every stage of a check will do; the figures in the comments were measured on the development
machine (2 cores, numpy 2.4, JAX 0.10 on CPU, sympy with mpmath) and are the basis of the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # ---- the program and its inputs (checked while parsing)
    max_source_chars: int = 100_000
    max_statements: int = 2_000
    max_nodes: int = 10_000  # IR nodes (operations) in one program
    max_depth: int = 64  # nesting of one expression
    max_input_elements: int = 1_000_000  # per input
    max_total_elements: int = 4_000_000  # all inputs together
    max_intermediate_elements: int = 4_000_000  # any one intermediate result
    max_exponent: float = 1024.0  # |p| in x ** p with a literal p

    # ---- the derivatives asked for
    max_jacobian_entries: int = 4_000_000
    # n x n for n differentiated entries, whatever budget.hessian_max_inputs says (that one can
    # be raised to max_budget_entries: a 10^10-entry Hessian was accepted before this limit).
    # 10^6 entries: 8 MB a copy, about 200 MB with every source's copy and the comparison.
    max_hessian_entries: int = 1_000_000
    max_sample_points: int = 64

    # ---- estimated cost (validate.estimate_cost), in element-operations
    # One evaluation of the program: the sum over its nodes of the elements each touches (a
    # matmul counts its multiply-adds) plus a fixed overhead per node (COST_PER_NODE). Measured:
    # numpy runs the engine's forward and backward passes at 1-3e8 element-ops/s on large
    # arrays (a 32-node chain on 10^6 elements: 3.1e7 element-ops, forward+VJP in 0.1-0.6 s),
    # and JAX run op by op costs ~0.2 ms per node. 4e8 is about 1.5-4 s for one forward pass.
    max_work: int = 400_000_000
    # Everything a check evaluates, over every sample point: the engine's and JAX's passes,
    # batched Jacobian rows and Hessian columns, finite differences (6 evaluations per entry,
    # 24 n^2 for an n-input Hessian) and blame. Audit cases this refuses: a 1,000-input Hessian
    # by finite differences (1.6e7 evaluations; it took 80 s) and two extra sample points on
    # four 10^6-element inputs (3 x 1,024 evaluations of a 2e7 program: 200 s). 4e9 is roughly
    # 15-40 s of work at the measured rates.
    max_total_work: int = 3_000_000_000
    # Peak memory of a check, estimated from the sum of every intermediate (the engine and JAX
    # each keep all of them for the backward pass), the Jacobian's batches of rows times the
    # largest intermediate, the results (every source's copy of each derivative block and the
    # comparison's working arrays), finite differences' batches of perturbed points, and the
    # symbolic reference's expressions (about 3 KB per scalar operation measured exactly, 0.7 KB
    # sampled). Before this estimate a Jacobian through outer(x, y) of 2000x2000 asked numpy
    # for 60 GiB and one request reached 5.8 GB.
    max_memory_bytes: int = 2 * 1024**3

    # ---- what a request's Budget may ask for (its defaults are well below)
    max_budget_seconds: float = 120.0  # budget.seconds (the request's total) and sympy_seconds
    max_budget_entries: int = 100_000  # the budget's entry counts
    # budget.sympy_max_scalar_ops: sympy's exact derivatives of a program that size. Measured:
    # sum(tanh(W @ x)) with W 200x200 (80,000 scalar operations) takes 13 s (8.5 s of it
    # printing the generated code) and 250 MB; 400,000 is about a minute and 1.2 GB.
    max_sympy_scalar_ops: int = 400_000


DEFAULT_LIMITS = Limits()
