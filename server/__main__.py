"""python -m crossgrad.server [serve] [options]: run the gRPC server (see --help)."""

from __future__ import annotations

import sys

from .transport.server import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[1:] if args[:1] == ["serve"] else args))
