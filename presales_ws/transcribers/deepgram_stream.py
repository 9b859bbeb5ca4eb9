"""One session's Nova-3 stream (listen.v1): its audio up to Deepgram over one connection at a time.

What the SDK leaves to us, done here and in the modules named: KeepAlive through silence, reconnecting with
backoff when the connection drops (reconnect.py), replaying the audio no final covered yet so no word is lost
or repeated (replay.py, deepgram_results.py), a watchdog for finals that never come (deepgram_watchdog.py),
Finalize + CloseStream on `stop`, our own end of turn (deepgram_turns.py), and WebM/Ogg passed through as it
came (deepgram_containers.py).

In the steady state a frame goes from the receive loop straight onto the SDK's socket (`DirectWrite`); the pump
task sends the rest: a replay, coalesced small frames, pieces of a container, and audio a slow Deepgram has
not taken yet (the receive loop never waits for Deepgram).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc
from websockets.frames import Opcode
from websockets.protocol import State

from presales_ws.audio import AudioFormat
from presales_ws.config import Settings
from presales_ws.logs import get_logger
from presales_ws.protocol import ErrorCode
from presales_ws.transcribers import deepgram_messages as messages
from presales_ws.transcribers.base import TranscriberEvent, TranscriberFailure, TranscriberStatus, TranscriptEvent
from presales_ws.transcribers.client_frames import binary_frame
from presales_ws.transcribers.deepgram_containers import ContainerPassthrough, NewFormat
from presales_ws.transcribers.deepgram_results import ResultMapper
from presales_ws.transcribers.deepgram_turns import TurnDetector
from presales_ws.transcribers.deepgram_watchdog import FinalWatchdog
from presales_ws.transcribers.event_channel import EventChannel
from presales_ws.transcribers.reconnect import RetryPolicy, keep_connected, read_and_pump
from presales_ws.transcribers.replay import ReplayBuffer
from presales_ws.transcribers.turns import TurnPolicy

MIN_SEND_MS = 20  # smaller client frames are coalesced up to this ...
MAX_SEND_MS = 100  # ... and replayed audio goes out in sends of at most this
COALESCE_WAIT_S = 0.02  # how long a small remainder waits for company before it is sent alone
CLOSE_WAIT_S = 5.0  # after CloseStream, how long we read before giving up on Deepgram's close
EVENT_BUFFER = 256
DIRECT_WRITE_LIMIT_BYTES = 64 * 1024  # above this much unsent on the socket, audio waits for the pump instead

log = get_logger("presales_ws.transcribers.deepgram")


class DeepgramStream:
    """One session's connection(s) to Deepgram behind the TranscriberStream interface.

    Positions are session byte offsets of the client's audio; `_sent` is how far the current connection has
    been sent, from its `_origin` (the commit point it was opened at) on.
    """

    def __init__(self, client: Any, fmt: AudioFormat, settings: Settings, session_id: str) -> None:
        self._client = client
        self._fmt = fmt
        self._settings = settings
        self._log = log.bind(session_id=session_id)
        self._bytes_per_s = fmt.bytes_per_second
        self._min_send = fmt.bytes_per_second * MIN_SEND_MS // 1000
        self._max_send = fmt.bytes_per_second * MAX_SEND_MS // 1000
        self._buffer = ReplayBuffer(int(settings.deepgram_buffer_s * fmt.bytes_per_second), fmt.frame_bytes)
        self._origin = 0  # session byte position of the current connection's time 0
        self._sent = 0  # session byte position sent on the current connection
        self._new_audio = anyio.Event()
        self._finishing = False
        self._stream_ended = False
        self._events = EventChannel(EVENT_BUFFER)
        self._connections = 0
        self._buffer_overflow_reported = False
        self._last_send_at = 0.0
        self._direct: DirectWrite | None = None  # the connection's socket while `send` may write audio to it
        self._container = ContainerPassthrough()
        self._watchdog = FinalWatchdog(
            fmt.channels, fmt.bytes_per_second, settings.deepgram_final_watchdog_s, self._log
        )
        policy = TurnPolicy.from_settings(settings)
        self._turns = (
            TurnDetector(policy, fmt, settings.local_vad_threshold, self._emit, self._emit_final)
            if settings.turn_detection == "text"
            else None  # Deepgram's endpointing alone
        )
        self._results = ResultMapper(fmt, self._buffer, self._watchdog, self._turns, self._events.emit, self._log)

    # --- the TranscriberStream interface ---------------------------------------------------------------------

    async def send_container(self, pcm: bytes, original: bytes | None) -> None:
        """A WebM/Ogg session's frame: its decoded PCM (for the VAD, the replay buffer and a PCM reconnect), and
        its bytes as the client sent them, for Deepgram to decode itself; None when they did not parse whole
        (corrupt, or over the rate limit), and from then on this session's Deepgram audio is PCM."""
        self._container.take(self._buffer.end + len(pcm), original)
        if pcm:
            await self.send(pcm)
        else:
            self._new_audio.set()

    async def send(self, pcm: bytes) -> None:
        self._container.pcm()
        # Caught up, nothing to put before this audio (a pause's Finalize), a whole frame: it can go at once.
        direct = (
            self._direct
            if not self._container.in_use
            and self._sent == self._buffer.end
            and len(pcm) >= self._min_send
            and not self._finishing
            and not (self._turns and self._turns.finalize_within(self._buffer.end))
            else None
        )
        if self._buffer.append(pcm) and not self._buffer_overflow_reported:
            self._buffer_overflow_reported = True
            self._log.error("deepgram.buffer_overflow", buffered_s=self._settings.deepgram_buffer_s)
            self._container.leave()  # audio is missing from the container's bytes too
            await self._emit(
                TranscriberFailure(
                    "transcriber_busy", "Deepgram is not keeping up; the oldest unsent audio was dropped"
                )
            )
        if direct is not None and direct.write(pcm):
            self._sent += len(pcm)
            self._sent_audio()
        else:
            self._new_audio.set()
        # After the audio went up, so the VAD's batch never delays it; before the next frame is taken in (the
        # receive loop waits for this), so a pause's Finalize still goes right after this audio.
        if self._turns and self._turns.take(pcm) and await self._turns.judge(self._buffer.end):
            self._new_audio.set()

    def _sent_audio(self) -> None:
        """Audio went out: KeepAlive can wait; the watchdog counts what is unanswered."""
        self._last_send_at = now = time.monotonic()
        self._watchdog.sent_audio(self._sent, now)

    async def finish(self) -> None:
        self._finishing = True
        self._new_audio.set()

    def events(self) -> AsyncIterator[TranscriberEvent]:
        return self._events.events()

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until the stream is finished or declared lost."""
        async with self._events:
            await keep_connected(
                connect=self._connect,
                serve=self._serve_to_end,
                disconnected=lambda reason: self._emit(TranscriberStatus("reconnecting", reason=reason)),
                recovered=lambda: self._emit(TranscriberStatus("recovered")),
                fail=self._fail,
                retry=RetryPolicy(self._settings.deepgram_max_outage_s),
                log=self._log,
                name="deepgram",
            )

    # --- one connection ---------------------------------------------------------------------------------------

    def _connect(self) -> AbstractAsyncContextManager[Any]:
        self._connections += 1
        container = self._container.open_connection()
        self._log.info(
            "deepgram.connecting",
            attempt=self._connections,
            container=container,
            replay_s=round((self._buffer.end - self._buffer.start) / self._bytes_per_s, 2),
        )
        connection: AbstractAsyncContextManager[Any] = self._client.listen.v1.connect(
            **listen_options(self._settings, self._fmt, container=container)
        )
        return connection

    async def _serve_to_end(self, connection: Any) -> bool:
        """One connection's life; True when the stream finished cleanly, False to reconnect."""
        try:
            if not await self._serve(connection):
                return False
        except NewFormat:
            self._log.info("deepgram.new_format", container=bool(self._container.active))
            raise  # no outage: the next connection takes the container, or the replay and the rest as PCM
        await self._flush_held()  # the close may have cut short the pump's own flush
        audio_s = self._buffer.end / self._bytes_per_s
        _log_summary(
            self._log,
            self._connections,
            audio_s,
            self._turns.finalizes if self._turns else 0,
            self._results.latencies_s,
        )
        return True

    async def _serve(self, connection: Any) -> bool:
        self._origin = self._sent = self._buffer.start
        self._watchdog.connected(self._sent)
        self._results.connected(self._origin)
        if self._turns:
            self._turns.connected()
        self._direct = DirectWrite.of(connection)
        try:
            closed = await read_and_pump(lambda: self._read(connection), lambda closed: self._pump(connection, closed))
        finally:
            self._direct = None
        # Finished: we ended the stream, or Deepgram closed it after answering our Finalize.
        return self._stream_ended or (self._finishing and closed and self._watchdog.answered.is_set())

    async def _pump(self, connection: Any, closed: anyio.Event) -> None:
        """Audio out (replay first), KeepAlive through silence, the final watchdog, and the end of stream."""
        keepalive_s = self._settings.deepgram_keepalive_s
        self._last_send_at = time.monotonic()
        while True:
            if self._turns and self._turns.finalize_due(self._sent):
                await self._finalize(connection, watched=True)  # the watchdog reconnects if it goes unanswered
                continue
            piece = self._container.next_piece(self._sent)
            if piece is not None:
                self._sent, data = piece
                await connection.send_media(data)
                self._container.sent_bytes += len(data)
                self._sent_audio()
                continue
            if await self._send_pcm(connection):
                continue
            if self._finishing:
                await self._end_of_stream(connection, closed)
                return
            if self._turns:
                await self._turns.flush_idle()
            if self._watchdog.check() == "finalize":
                await self._finalize(connection, watched=True)
            with anyio.move_on_after(max(0.05, min(keepalive_s - (time.monotonic() - self._last_send_at), 0.5))):
                await self._wait_for_audio()
            if self._buffer.end == self._sent and time.monotonic() - self._last_send_at >= keepalive_s:
                await connection.send_keep_alive()
                self._last_send_at = time.monotonic()

    async def _send_pcm(self, connection: Any) -> bool:
        """The next PCM the connection has not had, small remainders coalesced; False when there is none."""
        if self._container.connection:
            return False
        limit = self._turns.send_limit(self._sent, self._max_send) if self._turns else self._max_send
        chunk = self._buffer.read(self._sent, limit)
        if chunk and len(chunk) < min(self._min_send, limit) and not self._finishing:
            with anyio.move_on_after(COALESCE_WAIT_S):
                await self._wait_for_audio()
            chunk = self._buffer.read(self._sent, limit)
        if not chunk:
            return False
        await connection.send_media(chunk)
        self._sent += len(chunk)
        self._sent_audio()
        return True

    async def _wait_for_audio(self) -> None:
        await self._new_audio.wait()
        self._new_audio = anyio.Event()

    async def _finalize(self, connection: Any, *, watched: bool) -> None:
        self._watchdog.finalize_sent(watched=watched)
        await connection.send_finalize()

    async def _end_of_stream(self, connection: Any, closed: anyio.Event) -> None:
        """After `stop`: Finalize, wait for its results, CloseStream, read until Deepgram closes."""
        self._watchdog.expect_close()
        await self._finalize(connection, watched=False)  # answered once every channel has answered it, and all before
        with anyio.move_on_after(self._settings.deepgram_finalize_timeout_s):
            await self._watchdog.answered.wait()
        await self._flush_held()
        await connection.send_close_stream()
        with anyio.move_on_after(CLOSE_WAIT_S):
            await closed.wait()
        await self._flush_held()  # anything the close itself finalized
        self._stream_ended = True

    async def _read(self, connection: Any) -> None:
        async for message in _messages(connection):
            self._watchdog.heard(self._sent)
            await self._results.on_message(message, self._sent)

    # --- plumbing ---------------------------------------------------------------------------------------------

    async def _emit(self, event: TranscriberEvent) -> None:
        await self._events.emit(event)

    async def _emit_final(self, event: TranscriptEvent) -> None:
        self._results.latencies_s.append(self._buffer.end / self._bytes_per_s - event.end)
        await self._emit(event)

    async def _flush_held(self) -> None:
        if self._turns:
            await self._turns.flush()

    async def _fail(self, code: ErrorCode, message: str) -> None:
        await self._flush_held()  # words Deepgram already finalized are the client's, whatever comes next
        await self._emit(TranscriberFailure(code, message, fatal=True))


def listen_options(settings: Settings, fmt: AudioFormat, *, container: bool) -> dict[str, str]:
    """listen.v1's query. A container says its own encoding, rate and channel count: Deepgram wants none of them
    said (its docs: "encoding", "sample_rate", "channels" are for raw audio); `multichannel` still asks for one
    transcript per channel."""
    s = settings
    raw = {"encoding": "linear16", "sample_rate": str(fmt.sample_rate), "channels": str(fmt.channels)}
    options = {
        "model": s.deepgram_model,
        "language": s.deepgram_language,
        **({} if container else raw),
        "interim_results": "true",
        "punctuate": "true",
        "smart_format": "true" if s.deepgram_smart_format else "false",
        "diarize": "true" if s.deepgram_diarize else "false",
        "endpointing": str(s.deepgram_endpointing_ms),
        "utterance_end_ms": str(s.deepgram_utterance_end_ms),
        "vad_events": "true",
    }
    if fmt.channels > 1:
        options["multichannel"] = "true"
    return options


async def _messages(connection: Any) -> AsyncIterator[messages.Message | None]:
    """The connection's messages, read off its socket and decoded by msgspec (deepgram_messages.py) rather
    than the SDK's pydantic models; through the SDK's own iterator if its socket is not the one expected."""
    socket = _legacy_socket(connection)
    if socket is not None:
        async for raw in socket:
            yield messages.decode(raw)
    else:
        async for model in connection:
            yield messages.decode(model.model_dump_json()) if hasattr(model, "model_dump_json") else None


def _legacy_socket(connection: Any) -> Any:
    """The SDK connection's websockets (legacy) protocol, which DirectWrite writes to; None if this SDK
    version holds something else (then every frame goes through the pump)."""
    socket = getattr(connection, "_websocket", None)
    needed = ("write_frame_sync", "state", "transport", "is_client", "extensions")
    return socket if all(hasattr(socket, name) for name in needed) else None


class DirectWrite:
    """The steady state's path: a frame goes onto the provider's socket from the receive loop, without waking
    the pump (one task hop and its timers per frame). Never waits: with the socket's buffer over
    DIRECT_WRITE_LIMIT_BYTES (a slow provider) or the connection not open, the pump, which waits for the
    socket to drain, takes the audio. Without extensions the frame is built here (client_frames.py: no
    getrandom per frame); with one, websockets builds it."""

    __slots__ = ("_plain", "_socket")

    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self._plain = socket.is_client and not socket.extensions

    @classmethod
    def of(cls, connection: Any) -> DirectWrite | None:
        socket = _legacy_socket(connection)
        return None if socket is None else cls(socket)

    def write(self, pcm: bytes) -> bool:
        """True when the frame went onto the socket; False: the pump must send it."""
        socket = self._socket
        transport = socket.transport
        if socket.state is not State.OPEN or transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT_BYTES:
            return False
        if self._plain:
            transport.write(binary_frame(pcm))
        else:
            socket.write_frame_sync(True, Opcode.BINARY, pcm)
        return True


def _log_summary(log: Any, connections: int, audio_s: float, turn_finalizes: int, latencies_s: list[float]) -> None:
    latencies = sorted(latencies_s)
    log.info(
        "deepgram.finished",
        connections=connections,
        audio_s=round(audio_s, 2),
        utterances=len(latencies),
        turn_finalizes=turn_finalizes,
        speech_end_to_final_p50_s=round(statistics.median(latencies), 3) if latencies else None,
        speech_end_to_final_max_s=round(latencies[-1], 3) if latencies else None,
    )
