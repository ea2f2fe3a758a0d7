"""Limits on what a request may ask for: every loop over a user-controlled size is bounded by one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_source_chars: int = 100_000
    max_statements: int = 2_000
    max_nodes: int = 10_000  # IR nodes (operations) in one program
    max_depth: int = 64  # nesting of one expression
    max_input_elements: int = 1_000_000  # per input
    max_total_elements: int = 4_000_000  # all inputs together
    max_intermediate_elements: int = 4_000_000  # any one intermediate result
    max_exponent: float = 1024.0  # |p| in x ** p with a literal p
    max_jacobian_entries: int = 4_000_000
    max_sample_points: int = 64
    # the most a request's Budget may ask for (its defaults are well below)
    max_budget_seconds: float = 120.0
    max_budget_entries: int = 100_000


DEFAULT_LIMITS = Limits()
