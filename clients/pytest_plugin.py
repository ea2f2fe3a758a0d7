"""pytest plugin (entry point `pytest11`): crossgrad suites as tests, and a `crossgrad` fixture.

- Files named crossgrad*.yaml (or .yml) are collected as suites: one test item per case, which
  fails, with the report's text, when the case gets another verdict than it expects.
- The `crossgrad` fixture verifies from a test:

      def test_layer(crossgrad):
          crossgrad.assert_verified("y = sum(tanh(W @ x))", {"W": W, "x": x})

- `--crossgrad-server HOST:PORT` (and `--crossgrad-token`) checks through a server; without it
  everything runs embedded, in-process (which needs the server extra: sympy and JAX). Given a
  server, nothing here imports sympy or JAX, and nothing beyond pytest is imported until a suite
  or the fixture is used (pytest loads this plugin in every run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .client import Client, Result
    from .suite_format import Case

_CLIENT = pytest.StashKey["Client"]()
_UNUSABLE = pytest.StashKey[str]()  # why the server cannot be used, found at the first use


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crossgrad", "crossgrad gradient verification")
    group.addoption(
        "--crossgrad-server",
        metavar="ADDR",
        default=os.environ.get("CROSSGRAD_SERVER"),
        help="check crossgrad suites and the crossgrad fixture through this server (HOST:PORT) "
        "instead of in-process [env CROSSGRAD_SERVER]",
    )
    group.addoption(
        "--crossgrad-token",
        metavar="TOKEN",
        default=os.environ.get("CROSSGRAD_TOKEN"),
        help="bearer token for --crossgrad-server [env CROSSGRAD_TOKEN]",
    )
    group.addoption(
        "--crossgrad-tls",
        action="store_true",
        help="connect to --crossgrad-server with TLS (the system's roots)",
    )
    group.addoption(
        "--crossgrad-ca-cert",
        metavar="FILE",
        help="connect to --crossgrad-server with TLS, trusting this root certificate (PEM)",
    )


class ServerUnusable(Exception):
    """The server given cannot be reached (or is not serving): every check says so at once."""


def _client(config: pytest.Config) -> Client:
    """One client for the session: a channel to the server, or the embedded verifier. The server
    is asked for its health once: unreachable, each test fails at once with the same reason
    (not after a connection attempt of its own)."""
    if _CLIENT not in config.stash:
        from .client import Client, CrossgradError

        server = config.getoption("crossgrad_server")
        token = config.getoption("crossgrad_token")
        if server is not None and not server.strip():  # an unset variable in quotes, say: each
            # check fails with this one line (a UsageError raised in a test printed pytest's
            # internals, a thousand lines a test)
            config.stash[_UNUSABLE] = (
                "--crossgrad-server (or CROSSGRAD_SERVER) is empty: give HOST:PORT, or leave it "
                "out to check in-process"
            )
            raise ServerUnusable(config.stash[_UNUSABLE])
        ca_cert = config.getoption("crossgrad_ca_cert")
        try:
            roots = Path(ca_cert).read_bytes() if server and ca_cert else None
            client = (
                Client(
                    server, token=token, tls=config.getoption("crossgrad_tls"), root_certificates=roots
                )
                if server
                else Client.embedded()
            )
        except (OSError, ValueError) as exc:  # the certificate file, the address
            config.stash[_UNUSABLE] = f"--crossgrad-server {server}: {exc}"
            raise ServerUnusable(config.stash[_UNUSABLE]) from None
        config.stash[_CLIENT] = client
        if server:
            try:
                status = client.health(timeout=10.0)
            except CrossgradError as exc:
                config.stash[_UNUSABLE] = str(exc)
            else:
                if status != "SERVING":
                    config.stash[_UNUSABLE] = f"the crossgrad server at {server} is {status}"
    if _UNUSABLE in config.stash:
        raise ServerUnusable(config.stash[_UNUSABLE])
    return config.stash[_CLIENT]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CLIENT in config.stash:
        config.stash[_CLIENT].close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    named = file_path.suffix in (".yaml", ".yml") and file_path.name.startswith("crossgrad")
    if named and _looks_like_a_suite(file_path):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


def _looks_like_a_suite(path: Path) -> bool:
    """A top-level `cases` key: other crossgrad*.yaml files (settings, compose) are not ours.
    Read from YAML's events, which build nothing (an alias bomb stays a few events): a line
    that starts with "cases:" missed a quoted key, a byte-order mark and flow style, and those
    suites, whose cases `crossgrad check` runs, were left out without a word. A suite with
    mistakes in it still is one, and its collection error says what they are; so is a file
    that is not YAML at all but names `cases`."""
    import yaml

    try:
        with path.open(encoding="utf-8-sig", errors="replace") as stream:
            return _top_level_key(yaml.parse(stream, Loader=yaml.SafeLoader), "cases")
    except yaml.YAMLError:
        try:
            return "cases" in path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    except OSError:
        return False


def _top_level_key(events: Iterator[Any], key: str) -> bool:
    """Whether the first document is a mapping with this key."""
    import yaml

    depth, is_key = 0, True  # depth 1: inside the top mapping, where keys and values alternate
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            if depth == 0 and not isinstance(event, yaml.MappingStartEvent):
                return False
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            if depth == 0:
                return False
            if depth == 1:  # a key's or a value's collection ended
                is_key = not is_key
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            if depth == 0:
                return False
            if depth == 1:
                if is_key and isinstance(event, yaml.ScalarEvent) and event.value == key:
                    return True
                is_key = not is_key
    return False


class SuiteFile(pytest.File):
    def collect(self) -> Iterator[CaseItem]:
        from .suite_format import SuiteError, load_suite

        try:
            suite = load_suite(self.path)
        except SuiteError as exc:
            raise self.CollectError(str(exc)) from None
        for case in suite.cases:
            yield CaseItem.from_parent(self, name=case.name, case=case)


class CaseFailed(Exception):
    """A case that did not get its expected verdict, regressed, or could not be checked."""


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        from .client import CrossgradError
        from .suite import check_case

        try:
            outcome = check_case(_client(self.config), self.case)
        except (CrossgradError, ServerUnusable) as exc:  # the server as a whole: unreachable, bad token
            raise CaseFailed(f"{self.case.id}: not checked: {exc}") from None
        if not outcome.ok:
            raise CaseFailed(outcome.details())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, max(self.case.line - 1, 0), f"crossgrad case: {self.case.id}"


class Crossgrad:
    """The `crossgrad` fixture: `verify` returns the Result; `assert_verified` fails the test with
    the report's text unless the verdict is a pass (or one of `expect`)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def verify(self, program: str, inputs: Mapping[str, Any], **fields: Any) -> Result:
        return self.client.verify(program, inputs, **fields)

    def assert_verified(
        self,
        program: str,
        inputs: Mapping[str, Any],
        *,
        expect: str | Sequence[str] | None = None,
        **fields: Any,
    ) -> Result:
        """Verify and fail the test unless the verdict is PASS (or a pass with notes or
        conventions), or one of `expect` when given (ERROR matches a request the verifier
        refuses, too); fields are Client.verify's."""
        from .client import CrossgradError, Result
        from .suite import REFUSED
        from .suite_format import VERDICTS

        __tracebackhide__ = True
        expected = [] if expect is None else [expect] if isinstance(expect, str) else list(expect)
        # as a suite's expect: pass is PASS, and VERDICT_PASS (the protobuf enum's name) too
        expected = [e.upper().removeprefix("VERDICT_") for e in expected]
        unknown = [e for e in expected if e not in VERDICTS]
        if unknown:
            pytest.fail(f"crossgrad: expect {unknown} is not a verdict: {', '.join(VERDICTS)}", False)
        try:
            result = self.client.verify(program, inputs, **fields)
        except CrossgradError as exc:
            result, problem = Result(error=exc), str(exc)  # failed outside the except: no chain
        else:
            problem = ""
        refusal_expected = (
            "ERROR" in expected and result.error is not None and result.error.code in REFUSED
        )
        if problem and not refusal_expected:
            pytest.fail(f"crossgrad could not check the program: {problem}", pytrace=False)
        if expect is None:
            ok, wanted = result.passed, "a pass"
        else:
            ok, wanted = result.verdict in expected, " or ".join(expected)
        if not ok:
            pytest.fail(
                f"crossgrad: expected {wanted}, got {result.verdict}\n{result.text}", pytrace=False
            )
        return result


@pytest.fixture(scope="session")
def crossgrad(pytestconfig: pytest.Config) -> Crossgrad:
    """Verify gradients from a test: embedded, or through --crossgrad-server."""
    try:
        client = _client(pytestconfig)
    except ServerUnusable as exc:
        problem = str(exc)  # failed outside the except: no chained exception in the report
    else:
        return Crossgrad(client)
    pytest.fail(f"crossgrad: {problem}", pytrace=False)
