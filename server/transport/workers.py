"""Worker processes: the CPU-bound checks run here, off the server's GIL, one at a time each.

- Started with `spawn` (JAX is not fork-safe); each imports and warms sympy and JAX before it
  reports ready, so the first request after SERVING pays no imports.
- Requests with the same program and shapes go to the same worker (cache affinity) unless it is
  busy and another is idle; an idle worker takes waiting work from a busy one.
- Limits from outside: a worker still busy `kill_grace` after its request's budget ran out, or after
  its caller gave up, is killed (SIGKILL) and replaced; each worker's address space is capped
  (RLIMIT_AS), so an allocation past it fails inside the check. A worker that dies is replaced and
  its request gets UNAVAILABLE (safe to retry). The server keeps serving through all of it.
- Cancellation first tries the cheap way: a flag in shared memory that the check's checkpoints read
  (crossgrad.server.deadline), so a request whose caller went away stops at its next checkpoint:
  milliseconds in the numeric stages, up to about half a second inside one sympy or JAX compilation
  step (the worker is killed if it has not stopped kill_grace later).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import itertools
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc

from ..deadline import CALL_DEADLINE, OutOfTime
from .convert import TransportError, unavailable
from .handlers import HandlerConfig, Outcome

log = logging.getLogger("crossgrad.server")

# Stages a worker reports through shared memory (index 0: between requests).
STAGES = (
    "idle",
    "decode",
    "parse",
    "engine",
    "sympy",
    "jax",
    "fd",
    "compare",
    "blame",
    "encode",
    "check",
)
_STAGE_CODE = {name: k for k, name in enumerate(STAGES)}
# A worker is one core's worth of work: with BLAS and XLA thread pools of their own, one big check
# would take other workers' cores. Measured on this 2-core machine, the worked example over gRPC:
# p50 4.68 and 4.66 ms single-threaded, 4.95 and 4.90 ms with the pools (alternating runs).
SINGLE_THREADED = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",  # and one thread in XLA's own pool:
    # backends.jax_backend starts the client so (a race in it gave wrong sums)
}
_MEMORY_HINT = (
    "each worker's address space is capped at {} MiB: raise --worker-memory-mb, "
    "CROSSGRAD_WORKER_MEMORY_MB"
)
# Shared status slots of a worker.
RUNNING, CANCEL, STAGE = 0, 1, 2


@dataclass(frozen=True)
class PoolConfig:
    handler: HandlerConfig
    workers: int = 2
    memory_bytes: int = 4096 << 20  # RLIMIT_AS of each worker (0: none)
    recycle_bytes: int = 0  # replace a worker whose resident memory ever passed this (0: never)
    kill_grace: float = 1.0
    max_queue: int = 256
    max_requests: int = 0  # recycle a worker after this many checks (0: never)
    spin_seconds: float = 0.0  # after a check, poll this long for the next before sleeping
    cache_sizes: dict[str, int] = field(default_factory=dict)  # caches.configure(**cache_sizes)
    start_timeout: float = 180.0
    log_level: str = "INFO"  # workers log JSON lines on stderr too (an internal error's traceback)


@dataclass(eq=False)
class Job:
    seq: int
    kind: str  # "verify" or "describe"
    payload: bytes
    key: int  # affinity: requests with the same key prefer the same worker
    seconds: float  # the request's time budget, from when it was submitted (queueing counts)
    limit: str  # what the seconds are: the request's budget or the call's deadline (messages)
    request_id: str
    future: asyncio.Future[Outcome]
    enqueued: float = field(default_factory=time.monotonic)
    started: float = 0.0
    give_up_at: float = float("inf")  # kill the worker if it is still on this job by then
    why: str = "deadline"  # what give_up_at is for: "deadline" or "cancelled"

    @property
    def expires_at(self) -> float:
        return self.enqueued + self.seconds


@dataclass(eq=False)
class Worker:
    index: int
    process: Any = None
    pipe: _Pipe | None = None
    status: Any = None  # shared array: RUNNING job seq, CANCEL job seq, STAGE code
    ready: bool = False
    job: Job | None = None
    queue: collections.deque[Job] = field(default_factory=collections.deque)
    handled: int = 0
    killed_for: str = ""  # why we killed it, when we did
    restarts: int = 0
    failed_starts: int = 0  # deaths in a row before becoming ready
    start_error: str = ""  # why it could not start, as it said
    spawned_at: float = 0.0

    @property
    def load(self) -> int:
        return (self.job is not None) + len(self.queue)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


# ---------------------------------------------------------------- inside a worker process


def _die_with_parent() -> None:
    """SIGKILL this worker when the server process dies (Linux's PR_SET_PDEATHSIG): a server
    killed with SIGKILL left its workers computing their checks to the end of their budgets."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: they exit at their next send
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the server died before the call: nobody to serve
            os._exit(0)


def _limit_memory(memory_bytes: int) -> None:
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def worker_main(conn: Connection, status: Any, config: PoolConfig, index: int) -> None:
    """A worker's life: cap memory, import and warm the core, then check requests one at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    _limit_memory(config.memory_bytes)
    from .metrics import configure_logging

    configure_logging(config.log_level)
    try:
        from . import handlers, warmup  # the heavy imports: sympy, JAX, the core

        warmup.configure_caches(config.cache_sizes)
        warm_seconds = warmup.warm(config.handler)
    except Exception as exc:  # the server says why it cannot start, and which setting to change
        why = f"{type(exc).__name__}: {exc}"
        # under the address-space cap an extension module that cannot be mapped fails its
        # import instead (scipy: "extension modules cannot be imported")
        capped = config.memory_bytes > 0 and isinstance(exc, ImportError)
        if isinstance(exc, MemoryError) or "out of memory" in why or capped:
            # the setting to change first: scipy's own words advise reinstalling it
            why = f"{_MEMORY_HINT.format(config.memory_bytes >> 20)}; it said: {why}"
        del exc  # and its frames' arrays: out of memory, even the message needs some
        gc.collect()
        # (the server may have stopped meanwhile; or no memory is left even for this)
        with contextlib.suppress(OSError, MemoryError):
            conn.send_bytes(pickle.dumps(("failed", os.getpid(), why)))
        raise SystemExit(1) from None
    # sympy, JAX and the warm-up leave about 180,000 objects that live as long as the worker;
    # every full collection walked them all (70-80 ms, paid by whichever request triggered it).
    # Frozen, the collector skips them: what requests create is still collected.
    gc.collect()
    gc.freeze()
    try:
        conn.send_bytes(pickle.dumps(("ready", os.getpid(), warm_seconds, _address_space())))
    except OSError:  # the server stopped while this worker warmed up: nobody to serve
        return

    def on_stage(name: str) -> None:
        status[STAGE] = _STAGE_CODE.get(name, _STAGE_CODE["check"])

    handled = 0

    while True:
        try:
            _poll(conn, config.spin_seconds)
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the server closed the pipe: exit
        seq, kind, payload, timing, request_id = pickle.loads(message)
        if kind == "stop":
            return
        seconds, stated, limit = timing
        status[RUNNING] = seq
        on_stage("decode")
        handle = handlers.verify if kind == "verify" else handlers.describe
        outcome = handle(
            payload,
            config.handler,
            seconds,
            lambda s=seq: status[CANCEL] == s,
            on_stage,
            request_id,
            stated,  # the job's whole time: it began when the server took the request
            limit,
        )
        status[STAGE] = 0
        status[RUNNING] = 0
        handled += 1
        # replaced after running out of memory, or near its cap (every few checks: reading it
        # costs tens of microseconds): a worker whose address space filled with compiled code
        # failed every later request, as "nested too deeply to parse" (resident memory, which
        # _grew watches, stayed low)
        full = outcome.out_of_memory or (
            handled % 8 == 0 and _address_space() > NEAR_CAP * config.memory_bytes > 0
        )
        try:
            conn.send_bytes(pickle.dumps((seq, outcome, full or _grew(config.recycle_bytes))))
        except OSError:  # the server closed the pipe (it is shutting down): nobody to answer
            return


NEAR_CAP = 0.9  # of the address-space cap: a worker past it is replaced after its check


def _address_space() -> int:
    """This process's address space (what RLIMIT_AS caps), in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _grew(recycle_bytes: int) -> bool:
    """Whether this worker's resident memory ever passed recycle_bytes. Memory freed after a
    large check stays with the allocators (Python's, glibc's, XLA's), so the next large check
    could run out under the cap although it fits in a new worker: such a worker is replaced."""
    if recycle_bytes <= 0:
        return False
    # getrusage's peak is at least VmHWM (it also counts the parent's, see _peak_resident) and
    # costs a microsecond, where reading /proc costs 40 to 80 on every check: below the mark,
    # nothing grew
    if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 <= recycle_bytes:
        return False
    return recycle_bytes < _peak_resident()


def _peak_resident() -> int:
    """This process's own peak resident memory, in bytes: VmHWM, which starts anew with the
    process's image. (getrusage's ru_maxrss carries the parent's peak over fork and exec: every
    worker spawned after the server once held 2 GB of answers was replaced after each check.)"""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: kilobytes too


def _poll(conn: Connection, seconds: float) -> None:
    """Wait up to `seconds` for the next request without sleeping, yielding the core to anything
    else that can run. On these virtual machines waking a process whose core went idle takes a
    while; the worked example over gRPC, back to back, two servers side by side in one run: p50
    0.12 ms lower with 2 ms of polling than with none."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not conn.poll(0):
        os.sched_yield()


# ---------------------------------------------------------------- in the server process


class _Pipe:
    """The server's end of a worker's pipe, which never blocks the event loop: messages framed
    as multiprocessing.Connection frames them (the worker's end is a plain Connection), read as
    they arrive and written as the pipe takes them. A worker stopped halfway through a message
    (SIGSTOP, a hang), or not reading a large request, left the loop blocked in a read or write:
    no health answer, no watchdog to kill it. Small messages go in one system call each way (no
    thread hand-off, no task switch: a worked example's latency is a few of them)."""

    def __init__(
        self,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[bytes], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._conn, self._loop, self._fd = conn, loop, conn.fileno()
        self._on_message, self._on_closed = on_message, on_closed
        self._in = bytearray()
        self._out: collections.deque[memoryview] = collections.deque()
        os.set_blocking(self._fd, False)
        loop.add_reader(self._fd, self._readable)

    def send(self, data: bytes) -> None:
        """Queue a message; what the pipe does not take now is written when it can."""
        if self._conn.closed:
            return  # the worker is gone: _on_exit answers its job
        n = len(data)
        header = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)
        was_idle = not self._out
        self._out.extend((memoryview(header), memoryview(data)))
        if was_idle:
            self._writable()
            if self._out:
                self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        while self._out:
            try:
                written = os.writev(self._fd, list(self._out)[:64])
            except BlockingIOError:
                return
            except OSError:  # the worker's end closed: the reader sees it and reports the exit
                self._out.clear()
                break
            while written and self._out:
                first = self._out[0]
                if written >= len(first):
                    written -= len(first)
                    self._out.popleft()
                else:
                    self._out[0] = first[written:]
                    written = 0
        self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        ended = False
        while True:
            header = self._header()
            missing = 0 if header is None else sum(header) - len(self._in)
            try:
                chunk = os.read(self._fd, max(1 << 16, missing))
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                ended = True
                break
            self._in += chunk
        while (header := self._header()) is not None and len(self._in) >= sum(header):
            head, size = header
            frame = bytes(self._in[head : head + size])
            del self._in[: head + size]
            self._on_message(frame)
        if ended:
            self.close()
            self._on_closed()

    def _header(self) -> tuple[int, int] | None:
        """(header length, message length) of the message being read, once its header is in."""
        if len(self._in) < 4:
            return None
        size = struct.unpack_from("!i", self._in)[0]
        if size != -1:
            return 4, size
        return None if len(self._in) < 12 else (12, struct.unpack_from("!Q", self._in, 4)[0])

    def close(self) -> None:
        if not self._conn.closed:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._conn.close()


CRASHES_TO_REFUSE = 2
CRASH_MEMORY_SECONDS = 600.0
MAX_CRASHED_KEYS = 1024


class WorkerPool:
    """Runs jobs on worker processes; async API for the servicer (one event loop)."""

    def __init__(self, config: PoolConfig, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        self.config = config
        self.on_event = on_event  # metrics and logs: ("restart", {...}), ("killed", {...}), ...
        self.workers = [Worker(k) for k in range(config.workers)]
        self._seq = itertools.count(1)
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self._ready_waiters: dict[int, asyncio.Future[None]] = {}
        # affinity key (program and shapes) -> (worker deaths while checking it, when last):
        # a check that killed its worker is retry-safe once (the death may be another's doing:
        # the OOM killer); twice, it is the check's, and is answered at once, not retried (it
        # was retried four times by the client, each killing a worker: none was left ready)
        self._crashes: collections.OrderedDict[int, tuple[int, float]] = collections.OrderedDict()

    # -- life cycle

    async def start(self) -> None:
        """Start every worker and wait until each has imported and warmed the core."""
        self._loop = asyncio.get_running_loop()
        ready = asyncio.gather(*[self._spawn(w) for w in self.workers])
        # stopped while starting (SIGTERM), the outcome is read here, not left for asyncio to
        # print as "exception was never retrieved"
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.wait_for(ready, self.config.start_timeout)
        self._watchdog = asyncio.create_task(self._watch())

    def _spawn(self, worker: Worker) -> asyncio.Future[None]:
        assert self._loop is not None
        os.environ.update(SINGLE_THREADED)  # the child inherits it (the server's own libraries
        # are loaded already and keep their threads)
        parent, child = self._ctx.Pipe(duplex=True)
        worker.status = self._ctx.Array("q", 3, lock=False)
        worker.process = self._ctx.Process(
            target=worker_main,
            args=(child, worker.status, self.config, worker.index),
            name=f"crossgrad-worker-{worker.index}",
            daemon=True,
        )
        worker.process.start()
        worker.spawned_at = time.monotonic()
        child.close()
        process = worker.process

        def closed() -> None:  # the worker's end closed: it exited (or is about to)
            exited = self._loop.run_in_executor(None, process.join)
            exited.add_done_callback(lambda _: self._on_exit(worker, process))

        worker.pipe = _Pipe(
            parent, self._loop, lambda data: self._on_message(worker, process, data), closed
        )
        worker.ready, worker.job, worker.killed_for, worker.handled = False, None, "", 0
        ready = self._loop.create_future()
        self._ready_waiters[worker.index] = ready
        return ready

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the workers: ask nicely, then kill what is left after the timeout."""
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.answer_all_unavailable()
        for w in self.workers:
            if w.pipe is not None:
                w.pipe.send(pickle.dumps((0, "stop", b"", None, "")))
        end = time.monotonic() + timeout
        for w in self.workers:
            if w.process is None:
                continue
            while w.process.is_alive() and time.monotonic() < end:
                await asyncio.sleep(0.02)
            if w.process.is_alive():
                w.process.kill()
            if w.pipe is not None:
                w.pipe.close()
            await asyncio.get_running_loop().run_in_executor(None, w.process.join)

    def answer_all_unavailable(self) -> None:
        """Answer every job waiting or running, and any submitted from now on: the server is
        shutting down (retry-safe). Running checks are told to stop."""
        self._closing = True
        for w in self.workers:
            for job in [*w.queue, *([w.job] if w.job else [])]:
                if not job.future.done():
                    job.future.set_exception(unavailable("the server is shutting down", "SHUTTING_DOWN"))
            if w.job is not None and w.status is not None:
                w.status[CANCEL] = w.job.seq
            w.queue.clear()

    # -- submitting work

    @property
    def queued(self) -> int:
        return sum(len(w.queue) for w in self.workers)

    @property
    def ready_workers(self) -> int:
        return sum(w.ready for w in self.workers)

    async def submit(
        self,
        kind: str,
        payload: bytes,
        key: int,
        seconds: float,
        limit: str,
        request_id: str,
        answer_within: float | None = None,
    ) -> Outcome:
        """Run a job on a worker; cancelling the awaiting task cancels the job. answer_within:
        the caller's deadline, in seconds from now: a job still running then is cancelled and
        answered DEADLINE_EXCEEDED naming its stage (a check reaches its deadline only at its
        checkpoints, and gRPC's own answer at the deadline says nothing of where)."""
        if self._closing:
            raise unavailable("the server is shutting down", "SHUTTING_DOWN")
        crashed = self._crashed(key)
        if crashed is not None:
            raise crashed
        if self.queued >= self.config.max_queue:
            raise unavailable(
                f"the server is busy: {self.queued} requests are waiting for a worker", "BUSY"
            )
        assert self._loop is not None
        job = Job(
            next(self._seq), kind, payload, key, seconds, limit, request_id, self._loop.create_future()
        )
        worker = self._choose(key)
        worker.queue.append(job)
        self._dispatch(worker)
        try:
            # not shielded: cancelling the caller cancels job.future too, which is what _cancel
            # does anyway (and a shield's extra future costs a turn of the event loop)
            if answer_within is None:
                return await job.future
            return await asyncio.wait_for(job.future, answer_within)
        except asyncio.CancelledError:
            self._cancel(job, worker)
            raise
        except TimeoutError:
            stage = self._stage_of(job)
            self._cancel(job, worker, "deadline")
            raise OutOfTime(stage, job.seconds, limit=CALL_DEADLINE) from None

    def _stage_of(self, job: Job) -> str:
        """The stage a job is in: "queue" while it waits, else its worker's."""
        for w in self.workers:
            if w.job is job and w.status is not None:
                return STAGES[w.status[STAGE]] if w.status[STAGE] else "check"
        return "queue"

    def _choose(self, key: int) -> Worker:
        """The key's own worker while it is free; else an idle one; else the least loaded."""
        n = len(self.workers)
        order = [self.workers[(key + i) % n] for i in range(n)]
        ready = [w for w in order if w.ready] or order
        idle = [w for w in ready if w.load == 0]
        return idle[0] if idle else min(ready, key=lambda w: w.load)

    def _dispatch(self, worker: Worker) -> None:
        if not worker.ready or worker.job is not None:
            return
        if not worker.queue:  # take waiting work from the busiest ready worker
            donor = max(
                (w for w in self.workers if w is not worker), key=lambda w: len(w.queue), default=None
            )
            if donor is None or not donor.queue:
                return
            worker.queue.append(donor.queue.popleft())
        job = worker.queue.popleft()
        job.started = time.monotonic()
        left = job.expires_at - job.started  # the budget less the time it waited
        if job.future.done() or left <= 0:  # cancelled, or out of time, while it waited
            self._expire(job)
            self._dispatch(worker)
            return
        job.give_up_at = job.started + left + self.config.kill_grace
        worker.job = job
        assert worker.pipe is not None  # (a worker that died just now: _on_exit reports the job)
        worker.pipe.send(
            pickle.dumps(
                (job.seq, job.kind, job.payload, (left, job.seconds, job.limit), job.request_id)
            )
        )

    def _expire(self, job: Job) -> None:
        """A job whose budget ran out before a worker took it: DEADLINE_EXCEEDED, stage queue."""
        if not job.future.done():
            job.future.set_exception(OutOfTime("queue", job.seconds, limit=job.limit))

    def _cancel(self, job: Job, worker: Worker, why: str = "cancelled") -> None:
        """The caller gave up (or its deadline came): drop the job if it waits; else tell the
        worker to stop it."""
        for w in self.workers:
            if job in w.queue:
                w.queue.remove(job)
                self.on_event("cancelled", {"state": "queued", "request_id": job.request_id, "why": why})
        for w in self.workers:
            if w.job is job and w.status is not None:
                w.status[CANCEL] = job.seq
                job.give_up_at = min(job.give_up_at, time.monotonic() + self.config.kill_grace)
                job.why = why
                self.on_event(
                    "cancelled", {"state": "running", "request_id": job.request_id, "why": why}
                )
        job.future.cancel()  # nobody waits for its outcome any more

    # -- events from the workers

    def _on_message(self, worker: Worker, process: Any, data: bytes) -> None:
        if process is not worker.process:
            return  # from a worker process already replaced
        message = pickle.loads(data)
        if message[0] == "failed":
            worker.start_error = message[2]
            return
        if message[0] == "ready":
            _, pid, warm_seconds, address_space = message
            worker.ready = True
            self.on_event(
                "ready",
                {
                    "worker": worker.index,
                    "pid": pid,
                    "warm_seconds": warm_seconds,
                    "address_space_mb": address_space >> 20,
                    "cap_mb": self.config.memory_bytes >> 20,
                },
            )
            waiter = self._ready_waiters.pop(worker.index, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            self._dispatch(worker)  # a worker back from a restart takes waiting work
            return
        seq, outcome, grew = message
        job = worker.job
        worker.job = None
        worker.handled += 1
        if job is not None and job.seq == seq and not job.future.done():
            outcome.worker = worker.index
            outcome.queue_seconds = job.started - job.enqueued
            outcome.worker_seconds = time.monotonic() - job.started
            job.future.set_result(outcome)
        # recycled by count, but not while no other worker is ready: workers sharing the load
        # reach the count together, and replacing them at once left the server without one for
        # a warm-up (seconds); the worker serves on and is replaced after a later check
        spared = len(self.workers) == 1 or any(w.ready for w in self.workers if w is not worker)
        if self.config.max_requests and worker.handled >= self.config.max_requests and spared:
            self._replace(worker, "recycled")
            return
        if grew:
            self._replace(worker, "memory")
            return
        self._dispatch(worker)

    def _on_exit(self, worker: Worker, process: Any) -> None:
        if process is not worker.process or self._closing:
            return
        code = process.exitcode
        reason = worker.killed_for or (
            f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
        )
        # (`reason` stays a short word: it labels the restarts metric)
        why, worker.start_error = worker.start_error, ""
        waiter = self._ready_waiters.pop(worker.index, None)
        if waiter is not None and not waiter.done() and self._watchdog is None:
            # still starting: a worker that cannot start is the server's failure, not a retry
            if why:
                why = f": {why}"
            elif not worker.killed_for and self.config.memory_bytes:  # it died before saying why
                why = f"; if it ran out of memory: {_MEMORY_HINT.format(self.config.memory_bytes >> 20)}"
            waiter.set_exception(RuntimeError(f"worker {worker.index} failed to start ({reason}{why})"))
            return
        job = worker.job
        stage = STAGES[worker.status[STAGE]] if worker.status is not None else ""
        if job is not None and not job.future.done():
            job.future.set_exception(self._lost(worker, job, stage))
        worker.restarts += 1
        started = worker.ready or worker.killed_for not in ("", "start timeout")
        worker.failed_starts = 0 if started else worker.failed_starts + 1
        worker.job, worker.ready = None, False
        event = {"worker": worker.index, "reason": reason, "stage": stage}
        self.on_event("restart", event | ({"error": why} if why else {}))
        # a worker that cannot even start (a broken install) is retried with a growing pause
        delay = min(30.0, 0.5 * 2**worker.failed_starts) if worker.failed_starts else 0.0
        assert self._loop is not None
        self._loop.call_later(delay, self._respawn, worker)
        for w in self.workers:  # its waiting work goes to workers that can take it now
            self._dispatch(w)

    def _respawn(self, worker: Worker) -> None:
        if not self._closing:
            self._spawn(worker)

    def _lost(self, worker: Worker, job: Job, stage: str) -> TransportError:
        taken = worker.status is not None and worker.status[RUNNING] == job.seq
        if worker.killed_for in ("deadline", "cancelled") and not taken:
            # it never read the request (stopped, or stuck in native code since its last one):
            # the request was not checked, and was said to run out "in the idle stage"
            return unavailable(
                "the worker process given this request did not take it up (hung); the server "
                "replaced it and the request is safe to retry",
                "WORKER_LOST",
                {"stage": "queue"},
            )
        if worker.killed_for == "deadline":
            return TransportError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{job.limit} ({job.seconds:.3g} s) ran out in the {stage} stage, which "
                "did not stop by itself; its worker was stopped",
                "BUDGET_EXHAUSTED",
                {"stage": stage, "seconds": job.seconds},
            )
        if worker.killed_for == "cancelled":
            return TransportError(
                grpc.StatusCode.CANCELLED, "cancelled by the caller", "CANCELLED", {"stage": stage}
            )
        exit_code = worker.process.exitcode if worker.process is not None else None
        deaths, last = self._crashes.pop(job.key, (0, 0.0))
        now = time.monotonic()
        if now - last > CRASH_MEMORY_SECONDS:  # an old death is forgotten, not counted with this one
            deaths = 0
        self._crashes[job.key] = (deaths + 1, now)
        while len(self._crashes) > MAX_CRASHED_KEYS:
            self._crashes.popitem(last=False)
        return self._crashed(job.key) or unavailable(
            f"the worker process checking this request died ({_describe_exit(exit_code)}) in the "
            f"{stage} stage; the server replaced it and the request is safe to retry",
            "WORKER_LOST",
            {"stage": stage, "exit": exit_code},
        )

    def _crashed(self, key: int) -> TransportError | None:
        """INTERNAL, not to be retried, for a program (and shapes) whose check killed its worker
        CRASHES_TO_REFUSE times within the last CRASH_MEMORY_SECONDS."""
        deaths, last = self._crashes.get(key, (0, 0.0))
        if deaths < CRASHES_TO_REFUSE or time.monotonic() - last > CRASH_MEMORY_SECONDS:
            return None
        return TransportError(
            grpc.StatusCode.INTERNAL,
            f"checking this program killed its worker process {deaths} times: it is not "
            f"checked again for {CRASH_MEMORY_SECONDS / 60:.0f} minutes (the server's log has "
            "the workers' exits)",
            "WORKER_CRASHED",
            {"deaths": deaths},
        )

    def _replace(self, worker: Worker, why: str) -> None:
        """Kill a worker (its reader thread then reports the exit, and it is respawned)."""
        worker.killed_for = why
        worker.ready = False
        if worker.process is not None and worker.process.is_alive():
            worker.process.kill()

    async def _watch(self) -> None:
        """Every 50 ms: stop workers whose job is past its budget (or whose caller gave up), and
        answer jobs whose budget ran out while they waited."""
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for w in self.workers:
                for waiting in [j for j in w.queue if now > j.expires_at]:
                    w.queue.remove(waiting)
                    self._expire(waiting)
                job = w.job
                if job is not None and now > job.give_up_at and not w.killed_for:
                    self.on_event(
                        "killed", {"worker": w.index, "why": job.why, "request_id": job.request_id}
                    )
                    self._replace(w, job.why)
                elif not w.ready and not w.killed_for and now > w.spawned_at + self.config.start_timeout:
                    self.on_event("killed", {"worker": w.index, "why": "start timeout"})
                    self._replace(w, "start timeout")  # hung while starting: try again

    def stats(self) -> dict[str, Any]:
        return {
            "workers": [
                {
                    "index": w.index,
                    "pid": w.pid,
                    "ready": w.ready,
                    "busy": w.job is not None,
                    "queued": len(w.queue),
                    "restarts": w.restarts,
                }
                for w in self.workers
            ]
        }


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"
