"""Suite throughput: the example suite repeated to 500 cases, side by side in one run.

    .venv/bin/python -m benchmarks.suite_bench              # 500 cases per target
    .venv/bin/python -m benchmarks.suite_bench --quick      # 100 cases

Targets, each given the same cases through crossgrad check's own runner (clients/suite.py,
run_cases: --jobs cases at once, dealt over --jobs VerifyStreams; embedded, a pool of threads):
- embedded: in this process, no server;
- one server: replica crossgrad-1 of the deployment, called directly;
- two replicas behind nginx: the deployment of docker-compose.yml run as local processes
  (deploy/local.py: the compose services' commands and environments, Debian's nginx).
nginx balances per HTTP/2 request and a VerifyStream is one request, so each of the suite's
streams lands on one replica; the same cases as unary Verify calls from --jobs threads are
measured too (one server, and through nginx), where each call is balanced on its own.

Every target is warmed with the example suite first (each server compiles each program once per
worker), so the figures are steady-state throughput. Each target is bounded by --timeout.
The machine has 2 cores, shared: two replicas cannot beat one server by more than the idle
cores allow, so the ratio shows the cost of the load balancer more than added capacity.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from crossgrad.clients import Client
from crossgrad.clients.suite import request_fields, run_cases
from crossgrad.clients.suite_format import Case, load_suite

from deploy import local

EXAMPLES = local.ROOT / "examples"
SUITE = EXAMPLES / "crossgrad_examples.yaml"


def repeated_suite(directory: Path, cases: int) -> Path:
    """The example suite's cases repeated (renamed #k) to `cases`, written beside copies of its
    data files (their paths are relative to the suite)."""
    shutil.copytree(EXAMPLES, directory, dirs_exist_ok=True)
    data = yaml.safe_load(SUITE.read_text())
    base = data["cases"]
    data["suite"] = "bench"
    data["cases"] = [
        {**base[i % len(base)], "name": f"{base[i % len(base)]['name']} #{i}"} for i in range(cases)
    ]
    path = directory / "crossgrad_bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def suite_run(client: Client, cases: Sequence[Case], jobs: int, timeout: float) -> None:
    """crossgrad check's runner; every case must get its expected verdict."""
    outcomes = run_cases(client, cases, jobs, timeout)
    wrong = [o for o in outcomes if not o.ok]
    if wrong:
        raise SystemExit(f"{len(wrong)} case(s) did not get their verdicts: {wrong[0].headline}")


def unary_run(client: Client, cases: Sequence[Case], jobs: int, timeout: float) -> None:
    """The same cases as unary Verify calls from `jobs` threads (each call balanced by nginx)."""

    def one(case: Case) -> None:
        fields = request_fields(case)
        result = client.verify(fields.pop("program"), fields.pop("inputs"), timeout=timeout, **fields)
        if result.verdict not in case.expect:
            raise SystemExit(f"{case.name}: {result.verdict}, expected {case.expect}")

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, cases))


def measure(
    label: str,
    client: Client,
    run: Callable[[Client, Sequence[Case], int, float], None],
    warm: Sequence[Case],
    cases: Sequence[Case],
    jobs: int,
    timeout: float,
    replicas: dict[str, local.Replica],
) -> dict[str, object]:
    run(client, warm, jobs, timeout)
    before = {name: r.checks() for name, r in replicas.items()}
    started = time.perf_counter()
    run(client, cases, jobs, timeout)
    seconds = time.perf_counter() - started
    split = {name: r.checks() - before[name] for name, r in replicas.items()}
    row = {"target": label, "seconds": seconds, "rate": len(cases) / seconds, "split": split}
    print(f"  {label:<44} {seconds:7.1f} s  {row['rate']:7.1f} cases/s", flush=True)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="100 cases")
    parser.add_argument("--jobs", type=int, default=4, help="cases at once (crossgrad check --jobs)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per target at most")
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.cases
    if local.nginx_binary() is None:
        print("nginx is not installed (make system-deps installs it)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="crossgrad-suite-bench-") as tmp:
        warm = load_suite(SUITE).cases
        cases = load_suite(repeated_suite(Path(tmp), n)).cases
        print(
            f"suite throughput: {len(cases)} cases ({len(warm)} example cases repeated), "
            f"--jobs {args.jobs}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at start",
            flush=True,
        )
        rows = []
        with local.local_deployment() as deployment:
            replicas = deployment.replicas
            one = replicas["crossgrad-1"].address
            nginx = deployment.nginx.address
            targets = [
                ("embedded (in-process, suite runner)", None, suite_run),
                (f"one server (suite runner, {one})", one, suite_run),
                ("two replicas behind nginx (suite runner)", nginx, suite_run),
                ("one server (unary Verify, threads)", one, unary_run),
                ("two replicas behind nginx (unary Verify)", nginx, unary_run),
            ]
            for label, target, run in targets:
                with Client(target) as client:
                    rows.append(
                        measure(label, client, run, warm, cases, args.jobs, args.timeout, replicas)
                    )

    base = rows[1]["rate"]
    print(f"\n{'target':<44} {'cases/s':>8} {'vs one server':>14}   checks per replica")
    for row in rows:
        split = ", ".join(f"{k}: {v}" for k, v in row["split"].items())
        print(f"{row['target']:<44} {row['rate']:8.1f} {row['rate'] / base:13.2f}x   {split}")
    unary_one, unary_nginx = rows[3]["rate"], rows[4]["rate"]
    print(
        f"\nratios: nginx + 2 replicas / one server = {rows[2]['rate'] / base:.2f} (suite runner), "
        f"{unary_nginx / unary_one:.2f} (unary calls); embedded / one server = "
        f"{rows[0]['rate'] / base:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
