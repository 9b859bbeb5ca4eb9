"""What waits to go out on one session's socket: bounded, and a slow reader loses interims, never finals."""

from __future__ import annotations

from collections import deque

import anyio
import msgspec


class OutboxOverflow(Exception):
    """Even final transcripts backed up: the client is not reading."""


class Close(msgspec.Struct, frozen=True):
    """Close the socket once everything queued before it has been sent."""

    code: int
    reason: str = ""


class Outbox:
    """A FIFO of encoded messages with one writer task draining it, so sends never interleave."""

    def __init__(self, max_messages: int) -> None:
        self._max = max_messages
        self._items: deque[tuple[bytes | Close, bool]] = deque()
        self._ready = anyio.Event()
        self._closing = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, payload: bytes, *, droppable: bool = False) -> None:
        """Queue a message; a droppable one (an interim) gives way first when the client reads slowly."""
        if self._closing:
            return
        if len(self._items) >= self._max:
            for index, (_, is_droppable) in enumerate(self._items):
                if is_droppable:
                    del self._items[index]
                    self.dropped += 1
                    break
            else:
                if droppable:
                    self.dropped += 1
                    return
                raise OutboxOverflow(f"{len(self._items)} messages waiting for a client that is not reading")
        self._items.append((payload, droppable))
        self._ready.set()

    def requeue(self, payloads: list[bytes]) -> None:
        """Put messages back in front, in their order (finals a broken connection may have lost)."""
        for payload in reversed(payloads):
            self._items.appendleft((payload, False))
        if payloads:
            self._ready.set()

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then close; later messages are discarded. The first close wins."""
        if self._closing:
            return
        self._closing = True
        self._items.append((Close(code, reason), False))
        self._ready.set()

    def close_now(self, code: int, reason: str = "") -> None:
        """Close without sending what is queued (the client is too slow to receive it anyway)."""
        self._items.clear()
        self._closing = False
        self.close(code, reason)

    async def get(self) -> bytes | Close:
        while not self._items:
            await self._ready.wait()
            self._ready = anyio.Event()
        return self._items.popleft()[0]
