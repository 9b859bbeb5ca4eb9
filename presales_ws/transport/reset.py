"""The reset both protocols hold over a closing connection: a peer that has not finished closing in time gets an RST."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ResetTimer:
    """One connection's `close_timeout_s`, started once (when the app is done, the server shuts down, or a refusal
    went out) and forgotten when the connection is lost: a closed connection is never reset."""

    __slots__ = ("_abort", "_handle", "_loop", "_lost", "_timeout_s")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, abort: Callable[[], None]) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._abort = abort
        self._handle: asyncio.TimerHandle | None = None
        self._lost = False

    def start(self) -> None:
        """Reset the connection `timeout_s` from now unless it closes first (a second call changes nothing)."""
        if self._handle is None and not self._lost:
            self._handle = self._loop.call_later(self._timeout_s, self._fire)

    def connection_lost(self) -> None:
        self._lost = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if not self._lost:
            self._abort()
