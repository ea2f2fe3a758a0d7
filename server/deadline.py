"""A request's total time budget and its cancellation, checked inside long steps.

The budget is one deadline for the whole check (every stage and every sample point). Long loops
call checkpoint(): past the deadline it raises OutOfTime naming the stage that ran out; when the
caller gave up (a gRPC client cancelled) it raises Cancelled. A worker process that does not reach a
checkpoint in time is stopped from outside (crossgrad.server.transport.workers), so this is the
cheap, cooperative half of the limit, not the only one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BUDGET = "the request's time budget"
CALL_DEADLINE = "the call's deadline"  # a gRPC caller's, when it comes before the budget's end


class OutOfTime(Exception):
    """The request's time budget (or `limit`: the call's deadline) ran out in `stage`."""

    def __init__(self, stage: str, seconds: float, message: str = "", limit: str = BUDGET) -> None:
        self.stage = stage or "decode"  # (before the first named stage: reading the request)
        self.seconds = seconds
        self.timings: dict[str, float] = {}  # the stages run until then (set by check())
        super().__init__(message or f"{limit} ({seconds:.3g} s) ran out in the {self.stage} stage")


class Cancelled(Exception):
    """The caller gave up on the request."""

    def __init__(self, stage: str) -> None:
        self.stage = stage or "decode"
        self.timings: dict[str, float] = {}  # the stages run until then (set by check())
        super().__init__(f"the request was cancelled by the caller during the {self.stage} stage")


def _never() -> bool:
    return False


@dataclass
class Deadline:
    at: float = math.inf  # time.monotonic() when the budget runs out
    seconds: float = math.inf  # the budget as given, for messages
    cancelled: Callable[[], bool] = _never
    on_stage: Callable[[str], None] | None = None  # told each stage as it starts (worker status)
    stage: str = ""  # "" until the first named stage (OutOfTime says "decode": reading the request)
    limit: str = BUDGET  # what `at` is, for messages

    def remaining(self) -> float:
        return self.at - time.monotonic()


_local = threading.local()
_UNLIMITED = Deadline()


def current() -> Deadline:
    return getattr(_local, "deadline", _UNLIMITED)


@contextmanager
def budget(
    seconds: float,
    cancelled: Callable[[], bool] = _never,
    on_stage: Callable[[str], None] | None = None,
    stated: float | None = None,
    limit: str = BUDGET,
) -> Iterator[Deadline]:
    """Run the block under a total budget of `seconds` (math.inf: none) in this thread; messages
    state the budget as `stated` (default: seconds), e.g. the whole of one that began earlier,
    and call it `limit`."""
    deadline = Deadline(time.monotonic() + seconds, stated or seconds, cancelled, on_stage, limit=limit)
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = previous if previous is not None else _UNLIMITED


@contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """Run the block with at most `seconds` more: the tighter of that and the deadline already
    installed in this thread (whose cancellation and stage reporting carry over), or a new
    budget(seconds) when there is none. check() runs under within(request.budget.seconds)."""
    outer = current()
    if outer is _UNLIMITED:
        with budget(seconds) as deadline:
            yield deadline
        return
    at = time.monotonic() + seconds
    if at >= outer.at:  # the caller's deadline binds first
        yield outer
        return
    inner = Deadline(at, seconds, outer.cancelled, outer.on_stage, outer.stage)
    _local.deadline = inner
    try:
        yield inner
    finally:
        _local.deadline = outer


def remaining() -> float:
    """Seconds left before this thread's deadline (math.inf without one)."""
    return current().remaining()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Name the stage running now (for OutOfTime's message and the worker's status)."""
    deadline = current()
    outer = deadline.stage
    deadline.stage = name
    if deadline.on_stage is not None:
        deadline.on_stage(name)
    try:
        checkpoint()
        yield
    finally:
        deadline.stage = outer
        if deadline.on_stage is not None and outer:
            deadline.on_stage(outer)


def checkpoint() -> None:
    """Raise OutOfTime past the deadline, Cancelled if the caller gave up; else return at once."""
    deadline = current()
    if deadline is _UNLIMITED:
        return
    if deadline.cancelled():
        raise Cancelled(deadline.stage)
    if time.monotonic() > deadline.at:
        raise OutOfTime(deadline.stage, deadline.seconds, limit=deadline.limit)
