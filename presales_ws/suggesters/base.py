"""The one interface every suggester implements: a customer's question in, an answer for the consultant out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from presales_ws.protocol import SuggestionSource
from presales_ws.speakers import Role


class ContextLine(msgspec.Struct, frozen=True):
    """One final utterance of the conversation so far, as a suggester sees it."""

    speaker: Role
    text: str


class Answer(msgspec.Struct, frozen=True):
    response: str
    confidence: float
    source: SuggestionSource


# Where a streaming suggester puts its answer so far (the whole response up to now, not the latest piece).
PartialSink = Callable[[Answer], None]


class SuggesterUnavailable(Exception):
    """The suggester cannot start (unreadable knowledge base, bad URL); the message says what to fix."""


class Suggester(Protocol):
    """Answers questions; `None` when it has nothing good enough. Must not block the event loop."""

    name: str

    async def start(self) -> None:
        """Acquire what needs the event loop (connection pools); called once in the app's lifespan."""

    async def aclose(self) -> None: ...

    async def suggest(
        self,
        question: str,
        context: Sequence[ContextLine],
        session_id: str,
        on_partial: PartialSink | None = None,
    ) -> Answer | None:
        """The complete answer; a suggester that writes it piece by piece reports each step to `on_partial`."""
