"""What a frame must pass to reach the transcriber: its size, its message, its place in the sequence, the
declared format and the rate limit. A bad frame gets an `error` and the session goes on; a few end it the
lossless way (an oversized frame, a `start` against the URL, audio plainly in an undeclared format, a flood).

A binary frame's way through here is the per-frame cost of every session, so what is fixed for the session
is looked up once, not per frame."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.websockets import WebSocketState

from presales_ws import protocol
from presales_ws.audio import ArrivalClock, decode_base64
from presales_ws.config import Settings
from presales_ws.declaration import Declaration, UndeclaredFormat
from presales_ws.limits import Flood, TokenBucket
from presales_ws.protocol import (
    CONTAINER_ENCODINGS,
    AudioChunk,
    CloseCode,
    ErrorCode,
    Ping,
    Pong,
    ProtocolError,
    Start,
    Stop,
)
from presales_ws.transcribers.base import ContainerReader, TranscriberStream

if TYPE_CHECKING:
    from presales_ws.session.lifecycle import Session
    from presales_ws.session.links import Link


class Intake:
    """The receive side of one session: reads the current link's frames, checks them, feeds the transcriber."""

    def __init__(self, session: Session, settings: Settings, declaration: Declaration) -> None:
        self.session = session
        self.settings = settings
        self.declaration = declaration
        self.stopping = False  # the session is winding down: no audio is taken from here on
        self.last_heard = time.monotonic()
        self.last_sequence: int | None = None
        self.bytes_in = 0  # as the client sent them (compressed or not)
        self.audio_s = 0.0  # seconds of audio taken, decoded
        self.audio_origin_s = 0.0  # session audio before this instance's first byte (a takeover's commit point)
        self.first_audio_at: float | None = None
        rate = settings.rate_limit_factor  # seconds of audio per second
        self.bucket = TokenBucket(rate, rate * settings.rate_limit_burst_s)
        self.flood = Flood(self.bucket.capacity, max(1.0, settings.rate_limit_burst_s))
        self.arrivals = ArrivalClock()
        self.late_audio_reported = False
        self.rate_error_at = -1e9
        self._bytes_per_second = declaration.stream.bytes_per_second
        # A WebM/Ogg session on Deepgram: its bytes go up as they came (transcribers/base.py). Known at the first
        # audio: a `start` before it may still change the encoding.
        self._reader: ContainerReader | None = None

    @property
    def received_s(self) -> float:
        """Seconds of session audio (per channel) the server has: a resuming client resends from here."""
        return self.audio_origin_s + self.audio_s

    async def receive_loop(self, link: Link, stream: TranscriberStream) -> None:
        """Read frames until the connection ends; a bad frame costs an `error`, never the session."""
        receive, monotonic = link.receive, time.monotonic
        max_frame_bytes = self.settings.max_frame_bytes
        on_audio, send_error = self.on_audio, self.session.outbound.send_error
        while True:
            message = await receive()
            self.last_heard = monotonic()  # cheaper than anyio.current_time() on 3.11 (no getpid)
            try:
                data = message.get("bytes")
                if data is not None:
                    if len(data) > max_frame_bytes:
                        await self.on_oversized(stream, len(data))
                    else:
                        await on_audio(stream, data)
                elif (text := message.get("text")) is not None:
                    await self.on_text(stream, text)
                elif message["type"] == "websocket.disconnect":
                    link.websocket.client_state = WebSocketState.DISCONNECTED  # as Starlette's receive() would
                    self.session.links.disconnected(int(message.get("code") or CloseCode.NORMAL))
                    return
            except ProtocolError as exc:
                send_error(exc.code, exc.message)

    async def on_oversized(self, stream: TranscriberStream, size: int) -> None:
        limit = self.settings.max_frame_bytes
        await self.end_with_error(
            stream,
            "frame_too_large",
            f"binary frame of {size} bytes exceeds {limit}; dropped, and the session ends once the audio before "
            "it is transcribed",
            close=CloseCode.MESSAGE_TOO_BIG,
            reason="frame too large",
        )

    async def end_with_error(
        self, stream: TranscriberStream, code: ErrorCode, message: str, *, close: CloseCode, reason: str
    ) -> None:
        """A frame the session cannot go on after: one `error` saying why, then the lossless wind-down (what was
        received before it is still transcribed), then `close`."""
        self.session.outbound.send_error(code, message)
        await self.session.wind_down(stream, close, reason)

    async def on_text(self, stream: TranscriberStream, text: str) -> None:
        if len(text) > self.settings.max_text_frame_bytes:
            raise ProtocolError(
                "frame_too_large",
                f"text frame of {len(text)} characters exceeds {self.settings.max_text_frame_bytes}; dropped",
            )
        message = protocol.decode_client_message(text)
        if isinstance(message, AudioChunk):
            self.check_sequence(message.sequence)
            await self.on_audio(stream, decode_base64(message.data))
        elif isinstance(message, Start):
            await self.on_start(stream, message)
        elif isinstance(message, Ping):
            self.session.outbound.send(Pong(ts=message.ts))
        elif isinstance(message, Stop):
            await self.session.wind_down(stream, CloseCode.NORMAL, "stopped")
        # Pong: its arrival already counted as a sign of life.

    async def on_start(self, stream: TranscriberStream, start: Start) -> None:
        """The format said in the protocol: before any audio, and not against the URL (then 4400)."""
        if self.first_audio_at is not None:
            raise ProtocolError("invalid_message", "`start` must come before any audio; ignored")
        conflict = self.declaration.apply(start)
        if conflict is not None:
            await self.end_with_error(
                stream,
                "invalid_params",
                f"{conflict}; the session ends",
                close=CloseCode.BAD_PARAMETERS,
                reason="invalid start",
            )
            return
        d = self.declaration
        self.session.log.info("session.start", encoding=d.encoding, sample_rate=d.sample_rate, channels=d.channels)

    async def on_audio(self, stream: TranscriberStream, data: bytes) -> None:
        """Decode, check against the declaration and the rate limit, and hand the PCM to the transcriber."""
        if self.stopping:
            if not self.late_audio_reported:  # once: a client still streaming would get one per frame
                self.late_audio_reported = True
                raise ProtocolError("session_stopping", "the session is ending; audio from here on is ignored")
            return
        if not data:
            return
        now = self.last_heard  # the frame's arrival: the receive loop has just read the clock
        declaration, bucket = self.declaration, self.bucket
        try:
            if self.first_audio_at is None:
                self.first_audio_at = now
                self._first_audio(stream, data)
            budget_s = bucket.available()
            decoded = declaration.input.feed(data, budget_s)
            pcm = decoded.pcm
            seconds = len(pcm) / self._bytes_per_second
            if not declaration.rate_settled:
                declaration.check_rate(self.audio_s + seconds, now - self.first_audio_at, bucket.rate)
        except UndeclaredFormat as exc:
            self.session.log.info("session.undeclared_format", code=exc.code)
            await self.end_with_error(
                stream,
                exc.code,
                f"{exc.message}; the session ends",
                close=CloseCode.BAD_PARAMETERS,
                reason="undeclared audio format",
            )
            return
        if decoded.over_budget_s:
            await self.on_flood(stream, decoded.over_budget_s)
            if self.stopping:
                return
        reader = self._reader
        if pcm:
            if seconds <= budget_s:
                bucket.spend(seconds)
            elif not bucket.take(seconds):  # `take` refills first: decoding a large frame takes a while
                await self.on_flood(stream, seconds)
                if reader is not None and not self.stopping:
                    await reader.send_container(b"", None)
                return
            self.audio_s += seconds
            self.arrivals.received(self.audio_origin_s + self.audio_s, now)
        if reader is not None:
            whole = not decoded.problem and not decoded.over_budget_s
            await reader.send_container(pcm, data if whole else None)
        elif pcm:
            await stream.send(pcm)
        self.bytes_in += len(data)
        if decoded.problem:
            raise ProtocolError("invalid_audio", f"{decoded.problem}; the stream goes on from the next whole piece")

    def _first_audio(self, stream: TranscriberStream, data: bytes) -> None:
        """What the first audio settles: no `start` can change the format after it."""
        if self.declaration.encoding in CONTAINER_ENCODINGS and isinstance(stream, ContainerReader):
            self._reader = stream
        self.declaration.check_first(data)

    async def on_flood(self, stream: TranscriberStream, dropped_s: float) -> None:
        """Audio beyond the rate limit is dropped and reported; a client that keeps at it is closed (4429)."""
        now = time.monotonic()
        if self.flood.refused(dropped_s, now):
            self.session.log.warning("session.flooding", dropped_s=round(self.flood.bytes, 2))
            await self.end_with_error(
                stream,
                "rate_limited",
                "audio far faster than real time; the session is closed",
                close=CloseCode.RATE_LIMITED,
                reason="rate limited",
            )
            return
        if now - self.rate_error_at >= 1.0:  # one error a second, not one per frame
            self.rate_error_at = now
            self.session.outbound.send_error(
                "rate_limited",
                f"audio faster than {self.settings.rate_limit_factor:g}x real time is dropped",
            )

    def check_sequence(self, sequence: int | None) -> None:
        if sequence is None:
            return
        last, self.last_sequence = self.last_sequence, sequence
        if last is None or sequence == last + 1:
            return
        if sequence > last + 1:
            self.session.outbound.send_error("sequence_gap", f"audio_chunk sequence jumped from {last} to {sequence}")
        else:
            self.session.outbound.send_error("sequence_repeat", f"audio_chunk sequence {sequence} after {last}")
