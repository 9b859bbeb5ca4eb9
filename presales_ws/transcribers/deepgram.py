"""Deepgram through the official SDK: the production engine, selected when DEEPGRAM_API_KEY is set.

One provider connection per session: Nova-3 (listen.v1, deepgram_stream.py) by default, or with a Flux model
one Flux connection per channel (listen.v2, flux.py). Both reconnect without losing a word (reconnect.py,
replay.py); Nova-3 adds our own end of turn (deepgram_turns.py), since Deepgram's endpointing waits a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from presales_ws.audio import AudioFormat
from presales_ws.config import Settings
from presales_ws.logs import get_logger
from presales_ws.transcribers.base import TranscriberUnavailable, serving
from presales_ws.transcribers.deepgram_stream import DeepgramStream
from presales_ws.transcribers.vad_batch import load_model

if TYPE_CHECKING:
    from presales_ws.transcribers.flux import FluxStream

log = get_logger(__name__)


def deepgram_environment(url: str) -> Any:
    """DEEPGRAM_URL (http(s) or ws(s), hosted or self-hosted) as the SDK's environment object."""
    from deepgram.environment import DeepgramClientEnvironment

    parts = urlsplit(url.rstrip("/"))
    secure = parts.scheme in ("https", "wss")
    http = urlunsplit(parts._replace(scheme="https" if secure else "http"))
    ws = urlunsplit(parts._replace(scheme="wss" if secure else "ws"))
    return DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)


class DeepgramTranscriber:
    """The production engine; selected when DEEPGRAM_API_KEY is set (or TRANSCRIBER=deepgram)."""

    name = "deepgram"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._open_streams = 0

    @property
    def ready(self) -> bool:
        return self._client is not None

    @property
    def open_streams(self) -> int:
        return self._open_streams

    def check(self) -> None:
        if not self._settings.deepgram_api_key:
            raise TranscriberUnavailable("TRANSCRIBER=deepgram needs DEEPGRAM_API_KEY")
        try:
            import deepgram  # noqa: F401
        except ImportError:
            raise TranscriberUnavailable("deepgram-sdk is not installed: pip install presales-ws") from None

    async def start(self) -> None:
        self.check()
        from deepgram import AsyncDeepgramClient

        self._client = AsyncDeepgramClient(
            api_key=self._settings.deepgram_api_key, environment=deepgram_environment(self._settings.deepgram_url)
        )
        if self._settings.turn_detection == "text":
            await anyio.to_thread.run_sync(load_model)  # the pauses' VAD, once, off the event loop
        log.info(
            "transcriber.ready",
            engine=self.name,
            url=_without_credentials(self._settings.deepgram_url),
            model=self._settings.deepgram_model,
        )

    async def aclose(self) -> None:
        self._client = None

    @asynccontextmanager
    async def stream(self, fmt: AudioFormat, session_id: str) -> AsyncIterator[DeepgramStream | FluxStream]:
        """A Nova-3 stream (listen.v1), or with a Flux model one Flux connection per channel (listen.v2, flux.py)."""
        if self._client is None:
            raise TranscriberUnavailable("the Deepgram client is not started")
        from presales_ws.transcribers.flux import FluxStream, is_flux_model

        self._open_streams += 1
        try:
            engine = FluxStream if is_flux_model(self._settings.deepgram_model) else DeepgramStream
            async with serving(engine(self._client, fmt, self._settings, session_id)) as stream:
                yield stream
        finally:
            self._open_streams -= 1


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))
