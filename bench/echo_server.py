"""The benchmarks' presales-ws: the real service with an engine that answers each frame with one final, at
once, with zero compute, given to `create_app` (nothing in the shipped settings can select it).

With it, a load generator measures what the service itself costs per frame (socket, session, speaker
tracker, question check, outbox, encoding) with no transcription in the way. The final's text is the frame
id the client wrote into the frame's first 8 bytes (little-endian), so the client can match each answer to
the frame it sent. It transcribes nothing.

    python -m bench.echo_server --port 8000     # settings from the environment, as `presales-ws serve`
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from presales_ws.app import create_app
from presales_ws.audio import AudioFormat
from presales_ws.config import ConfigError, load_settings
from presales_ws.server import run_server
from presales_ws.transcribers.base import TranscriberEvent, TranscriptEvent

FRAME_ID_BYTES = 8
EVENT_BUFFER = 256  # as the Deepgram engine: a forwarder that falls behind slows the receive loop, not memory
ECHO_SPEAKER_ID = 0  # a diarized speaker, so every final also takes the speaker tracker's question path


def frame_id(pcm: bytes) -> int:
    """The id a benchmark client wrote into the first 8 bytes of a frame."""
    return int.from_bytes(pcm[:FRAME_ID_BYTES], "little")


class EchoTranscriber:
    """See the module docstring."""

    name = "bench-echo"

    def __init__(self) -> None:
        self._open_streams = 0
        self._started = False

    @property
    def ready(self) -> bool:
        return self._started

    @property
    def open_streams(self) -> int:
        return self._open_streams

    def check(self) -> None:
        """Nothing to load: always ready to start."""

    async def start(self) -> None:
        self._started = True

    async def aclose(self) -> None:
        self._started = False

    @asynccontextmanager
    async def stream(self, fmt: AudioFormat, session_id: str) -> AsyncIterator[EchoStream]:
        self._open_streams += 1
        try:
            yield EchoStream(fmt)
        finally:
            self._open_streams -= 1


class EchoStream:
    """Each `send` becomes one final on channel 0, timed by the session audio it covers."""

    def __init__(self, fmt: AudioFormat) -> None:
        self._bytes_per_s = fmt.bytes_per_second
        self._position = 0
        self._send: MemoryObjectSendStream[TranscriberEvent]
        self._receive: MemoryObjectReceiveStream[TranscriberEvent]
        self._send, self._receive = anyio.create_memory_object_stream[TranscriberEvent](EVENT_BUFFER)

    async def send(self, pcm: bytes) -> None:
        start = self._position / self._bytes_per_s
        self._position += len(pcm)
        await self._send.send(
            TranscriptEvent(
                text=str(frame_id(pcm)),
                is_final=True,
                channel=0,
                start=round(start, 3),
                end=round(self._position / self._bytes_per_s, 3),
                confidence=1.0,
                speaker_id=ECHO_SPEAKER_ID,
                utterance_end=True,
            )
        )

    async def finish(self) -> None:
        await self._send.aclose()

    async def events(self) -> AsyncIterator[TranscriberEvent]:
        async with self._receive:
            async for event in self._receive:
                yield event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--host", help="default: HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: PORT or 8000")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"bench.echo_server: {exc}", file=sys.stderr)
        return 2
    run_server(create_app(settings, transcriber=EchoTranscriber()), settings, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
