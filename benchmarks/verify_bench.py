"""In-process verification speed, cold (first time) and warm (same program and shapes again),
per stage.

Run from the repository root:

    .venv/bin/python -m benchmarks.verify_bench      # or: make bench

Cases: the worked example (Q = 3a^3 - b^2, VJP); an MLP-like loss (x 8x4, W1 4x8, W2 8x3,
log_softmax cross-entropy); sum(tanh(W @ x)) for W 8x8, 16x16 and 32x32. "cold, fresh process"
is the first check the process ever makes (it pays imports and JAX's start-up); "cold" is the
first check of that program in a process that has checked something else; "warm" is the median
of later checks of the same program and shapes.
Targets: worked example warm <= 2 ms in total and cold <= 150 ms; sum(tanh(W @ x)), W 32x32: the
sympy stage cold <= 2 s with all 1,056 gradient entries checked exactly, and warm <= 20 ms.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import numpy as np
from crossgrad.server.check import check
from crossgrad.server.model import CheckRequest, InputSpec

STAGES = ("parse", "engine", "sympy", "jax", "fd", "compare", "blame")


def worked_example() -> CheckRequest:
    return CheckRequest(
        "Q = 3*a**3 - b**2",
        [InputSpec("a", [2.0, 3.0]), InputSpec("b", [6.0, 4.0])],
        cotangents={"Q": [1.0, 1.0]},
    )


def mlp() -> CheckRequest:
    rng = np.random.default_rng(0)
    source = "h = tanh(x @ W1)\nloss = cross_entropy(h @ W2, t)"
    return CheckRequest(
        source,
        [
            InputSpec("x", rng.normal(size=(8, 4)), requires_grad=False),
            InputSpec("W1", rng.normal(size=(4, 8)) / 2),
            InputSpec("W2", rng.normal(size=(8, 3)) / 3),
            InputSpec("t", rng.integers(0, 3, 8), dtype="int64", requires_grad=False),
        ],
    )


def layer(n: int) -> CheckRequest:
    rng = np.random.default_rng(n)
    return CheckRequest(
        "y = sum(tanh(W @ x))",
        [InputSpec("W", rng.normal(size=(n, n)) / np.sqrt(n)), InputSpec("x", rng.normal(size=n))],
    )


CASES = {
    "worked example": worked_example,
    "MLP-like loss": mlp,
    "sum(tanh(W@x)) 8x8": lambda: layer(8),
    "sum(tanh(W@x)) 16x16": lambda: layer(16),
    "sum(tanh(W@x)) 32x32": lambda: layer(32),
}


def timed(make: object) -> tuple[float, dict[str, float], object]:
    start = time.perf_counter()
    report = check(make())  # type: ignore[operator]
    total = time.perf_counter() - start
    return total, report.timings, report


def fresh_process_cold() -> float:
    """The worked example as the very first check of a new process (its own interpreter)."""
    code = (
        "import time\nfrom benchmarks.verify_bench import worked_example\n"
        "from crossgrad.server.check import check\n"
        "t = time.perf_counter(); check(worked_example()); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f}"


def main() -> None:
    fresh = fresh_process_cold()
    check(CheckRequest("y = sum(exp(z) * z)", [InputSpec("z", [0.1, 0.2, 0.3])]))  # warm the process
    header = f"{'case':24s} {'run':5s} {'total ms':>9s} " + " ".join(f"{s:>9s}" for s in STAGES)
    print("In-process verification (VJP; references sympy, JAX, finite differences)")
    print(header)
    print("-" * len(header))
    results = {}
    for name, make in CASES.items():
        cold_total, cold_stages, report = timed(make)
        warm = [timed(make) for _ in range(15)]
        warm_total = statistics.median(w[0] for w in warm)
        warm_stages = {s: statistics.median(w[1].get(s, 0.0) for w in warm) for s in STAGES}
        results[name] = (cold_total, cold_stages, warm_total, warm_stages, report)
        for run, total, stages in (("cold", cold_total, cold_stages), ("warm", warm_total, warm_stages)):
            cells = " ".join(fmt_ms(stages.get(s, 0.0)) for s in STAGES)
            print(f"{name:24s} {run:5s} {fmt_ms(total)} {cells}")
        print(f"{'':24s} verdict {report.verdict.value}; sympy: {report.references['sympy'].note}")

    we, big = results["worked example"], results["sum(tanh(W@x)) 32x32"]
    entries = sum(b.pairs[0].compared for b in big[4].blocks if b.quantity == "vjp")
    print("\nTargets")
    rows = [
        ("worked example, warm total", we[2] * 1e3, 2.0, "ms"),
        ("worked example, cold total (warm process)", we[0] * 1e3, 150.0, "ms"),
        ("worked example, cold total (fresh process)", fresh * 1e3, 150.0, "ms"),
        ("32x32 sympy stage, cold", big[1]["sympy"], 2.0, "s"),
        ("32x32 sympy stage, warm", big[3]["sympy"] * 1e3, 20.0, "ms"),
    ]
    for label, value, target, unit in rows:
        status = "met" if value <= target else "MISSED"
        print(f"  {label:45s} {value:9.2f} {unit}  (target <= {target:g} {unit}: {status})")
    print(f"  32x32 gradient entries checked exactly by sympy: {entries} (of 1056)")


if __name__ == "__main__":
    main()
