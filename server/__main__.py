"""python -m crossgrad.server [serve] [options]: run the gRPC server (see --help)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # as crossgrad.clients: no INFO lines from gRPC

from .transport.server import main  # after the environment gRPC reads at import

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[1:] if args[:1] == ["serve"] else args))
