"""crossgrad's clients: the Python client library and the `crossgrad` command.

from crossgrad.clients import Client

with Client("127.0.0.1:50051") as client:  # Client() or Client.embedded(): in-process
    result = client.verify("Q = 3*a**3 - b**2", {"a": [2, 3], "b": [6, 4]}, cotangents={"Q": [1, 1]})
    result.raise_for_discrepancies()
"""

import os
from typing import TYPE_CHECKING, Any

# gRPC's core logs at INFO on stderr since it moved to absl (handshake failures, GOAWAYs): noise
# next to our one-line errors. Read once, when grpc is first imported; a value given stays.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

__all__ = [
    "Client",
    "CrossgradError",
    "DiscrepancyError",
    "Input",
    "Result",
    "build_request",
    "message_to_dict",
]

if TYPE_CHECKING:
    from .client import (
        Client,
        CrossgradError,
        DiscrepancyError,
        Input,
        Result,
        build_request,
        message_to_dict,
    )


def __getattr__(name: str) -> Any:
    """The client's names, imported on first use: the `crossgrad` command's first module
    (command.py) is in this package and must load before grpc and numpy do."""
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
