"""The server's settings: command-line flags, each with a CROSSGRAD_* environment variable.

A flag wins over its environment variable, which wins over the default, so a container can be
configured by environment alone (docker-compose) and a person can still override one setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..limits import Limits


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 50051  # 0: any free port (printed, and written to port_file)
    workers: int = 2  # worker processes; each checks one request at a time
    token: str = ""  # bearer token required on every call but health checks and reflection
    tls_cert: str = ""  # PEM files: both or neither
    tls_key: str = ""
    metrics_port: int = -1  # Prometheus metrics over HTTP on this port (-1 = off, 0 = any free port)
    metrics_host: str = ""  # default: the gRPC host
    port_file: str = ""  # JSON {address, pid, metrics_port} once SERVING (finds a port-0 server)
    grace_seconds: float = 10.0  # on SIGTERM: how long in-flight calls get to finish
    budget_seconds: float = 30.0  # a request's total time budget when it names none
    kill_grace_seconds: float = 1.0  # a worker past its request's budget by this much is killed
    worker_memory_mb: int = 4096  # address-space cap of each worker process
    worker_max_requests: int = 0  # recycle a worker after this many checks (0 = never)
    worker_recycle_mb: int = 0  # replace a worker whose memory grew past this (0: half the cap)
    worker_spin_ms: float = 2.0  # a worker that finished polls this long for its next request
    max_queue: int = 256  # requests waiting for a worker; past this, UNAVAILABLE (server busy)
    max_message_mb: int = 64  # largest request or response message
    max_held_mb: int = 1024  # request bytes held at once (waiting or being checked); past it: busy
    max_report_values: int = 2_000_000  # entries of source values a report carries (point 0)
    max_stream_inflight: int = 32  # checks one VerifyStream runs at once
    # what each worker keeps compiled (the same program and shapes again is then a cache hit):
    # JAX functions (a program has one per kind of check), sympy's compiled derivatives, parses
    cache_jax: int = 128
    cache_sympy: int = 64
    cache_parse: int = 256
    log_level: str = "INFO"
    limits: Limits = field(default_factory=Limits)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


_HELP = {
    "host": "address to listen on (0.0.0.0 for every interface)",
    "port": "port to listen on (0: any free port)",
    "workers": "worker processes (each checks one request at a time)",
    "token": "require 'authorization: Bearer TOKEN' on every call but health checks and reflection",
    "tls_cert": "PEM certificate chain (with --tls-key: serve TLS)",
    "tls_key": "PEM private key",
    "metrics_port": "serve Prometheus metrics over HTTP on this port (-1: off, 0: any free port)",
    "metrics_host": "address for the metrics endpoint (default: --host)",
    "port_file": 'once SERVING, write {"address": "host:port", "pid", "metrics_port"} (JSON) here',
    "grace_seconds": "on SIGTERM, time in-flight calls get to finish",
    "budget_seconds": "a request's total time budget when it names none",
    "kill_grace_seconds": "kill a worker this long after its request's budget ran out",
    "worker_memory_mb": "address-space cap of each worker process (MiB)",
    "worker_max_requests": "replace a worker after this many checks (0: never)",
    "worker_recycle_mb": "replace a worker after a check that took its resident memory past this "
    "(MiB; 0: half of --worker-memory-mb): memory it freed stays with the process",
    "worker_spin_ms": "after a check, a worker polls (yielding its core) this long for the next "
    "request before it sleeps: a quicker answer to back-to-back requests for a little CPU (0: off)",
    "max_queue": "requests that may wait for a worker before the server answers UNAVAILABLE",
    "max_message_mb": "largest request or response message (MiB)",
    "max_held_mb": "request bytes the server holds at once, waiting or being checked (MiB): past "
    "it a call gets UNAVAILABLE (busy) and a stream's client waits",
    "max_report_values": "source values (entries) a report may carry (and at most one per 16 bytes "
    "of --max-message-mb: past it they are left out, values_omitted)",
    "max_stream_inflight": "checks one VerifyStream call runs at once",
    "cache_jax": "JAX functions each worker keeps compiled",
    "cache_sympy": "programs whose sympy derivatives each worker keeps compiled",
    "cache_parse": "parsed programs each worker keeps",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}
# one line per limit (crossgrad.server.limits says how each default was measured)
_LIMITS_HELP = {
    "max_source_chars": "characters of program text",
    "max_statements": "statements in a program",
    "max_nodes": "operations (IR nodes) in a program",
    "max_depth": "nesting of one expression",
    "max_input_elements": "elements of one input",
    "max_total_elements": "elements of all inputs together",
    "max_intermediate_elements": "elements of any one intermediate result",
    "max_exponent": "|p| in x ** p with a literal p",
    "max_jacobian_entries": "entries of the Jacobians asked for",
    "max_hessian_entries": "entries of a Hessian, whatever the budget says",
    "max_sample_points": "sample points of one request",
    "max_work": "estimated element-operations of one evaluation of the program",
    "max_total_work": "estimated element-operations of the whole check, every point",
    "max_memory_bytes": "estimated peak memory of a check, in bytes",
    "max_budget_seconds": "a request's time budget (and sympy's share), in seconds",
    "max_budget_entries": "the entry counts a request's budget may ask for",
    "max_sympy_scalar_ops": "scalar operations sympy differentiates exactly",
}


def _env(name: str) -> str:
    return "CROSSGRAD_" + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option (--workers), defaulting to its environment variable (CROSSGRAD_WORKERS)."""
    for f in dataclasses.fields(ServerOptions):
        if f.name == "limits":
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=None,
            help=f"{_HELP[f.name]} [env {_env(f.name)}; default {f.default!r}]",
        )
    for f in dataclasses.fields(Limits):
        parser.add_argument(
            "--limit-" + f.name.replace("_", "-"),
            type=type(f.default),
            default=None,
            help=f"limit: {_LIMITS_HELP[f.name]} [env {_env('limit_' + f.name)}; default {f.default!r}]",
        )


def _value(name: str, default: Any, given: Any) -> Any:
    if given is not None:
        return given
    text = os.environ.get(_env(name))
    if text is None or text == "":
        return default
    try:
        return type(default)(text)
    except ValueError:
        raise OptionError(f"{_env(name)}={text!r} is not a valid {type(default).__name__}") from None


def from_arguments(args: argparse.Namespace) -> ServerOptions:
    values = {
        f.name: _value(f.name, f.default, getattr(args, f.name))
        for f in dataclasses.fields(ServerOptions)
        if f.name != "limits"
    }
    limits = Limits(
        **{
            f.name: _value("limit_" + f.name, f.default, getattr(args, "limit_" + f.name))
            for f in dataclasses.fields(Limits)
        }
    )
    options = ServerOptions(**values, limits=limits)
    validate(options)
    return options


# The range of each numeric option (inclusive): a value outside is a usage error naming the flag
# and its variable, before anything starts (a port past 65535 was otherwise wrapped around).
_RANGES: dict[str, tuple[float, float]] = {
    "port": (0, 65535),
    "workers": (1, 256),
    "metrics_port": (-1, 65535),
    "grace_seconds": (0, 3600),
    "kill_grace_seconds": (0.05, 600),
    "worker_memory_mb": (0, 1 << 30),
    "worker_max_requests": (0, 1 << 62),
    "worker_recycle_mb": (0, 1 << 30),
    "worker_spin_ms": (0, 1000),
    "max_queue": (1, 1 << 20),
    "max_message_mb": (1, 2047),  # gRPC's message sizes are 32-bit
    "max_held_mb": (1, 1 << 20),
    "max_report_values": (0, 1 << 40),
    "max_stream_inflight": (1, 4096),
    "cache_jax": (0, 1 << 20),
    "cache_sympy": (0, 1 << 20),
    "cache_parse": (0, 1 << 20),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class OptionError(ValueError):
    """A setting the server cannot run with (a usage error: exit code 2)."""


def _num(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() else f"{x:g}"


def flag(name: str) -> str:
    """--name (env CROSSGRAD_NAME): how a message names a setting, whichever way it was given."""
    return f"--{name.replace('_', '-')} (env {_env(name)})"


def validate(options: ServerOptions) -> None:
    """Refuse settings the server cannot run with, naming the flag, before anything starts."""
    for name, (low, high) in _RANGES.items():
        value = getattr(options, name)
        if not low <= value <= high:
            raise OptionError(f"{flag(name)} must be from {_num(low)} to {_num(high)}, got {value!r}")
    for f in dataclasses.fields(Limits):
        value = getattr(options.limits, f.name)
        if not 0 < value < math.inf:  # (inf: a check no budget or cap would ever stop)
            raise OptionError(f"{flag('limit_' + f.name)} must be positive and finite, got {value!r}")
    if not 0 < options.budget_seconds <= options.limits.max_budget_seconds:
        raise OptionError(
            f"{flag('budget_seconds')} must be positive and at most "
            f"{flag('limit_max_budget_seconds')} ({options.limits.max_budget_seconds:g})"
        )
    if options.log_level.upper() not in LOG_LEVELS:
        raise OptionError(f"{flag('log_level')} must be one of {', '.join(LOG_LEVELS)}")
    if bool(options.tls_cert) != bool(options.tls_key):
        raise OptionError(f"give both {flag('tls_cert')} and {flag('tls_key')}, or neither")
    for name in ("tls_cert", "tls_key"):
        path = getattr(options, name)
        if path and (not os.path.isfile(path) or not os.access(path, os.R_OK)):
            raise OptionError(f"{flag(name)}: cannot read {path!r} (not a readable file)")
    if options.tls_cert:
        _check_tls(options.tls_cert, options.tls_key)
    if options.token != options.token.strip() or any(c.isspace() for c in options.token):
        # (a trailing newline from a secrets file locked every client out: clients' tokens
        # never carry it)
        raise OptionError(f"{flag('token')} has whitespace in it (a trailing newline from a file?)")
    same_host = (options.metrics_host or options.host) == options.host
    if options.metrics_port > 0 and options.metrics_port == options.port and same_host:
        raise OptionError(f"{flag('metrics_port')} is {flag('port')}: give them different ports")
    if options.port_file:
        folder = os.path.dirname(os.path.abspath(options.port_file))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise OptionError(f"{flag('port_file')}: cannot write in {folder!r}")


def _check_tls(cert: str, key: str) -> None:
    """The certificate chain and its key load and match, before the workers warm up (gRPC says
    only "Failed to bind to address" once they have)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        problem = (
            "the private key is not the certificate's"
            if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH"
            else "not a PEM certificate chain and its private key"
        )
        raise OptionError(
            f"{flag('tls_cert')} {cert!r} with {flag('tls_key')} {key!r}: {problem}"
        ) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line (argparse prints the whole usage first: some 45 lines for serve's flags),
        with the flag meant where one is misspelt (as crossgrad verify says)."""
        if message.startswith("unrecognized arguments: "):
            given = [a.split("=", 1)[0] for a in message.split()[2:] if a.startswith("--")]
            known = list(self._option_string_actions)
            close = difflib.get_close_matches(given[0], known, n=1) if given else []
            message += f"; did you mean {close[0]}?" if close else ""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse(argv: Sequence[str] | None = None) -> ServerOptions:
    parser = _Parser(prog="crossgrad serve", description="Run the crossgrad gRPC server.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return from_arguments(args)
    except OptionError as exc:
        parser.error(str(exc))  # exits 2, as for any other usage error
