"""The main job: the worked example's report, then the example suite, through a crossgrad server.

    python -m crossgrad.clients.examples --start-server   # start a server, verify through it, stop it
    python -m crossgrad.clients.examples --server HOST:PORT
    python -m crossgrad.clients.examples                  # embedded: in-process, no server

The cases are examples/crossgrad_examples.yaml (`--suite` for another): the seed's worked example
first, with its gradients, Jacobians and the engine's DAG, then every case with a summary table.
Exits 1 when a case gets another verdict than the one it must get (or the server does not stop
cleanly), 2 when the suite cannot be read or the server cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .client import Client, CrossgradError, Result
from .local_server import LocalServer
from .suite import Outcome, print_summary, request_fields, run_cases
from .suite_format import Case, SuiteError, load_suite

WORKED_EXAMPLE = "worked example"


def default_suite() -> Path:
    """examples/ beside the package's source folders (a checkout or an editable install), else
    examples/ in the working directory."""
    beside = Path(__file__).resolve().parent.parent / "examples" / "crossgrad_examples.yaml"
    return beside if beside.exists() else Path("examples") / "crossgrad_examples.yaml"


def _worked_example_details(result: Result) -> list[str]:
    """Each input's .grad and each Jacobian (its diagonal when it is diagonal), then the DAG."""
    blocks = result.response.points[0].blocks
    grads = [f"{b.input}.grad = {result.grad(b.input).tolist()}" for b in blocks if b.quantity == "vjp"]
    jacobians = []
    for b in (b for b in blocks if b.quantity == "jacobian"):
        jac = result.jacobian(b.output, b.input)
        square = jac.ndim == 2 and jac.shape[0] == jac.shape[1]
        shown = (
            f"diag{np.diag(jac).tolist()}"
            if square and np.count_nonzero(jac - np.diag(np.diag(jac))) == 0
            else jac.tolist()
        )
        jacobians.append(f"d{b.output}/d{b.input} = {shown}")
    lines = [
        "   ".join(grads),
        "   ".join(jacobians),
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


def verify_examples(client: Client, cases: Sequence[Case]) -> int:
    """The worked example's report, then the other cases with a summary table; returns how many
    cases got an unexpected verdict."""
    started = time.monotonic()
    worked = next((c for c in cases if c.name == WORKED_EXAMPLE), cases[0])
    fields = request_fields(worked)
    result = client.verify(fields.pop("program"), fields.pop("inputs"), **fields)
    ok = result.verdict in worked.expect
    print(
        f"=== {worked.name}: {worked.program.strip()}, expected {worked.expected}, "
        f"got {result.verdict}" + ("" if ok else "  <-- UNEXPECTED")
    )
    if result.error is None:
        print("\n".join(line for line in _worked_example_details(result) if line))
    print(result.text)
    print()
    rest = [c for c in cases if c is not worked]
    print(f"=== the example suite: {len(cases)} cases ({worked.path})")
    outcomes = run_cases(client, rest)
    first = Outcome(worked, sum(result.response.timings.values()), result=result)
    everything = [first, *outcomes]
    print_summary(everything, time.monotonic() - started)
    return sum(not o.ok for o in everything)


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
    parser.add_argument("--suite", type=Path, default=None, help="the suite (default: the examples)")
    args = parser.parse_args(argv)
    try:
        cases = load_suite(args.suite or default_suite()).cases
        if args.start_server:
            started = time.monotonic()
            with LocalServer(args=("--log-level", "WARNING")) as server:
                print(
                    f"started a crossgrad server at {server.address} "
                    f"(SERVING after {time.monotonic() - started:.1f} s)\n"
                )
                with Client(server.address) as client:
                    failures = verify_examples(client, cases)
                code = server.stop()
            print(f"server stopped (exit code {code})")
            return 1 if failures or code != 0 else 0
        if args.server:
            with Client(args.server, token=args.token) as client:
                return 1 if verify_examples(client, cases) else 0
        print("embedded: verifying in this process (no server)\n")
        return 1 if verify_examples(Client.embedded(), cases) else 0
    except (SuiteError, CrossgradError, RuntimeError) as exc:
        print(f"examples: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
