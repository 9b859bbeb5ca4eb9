"""The live sessions of this process (the seed's ConnectionManager): counted by /health, drained on shutdown."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import msgspec


class SessionInfo(msgspec.Struct, kw_only=True):
    session_id: str
    client: str
    started_at: float
    channels: int


class SessionRegistry:
    """Tracks sessions by a unique id; entries are removed by the session's own cleanup, whatever ends it."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionInfo] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[SessionInfo]:
        return iter(list(self._sessions.values()))

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def add(self, client: str, channels: int) -> SessionInfo:
        session_id = "s_" + secrets.token_urlsafe(12)
        while session_id in self._sessions:
            session_id = "s_" + secrets.token_urlsafe(12)
        info = SessionInfo(session_id=session_id, client=client, started_at=time.monotonic(), channels=channels)
        self._sessions[session_id] = info
        return info

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
