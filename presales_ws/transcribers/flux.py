"""Deepgram Flux (DEEPGRAM_MODEL=flux-*) through `listen.v2`: Flux's own end of turn, one connection per channel.

Flux is mono and does not diarize, so a two-channel session opens one Flux connection per channel (each channel
is one speaker: roles stay certain) and a one-channel session gets no speaker labels. Flux decides when each turn
is over; flux_turns.py maps its turn events onto transcript events (EagerEndOfTurn is the eager interim a
speculative suggestion lookup starts on, EndOfTurn the final).

What the SDK leaves to us, as on the Nova-3 path (deepgram_stream.py), per channel: reconnecting with backoff when the
connection drops (or closes 1011, or the handshake gets 429/5xx), one `transcriber_auth` error and no retry for a
refused key, replaying the audio no final covered yet so no word is lost or repeated. Flux differs in three ways:
- **Silence**: Flux takes no KeepAlive message (one closes the stream); WebSocket pings keep an idle connection
  open, sent after DEEPGRAM_KEEPALIVE_S without audio.
- **A turn whose audio stopped**: Flux's clock is the audio, so a turn never ends while the client sends nothing;
  after DEEPGRAM_EOT_TIMEOUT_MS without audio the service sends ForceEndTurn, and if even that goes unanswered
  (self-hosted Flux has no ForceEndTurn) the turn's words are final here.
- **Stop**: there is no Finalize; CloseStream makes Flux transcribe what it has and close, finalizing nothing,
  and its last Update is the turn's final (as Flux's documentation says to treat it).
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import numpy as np

from presales_ws.audio import AudioFormat
from presales_ws.config import Settings
from presales_ws.logs import get_logger
from presales_ws.protocol import ErrorCode
from presales_ws.transcribers.base import TranscriberEvent, TranscriberFailure, TranscriberStatus, TranscriptEvent
from presales_ws.transcribers.deepgram_stream import CLOSE_WAIT_S, EVENT_BUFFER, MAX_SEND_MS
from presales_ws.transcribers.event_channel import EventChannel
from presales_ws.transcribers.flux_turns import TurnReader
from presales_ws.transcribers.reconnect import RetryPolicy, StuckStream, keep_connected, read_and_pump
from presales_ws.transcribers.replay import ReplayBuffer

FLUX_MIN_SEND_MS = 80  # Deepgram recommends 80 ms chunks for Flux: smaller client frames are gathered up to it ...
FLUX_COALESCE_WAIT_S = 0.08  # ... for at most this long
SAMPLE_BYTES = 2  # linear16, one channel per connection

log = get_logger(__name__)


def is_flux_model(model: str) -> bool:
    """Flux models stream through listen.v2; everything else (nova-3, ...) through listen.v1."""
    return model.startswith("flux-")


class FluxStream:
    """One session's Flux connections (one per channel) behind the TranscriberStream interface."""

    def __init__(self, client: Any, fmt: AudioFormat, settings: Settings, session_id: str) -> None:
        self._fmt = fmt
        self._settings = settings
        self._log = log.bind(session_id=session_id)
        self._channels = [FluxChannel(client, self, channel, fmt.sample_rate) for channel in range(fmt.channels)]
        self._down: set[int] = set()  # channels whose connection is being re-established
        self._failed = False
        self._overflow_reported = False
        self._events = EventChannel(EVENT_BUFFER)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def log(self) -> Any:
        return self._log

    # --- the TranscriberStream interface ---------------------------------------------------------------------

    async def send(self, pcm: bytes) -> None:
        if len(self._channels) == 1:
            parts = [pcm]
        else:
            frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, len(self._channels))
            parts = [frames[:, channel].tobytes() for channel in range(len(self._channels))]
        dropped = [channel.append(part) for channel, part in zip(self._channels, parts, strict=True)]
        if any(dropped) and not self._overflow_reported:
            self._overflow_reported = True
            self._log.error("flux.buffer_overflow", buffered_s=self._settings.deepgram_buffer_s)
            await self.emit(
                TranscriberFailure(
                    "transcriber_busy", "Deepgram is not keeping up; the oldest unsent audio was dropped"
                )
            )

    async def finish(self) -> None:
        for channel in self._channels:
            channel.finish()

    def events(self) -> AsyncIterator[TranscriberEvent]:
        return self._events.events()

    async def run(self) -> None:
        """Every channel's connection, until each has finished (or failed for good)."""
        async with self._events:
            async with anyio.create_task_group() as tg:
                for channel in self._channels:
                    tg.start_soon(channel.run)
            self._log_summary()

    # --- what the channels report ----------------------------------------------------------------------------

    async def emit(self, event: TranscriberEvent) -> None:
        await self._events.emit(event)

    async def disconnected(self, channel: int, reason: str) -> None:
        """The client hears of an outage once, however many channels it takes down."""
        if not self._down:
            await self.emit(TranscriberStatus("reconnecting", reason=reason))
        self._down.add(channel)

    async def recovered(self, channel: int) -> None:
        self._down.discard(channel)
        if not self._down:
            await self.emit(TranscriberStatus("recovered"))

    async def fail(self, code: ErrorCode, message: str) -> None:
        """A channel cannot go on: one error for the session (both channels share the key). The error is fatal:
        the session closes and cancels the stream; nothing here cancels a channel that may be sending a final."""
        if self._failed:
            return
        self._failed = True
        await self.emit(TranscriberFailure(code, message, fatal=True))

    def _log_summary(self) -> None:
        latencies = sorted(s for channel in self._channels for s in channel.latencies_s)
        self._log.info(
            "flux.finished",
            connections=sum(channel.connections for channel in self._channels),
            channels=len(self._channels),
            audio_s=round(self._channels[0].audio_s, 2),
            turns=len(latencies),
            speech_end_to_final_p50_s=round(statistics.median(latencies), 3) if latencies else None,
            speech_end_to_final_max_s=round(latencies[-1], 3) if latencies else None,
        )


class FluxChannel:
    """One channel's audio and its Flux connection(s); positions are byte offsets of that channel's mono audio.

    Each connection starts at the commit point (`origin`): the end of the audio whose words are all in finals.
    Its times are rebased by adding `origin`, and words the client already has as finals are dropped.
    """

    def __init__(self, client: Any, stream: FluxStream, channel: int, sample_rate: int) -> None:
        settings = stream.settings
        self._client = client
        self._stream = stream
        self._settings = settings
        self._channel = channel
        self._sample_rate = sample_rate
        self._log = stream.log.bind(channel=channel)
        self._bytes_per_s = sample_rate * SAMPLE_BYTES
        self._min_send = self._bytes_per_s * FLUX_MIN_SEND_MS // 1000
        self._max_send = self._bytes_per_s * MAX_SEND_MS // 1000
        self._buffer = ReplayBuffer(int(settings.deepgram_buffer_s * self._bytes_per_s), SAMPLE_BYTES)
        self._reader = TurnReader(channel)
        self._new_audio = anyio.Event()
        self._finishing = False
        self._stream_ended = False
        self._close_sent = False  # CloseStream went out on the current connection
        self._origin = 0  # byte position of the current connection's time 0
        self._sent = 0  # byte position sent on the current connection
        self._last_audio_at = anyio.current_time()  # when the client last sent audio
        self._last_message_at = 0.0
        self._sent_at_last_message = 0
        self._force_sent_at: float | None = None  # ForceEndTurn sent for the open turn, not answered yet
        self.connections = 0
        self.latencies_s: list[float] = []

    @property
    def audio_s(self) -> float:
        return self._buffer.end / self._bytes_per_s

    def append(self, pcm: bytes) -> int:
        """Queue this channel's audio; returns the bytes the replay bound pushed out (0 normally)."""
        self._last_audio_at = anyio.current_time()
        dropped = self._buffer.append(pcm)
        self._new_audio.set()
        return dropped

    def finish(self) -> None:
        self._finishing = True
        self._new_audio.set()

    @property
    def _options(self) -> dict[str, str]:
        s = self._settings
        options = {
            "model": s.deepgram_model,
            "encoding": "linear16",
            "sample_rate": str(self._sample_rate),
            "eot_threshold": str(s.deepgram_eot_threshold),
            "eot_timeout_ms": str(s.deepgram_eot_timeout_ms),
        }
        if s.deepgram_eager_eot_threshold is not None:
            options["eager_eot_threshold"] = str(s.deepgram_eager_eot_threshold)
        return options

    # --- connections ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until the channel is finished or declared lost."""
        await keep_connected(
            connect=self._connect,
            serve=self._serve_to_end,
            disconnected=lambda reason: self._stream.disconnected(self._channel, reason),
            recovered=lambda: self._stream.recovered(self._channel),
            fail=self._stream.fail,
            retry=RetryPolicy(self._settings.deepgram_max_outage_s),
            log=self._log,
            name="flux",
        )

    def _connect(self) -> AbstractAsyncContextManager[Any]:
        self.connections += 1
        replay_s = (self._buffer.end - self._buffer.start) / self._bytes_per_s
        self._log.info("flux.connecting", attempt=self.connections, replay_s=round(replay_s, 2))
        connection: AbstractAsyncContextManager[Any] = self._client.listen.v2.connect(**self._options)
        return connection

    async def _serve_to_end(self, connection: Any) -> bool:
        if not await self._serve(connection):
            return False
        await self._emit_final(self._reader.close_turn())  # CloseStream's last Update
        return True

    async def _serve(self, connection: Any) -> bool:
        """One connection's life; True when the channel finished cleanly, False to reconnect."""
        self._origin = self._sent = self._sent_at_last_message = self._buffer.start
        self._reader.reset()
        self._last_message_at = anyio.current_time()
        self._force_sent_at = None
        self._close_sent = False
        closed = await read_and_pump(lambda: self._read(connection), lambda closed: self._pump(connection, closed))
        # Finished: we ended the stream, or Flux closed it after our CloseStream (which cut the pump's wait short).
        return self._stream_ended or (self._close_sent and closed)

    async def _pump(self, connection: Any, closed: anyio.Event) -> None:
        """Audio out (replay first) in ~80 ms sends, pings through silence, stalled turns, and the end of stream."""
        keepalive_s = self._settings.deepgram_keepalive_s
        last_send = anyio.current_time()
        while True:
            chunk = self._buffer.read(self._sent, self._max_send)
            if chunk and len(chunk) < self._min_send and not self._finishing:
                with anyio.move_on_after(FLUX_COALESCE_WAIT_S):
                    while len(self._buffer.read(self._sent, self._min_send)) < self._min_send and not self._finishing:
                        await self._wait_for_audio()
                chunk = self._buffer.read(self._sent, self._max_send)
            if chunk:
                await connection.send_media(chunk)
                self._sent += len(chunk)
                last_send = anyio.current_time()
                continue
            if self._finishing:
                await connection.send_close_stream()
                self._close_sent = True
                with anyio.move_on_after(CLOSE_WAIT_S):
                    await closed.wait()
                self._stream_ended = True
                return
            await self._watch_turn(connection)
            with anyio.move_on_after(max(0.05, min(keepalive_s - (anyio.current_time() - last_send), 0.5))):
                await self._wait_for_audio()
            if self._buffer.end == self._sent and anyio.current_time() - last_send >= keepalive_s:
                await connection._websocket.ping()  # the SDK's v2 client has no keep-alive of its own to send
                last_send = anyio.current_time()

    async def _wait_for_audio(self) -> None:
        await self._new_audio.wait()
        self._new_audio = anyio.Event()

    async def _watch_turn(self, connection: Any) -> None:
        """A turn left open: its audio stopped coming (end it), or Flux went quiet in the middle of it (reconnect)."""
        if self._reader.open is None:
            self._force_sent_at = None
            return
        now = anyio.current_time()
        bound_s = self._settings.deepgram_final_watchdog_s
        if self._force_sent_at is not None:
            if now - self._force_sent_at >= bound_s:
                self._log.warning("flux.force_end_turn_unanswered", waited_s=bound_s)
                self._force_sent_at = None
                await self._emit_final(self._reader.close_turn())
            return
        if now - self._last_audio_at >= self._settings.deepgram_eot_timeout_ms / 1000:
            self._log.info("flux.force_end_turn", idle_s=round(now - self._last_audio_at, 2))
            self._force_sent_at = now
            await connection.send_force_end_turn()
            return
        outstanding = self._sent - self._sent_at_last_message
        if outstanding >= self._bytes_per_s and now - self._last_message_at >= bound_s:
            self._log.warning("flux.stuck", waited_s=bound_s)
            raise StuckStream("no turn update for a second of audio")

    # --- results ----------------------------------------------------------------------------------------------

    async def _read(self, connection: Any) -> None:
        from deepgram.listen.v2.types import ListenV2FatalError, ListenV2TurnInfo

        async for message in connection:
            self._last_message_at = anyio.current_time()
            self._sent_at_last_message = self._sent
            if isinstance(message, ListenV2TurnInfo):
                if message.event == "EndOfTurn":
                    self._force_sent_at = None
                event = self._reader.read(message, self._origin / self._bytes_per_s)
                if event is not None:
                    await (self._emit_final(event) if event.is_final else self._stream.emit(event))
                self._commit()
            elif isinstance(message, ListenV2FatalError):
                self._log.warning("flux.error", code=message.code, description=message.description)

    async def _emit_final(self, event: TranscriptEvent | None) -> None:
        if event is None:
            return
        self.latencies_s.append(self._sent / self._bytes_per_s - event.end)
        await self._stream.emit(event)
        self._commit()

    def _commit(self) -> None:
        self._buffer.commit(int(self._reader.committed_s * self._sample_rate) * SAMPLE_BYTES)
