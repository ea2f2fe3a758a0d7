"""Grad mode: whether operations are recorded into the autograd graph (thread-local, as in PyTorch)."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _State(threading.local):
    enabled = True


_state = _State()


def is_grad_enabled() -> bool:
    return _state.enabled


class _Mode:
    """Sets grad mode inside a `with` block or a decorated function, then restores it."""

    mode = True

    def __init__(self, mode: bool | None = None) -> None:
        if mode is not None:
            self.mode = bool(mode)

    def __enter__(self) -> None:
        self.prev = _state.enabled
        _state.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self.prev

    def __call__(self, fn: F) -> F:
        mode = self.mode
        if inspect.isgeneratorfunction(fn):
            return _generator_in_mode(fn, mode)  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _Mode(mode):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def _generator_in_mode(fn: Callable[..., Any], mode: bool) -> Callable[..., Any]:
    """A generator function whose every step runs in the given mode (the caller's mode in between)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = fn(*args, **kwargs)
        sent = None
        while True:
            with _Mode(mode):
                try:
                    item = gen.send(sent)
                except StopIteration as stop:
                    return stop.value
            try:
                sent = yield item
            except GeneratorExit:
                gen.close()
                raise

    return wrapper


class _ModeWithoutArguments(_Mode):
    """no_grad and enable_grad also decorate bare, as in torch: `@no_grad` like `@no_grad()`."""

    def __new__(cls, fn: Callable[..., Any] | None = None) -> Any:
        if fn is None:
            return super().__new__(cls)
        return cls()(fn)

    def __init__(self, fn: Callable[..., Any] | None = None) -> None:
        super().__init__()


class no_grad(_ModeWithoutArguments):
    """Disable graph recording: results of operations do not require grad."""

    mode = False


class enable_grad(_ModeWithoutArguments):
    """Re-enable graph recording inside a no_grad block."""

    mode = True


class set_grad_enabled(_Mode):
    """Set grad mode now; as a context manager, restore the previous mode on exit. As a decorator
    it leaves the current mode alone and sets the mode inside each call."""

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, bool):  # torch's words: 0 or "no" is a slip, not a mode
            raise TypeError(
                "set_grad_enabled(): argument 'enabled' (position 1) must be bool, not "
                f"{type(mode).__name__}"
            )
        super().__init__(mode)
        self.prev = _state.enabled
        _state.enabled = self.mode

    def __enter__(self) -> None:  # (again: the object may be entered after other mode changes)
        _state.enabled = self.mode

    def __call__(self, fn: F) -> F:
        _state.enabled = self.prev  # undo what __init__ did: decorating is not a mode change
        return super().__call__(fn)
