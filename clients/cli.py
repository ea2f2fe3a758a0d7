"""The `crossgrad` command.

  crossgrad verify PROGRAM [NAME=VALUE ...]   check a program's derivatives (embedded, or --server)
  crossgrad graph PROGRAM [NAME=VALUE ...]    the engine's DAG (--dot FILE, --svg FILE)
  crossgrad ops [NAME ...]                    the op table
  crossgrad health [--server ADDR]            ask a server's health service (exit 0 when SERVING)
  crossgrad check SUITE ...                   run YAML gradient-regression suites
  crossgrad serve [options]                   run the gRPC server (crossgrad serve --help)

PROGRAM is program text ("Q = 3*a**3 - b**2"), a file holding it, or - for stdin. A VALUE is JSON
([2, 3], 1.5, [[1, 0], [0, 1]]), a .npy file, or an array in an .npz file (file.npz:key; file.npz
alone takes the array named like the input, or its only array).

Exit codes: 0 all pass, 1 discrepancies, 2 usage, input or connection errors. Errors are one line
on stderr; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import keyword
import os
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
from crossgrad.v1.tensors import from_tensor

from .client import (
    CHECKS,
    DEFAULT_PORT,
    REFERENCES,
    Client,
    CrossgradError,
    Input,
    Result,
    build_request,
    message_to_dict,
    server_target,
)
from .command import CTRL_C

DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
USAGE_ERROR = 2


class UsageError(Exception):
    """Bad arguments or input files: exit 2 with the message."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit 2, as argparse does), and no abbreviated
    options (--claim was taken for --claimed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


# -- reading arguments


def _program_file(arg: str) -> str | None:
    """The file (or stdin) a program was read from, to name in its errors; None for text."""
    if arg == "-":
        return "<stdin>"
    try:
        return arg if Path(arg).is_file() else None
    except (OSError, ValueError):
        return None


def read_program(arg: str) -> str:
    """Program text, a file holding it, or - for stdin."""
    if arg == "-":
        return sys.stdin.read()
    if not arg.strip():  # "" is no file name either: it was "no such program file: "
        raise UsageError(
            "the program is empty: give its text (like 'y = sum(x)'), a file holding it, or - for stdin"
        )
    try:
        path = Path(arg)
        if path.is_file():
            return path.read_text()
    except (OSError, ValueError):
        pass  # text too long or odd to be a file name: it is program text
    if "=" not in arg:  # every program assigns its outputs
        first = arg.split()[0]
        if keyword.iskeyword(first):  # Python ("import os"): "write it as 'y = import os'" misled
            raise UsageError(
                f"program {arg!r}: {first!r} is Python, not crossgrad's language, whose "
                "programs assign expressions to names (like 'y = sum(tanh(x))')"
            )
        if any(c in arg for c in "()+*@ \n"):  # an expression, not a file name
            raise UsageError(
                f"program {arg!r} assigns no output: write it as 'y = {arg.strip()}' (every "
                "program assigns its outputs to names)"
            )
        raise UsageError(f"no such program file: {arg} (program text assigns, e.g. 'y = sum(x)')")
    return arg


def _load_file(spec: str, name: str) -> np.ndarray:
    path, _, key = spec.partition(".npz:")
    if key:
        path += ".npz"
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as arrays:
            if key:
                if key not in arrays:
                    raise UsageError(f"{path} has no array {key!r} (it has {', '.join(arrays.files)})")
                return arrays[key]
            if name in arrays:
                return arrays[name]
            if len(arrays.files) == 1:
                return arrays[arrays.files[0]]
            raise UsageError(f"{path} holds {', '.join(arrays.files)}: say which with {name}={path}:KEY")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {name} from {path}: {exc}") from None


def parse_value(name: str, text: str) -> np.ndarray:
    """A value from JSON or an .npy/.npz file; never eval (request text stays data)."""
    if text.endswith((".npy", ".npz")) or ".npz:" in text:
        return _load_file(text, name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(
            f"{name}={text}: not a JSON number or list (like [2, 3]) nor an .npy/.npz file"
        ) from None
    if _holds_a_boolean(value):  # json's true is Python's True, which numpy takes for 1.0
        raise UsageError(f"{name}={text}: true and false are not numbers: write 1 and 0")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise UsageError(f"{name}={text}: not a rectangular array of numbers") from None
    return array


def _holds_a_boolean(value: Any) -> bool:
    # (as deep as json.loads nests lists: its own recursion limit)
    return isinstance(value, bool) or (
        isinstance(value, list) and any(_holds_a_boolean(v) for v in value)
    )


def _seed(text: str) -> int:
    """--seed: an integer from 0 to 2^63 - 1 (what the server accepts)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= seed < 2**63:
        raise argparse.ArgumentTypeError(f"{seed} is not from 0 to 2^63 - 1")
    return seed


def parse_assignments(
    items: Sequence[str], what: str, none: bool = False
) -> dict[str, np.ndarray | None]:
    """NAME=VALUE items (inputs, cotangents, claimed gradients, masks); none: VALUE may be
    null (a claimed gradient: "no gradient", torch's .grad None)."""
    out: dict[str, np.ndarray | None] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"{what} {item!r}: write NAME=VALUE, like a=[2,3] or a=a.npy")
        if name in out:
            raise UsageError(f"{what} {name} is given twice")
        if none and text.strip().lower() in ("null", "none"):
            out[name] = None
        else:
            out[name] = parse_value(name, text.strip())
    return out


def read_inputs_file(path: str, what: str = "inputs", none: bool = False) -> dict[str, Any]:
    """Every array of an .npz, or a JSON object {name: value}; with `none`, a JSON null is
    None (a claimed "no gradient", as --claimed b=null: it was read as a nan scalar)."""
    try:
        if path.endswith(".json"):
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict):
                raise UsageError(f"{path}: a JSON {what} file holds an object {{name: value}}")
            return {
                k: None if none and v is None else parse_value(k, json.dumps(v)) for k, v in data.items()
            }
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # one .npy array has no names
            raise UsageError(f"{path}: {what} come from an .npz (named arrays) or a .json object")
        with loaded as arrays:
            return {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {what} from {path}: {exc}") from None


def claimed_gradients(items: Sequence[str]) -> dict[str, np.ndarray | None]:
    """--claimed NAME=VALUE items, or a whole .npz or .json file of them (as a suite's
    claimed_vjp: FILE takes)."""
    files = [i for i in items if "=" not in i and i.endswith((".npz", ".json"))]
    out: dict[str, np.ndarray | None] = {}
    for path in files:
        for name, value in read_inputs_file(path, "claimed gradients", none=True).items():
            if name in out:
                raise UsageError(f"--claimed {name} is given twice")
            out[name] = value
    given = parse_assignments([i for i in items if i not in files], "--claimed", none=True)
    twice = sorted(out.keys() & given.keys())
    if twice:
        raise UsageError(f"--claimed {twice[0]} is given twice")
    return out | given


def _names(items: Sequence[str]) -> list[str]:
    """--frozen a,b --frozen c -> [a, b, c]."""
    return [n.strip() for item in items for n in item.split(",") if n.strip()]


def _choices(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown {what} {', '.join(unknown)}: choose from {', '.join(known)}")
    return names


def build_inputs(args: argparse.Namespace) -> dict[str, Input]:
    values: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    for path in args.inputs_file:
        for name, value in read_inputs_file(path).items():
            if name in values:
                raise UsageError(f"input {name!r} is in {origin[name]} and in {path}")
            values[name], origin[name] = value, path
    # One given on the line as well was taken over the file's without a word, and so was a
    # claimed gradient whose --claimed was forgotten (--claimed a=... b=...): b's claim became
    # its input, and a wrong claim passed unchecked.
    for name, value in parse_assignments(args.inputs, "input").items():
        if name in values:
            raise UsageError(
                f"input {name!r} is in {origin[name]} and given as {name}=... too (a claimed "
                f"gradient takes its own --claimed: --claimed {name}=...)"
            )
        values[name] = value
    if not values:
        raise UsageError("no inputs: give NAME=VALUE (like a=[2,3]) or --inputs FILE.npz")
    frozen, integers = set(_names(args.frozen)), set(_names(args.int))
    masks = parse_assignments(args.mask, "mask")
    for name in (frozen | integers | set(masks)) - set(values):
        raise UsageError(f"--frozen/--int/--mask name {name!r} is not an input ({', '.join(values)})")
    return {
        name: Input(
            value,
            requires_grad=name not in frozen,
            mask=masks.get(name),
            # an integer .npy stays int64 (class indices); --dtype is the float inputs'
            dtype="int64" if name in integers else args.dtype if value.dtype.kind == "f" else None,
        )
        for name, value in values.items()
    }


# -- options shared by subcommands


def server_address(text: str) -> str:
    """--server's value (and CROSSGRAD_SERVER's): an empty one is a mistake (an unset variable
    in quotes), not a wish to run embedded, which would answer SERVING without any server."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty: give HOST:PORT, or leave --server and CROSSGRAD_SERVER out to run embedded"
        )
    try:
        return server_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds (a negative or zero deadline was
    taken for none, or for one that had passed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def _connection_options(parser: argparse.ArgumentParser, default_server: str | None) -> None:
    where = "embedded in this process" if default_server is None else default_server
    parser.add_argument(
        "--server",
        default=os.environ.get("CROSSGRAD_SERVER", default_server),
        type=server_address,
        metavar="ADDR",
        help=f"a server, host[:port] (port 50051 if left out) or dns:///name:port [env "
        f"CROSSGRAD_SERVER; default {where}]",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CROSSGRAD_TOKEN"),
        help="bearer token; a leading 'Bearer ' is dropped [env CROSSGRAD_TOKEN]",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS (the system's roots)")
    parser.add_argument("--ca-cert", metavar="FILE", help="TLS with this root certificate (PEM)")
    parser.add_argument("--timeout", type=seconds, help="deadline of the call in seconds (embedded too)")


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the report (auto: on a terminal; NO_COLOR is honoured)",
    )


def _program_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("program", help="program text, a file holding it, or - for stdin")
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="NAME=VALUE",
        help="inputs (at least one, here or in --inputs): a=[2,3], a=a.npy, a=file.npz:key",
    )
    parser.add_argument(
        "--inputs",
        dest="inputs_file",
        action="append",
        default=[],
        metavar="FILE",
        help="inputs from an .npz (every array) or a JSON object (an input given twice is an error)",
    )
    parser.add_argument(
        "--frozen", action="append", default=[], metavar="NAMES", help="inputs that do not require grad"
    )
    parser.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a gradient mask (1 keeps, 0 freezes)",
    )
    parser.add_argument(
        "--dtype", choices=("float64", "float32"), help="the inputs' dtype (default: float64)"
    )
    parser.add_argument(
        "--int",
        action="append",
        default=[],
        metavar="NAMES",
        help="inputs sent as int64, like cross_entropy's class indices (an integer .npy is)",
    )
    parser.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAMES",
        help="outputs, comma-separated or repeated (default: the last assigned)",
    )


def _client(args: argparse.Namespace) -> Client:
    if not args.server:
        try:
            return Client.embedded()
        except ImportError as exc:
            raise UsageError(f"{exc}; or call a server with --server ADDR") from None
    return connect(args.server, args.token, args.tls, args.ca_cert, args.timeout)


def connect(
    server: str, token: str | None, tls: bool, ca_cert: str | None, timeout: float | None = None
) -> Client:
    """A client of a server from the command's connection options (verify, graph, ops, check)."""
    certificates = None
    if ca_cert:
        try:
            certificates = Path(ca_cert).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --ca-cert: {exc}") from None
    timeout_arg = {"timeout": timeout} if timeout else {}
    return Client(server, token=token, tls=tls, root_certificates=certificates, **timeout_arg)


def _console(args: argparse.Namespace) -> Any:
    from .report import make_console  # rich: the cli extra

    return make_console(args.color)


# -- subcommands


def _verify(args: argparse.Namespace) -> int:
    program = read_program(args.program)
    inputs = build_inputs(args)
    claimed = claimed_gradients(args.claimed)
    fields: dict[str, Any] = {
        "outputs": _names(args.output),
        "cotangents": parse_assignments(args.cotangent, "--cotangent"),
        "checks": _choices(args.checks, CHECKS, "check"),
        "references": _choices(args.references, REFERENCES, "reference") if args.references else (),
        "rtol": args.rtol,
        "atol": args.atol,
        "claimed_vjp": claimed,
        "seed": args.seed,
        "blame": not args.no_blame,
        "id": args.id,
    }
    if args.samples < 0:
        raise UsageError(f"--samples must be 0 or more, not {args.samples}")
    if args.samples:
        fields["samples"] = {"count": args.samples, "seed": args.seed}
    if args.budget:
        fields["budget"] = {"seconds": args.budget}
    try:
        request = build_request(program, inputs, **fields)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    show = None if args.json or args.text else _console(args)  # rich missing: said before a call
    with _client(args) as client:
        try:
            result = Result(client.verify_message(request, args.timeout), request=request)
        except CrossgradError as exc:
            exc = _program_error(exc, args.program)
            if args.json:  # machines read stdout: the error in the report's shape there too
                print(json.dumps(Result(error=exc, request=request).to_dict(), indent=2))
            raise exc from None
    CTRL_C.raise_if_seen()  # a Ctrl-C JAX swallowed: interrupted all the same, and no report
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.text:
        print(result.text)
    else:
        from .report import print_result

        print_result(show, result, title=f"crossgrad verify ({client.where})")
    return 0 if result.passed else 1


def _program_error(exc: CrossgradError, arg: str) -> CrossgradError:
    """A program's error with what the command line knows: the file its line is in, or that
    a literal \\n in the text was not a new line."""
    if not exc.message.startswith("line "):  # not about the program's text
        return exc
    source = _program_file(arg)
    if source:
        return CrossgradError(exc.code, f"{source}: {exc.message}", exc.details)
    if "\\n" in arg:  # "a\nb" in shell double quotes is a backslash and an n, not a new line
        hint = (
            " (the program holds a literal \\n, which is no new line: put the program in a file, "
            "pipe it to - (stdin), or quote it as $'...' in bash or zsh)"
        )
        return CrossgradError(exc.code, exc.message + hint, exc.details)
    return exc


def _graph(args: argparse.Namespace) -> int:
    if args.dot == "-" and args.json:  # (the DOT text came out, and no JSON, without a word)
        raise UsageError("--dot - and --json both write to stdout: give --dot a file name")
    program = read_program(args.program)
    inputs = build_inputs(args)
    with _client(args) as client:
        try:
            described = client.describe_graph(
                program, inputs, outputs=_names(args.output), timeout=args.timeout
            )
        except CrossgradError as exc:
            raise _program_error(exc, args.program) from None
    dag = described.dag
    to_stdout = args.dot == "-"
    if args.dot and not to_stdout:
        _write(args.dot, dag.dot)
    if args.svg:
        _render_svg(dag.dot, args.svg)
    if to_stdout:
        sys.stdout.write(dag.dot)
        return 0
    if args.json:
        print(json.dumps(message_to_dict(described), indent=2))
        return 0
    from .report import dag_tree, format_array

    console = _console(args)
    console.print(dag_tree(dag, list(described.outputs)))
    for name, tensor in described.outputs.items():
        console.print(f"{name} = {format_array(from_tensor(tensor))}")
    for path, what in ((args.dot, "DOT"), (args.svg, "SVG")):
        if path and path != "-":
            console.print(f"wrote {what} to {path}")
    return 0


def _write(path: str, text: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None


def _render_svg(dot_text: str, path: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(
            f"cannot write {path}: Graphviz's `dot` is not installed (apt install graphviz); "
            "--dot FILE writes the DOT text to render elsewhere"
        )
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None
    done = subprocess.run(
        [dot, "-Tsvg", "-o", path], input=dot_text, text=True, capture_output=True, timeout=60
    )
    if done.returncode != 0:
        raise UsageError(f"dot -Tsvg failed on the graph: {' '.join(done.stderr.split())}")


def _ops(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ops = client.list_ops(timeout=args.timeout)
    if args.names:
        unknown = set(args.names) - {op.name for op in ops}
        if unknown:
            names = sorted(unknown)
            close = difflib.get_close_matches(names[0], [op.name for op in ops], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(f"no op named {', '.join(names)} ({hint}crossgrad ops lists them)")
        ops = [op for op in ops if op.name in args.names]
    if args.json:
        print(json.dumps([message_to_dict(op) for op in ops], indent=2))
        return 0
    from .report import ops_table

    _console(args).print(ops_table(ops))
    return 0


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            status = client.health(args.service, timeout=args.timeout or 5.0)
        except CrossgradError as exc:
            if exc.code is not grpc.StatusCode.NOT_FOUND:
                raise
            raise UsageError(
                f"the server has no health status for service {args.service!r} (it has one for "
                "'' and for crossgrad.v1.VerifierService)"
            ) from None
    print(status)
    return 0 if status == "SERVING" else 1


def _serve(argv: Sequence[str]) -> int:
    try:
        from crossgrad.server.transport.server import main as serve
    except ImportError as exc:
        raise UsageError(
            f"crossgrad serve needs the server extra ({install_hint('server')}): {exc}"
        ) from None
    return serve(list(argv))


def _check(argv: Sequence[str]) -> int:
    try:
        from .suite import main as run_suites  # written beside this module; loaded only for check
    except ModuleNotFoundError as exc:
        if exc.name == "crossgrad.clients.suite":
            raise UsageError(
                "crossgrad check is not available: crossgrad.clients.suite is missing"
            ) from None
        raise UsageError(f"crossgrad check needs the cli extra ({install_hint('cli')}): {exc}") from None
    return run_suites(list(argv))


def parser() -> argparse.ArgumentParser:
    top = OneLineParser(
        prog="crossgrad",
        description="Differentiate a function four ways (crossgrad's engine, sympy exactly, JAX, "
        "finite differences) and report where they disagree.",
        epilog="Exit codes: 0 all pass, 1 discrepancies, 2 usage, input or connection errors.",
    )
    top.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    top.add_argument("--version", action="version", version=f"crossgrad {_version()}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    verify = sub.add_parser(
        "verify",
        help="check a program's derivatives against sympy, JAX and finite differences",
        description="Check a program's derivatives at a point; exit 0 when it passes, 1 when not.",
    )
    _program_options(verify)
    verify.add_argument(
        "--cotangent", action="append", default=[], metavar="NAME=VALUE",
        help="the gradient flowing into an output (backward(gradient=...)); a scalar's defaults to 1",
    )  # fmt: skip
    verify.add_argument(
        "--checks", default="vjp", metavar="LIST", help="vjp,jacobian,hessian (default: vjp)"
    )
    verify.add_argument(
        "--references", default="", metavar="LIST", help="sympy,jax,fd (default: all three)"
    )
    verify.add_argument("--rtol", type=float, help="relative tolerance (default: by dtype)")
    verify.add_argument("--atol", type=float, help="absolute tolerance (default: by dtype)")
    verify.add_argument(
        "--claimed", action="append", default=[], metavar="NAME=VALUE",
        help="a gradient computed elsewhere, checked like the engine's (vjp); NAME=null claims "
        "no gradient (torch's .grad None); or FILE.npz / FILE.json: every gradient it holds",
    )  # fmt: skip
    verify.add_argument("--samples", type=int, default=0, metavar="N", help="also check N random points")
    verify.add_argument("--seed", type=_seed, default=0, help="seeds every sampled choice")
    verify.add_argument("--budget", type=seconds, metavar="SECONDS", help="the request's time budget")
    verify.add_argument("--no-blame", action="store_true", help="do not look for the node to blame")
    verify.add_argument("--id", default="", help="a request id (echoed, and in the server's log)")
    report = verify.add_mutually_exclusive_group()
    report.add_argument("--json", action="store_true", help="the whole report as JSON on stdout")
    report.add_argument("--text", action="store_true", help="the report as plain text")
    _connection_options(verify, None)
    _common_options(verify)
    verify.set_defaults(run=_verify)

    graph = sub.add_parser(
        "graph",
        help="the engine's DAG for a program (DOT, SVG)",
        description="Run the engine's forward pass and show the DAG it records (grad_fn nodes).",
    )
    _program_options(graph)
    graph.add_argument("--dot", metavar="FILE", help="write Graphviz DOT (- for stdout)")
    graph.add_argument("--svg", metavar="FILE", help="render SVG with Graphviz's dot")
    graph.add_argument("--json", action="store_true", help="the DAG as JSON")
    _connection_options(graph, None)
    _common_options(graph)
    graph.set_defaults(run=_graph)

    ops = sub.add_parser("ops", help="the op table", description="Every operation a program may use.")
    ops.add_argument("names", nargs="*", metavar="NAME", help="only these ops")
    ops.add_argument("--json", action="store_true", help="the table as JSON")
    _connection_options(ops, None)
    _common_options(ops)
    ops.set_defaults(run=_ops)

    health = sub.add_parser(
        "health", help="ask a server's health service", description="Exit 0 when the server is SERVING."
    )
    health.add_argument("--service", default="", help="a service name ('' for the whole server)")
    _connection_options(health, DEFAULT_SERVER)
    _common_options(health)
    health.set_defaults(run=_health)

    # parsed by their own modules: listed here for --help
    sub.add_parser(
        "check", help="run YAML gradient-regression suites (crossgrad check --help)", add_help=False
    )
    sub.add_parser("serve", help="run the gRPC server (crossgrad serve --help)", add_help=False)
    return top


PASSTHROUGH: dict[str, Callable[[Sequence[str]], int]] = {"serve": _serve, "check": _check}
COMMANDS = ("verify", "graph", "ops", "health", *PASSTHROUGH)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crossgrad")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def error_hint(exc: BaseException) -> str:
    """What to do about a missing or wrong token, or a deadline or budget that ran out (verify's
    and check's errors alike)."""
    code = getattr(exc, "code", None)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return " (give the token with --token or CROSSGRAD_TOKEN)"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return " (more time: a longer --timeout, or a larger budget)"
    return ""


def _hint(top: argparse.ArgumentParser, command: str | None, extra: list[str]) -> str:
    """ "; did you mean --cotangent?" for the first unknown option, when one is close."""
    given = next((a.split("=", 1)[0] for a in extra if a.startswith("--")), None)
    commands = next((a.choices for a in top._actions if isinstance(a, argparse._SubParsersAction)), {})
    known = commands[command]._option_string_actions if command in commands else {}
    close = difflib.get_close_matches(given, list(known), n=1) if given else []
    return f"; did you mean {close[0]}?" if close else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), None)
    # Called as the command (argv from sys.argv), main owns Ctrl-C; called from Python, the
    # caller does. serve handles SIGINT itself (a graceful drain).
    owner = argv is None and command != "serve" and threading.current_thread() is threading.main_thread()
    if owner:
        CTRL_C.install()
    code = _main(args, command)
    if owner:
        CTRL_C.at_once = True
        if CTRL_C.seen:  # said already when the command returned 130 for it
            CTRL_C.exit(130, say=code != 130)
        # The answer is out: end here, without the interpreter's clean-up at exit. JAX's
        # (clear_backends) crashed when an interrupt had stopped it mid-computation, and a Ctrl-C
        # after Python had given SIGINT back to the system killed the process without a word.
        CTRL_C.exit(code, say=False)
    return code


def _main(args: list[str], command: str | None) -> int:
    debug = "--debug" in args[: args.index("--")] if "--" in args else "--debug" in args
    prog = f"crossgrad {command}" if command in COMMANDS else "crossgrad"
    try:
        if command in PASSTHROUGH:
            k = args.index(command)
            rest = [a for a in args[:k] if a != "--debug"] + args[k + 1 :]
            return PASSTHROUGH[command](rest)
        top = parser()
        parsed, extra = top.parse_known_args(args)
        # NAME=VALUE inputs may also come after options (verify P --cotangent Q=[1,1] a=[2,3]):
        # argparse leaves those over, as it cannot resume a positional list after an option
        if extra and hasattr(parsed, "inputs") and not any(a.startswith("-") for a in extra):
            parsed.inputs = [*parsed.inputs, *extra]
        elif extra:  # named by the command they were given to (crossgrad verify: ...)
            OneLineParser(prog=prog).error(
                f"unrecognized arguments: {' '.join(extra)}{_hint(top, command, extra)}"
            )
        if parsed.command is None:
            parser().print_help(sys.stderr)
            return USAGE_ERROR
        return parsed.run(parsed)
    except BrokenPipeError:
        # the reader went away (crossgrad ops | head): not an error of ours; keep Python quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the shell's code for SIGPIPE
    except KeyboardInterrupt:
        print("crossgrad: interrupted", file=sys.stderr)
        return 130
    except (UsageError, CrossgradError) as exc:
        if debug:  # the traceback, and the same exit code (raising would exit 1: "discrepancies")
            traceback.print_exc()
        print(f"{prog}: {_one_line(exc)}{error_hint(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"{prog} needs the {extra} extra ({install_hint(extra)}): {exc}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:
        if debug:
            traceback.print_exc()
        name = type(exc).__name__
        print(f"{prog}: unexpected {name}: {_one_line(exc)} (--debug: traceback)", file=sys.stderr)
        return USAGE_ERROR


# optional modules and the extra that installs each (a client-only install has the command too)
_EXTRA_OF = {"rich": "cli", "yaml": "cli", "sympy": "server", "jax": "server", "jaxlib": "server"}


def install_hint(extra: str) -> str:
    """How to install an extra: crossgrad is installed from a checkout (it is not on PyPI)."""
    return f"pip install '.[{extra}]' in a crossgrad checkout"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
