"""The gRPC server: VerifierService with health checking, reflection, auth, metrics and a pool of
warm worker processes; SERVING once the workers are warm, drained gracefully on SIGTERM.

    crossgrad serve --port 50051 --workers 2        (or python -m crossgrad.server serve)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from . import options as options_mod
from .handlers import HandlerConfig
from .interceptors import AuthInterceptor, Door
from .metrics import Metrics, configure_logging
from .options import ServerOptions
from .servicer import SERVICE, VerifierServicer, register
from .workers import PoolConfig, WorkerPool

log = logging.getLogger("crossgrad.server")


def _grpc_options(options: ServerOptions) -> list[tuple[str, Any]]:
    size = options.max_message_mb << 20
    return [
        # read up to twice the limit, so that the servicer names the limit, counts and logs the
        # call, and answers a stream's request by its id (gRPC's own "Received message larger
        # than max" did none of it, and cut the stream)
        ("grpc.max_receive_message_length", min(2 * size, 2**31 - 1)),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 0),  # a second server on the same port is an error, not a silent share
    ]


def _check_free(host: str, port: int) -> None:
    """Fail before the workers' warm-up if the port is taken (gRPC would say so only after it,
    as "Failed to bind", the reason in its own log)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RuntimeError(f"{options_mod.flag('host')} {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:  # the host, not the port, is the problem
                said = f"{options_mod.flag('host')} {host}: not an address of this machine"
            else:
                said = f"{options_mod.flag('port')} {port}: cannot listen on {host}"
            raise RuntimeError(f"{said}: {exc.strerror or exc}") from None


def _pool_config(options: ServerOptions) -> PoolConfig:
    # a report's values (8 bytes each) within half the largest message the server sends: past
    # it they are omitted (values_omitted), rather than the whole check refused once it ran
    # (a 500-input Jacobian ran 10 s, then "the report is 7.6 MiB" with --max-message-mb 1)
    values = min(options.max_report_values, (options.max_message_mb << 20) // 16)
    handler = HandlerConfig(options.limits, options.budget_seconds, values)
    return PoolConfig(
        handler=handler,
        workers=options.workers,
        memory_bytes=options.worker_memory_mb << 20,
        recycle_bytes=(options.worker_recycle_mb or options.worker_memory_mb // 2) << 20,
        kill_grace=options.kill_grace_seconds,
        max_queue=options.max_queue,
        max_requests=options.worker_max_requests,
        spin_seconds=options.worker_spin_ms / 1e3,
        cache_sizes={
            "jax": options.cache_jax,
            "sympy": options.cache_sympy,
            "parse": options.cache_parse,
        },
        log_level=options.log_level,
    )


LAME_DUCK_SECONDS = 0.25


class Server:
    """One server: build it, `await start()`, then `await wait_and_drain()` (or `stop()`)."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.door = Door(self.metrics)
        interceptors = [AuthInterceptor(options.token, self.metrics)] if options.token else []
        pool_config = _pool_config(options)
        self.pool = WorkerPool(pool_config, self._on_pool_event)
        self.health = health_aio.HealthServicer()
        self.grpc = grpc.aio.server(interceptors=interceptors, options=_grpc_options(options))
        self.servicer = servicer = VerifierServicer(
            self.pool,
            pool_config.handler,
            self.metrics,
            options.max_stream_inflight,
            max_held_bytes=options.max_held_mb << 20,
            max_message_bytes=options.max_message_mb << 20,
        )
        servicer.accepting = lambda: self.door.accepting  # streams stop taking requests too
        self.metrics.track_pool(
            lambda: self.pool.queued, lambda: self.pool.ready_workers, lambda: servicer.held.held
        )
        register(self.door.guard(servicer), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (
                SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.grpc,
        )
        self.port = 0
        self.metrics_port = -1
        self._stop = asyncio.Event()
        self._draining = False
        self._stopping_now: asyncio.Future[None] | None = None
        self._drain_end = float("inf")  # when the drain's grace period ends (a second signal: now)
        self._serving = False  # what health says (after start, until the drain)
        self._health_update: asyncio.Future[None] | None = None

    def _on_pool_event(self, event: str, fields: dict[str, Any]) -> None:
        if event in ("restart", "ready"):
            self._follow_workers()
        if event == "restart":
            self.metrics.restarts.labels(fields["reason"]).inc()
            log.warning({"event": "worker_restart", **fields})
        elif event == "killed":
            self.metrics.kills.labels(fields["why"]).inc()
            log.warning({"event": "worker_killed", **fields})
        elif event == "cancelled":
            self.metrics.cancelled.labels(fields["state"], fields["why"]).inc()
        elif event == "ready":
            log.info({"event": "worker_ready", **fields})
            if fields["cap_mb"] and fields["address_space_mb"] > 0.75 * fields["cap_mb"]:
                # warm, it already fills most of its cap: checks will run out of memory soon
                log.warning(
                    {
                        "event": "worker_memory_low",
                        "address_space_mb": fields["address_space_mb"],
                        "cap_mb": fields["cap_mb"],
                        "hint": "raise --worker-memory-mb (CROSSGRAD_WORKER_MEMORY_MB)",
                    }
                )

    def _follow_workers(self) -> None:
        """Health is NOT_SERVING while no worker is ready (all of them dead or warming up): calls
        would only wait, and a load balancer or probe should send them to another replica."""
        if not self.door.accepting:  # (starting or draining: start() and drain() say)
            return
        ready = any(w.ready for w in self.pool.workers)
        if ready != self._serving:
            self._serving = ready
            log.log(logging.INFO if ready else logging.WARNING, {"event": "health", "serving": ready})
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            self._health_update = asyncio.ensure_future(self._set_health(status))

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE):
            await self.health.set(name, status)

    async def start(self) -> None:
        """Warm the workers, then listen and say SERVING: a replica that is starting refuses
        connections, so a load balancer sends its calls elsewhere (an UNAVAILABLE answer from a
        listening server is a gRPC status nginx cannot see, and calls would run out of retries)."""
        began = time.monotonic()
        o = self.options
        if o.port_file:  # a script waiting for the file must not read an earlier run's address
            Path(o.port_file).unlink(missing_ok=True)
        # what can fail at once fails before the workers' warm-up: the TLS files, the metrics port
        creds = None
        if o.tls_cert:
            pem = (Path(o.tls_key).read_bytes(), Path(o.tls_cert).read_bytes())
            creds = grpc.ssl_server_credentials([pem])
        if o.metrics_port >= 0:
            host = o.metrics_host or o.host
            try:
                self.metrics_port = self.metrics.serve(host, o.metrics_port)
            except OSError as exc:
                raise RuntimeError(
                    f"{options_mod.flag('metrics_port')} {o.metrics_port}: cannot listen on {host}: "
                    f"{exc.strerror or exc}"
                ) from None
        _check_free(o.host, o.port)  # (port 0 too: a --host that is not this machine's)
        # the warm-up takes seconds, with the port closed: said, or a newcomer saw nothing and
        # "connection refused" for up to 16 s
        log.info({"event": "starting", "address": o.address, "workers": o.workers, "warming": True})
        await self.pool.start()
        if creds is not None:
            self.port = self.grpc.add_secure_port(o.address, creds)
        else:
            self.port = self.grpc.add_insecure_port(o.address)
        self.door.accepting = True  # before listening: no call can find a warm server closed
        await self.grpc.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        self._follow_workers()  # (a worker that died during the start)
        address = f"{o.host}:{self.port}"
        if o.port_file:
            info = {"address": address, "pid": os.getpid(), "metrics_port": self.metrics_port}
            tmp = Path(o.port_file + ".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(o.port_file)  # atomic: a reader never sees half a file
        log.info(
            {
                "event": "serving",
                "address": address,
                "tls": bool(o.tls_cert),
                "auth": bool(o.token),
                "workers": o.workers,
                "metrics_port": self.metrics_port,
                "seconds_to_serving": round(time.monotonic() - began, 3),
            }
        )

    def request_stop(self) -> None:
        """The first SIGTERM (or Ctrl-C) drains; a second ends the grace period at once, as whoever
        pressed Ctrl-C twice means (the calls still running are told to retry)."""
        if not self._stop.is_set():
            self._stop.set()
            return
        if not self._draining:  # (still starting: abandon() stops at once anyway)
            return
        log.info({"event": "stopping_now", "inflight": self.door.inflight})
        self._drain_end = time.monotonic()
        # (cuts a stop() under way short; drain() awaits it)
        self._stopping_now = asyncio.ensure_future(self.grpc.stop(LAME_DUCK_SECONDS))

    async def wait_and_drain(self) -> None:
        await self._stop.wait()
        await self.drain()

    async def abandon(self) -> None:
        """Stop at once, from any point of start(): nothing is in flight yet."""
        await self.grpc.stop(0)
        await self.pool.close(timeout=1.0)  # a warming worker has nothing to finish
        self.metrics.stop()

    async def drain(self) -> None:
        """Health NOT_SERVING, new calls UNAVAILABLE, in-flight calls get the grace period, then
        the workers exit."""
        grace = self.options.grace_seconds
        self._draining = True
        self._drain_end = min(self._drain_end, time.monotonic() + grace)
        log.info({"event": "draining", "inflight": self.door.inflight, "grace_seconds": grace})
        self.door.accepting = False
        self.door.why_closed = "the server is shutting down; retry on another replica"
        await self.health.enter_graceful_shutdown()
        # a short lame-duck period: a call let in just before the door closed is counted in
        # flight only once its handler runs, so an early count of 0 is not yet the last word
        settled = time.monotonic() + min(LAME_DUCK_SECONDS, grace)
        while (self.door.inflight or time.monotonic() < settled) and time.monotonic() < self._drain_end:
            await asyncio.sleep(0.02)
        if self.door.inflight:  # the grace period is over: checks still running are the
            # callers' to send again, and they are told so (gRPC's own answer says only
            # "Cancelling all calls", with no retry advice)
            self.pool.answer_all_unavailable()
            self.servicer.end_streams()
            await asyncio.sleep(0.05)  # their handlers answer
        # never stop(0): a call being turned away right then was cancelled ("Cancelling all
        # calls", no retry advice); stop() refuses new calls at once (REFUSED_STREAM, which
        # clients retry) and gives those in progress a moment
        await self.grpc.stop(max(LAME_DUCK_SECONDS, self._drain_end - time.monotonic()))
        if self._stopping_now is not None:
            await self._stopping_now
        await self.pool.close()
        self.metrics.stop()
        if self.options.port_file:
            Path(self.options.port_file).unlink(missing_ok=True)
        log.info({"event": "stopped"})


async def run(options: ServerOptions) -> int:
    server = Server(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(server._stop.wait())
    await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():  # SIGTERM while the workers warm up: never listen, exit 0
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        log.info({"event": "stopped", "while": "starting"})
        await server.abandon()
        return 0
    if starting.exception() is not None:  # e.g. a worker that cannot start: say so, exit 2
        # (as a bad flag does: what to change is a setting, and 1 means discrepancies)
        log.error({"event": "start_failed", "error": str(starting.exception())})
        # and one plain line for whoever started it by hand (the log is JSON, for machines)
        print(f"crossgrad serve: {starting.exception()}", file=sys.stderr)
        await server.abandon()
        return 2
    await server.wait_and_drain()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = options_mod.parse(argv)
    configure_logging(options.log_level)
    # the event loop shares the GIL with threads validating long programs: switching every
    # 0.5 ms (not 5) lets it answer other calls meanwhile
    sys.setswitchinterval(0.0005)
    return asyncio.run(run(options))
