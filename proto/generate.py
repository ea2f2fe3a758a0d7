"""Generate the Python code and .pyi stubs of crossgrad.v1 from the .proto files beside them.

    python proto/generate.py            # write them into proto/crossgrad/v1 (make proto)
    python proto/generate.py OUT_DIR    # write them under OUT_DIR (the freshness test compares)

Uses grpcio-tools (pinned in pyproject: its protoc must match the protobuf runtime's major
version) and the google/rpc protos that googleapis-common-protos installs.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import google.rpc
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PROTOS = sorted((ROOT / "crossgrad" / "v1").glob("*.proto"))


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    googleapis = str(Path(google.rpc.__path__[0]).parent.parent)  # holds google/rpc/*.proto
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p.relative_to(ROOT)) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
