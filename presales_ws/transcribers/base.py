"""The one interface every transcription engine implements; the session never knows which it has."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal, Protocol, TypeVar, runtime_checkable

import anyio
import msgspec

from presales_ws.audio import AudioFormat
from presales_ws.protocol import ErrorCode


class TranscriptEvent(msgspec.Struct, frozen=True):
    """A piece of transcript as the engine sees it; roles are added later by the speaker tracker."""

    text: str
    is_final: bool
    channel: int
    start: float
    end: float
    confidence: float | None = None
    speaker_id: int | None = None
    utterance_end: bool = False
    # An interim that holds the words the final will have if the silence after them lasts (the embedded
    # engine's decode-ahead; end of turn seen by our VAD on Deepgram): the moment to start a speculative lookup.
    eager: bool = False


class TranscriberStatus(msgspec.Struct, frozen=True):
    """A change in the engine's health the client should see (e.g. a provider reconnect)."""

    state: Literal["reconnecting", "recovered"]
    reason: str | None = None


class TranscriberFailure(msgspec.Struct, frozen=True):
    """Something the engine could not do; `fatal` ends the session."""

    code: ErrorCode
    message: str
    fatal: bool = False


TranscriberEvent = TranscriptEvent | TranscriberStatus | TranscriberFailure


class RunningStream(Protocol):
    async def run(self) -> None: ...


S = TypeVar("S", bound=RunningStream)


@asynccontextmanager
async def serving(stream: S) -> AsyncIterator[S]:
    """Run a stream's own tasks (provider connection, decoders) for exactly as long as the session holds it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream.run)
        try:
            yield stream
        finally:
            tg.cancel_scope.cancel()


class TranscriberBusy(Exception):
    """The engine cannot serve another stream in real time; the client should try again later."""


class TranscriberUnavailable(Exception):
    """The engine cannot start at all (missing extra, model, key); the message says what to do."""


class TranscriberStream(Protocol):
    """One session's audio in, its transcript events out."""

    async def send(self, pcm: bytes) -> None:
        """Queue interleaved linear16 PCM in the session's format; must not wait on the engine."""

    async def finish(self) -> None:
        """No more audio: every word already sent becomes final, then `events()` ends."""

    def events(self) -> AsyncIterator[TranscriberEvent]:
        """Transcript, status and failure events, in order per channel, until the stream ends."""


@runtime_checkable
class ContainerReader(Protocol):
    """A stream whose provider decodes WebM/Ogg itself (Deepgram): a container session hands it the client's
    bytes as well as their PCM (`send_container` instead of `send`)."""

    async def send_container(self, pcm: bytes, original: bytes | None) -> None:
        """The frame's decoded PCM, and its bytes as sent; None when they did not parse whole."""


class Transcriber(Protocol):
    """An engine shared by the whole process; `stream()` opens one session's stream."""

    name: str

    @property
    def ready(self) -> bool: ...

    @property
    def open_streams(self) -> int: ...

    def check(self) -> None:
        """Fail fast, before serving, with TranscriberUnavailable saying what to do (missing extra, model)."""

    async def start(self) -> None:
        """Load what the process shares (models, pools); called once by the app's lifespan."""

    async def aclose(self) -> None:
        """Release what `start` loaded."""

    def stream(self, fmt: AudioFormat, session_id: str) -> AbstractAsyncContextManager[TranscriberStream]:
        """Open a stream; raises TranscriberBusy when taking it would push the engine past real time."""
        ...
