"""The `crossgrad` console script's first step: Ctrl-C handled from the start.

The command's modules take half a second to import (grpc, numpy, the client); a Ctrl-C in that
time got Python's traceback. This module imports nothing heavy, so the handler is in place
before they load (crossgrad.clients itself loads its names on first use).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, NoReturn


class CtrlC:
    """Ctrl-C (SIGINT) for the command that owns the process: it always ends with "crossgrad:
    interrupted" and exit code 130, and nothing else.

    Python's own handler raises KeyboardInterrupt wherever the main thread is, and in JAX that
    was often where it is only printed and dropped ("Exception ignored in: <function
    _xla_gc_callback>", or its atexit clean-up): the command then printed its report and exited
    0. Interrupted mid-computation, JAX's clean-up at exit also crashed (SIGSEGV). So the
    interrupt is recorded as well as raised, a dropped one is raised again before the report,
    a second Ctrl-C is ignored, and the process ends with os._exit, skipping that clean-up
    (also when the command was not interrupted: see main)."""

    def __init__(self) -> None:
        self.seen = False
        # a Ctrl-C now ends the process at once: the command's modules are loading (raised there,
        # numpy's C import turned it into an ImportError and a traceback) or it has returned
        self.at_once = False
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        self.installed = True
        signal.signal(signal.SIGINT, self._handle)
        default_hook = sys.unraisablehook

        def quiet(unraisable: Any) -> None:  # the dropped KeyboardInterrupt: no "Exception ignored"
            if not (self.seen and isinstance(unraisable.exc_value, KeyboardInterrupt)):
                default_hook(unraisable)

        sys.unraisablehook = quiet

    def _handle(self, signum: int, frame: Any) -> None:
        self.seen = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot break into the exit
        if self.at_once:
            self.exit(130, say=True)
        raise KeyboardInterrupt

    def raise_if_seen(self) -> None:
        """Before a command prints its answer: an interrupt raised where it was dropped."""
        if self.seen:
            raise KeyboardInterrupt

    def exit(self, code: int, say: bool) -> NoReturn:
        """Flush what was printed, say "crossgrad: interrupted" if asked, and end the process
        with `code` (130, the shell's code for SIGINT, when interrupted) at once."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more to show there
                stream.flush()
        if say:
            os.write(sys.stderr.fileno(), b"crossgrad: interrupted\n")
        os._exit(code)


CTRL_C = CtrlC()


def main() -> int:
    """The console script: Ctrl-C owned from here (serve takes SIGINT over once it runs: a
    graceful drain), then the command."""
    CTRL_C.install()
    CTRL_C.at_once = True
    from .cli import main as run

    CTRL_C.at_once = False
    return run()
