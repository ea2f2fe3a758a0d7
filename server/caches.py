"""Bounded caches of the verification core, with hit and miss counters.

Three caches keep the work a repeated request would otherwise redo: "parse" (parsed programs),
"sympy" (symbolic derivatives compiled to Python) and "jax" (JAX functions compiled by XLA). Each
is a least-recently-used map with a lock (requests are served from several threads), a capacity
set by configure(), and counters that stats() reports (the service exports them as metrics).

While a check runs inside tracking(), every lookup is also noted for that check alone: the
report's cache_hits says, per cache it consulted, whether everything it looked up was there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

_MISSING = object()


class LRU:
    """A least-recently-used map of at most `capacity` entries (0: keeps nothing)."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value for key (counted as a hit) or default (a miss)."""
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is _MISSING:
                self.misses += 1
            else:
                self.hits += 1
                self._data.move_to_end(key)
        _note(self.name, value is not _MISSING)
        return default if value is _MISSING else value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            self._evict()

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, hit): the cached value, or build() stored (built outside the lock: a build
        may be long, and two threads building the same key at once both get a correct value)."""
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value, True
        value = build()
        self.put(key, value)
        return value, False

    def resize(self, capacity: int) -> None:
        with self._lock:
            self.capacity = capacity
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "size": len(self._data),
                "capacity": self.capacity,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }

    def _evict(self) -> None:
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)
            self.evictions += 1


_REGISTRY: dict[str, LRU] = {}
_REGISTRY_LOCK = threading.Lock()


def register(name: str, capacity: int) -> LRU:
    """The cache called `name`, created with `capacity` the first time it is asked for."""
    with _REGISTRY_LOCK:
        cache = _REGISTRY.get(name)
        if cache is None:
            cache = _REGISTRY[name] = LRU(name, capacity)
        return cache


def configure(**sizes: int) -> None:
    """Set caches' capacities, e.g. configure(parse=256, sympy=64, jax=256); 0 disables one."""
    unknown = set(sizes) - set(_REGISTRY)
    if unknown:
        raise ValueError(f"unknown cache(s) {sorted(unknown)}; the caches are {sorted(_REGISTRY)}")
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"cache {name!r}: size must be a non-negative integer, got {size!r}")
    for name, size in sizes.items():
        _REGISTRY[name].resize(size)


def stats() -> dict[str, dict[str, int]]:
    """Per cache: size, capacity, hits, misses and evictions since the process started."""
    return {name: cache.stats() for name, cache in sorted(_REGISTRY.items())}


def clear() -> None:
    """Empty every cache (counters are kept)."""
    for cache in list(_REGISTRY.values()):
        cache.clear()


_tracked = threading.local()


@contextmanager
def tracking() -> Iterator[dict[str, bool]]:
    """Note this thread's lookups while the block runs: name -> whether every lookup hit."""
    previous = getattr(_tracked, "hits", None)
    hits: dict[str, bool] = {}
    _tracked.hits = hits
    try:
        yield hits
    finally:
        _tracked.hits = previous


def _note(name: str, hit: bool) -> None:
    hits = getattr(_tracked, "hits", None)
    if hits is not None:
        hits[name] = hits.get(name, True) and hit
