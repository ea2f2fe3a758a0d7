"""A crossgrad server in a child process on a free loopback port: for the main job, tests and
suites that need a real server and have none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LocalServer:
    """`with LocalServer() as server:` starts `crossgrad serve` on 127.0.0.1 and waits until it
    is SERVING; leaving the block sends SIGTERM (a graceful drain) and waits for the exit."""

    args: Sequence[str] = ()
    timeout: float = 180.0
    env: dict[str, str] | None = None
    stderr: Any = None  # where the server's log goes (default: this process's stderr)

    address: str = ""
    metrics_port: int = -1
    process: subprocess.Popen | None = None

    def __enter__(self) -> LocalServer:
        self._tmp = tempfile.TemporaryDirectory()
        port_file = Path(self._tmp.name) / "port.json"
        command = [
            sys.executable, "-m", "crossgrad.server", "serve", "--host", "127.0.0.1", "--port", "0",
            "--port-file", str(port_file), *self.args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.process = subprocess.Popen(command, env=env, stderr=self.stderr)
        end = time.monotonic() + self.timeout
        while not port_file.exists():
            if self.process.poll() is not None:
                self._tmp.cleanup()
                raise RuntimeError(
                    f"the server exited with code {self.process.returncode} before serving"
                )
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"the server was not SERVING after {self.timeout:.0f} s")
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        self.address, self.metrics_port = info["address"], info["metrics_port"]
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait (SIGKILL past the timeout); returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._tmp.cleanup()
