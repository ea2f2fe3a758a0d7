"""Verify the examples in-process: python -m crossgrad.server (the main job, embedded)."""

from __future__ import annotations

import sys

import numpy as np

from .check import check
from .model import CheckRequest, InputSpec, Verdict
from .render import format_report


def examples() -> dict[str, tuple[CheckRequest, Verdict]]:
    """Each example with the verdict it must get."""
    rng = np.random.default_rng(0)
    W, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    mask = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], dtype=float)
    return {
        "worked example: Q = 3a^3 - b^2, gradient [1, 1], Jacobians": (
            CheckRequest(
                "Q = 3*a**3 - b**2",
                [InputSpec("a", [2.0, 3.0]), InputSpec("b", [6.0, 4.0])],
                cotangents={"Q": [1.0, 1.0]},
                checks=("vjp", "jacobian"),
            ),
            Verdict.PASS,
        ),
        "a layer with masked weights (hooks keep them fixed)": (
            CheckRequest(
                "h = tanh(W @ x)\nloss = mean(h ** 2)", [InputSpec("W", W, mask=mask), InputSpec("x", x)]
            ),
            Verdict.PASS,
        ),
        "relu at its kink: a convention difference, not a failure": (
            CheckRequest("y = sum(relu(x))", [InputSpec("x", [0.0, 1.5, -2.0])]),
            Verdict.PASS_WITH_CONVENTION_DIFFERENCES,
        ),
        "a claimed gradient that is wrong in one entry": (
            CheckRequest(
                "Q = 3*a**3 - b**2",
                [InputSpec("a", [2.0, 3.0]), InputSpec("b", [6.0, 4.0])],
                cotangents={"Q": [1.0, 1.0]},
                claimed_vjp={"a": [36.0, 81.0], "b": [-12.0, -8.5]},
            ),
            Verdict.FAIL,
        ),
    }


def main() -> int:
    failures = 0
    for title, (request, expected) in examples().items():
        report = check(request)
        ok = report.verdict is expected
        failures += not ok
        print(
            f"=== {title}: expected {expected.value}, got {report.verdict.value}"
            f"{'' if ok else '  <-- UNEXPECTED'}"
        )
        print(format_report(report))
        print()
    print(f"{len(examples()) - failures} of {len(examples())} examples gave the expected verdict")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
