"""The live sessions of this process (the seed's ConnectionManager): counted by /health, drained on shutdown."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import anyio
import msgspec


class SessionInfo(msgspec.Struct, kw_only=True):
    session_id: str
    client: str
    started_at: float
    channels: int
    key_id: str | None = None
    drain: anyio.Event = msgspec.field(default_factory=anyio.Event)  # set: finish and close with 1012


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(12)


class SessionRegistry:
    """Tracks sessions by a unique id; entries are removed by the session's own cleanup, whatever ends it."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionInfo] = {}
        self._changed: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[SessionInfo]:
        return iter(list(self._sessions.values()))

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def count_for_key(self, key_id: str | None) -> int:
        return sum(1 for info in self._sessions.values() if info.key_id == key_id)

    def add(self, client: str, channels: int, key_id: str | None = None, session_id: str | None = None) -> SessionInfo:
        """Register a session; `session_id` is given for a session resumed from another instance."""
        session_id = session_id or new_session_id()
        while session_id in self._sessions:
            session_id = new_session_id()
        info = SessionInfo(
            session_id=session_id, client=client, started_at=time.monotonic(), channels=channels, key_id=key_id
        )
        self._sessions[session_id] = info
        return info

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        if self._changed is not None:
            self._changed.set()

    async def wait_empty(self) -> None:
        """Until the last session is gone (a drain waits on this)."""
        while self._sessions:
            self._changed = anyio.Event()
            await self._changed.wait()
