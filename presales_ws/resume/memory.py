"""The sessions of this process that a resume token can reach: live or parked, by the token's digest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from presales_ws.resume.tokens import same_key, token_digest

S = TypeVar("S")


class LocalSessions(Generic[S]):
    """Token digest -> (session, key id). Entries leave with their session, whatever ends it."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[S, str | None]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[S]:
        return iter([session for session, _ in self._sessions.values()])

    def add(self, digest: str, session: S, key_id: str | None) -> None:
        self._sessions[digest] = (session, key_id)

    def remove(self, digest: str, session: S) -> None:
        """`session` leaves (not a newer copy of it that took its place: a takeover of an out-of-date copy)."""
        entry = self._sessions.get(digest)
        if entry is not None and entry[0] is session:
            del self._sessions[digest]

    def find(self, token: str, key_id: str | None) -> S | None:
        """The session this token resumes, if it is here and was opened with the same key; else None."""
        digest = token_digest(token)
        entry = self._sessions.get(digest) if digest else None
        if entry is None or not same_key(entry[1], key_id):
            return None
        return entry[0]
