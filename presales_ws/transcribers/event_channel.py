"""A stream's events on their way from its own tasks to the session, in order, bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType

import anyio

from presales_ws.transcribers.base import TranscriberEvent


class EventChannel:
    """Bounded, so that a session that stops reading holds its engine back rather than letting events pile up;
    the producing side (`async with channel:` around the stream's `run`) closes it, which ends `events()`."""

    def __init__(self, size: int) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[TranscriberEvent](size)

    async def emit(self, event: TranscriberEvent) -> None:
        """In order; waits only while the channel is full (no checkpoint, so no trip through the event loop,
        for an event there is room for: a Deepgram result becomes a transcript in the same task step)."""
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            await self._send.send(event)

    async def events(self) -> AsyncIterator[TranscriberEvent]:
        async with self._receive:
            async for event in self._receive:
                yield event

    async def __aenter__(self) -> EventChannel:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._send.aclose()
