"""Prometheus metrics (prometheus-client) and structured logs: one JSON line per event."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The server's metrics, in a registry of their own (so several servers can share a process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "crossgrad_requests", "RPCs by method and status code", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "crossgrad_request_seconds",
            "RPC latency by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.checks = Counter(
            "crossgrad_checks", "Checks (unary or in a stream) by status code", ["code"], registry=r
        )
        self.stages = Histogram(
            "crossgrad_stage_seconds",
            "Time per stage of a check",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.verdicts = Counter("crossgrad_verdicts", "Verdicts by kind", ["verdict"], registry=r)
        self.cache = Counter(
            "crossgrad_cache_lookups",
            "Worker cache lookups by cache and result",
            ["cache", "result"],
            registry=r,
        )
        self.restarts = Counter(
            "crossgrad_worker_restarts", "Worker processes replaced, by reason", ["reason"], registry=r
        )
        self.kills = Counter(
            "crossgrad_worker_kills", "Workers stopped from outside, by why", ["why"], registry=r
        )
        self.cancelled = Counter(
            "crossgrad_cancelled_checks",
            "Checks stopped for their caller, by state and why (cancelled, or its deadline came)",
            ["state", "why"],
            registry=r,
        )
        self.inflight = Gauge("crossgrad_inflight_requests", "RPCs being served", registry=r)
        self.queued = Gauge("crossgrad_queued_checks", "Checks waiting for a worker", registry=r)
        self.workers_ready = Gauge("crossgrad_workers_ready", "Worker processes ready", registry=r)
        self.held_bytes = Gauge(
            "crossgrad_held_request_bytes", "Request bytes held (waiting or being checked)", registry=r
        )
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def labelled(self, metric: Any, *values: str) -> Any:
        """metric.labels(*values), looked up once: prometheus-client's labels() checks the values
        and takes a lock on every call, a dozen times a request. The label values come from fixed
        sets (methods, codes, stages, verdicts, caches), so this stays small."""
        child = self._children.get((metric, values))
        if child is None:
            child = self._children[(metric, values)] = metric.labels(*values)
        return child

    def track_pool(
        self, queued: Callable[[], float], ready: Callable[[], float], held: Callable[[], float]
    ) -> None:
        self.queued.set_function(queued)
        self.workers_ready.set_function(ready)
        self.held_bytes.set_function(held)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP; returns the port (port 0: a free one)."""
        server, _ = start_http_server(port, host, registry=self.registry)
        self._http = server
        return server.server_port

    def stop(self) -> None:
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()

    def record_check(
        self, code: str, verdict: str, timings: Mapping[str, float], cache_hits: Mapping[str, bool]
    ) -> None:
        self.labelled(self.checks, code).inc()
        if verdict and code == "OK":  # (a report too large to send was checked, not answered)
            self.labelled(self.verdicts, verdict).inc()
        for stage, seconds in timings.items():
            self.labelled(self.stages, stage).observe(seconds)
        for cache, hit in cache_hits.items():
            self.labelled(self.cache, cache, "hit" if hit else "miss").inc()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a dict message is merged in, anything else is "message"."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, Mapping):
            line.update(record.msg)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("crossgrad")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
