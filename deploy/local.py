"""docker-compose.yml's services run as local processes on 127.0.0.1, without Docker.

Each crossgrad service (command `crossgrad serve`) becomes a server process with the service's
environment; only the network settings change (loopback, free ports, a port file). nginx runs
Debian's binary with deploy/nginx.conf filled in from the nginx service's environment, where each
`service:port` value is replaced by that replica's loopback address. What the compose file says
is what runs, so tests/test_deploy.py and benchmarks/suite_bench.py fail when it drifts.

    .venv/bin/python deploy/local.py     # start the deployment, print its addresses, Ctrl-C stops
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as data (pyyaml resolves the x-crossgrad-server anchor and merge keys)."""
    return yaml.safe_load(path.read_text())


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict of strings (compose allows a mapping or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def server_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run `crossgrad serve`: the replicas."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if list(svc.get("command") or [])[:2] == ["crossgrad", "serve"]
    }


def local_command(command: Sequence[str]) -> list[str]:
    """A compose command for this machine: `crossgrad ...` is this interpreter's crossgrad CLI."""
    command = list(command)
    if command and command[0] == "crossgrad":
        return [sys.executable, "-m", "crossgrad.clients.cli", *command[1:]]
    return command


def replace_option(command: Sequence[str], option: str, value: str) -> list[str]:
    """command with the value after `option` replaced (e.g. --server nginx:8080 -> a local one)."""
    command = list(command)
    i = command.index(option)
    return [*command[: i + 1], value, *command[i + 2 :]]


def envsubst(text: str, env: Mapping[str, str]) -> str:
    """What `envsubst "$defined_vars"` does in the nginx image: $NAME and ${NAME} replaced for the
    names in env only, so nginx's own variables ($upstream_addr, ...) stay."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


def template_variables(text: str) -> set[str]:
    """The ${NAME} placeholders of a template (nginx's own variables are written $name)."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    """A child in a session of its own, so that it and its children (workers) can be signalled
    together; its output goes to a log file (shown when it fails)."""

    name: str
    popen: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the server and its worker processes)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """sig to the main process, then wait; SIGKILL to the group past the timeout or after."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill(signal.SIGKILL)  # stragglers: workers of a killed server, a hung main process
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.returncode


def spawn(name: str, command: Sequence[str], env: Mapping[str, str], log: Path) -> Process:
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            list(command),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Process(name, popen, log)


@dataclass
class Replica(Process):
    address: str = ""
    metrics_port: int = -1

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def counter(self, name: str, **labels: str) -> int:
        """The sum of a counter's samples with these labels (e.g. crossgrad_requests_total)."""
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(self.metrics())
                for sample in family.samples
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
            )
        )

    def calls(self, method: str = "Verify", code: str = "OK") -> int:
        """The RPCs of this method this replica answered with this code (a stream is one)."""
        return self.counter("crossgrad_requests_total", method=method, code=code)

    def checks(self, code: str = "OK") -> int:
        """The checks this replica ran, unary or inside a VerifyStream."""
        return self.counter("crossgrad_checks_total", code=code)


def start_replica(
    name: str, service: Mapping[str, Any], workdir: Path, port: int = 0, metrics_port: int = 0
) -> Replica:
    """A compose crossgrad service as a local server: its command and environment, listening on
    a loopback port (0: a free one), metrics on another (if the service serves metrics)."""
    port_file = workdir / f"{name}.port.json"
    port_file.unlink(missing_ok=True)  # a restart waits for its own port file
    env = environment(service)
    local = {
        "CROSSGRAD_HOST": "127.0.0.1",
        "CROSSGRAD_PORT": str(port),
        "CROSSGRAD_PORT_FILE": str(port_file),
        "PYTHONUNBUFFERED": "1",
    }
    if env.get("CROSSGRAD_METRICS_PORT", "-1") != "-1":
        local["CROSSGRAD_METRICS_PORT"] = str(metrics_port)
        local["CROSSGRAD_METRICS_HOST"] = "127.0.0.1"
    command = local_command(service["command"])
    process = spawn(name, command, {**os.environ, **env, **local}, workdir / f"{name}.log")
    return Replica(process.name, process.popen, process.log, address="", metrics_port=-1)


def wait_for_replica(replica: Replica, workdir: Path, timeout: float = 120.0) -> None:
    port_file = workdir / f"{replica.name}.port.json"
    end = time.monotonic() + timeout
    while not port_file.exists():
        if replica.popen.poll() is not None:
            raise RuntimeError(
                f"{replica.name} exited with {replica.popen.returncode}:\n{replica.log_tail()}"
            )
        if time.monotonic() > end:
            raise RuntimeError(
                f"{replica.name} not SERVING after {timeout:.0f} s:\n{replica.log_tail()}"
            )
        time.sleep(0.05)
    info = json.loads(port_file.read_text())
    replica.address, replica.metrics_port = info["address"], info["metrics_port"]


@dataclass
class Nginx(Process):
    address: str = ""
    config: Path = field(default_factory=Path)
    access_log: Path = field(default_factory=Path)

    def access_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


def nginx_binary() -> str | None:
    # /usr/sbin is not on a non-root user's PATH on Debian.
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_environment(
    service: Mapping[str, Any],
    replicas: Mapping[str, Replica],
    compose: Mapping[str, Any],
    workdir: Path,
) -> dict[str, str]:
    """The nginx service's environment for this machine: each `service:port` value naming a
    replica becomes its loopback address (the port must be the one that replica serves on);
    the listening port, run dir and access log are local."""
    env = environment(service)
    for key, value in env.items():
        host, _, port = value.partition(":")
        if host in replicas:
            serves_on = environment(compose["services"][host]).get("CROSSGRAD_PORT")
            if port != serves_on:
                raise ValueError(f"nginx's {key}={value} but {host} serves on port {serves_on}")
            env[key] = replicas[host].address
    env["NGINX_PORT"] = f"127.0.0.1:{free_port()}"
    env["NGINX_RUN_DIR"] = str(workdir / "nginx")
    env["NGINX_ACCESS_LOG"] = str(workdir / "nginx" / "access.log")
    return env


def start_nginx(env: Mapping[str, str], workdir: Path, timeout: float = 15.0) -> Nginx:
    """Debian's nginx on deploy/nginx.conf filled from env, in the foreground, as any user."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (make system-deps installs it)")
    template = NGINX_TEMPLATE.read_text()
    unset = template_variables(template) - set(env)
    if unset:
        raise ValueError(f"deploy/nginx.conf uses {sorted(unset)}, which the nginx service does not set")
    run_dir = Path(env["NGINX_RUN_DIR"])
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "nginx.conf"
    config.write_text(envsubst(template, env))
    command = [binary, "-p", str(run_dir), "-c", str(config), "-e", "stderr", "-g", "daemon off;"]
    process = spawn("nginx", command, os.environ, workdir / "nginx.log")
    host, _, port = env["NGINX_PORT"].rpartition(":")
    nginx = Nginx(
        "nginx", process.popen, process.log, address=f"{host}:{port}", config=config,
        access_log=Path(env["NGINX_ACCESS_LOG"]),
    )  # fmt: skip
    end = time.monotonic() + timeout
    while True:
        if nginx.popen.poll() is not None:
            raise RuntimeError(f"nginx exited with {nginx.popen.returncode}:\n{nginx.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
            return nginx
        if time.monotonic() > end:
            nginx.stop()
            raise RuntimeError(f"nginx not listening after {timeout:.0f} s:\n{nginx.log_tail()}")
        time.sleep(0.05)


@dataclass
class Deployment:
    compose: dict[str, Any]
    workdir: Path
    replicas: dict[str, Replica]
    nginx: Nginx
    processes: list[Process] = field(default_factory=list)  # all started, stopped on exit

    def restart(self, name: str) -> Replica:
        """Start a stopped replica again on its old ports (nginx's upstream names them)."""
        old = self.replicas[name]
        if old.popen.poll() is None:
            raise RuntimeError(f"{name} is still running")
        port = int(old.address.rpartition(":")[2])
        replica = start_replica(
            name, self.compose["services"][name], self.workdir, port, max(old.metrics_port, 0)
        )
        self.processes.append(replica)
        wait_for_replica(replica, self.workdir)
        self.replicas[name] = replica
        return replica


@contextlib.contextmanager
def local_deployment(compose: dict[str, Any] | None = None) -> Iterator[Deployment]:
    """Every `crossgrad serve` service and nginx, as local processes; all stopped on exit."""
    compose = compose if compose is not None else load_compose()
    processes: list[Process] = []
    with tempfile.TemporaryDirectory(prefix="crossgrad-deploy-") as tmp:
        workdir = Path(tmp)
        try:
            replicas = {}
            for name, service in server_services(compose).items():  # started together,
                replicas[name] = start_replica(name, service, workdir)
                processes.append(replicas[name])
            for replica in replicas.values():  # then waited for
                wait_for_replica(replica, workdir)
            env = nginx_environment(compose["services"]["nginx"], replicas, compose, workdir)
            nginx = start_nginx(env, workdir)
            processes.append(nginx)
            yield Deployment(compose, workdir, replicas, nginx, processes)
        finally:
            for process in reversed(processes):
                process.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM (timeout, kill) must stop the children too, as Ctrl-C does: unwind through finally.
    signal.signal(signal.SIGTERM, _interrupt)
    with local_deployment() as deployment:
        for name, replica in deployment.replicas.items():
            print(f"{name}: {replica.address} (metrics :{replica.metrics_port})")
        print(f"nginx: {deployment.nginx.address}   (Ctrl-C stops everything)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while all(p.popen.poll() is None for p in [*deployment.replicas.values(), deployment.nginx]):
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
