"""The `crossgrad` command.

crossgrad serve [options]          run the gRPC server (crossgrad serve --help)
crossgrad health [--server ADDR]   ask a server's health service (exit 0 when SERVING)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .client import Client, CrossgradError

DEFAULT_SERVER = "127.0.0.1:50051"


def _serve(argv: Sequence[str]) -> int:
    try:
        from crossgrad.server.transport.server import main as serve
    except ImportError as exc:
        print(
            f"crossgrad serve needs the server extra (pip install 'crossgrad[server]'): {exc}",
            file=sys.stderr,
        )
        return 2
    return serve(argv)


def _health(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="crossgrad health")
    parser.add_argument("--server", default=os.environ.get("CROSSGRAD_SERVER", DEFAULT_SERVER))
    parser.add_argument("--service", default="", help="a service name ('' for the whole server)")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        with Client(args.server) as client:
            status = client.health(args.service, timeout=args.timeout)
    except CrossgradError as exc:
        print(f"crossgrad health: {args.server}: {exc}", file=sys.stderr)
        return 2
    print(status)
    return 0 if status == "SERVING" else 1


COMMANDS = {"serve": _serve, "health": _health}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
