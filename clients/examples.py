"""The main job: verify the examples through a crossgrad server, the worked example first.

    python -m crossgrad.clients.examples --start-server   # start a server, verify through it, stop it
    python -m crossgrad.clients.examples --server HOST:PORT
    python -m crossgrad.clients.examples                  # embedded: in-process, no server

Exits 1 when an example gets another verdict than the one it must get.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .client import Client, Input, Result
from .local_server import LocalServer


@dataclass
class Example:
    title: str
    expected: str
    program: str
    inputs: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)


def examples() -> list[Example]:
    rng = np.random.default_rng(0)
    W, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    mask = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], dtype=float)
    worked = {"a": [2.0, 3.0], "b": [6.0, 4.0]}
    return [
        Example(
            "worked example: Q = 3a^3 - b^2, gradient [1, 1], Jacobians",
            "PASS",
            "Q = 3*a**3 - b**2",
            worked,
            {"cotangents": {"Q": [1.0, 1.0]}, "checks": ("vjp", "jacobian")},
        ),
        Example(
            "a layer with masked weights (hooks keep them fixed)",
            "PASS",
            "h = tanh(W @ x)\nloss = mean(h ** 2)",
            {"W": Input(W, mask=mask), "x": x},
        ),
        Example(
            "relu at its kink: a convention difference, not a failure",
            "PASS_WITH_CONVENTION_DIFFERENCES",
            "y = sum(relu(x))",
            {"x": [0.0, 1.5, -2.0]},
        ),
        Example(
            "a claimed gradient that is wrong in one entry",
            "FAIL",
            "Q = 3*a**3 - b**2",
            worked,
            {"cotangents": {"Q": [1.0, 1.0]}, "claimed_vjp": {"a": [36.0, 81.0], "b": [-12.0, -8.5]}},
        ),
    ]


def _worked_example_details(result: Result) -> list[str]:
    lines = [
        f"a.grad = {result.grad('a').tolist()}   b.grad = {result.grad('b').tolist()}",
        f"dQ/da = diag{np.diag(result.jacobian('Q', 'a')).tolist()}   "
        f"dQ/db = diag{np.diag(result.jacobian('Q', 'b')).tolist()}",
        "the engine's DAG (grad_fn -> next_functions):",
    ]
    dag = result.response.dag
    names = {n.id: n.name for n in dag.nodes} | {
        leaf.id: f"AccumulateGrad ({leaf.name})" for leaf in dag.leaves
    }
    for node in dag.nodes:
        at = (
            f"  [line {node.position.line}, column {node.position.column}: {node.text}]"
            if node.text
            else ""
        )
        lines.append(f"  {node.name} -> {', '.join(names[k] for k in node.next)}{at}")
    return lines


def verify_examples(client: Client) -> int:
    """Verify every example; print what a user needs; return how many got an unexpected verdict."""
    failures = 0
    for k, ex in enumerate(examples()):
        result = client.verify(ex.program, ex.inputs, **ex.fields)
        ok = result.verdict == ex.expected
        failures += not ok
        print(
            f"=== {ex.title}: expected {ex.expected}, got {result.verdict}"
            + ("" if ok else "  <-- UNEXPECTED")
        )
        if k == 0:
            print("\n".join(_worked_example_details(result)))
        print(result.text)
        print()
    total = len(examples())
    print(f"{total - failures} of {total} examples gave the expected verdict")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossgrad.clients.examples", description=__doc__.split("\n")[0]
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", help="verify through the crossgrad server at HOST:PORT")
    where.add_argument(
        "--start-server", action="store_true", help="start a local server, verify through it, stop it"
    )
    parser.add_argument(
        "--token", default=os.environ.get("CROSSGRAD_TOKEN"), help="bearer token [env CROSSGRAD_TOKEN]"
    )
    args = parser.parse_args(argv)
    if args.start_server:
        started = time.monotonic()
        with LocalServer(args=("--log-level", "WARNING")) as server:
            print(
                f"started a crossgrad server at {server.address} "
                f"(SERVING after {time.monotonic() - started:.1f} s)\n"
            )
            with Client(server.address) as client:
                failures = verify_examples(client)
            code = server.stop()
        print(f"server stopped (exit code {code})")
        return 1 if failures or code != 0 else 0
    if args.server:
        with Client(args.server, token=args.token) as client:
            return 1 if verify_examples(client) else 0
    print("embedded: verifying in this process (no server)\n")
    return 1 if verify_examples(Client.embedded()) else 0


if __name__ == "__main__":
    sys.exit(main())
