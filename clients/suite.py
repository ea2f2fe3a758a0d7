"""`crossgrad check SUITE...`: run YAML gradient-regression suites, for CI.

    crossgrad check examples/crossgrad_examples.yaml                  # embedded, in this process
    crossgrad check suite.yaml --server 127.0.0.1:50051 --junit build/crossgrad.xml
    crossgrad check suite.yaml --start-server --update-baseline baseline.json
    crossgrad check suite.yaml --baseline baseline.json                # regressions since then

Exit codes: 0 every case got its expected verdict (and nothing moved since the baseline);
1 a case got another verdict, or a value or derivative moved beyond tolerance; 2 a usage, input
or connection error (one line on stderr; --debug shows the traceback).
The suite format is described in crossgrad.clients.suite_format.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from . import baseline as baselines
from .cli import (  # parsing and connecting
    OneLineParser,
    UsageError,
    connect,
    error_hint,
    seconds,
    server_address,
)
from .client import Client, CrossgradError, Result
from .suite_format import MAX_CASES, Case, SuiteError, load_suite

MAX_TOTAL_CASES = 10 * MAX_CASES
DEFAULT_JOBS = 4


@dataclass
class Outcome:
    """What one case got: its verdict (or the error that kept it from being checked), how long it
    took, and what moved since the baseline."""

    case: Case
    seconds: float
    result: Result | None = None
    error: str | None = None  # the call failed: rejected request, unreachable server, ...
    regressions: list[baselines.Regression] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.result.verdict if self.result is not None else "NOT CHECKED"

    @property
    def verdict_ok(self) -> bool:
        return self.result is not None and self.result.verdict in self.case.expect

    @property
    def ok(self) -> bool:
        return self.error is None and self.verdict_ok and not self.regressions

    @property
    def status(self) -> str:
        if self.error is not None:
            return "ERROR"
        if not self.verdict_ok:
            return "UNEXPECTED"
        return "REGRESSION" if self.regressions else "ok"

    @property
    def moved(self) -> int:
        """Entries that moved since the baseline (some are summarised, not listed)."""
        return sum(1 + r.more for r in self.regressions if r.index is not None)

    @property
    def changed_blocks(self) -> int:
        """Blocks of the baseline no longer computed, or of another shape now."""
        return sum(r.index is None for r in self.regressions)

    @property
    def headline(self) -> str:
        """One line: what went wrong (empty when nothing did)."""
        if self.error is not None:
            return f"{self.case.id}: not checked: {self.error}"
        parts = []
        if not self.verdict_ok:
            parts.append(f"expected {self.case.expected}, got {self.verdict}")
        if self.regressions:
            parts.append(f"{_changes(self.moved, self.changed_blocks)} since the baseline")
        return f"{self.case.id}: {'; '.join(parts)}" if parts else ""

    def details(self) -> str:
        """The headline, the regressions, and the report when the verdict was not the expected one."""
        lines = [self.headline]
        lines += [f"regression: {r}" for r in self.regressions]
        if self.result is not None and not self.verdict_ok:
            lines += ["", self.result.text]
        return "\n".join(lines)


# A request refused for what it asks (its verdict is ERROR), not a call that failed on the way.
REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


def request_fields(case: Case) -> dict[str, Any]:
    """The case as verify()'s keyword arguments."""
    return {"program": case.program, "inputs": case.inputs, **case.fields, "id": case.id}


def _seconds(result: Result) -> float:
    """How long the check took where it ran: the worker's whole check on a server, the sum of the
    stages embedded (wall time would count the queue behind other cases)."""
    timings = result.response.timings
    return timings["worker"] if "worker" in timings else sum(timings.values())


def _outcome(case: Case, result: Result) -> Outcome:
    if result.error is not None:
        if "ERROR" in case.expect and result.error.code in REFUSED:  # refusing it was expected
            return Outcome(case, 0.0, result=result)
        error, info = str(result.error) + error_hint(result.error), result.error.info
        if result.error.code in REFUSED:  # name the line in the suite file that it refused
            line = info.get("line", "")
            if line.isdigit() and case.program_line:  # a line of the program
                at = case.program_line + int(line) - 1
            else:
                at = case.line_of(info.get("field", ""))
            error = f"{case.path}:{at}: {error}" if at else error
        return Outcome(case, 0.0, error=error)
    return Outcome(case, _seconds(result), result=result)


def run_cases(
    client: Client,
    cases: Sequence[Case],
    jobs: int = DEFAULT_JOBS,
    timeout: float | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Check every case, at most `jobs` at once (over `jobs` VerifyStreams, so that a load
    balancer spreads them over its replicas; a thread pool embedded); outcomes come back in the
    cases' order. Raises CrossgradError when the server cannot be reached at all."""
    outcomes: dict[int, Outcome] = {}
    requests = [request_fields(case) for case in cases]
    jobs = max(1, jobs)
    for result in client.verify_stream(requests, concurrency=jobs, timeout=timeout, streams=jobs):
        outcome = _outcome(cases[result.index], result)
        outcomes[result.index] = outcome
        if on_done is not None:
            on_done(outcome)
    return [outcomes[k] for k in range(len(cases))]


def check_case(client: Client, case: Case, timeout: float | None = None) -> Outcome:
    """One case (the pytest plugin's items)."""
    return run_cases(client, [case], 1, timeout)[0]


def apply_baseline(outcomes: Sequence[Outcome], recorded: dict[str, Any], rtol: float | None,
                   atol: float | None, loaded: set[str] | None = None) -> list[str]:  # fmt: skip
    """Attach regressions to the outcomes; returns notes (cases the baseline does not know, and
    cases of these suites the baseline knows that are not in them now: renamed or removed).
    loaded: the ids of every case of the suites as read (default: those that ran), when --case
    ran only some."""
    notes = []
    ran = {o.case.id for o in outcomes}
    loaded = ran if loaded is None else loaded
    suites = {case_id.split("::", 1)[0] for case_id in ran}
    for case_id in recorded:
        if case_id.split("::", 1)[0] in suites and case_id not in loaded:
            notes.append(f"{case_id}: in the baseline, not in its suite now (renamed or removed?)")
    for o in outcomes:
        if o.result is None or o.result.error is not None:
            continue  # not checked, or refused: the error says so already (and no baseline
            # records it: "record it with --update-baseline" could not be done)
        if o.case.id not in recorded:
            notes.append(f"{o.case.id}: not in the baseline (record it with --update-baseline)")
            continue
        o.regressions = baselines.compare(
            o.case.id,
            recorded[o.case.id],
            baselines.snapshot(o.result, o.case.id),
            # the baseline's own tolerances (a case's rtol is its check's: 0.01 there let a
            # 1e-3 change of every gradient pass as no regression)
            rtol,
            atol,
        )
    return notes


# ---------------------------------------------------------------- terminal output


def _console(stderr: bool = False) -> Any:
    from .report import PipedConsole  # (CI logs are not terminals: 160 columns)

    return PipedConsole(file=sys.stderr if stderr else sys.stdout, highlight=False)


def summary_table(outcomes: Sequence[Outcome]) -> Any:
    from rich.table import Table

    several = len({o.case.suite for o in outcomes}) > 1
    table = Table(title="crossgrad check", title_justify="left")
    table.add_column("case", overflow="fold")
    table.add_column("expected")
    table.add_column("got")
    table.add_column("time", justify="right")
    table.add_column("ok")
    style = {"ok": "green", "UNEXPECTED": "bold red", "REGRESSION": "bold red", "ERROR": "bold magenta"}
    for o in outcomes:
        table.add_row(
            o.case.id if several else o.case.name,
            o.case.expected,
            o.verdict,
            f"{o.seconds:.2f} s",
            f"[{style[o.status]}]{o.status}[/]",
        )
    return table


def _changes(moved: int, blocks: int) -> str:
    """ "6 entries moved", "1 block gone or reshaped", or both: a block that vanished is not an
    entry (it was counted as one)."""
    parts = [f"{moved} {'entry' if moved == 1 else 'entries'} moved"] if moved else []
    if blocks:
        parts.append(f"{blocks} {'block' if blocks == 1 else 'blocks'} gone or reshaped")
    return ", ".join(parts)


def print_summary(outcomes: Sequence[Outcome], seconds: float, verbose: bool = False) -> None:
    console = _console()
    # (lines of text are never broken, whatever the width: a log is searched for them)
    for o in outcomes:
        if verbose and o.result is not None:
            console.rule(o.case.id)
            console.print(o.result.text, markup=False, soft_wrap=True)
    console.print(summary_table(outcomes))
    for o in outcomes:
        if not o.ok:
            console.rule(f"{o.case.id}: {o.status}", style="red")
            console.print(o.details(), markup=False, soft_wrap=True)
    bad = [o for o in outcomes if not o.ok]
    regressed = [o for o in outcomes if o.regressions]
    changes = _changes(sum(o.moved for o in regressed), sum(o.changed_blocks for o in regressed))
    entries = f" ({changes} from the baseline)" if regressed else ""
    console.print(
        f"{len(outcomes)} {'case' if len(outcomes) == 1 else 'cases'} in {seconds:.1f} s: "
        f"{len(outcomes) - len(bad)} as expected, "
        f"{sum(o.status == 'UNEXPECTED' for o in outcomes)} unexpected, "
        f"{len(regressed)} regressed{entries}, {sum(o.error is not None for o in outcomes)} not checked",
        markup=False,
        soft_wrap=True,
    )


def _run_with_progress(client: Client, cases: Sequence[Case], jobs: int, timeout: float | None,
                       show: bool) -> list[Outcome]:  # fmt: skip
    if not show:
        return run_cases(client, cases, jobs, timeout)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_console(stderr=True), transient=True) as progress:
        task = progress.add_task("checking", total=len(cases))
        return run_cases(
            client, cases, jobs, timeout, on_done=lambda o: progress.update(task, advance=1)
        )


# ---------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="crossgrad check",
        description="Run YAML gradient-regression suites (embedded by default).",
    )
    parser.add_argument("suites", nargs="+", metavar="SUITE", help="YAML suite files")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        metavar="ADDR",
        default=os.environ.get("CROSSGRAD_SERVER"),
        type=server_address,
        help="check through the crossgrad server at HOST:PORT [env CROSSGRAD_SERVER]",
    )
    where.add_argument(
        "--start-server", action="store_true", help="start a local server for the run, then stop it"
    )
    parser.add_argument(
        "--token", default=os.environ.get("CROSSGRAD_TOKEN"), help="bearer token [env CROSSGRAD_TOKEN]"
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS (the system's roots)")
    parser.add_argument("--ca-cert", metavar="FILE", help="TLS with this root certificate (PEM)")
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=DEFAULT_JOBS,
        help=f"cases checked at once (default {DEFAULT_JOBS})",
    )
    parser.add_argument(
        "--timeout", type=seconds, default=None, help="seconds for the whole run (over gRPC)"
    )
    parser.add_argument(
        "--case",
        action="append",
        metavar="PATTERN",
        help="only the cases whose name (or SUITE::NAME) matches this shell pattern (*, ?, [...]); "
        "repeatable",
    )
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per case)")
    parser.add_argument(
        "--baseline", metavar="FILE", help="report values that moved since this baseline"
    )
    parser.add_argument(
        "--update-baseline", metavar="FILE", help="record each case's values and derivatives (JSON)"
    )
    parser.add_argument(
        "--baseline-rtol",
        type=float,
        help="the regression tolerance (default 1e-9 in float64, 1e-5 in float32; a case's own "
        "rtol is for its check, not for this)",
    )
    parser.add_argument(
        "--baseline-atol", type=float, help="the regression tolerance (default 1e-12; 1e-7 in float32)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print every case's report")
    parser.add_argument("--debug", action="store_true", help="tracebacks for errors")
    return parser


def _load_all(paths: Sequence[str]) -> list[Case]:
    cases: list[Case] = []
    seen: dict[str, Path] = {}
    given: dict[Path, str] = {}  # a file given twice is read once (its cases clashed with
    for path in paths:  # themselves: "also has it in" the same file)
        given.setdefault(Path(path).resolve(), path)
    for raw in given.values():
        suite = load_suite(raw)
        for case in suite.cases:
            if case.id in seen:
                raise SuiteError(
                    f"{suite.path}: case {case.name!r}: suite {suite.name!r} also has it in "
                    f"{seen[case.id]} (give one of the suites another `suite:` name)"
                )
            seen[case.id] = suite.path
        cases += suite.cases
        if len(cases) > MAX_TOTAL_CASES:
            raise SuiteError(f"more than {MAX_TOTAL_CASES} cases in all (the limit)")
    return cases


def _select(cases: Sequence[Case], patterns: Sequence[str] | None) -> list[Case]:
    """The cases --case names (all without it); a pattern that matches none is an error."""
    if not patterns:
        return list(cases)
    chosen = [c for c in cases if any(_matches(c, p) for p in patterns)]
    for pattern in patterns:
        if not any(_matches(c, pattern) for c in cases):
            # by id (SUITE::NAME): a pattern with the file's name for the suite's missed, and
            # the names alone did not say what the suite is called
            ids = ", ".join(c.id for c in cases[:10]) + (", ..." if len(cases) > 10 else "")
            raise UsageError(f"--case {pattern!r} matches no case (the cases: {ids})")
    return chosen


def _matches(case: Case, pattern: str) -> bool:
    return fnmatch.fnmatchcase(case.name, pattern) or fnmatch.fnmatchcase(case.id, pattern)


def _check(args: argparse.Namespace, client: Client, cases: Sequence[Case], loaded: set[str]) -> int:
    """Run the cases; loaded: the ids of every case the suites hold (--case may run fewer)."""
    started = time.monotonic()
    if client.target is not None:
        try:
            status = client.health(timeout=min(args.timeout or 10.0, 10.0))
        except CrossgradError as exc:
            raise UsageError(str(exc)) from None
        if status != "SERVING":
            raise UsageError(f"the crossgrad server at {client.target} is {status}, not SERVING")
    recorded = baselines.load(args.baseline) if args.baseline else None
    outcomes = _run_with_progress(client, cases, args.jobs, args.timeout, sys.stderr.isatty())
    notes = []
    if recorded is not None:
        notes = apply_baseline(outcomes, recorded, args.baseline_rtol, args.baseline_atol, loaded)
    print_summary(outcomes, time.monotonic() - started, args.verbose)
    for note in notes:
        print(f"note: {note}")
    if args.junit:
        from . import junit

        junit.write(args.junit, outcomes)
        print(f"JUnit XML written to {args.junit}")
    if args.update_baseline:
        checked = {
            o.case.id: baselines.snapshot(o.result, o.case.id) for o in outcomes if o.result is not None
        }
        held = baselines.save(args.update_baseline, checked)
        kept = f", {held - len(checked)} kept from before" if held > len(checked) else ""
        print(f"baseline of {len(checked)} case(s) written to {args.update_baseline}{kept}")
    errors = [o for o in outcomes if o.error is not None]
    if errors:
        # one line for logs that keep only stderr; the whole message is in the details above
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0]  # (what to do about a token, past the cut: it was cut off)
        hint = error_hint(first.result.error) if first.result and first.result.error else ""
        headline = _shortened(first.headline.removesuffix(hint))
        print(f"crossgrad check: {headline}{hint}{more}", file=sys.stderr)
        return 2
    return 0 if all(o.ok for o in outcomes) else 1


def _check_writable(flag: str, path: str) -> None:
    """Fail before any case runs if an output file cannot be written (it failed after the whole
    suite had run, and the baseline's error named its FILE.tmp). Its folder is made, as the
    writers make it, and a file is made and removed there: permission bits say nothing to root,
    nor about /proc or a read-only mount."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    folder = target.parent
    while not folder.exists():  # the nearest folder there is (mkdir said only "File exists")
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: cannot write there ({folder} is a file, not a folder)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}."):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None


def _shortened(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help 0
        return int(exc.code or 0)
    if args.jobs < 1:
        print(f"crossgrad check: --jobs must be at least 1, not {args.jobs}", file=sys.stderr)
        return 2
    try:
        loaded = _load_all(args.suites)
        cases = _select(loaded, args.case)
        ids = {case.id for case in loaded}
        if args.baseline:
            baselines.load(args.baseline)  # a bad baseline fails before any case runs
        for flag, path in (("--junit", args.junit), ("--update-baseline", args.update_baseline)):
            if path:
                _check_writable(flag, path)
        if args.start_server:
            from .local_server import LocalServer

            # (the warm-up takes 10 to 30 s: said, or the command seemed to hang)
            print("crossgrad check: starting a local server...", file=sys.stderr)
            started = time.monotonic()
            with LocalServer(args=("--log-level", "WARNING")) as server:
                print(
                    f"crossgrad check: a local server at {server.address} "
                    f"(SERVING after {time.monotonic() - started:.1f} s)",
                    file=sys.stderr,
                )
                with Client(server.address) as client:
                    code = _check(args, client, cases, ids)
                if server.stop() != 0:
                    print("crossgrad check: the local server did not stop cleanly", file=sys.stderr)
                    return 2
                return code
        if args.server:
            with connect(args.server, args.token, args.tls, args.ca_cert) as client:
                return _check(args, client, cases, ids)
        try:
            client = Client.embedded()
        except ImportError as exc:
            raise UsageError(f"{exc} (or check through a server with --server ADDR)") from None
        return _check(args, client, cases, ids)
    except BrokenPipeError:  # the reader went away: the command's own handler (141), not an
        raise  # OSError of ours (exit 2, "crossgrad check: " and nothing after it)
    except (
        SuiteError,
        baselines.BaselineError,
        UsageError,
        CrossgradError,
        RuntimeError,
        OSError,
    ) as exc:
        if args.debug:  # the traceback, and still exit 2 (raising would exit 1)
            traceback.print_exc()
        print(f"crossgrad check: {exc}", file=sys.stderr)
        if args.junit:
            from . import junit

            with contextlib.suppress(OSError):  # the error above is the one to report
                junit.write_error(args.junit, str(exc))
        return 2
    except KeyboardInterrupt:
        print("crossgrad check: interrupted", file=sys.stderr)
        if args.junit:  # not the last run's file, all green, left in its place
            from . import junit

            with contextlib.suppress(OSError):
                junit.write_error(args.junit, "interrupted")
        return 130  # as the other commands: the shell's code for SIGINT


if __name__ == "__main__":
    sys.exit(main())
