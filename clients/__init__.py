"""crossgrad's clients: the Python client library and the `crossgrad` command."""

from .client import Client, CrossgradError, DiscrepancyError, Input, Result, build_request

__all__ = ["Client", "CrossgradError", "DiscrepancyError", "Input", "Result", "build_request"]
