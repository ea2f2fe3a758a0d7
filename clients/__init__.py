"""crossgrad's clients: the Python client library and the `crossgrad` command.

from crossgrad.clients import Client

with Client("127.0.0.1:50051") as client:  # Client() or Client.embedded(): in-process
    result = client.verify("Q = 3*a**3 - b**2", {"a": [2, 3], "b": [6, 4]}, cotangents={"Q": [1, 1]})
    result.raise_for_discrepancies()
"""

from .client import (
    Client,
    CrossgradError,
    DiscrepancyError,
    Input,
    Result,
    build_request,
    message_to_dict,
)

__all__ = [
    "Client",
    "CrossgradError",
    "DiscrepancyError",
    "Input",
    "Result",
    "build_request",
    "message_to_dict",
]
