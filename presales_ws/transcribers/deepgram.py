"""Deepgram Nova-3 live streaming through the official SDK, one provider connection per session.

What the SDK leaves to us, done here: KeepAlive through silence, reconnecting with backoff when the
connection drops, replaying the audio no final covered yet so no word is lost (or repeated), a watchdog for
finals that never come, Finalize + CloseStream on `stop`, and diarized finals split at speaker changes.

End of turn (TURN_DETECTION=text): Deepgram's own endpointing waits DEEPGRAM_ENDPOINTING_MS (1 s) after
every utterance. Instead the service runs Silero VAD on each channel's audio and sends `Finalize` as soon as
a pause begins (TURN_COMPLETE_MS); Deepgram answers at once. The joiner then holds that final until the
words say the turn is over, so a pause inside a sentence does not cut it (joiner.py, turns.py).
"""

from __future__ import annotations

import random
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.frames import Opcode
from websockets.protocol import State

from presales_ws.audio import AudioFormat
from presales_ws.config import Settings
from presales_ws.logs import get_logger
from presales_ws.protocol import ErrorCode
from presales_ws.transcribers import deepgram_messages as messages
from presales_ws.transcribers.base import (
    TranscriberEvent,
    TranscriberFailure,
    TranscriberStatus,
    TranscriberUnavailable,
    TranscriptEvent,
    serving,
)
from presales_ws.transcribers.joiner import UtteranceJoiner
from presales_ws.transcribers.replay import ReplayBuffer
from presales_ws.transcribers.turns import TurnPolicy
from presales_ws.transcribers.vad import PauseTracker
from presales_ws.transcribers.vad_batch import load_model

MIN_SEND_MS = 20  # smaller client frames are coalesced up to this ...
MAX_SEND_MS = 100  # ... and replayed audio goes out in sends of at most this
COALESCE_WAIT_S = 0.02  # how long a small remainder waits for company before it is sent alone
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 8.0
CLOSE_WAIT_S = 5.0  # after CloseStream, how long we read before giving up on Deepgram's close
RETRYABLE_STATUS = frozenset({408, 425, 429})  # and every 5xx
AUTH_STATUS = frozenset({401, 403})
EVENT_BUFFER = 256
DIRECT_WRITE_LIMIT_BYTES = 64 * 1024  # above this much unsent on the socket, audio waits for the pump instead
DUPLICATE_TOLERANCE_S = 0.005  # timestamps are rounded to ms upstream

if TYPE_CHECKING:
    from presales_ws.transcribers.flux import FluxStream

log = get_logger(__name__)


class StuckStream(Exception):
    """The provider took audio (and a Finalize) but answered nothing: worth a new connection."""


class NewFormat(Exception):
    """The connection's audio format no longer fits: a WebM/Ogg session's first piece came to a connection
    opened for PCM (a container must be read from its first byte), or its bytes can no longer go up as they
    came (a piece did not parse whole). The stream goes on, on a new connection, in the other format."""


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


class DeepgramStream:
    """One session's connection(s) to Deepgram, and the bookkeeping that makes reconnects lossless.

    Positions are session byte offsets of the client's audio. Each provider connection starts at the commit
    point (`origin`): the end of the audio every channel has a final for. Its timestamps are rebased onto
    session time by adding `origin`, and words the client already has as finals are dropped.
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
        self._committed_s = [0.0] * fmt.channels  # per channel: session seconds the client has finals for
        self._delivered_s = [0.0] * fmt.channels  # per channel: end of the last word sent in a final
        self._utterance_open = [False] * fmt.channels  # a final went out without utterance_end
        self._origin = 0  # session byte position of the current connection's time 0
        self._sent = 0  # session byte position sent on the current connection
        self._new_audio = anyio.Event()
        self._finishing = False
        self._finalize_answered = anyio.Event()
        self._finalizes_sent = 0
        self._finalize_answers = [0] * fmt.channels
        self._send_events: MemoryObjectSendStream[TranscriberEvent]
        self._receive_events: MemoryObjectReceiveStream[TranscriberEvent]
        self._send_events, self._receive_events = anyio.create_memory_object_stream[TranscriberEvent](EVENT_BUFFER)
        self._last_message_at = 0.0
        self._overdue_from: float | None = None
        # While no final has come: when the interims last brought new words, and where those words end.
        self._unfinalized_since: float | None = None
        self._interim_end_s: float | None = None
        self._finalize_sent_at: float | None = None
        self._connections = 0
        self._latencies_s: list[float] = []
        self._buffer_overflow_reported = False
        self._stream_ended = False
        self._sent_at_last_message = 0
        # End of turn decided here (None: Deepgram's endpointing alone).
        self._policy = TurnPolicy.from_settings(settings) if settings.turn_detection == "text" else None
        channels = range(fmt.channels if self._policy else 0)
        threshold = settings.local_vad_threshold
        self._pauses = [PauseTracker(fmt.sample_rate, threshold, batched=True, gated=True) for _ in channels]
        self._joiners = [UtteranceJoiner(self._policy) for _ in channels if self._policy]
        self._words_pending = [False] * fmt.channels  # an interim with words since the channel's last final
        self._finalize_at: deque[int] = deque()  # session byte positions where a pause asked for a final
        self._turn_finalizes = 0
        self._last_audio_at = 0.0
        self._last_send_at = 0.0
        self._direct: Any = None  # the connection's socket while audio may be written to it from `send`
        # WebM/Ogg sessions: Deepgram reads the client's container bytes as they came, on the first connection.
        self._passthrough: bool | None = None  # None: no audio yet; True: container bytes; False: PCM only
        self._pieces: deque[tuple[int, bytes]] = deque()  # (session byte position the piece's PCM ends at, bytes)
        self._container_connection = False  # the current connection reads the container (opened without encoding)
        self._container_bytes = 0  # container bytes sent to Deepgram

    # --- the TranscriberStream interface ---------------------------------------------------------------------

    async def send_container(self, pcm: bytes, original: bytes | None) -> None:
        """A WebM/Ogg session's frame: its decoded PCM (for the VAD, the replay buffer and a PCM reconnect), and
        its bytes as the client sent them, for Deepgram to decode itself; None when they did not parse whole
        (corrupt, or over the rate limit), and from then on this session's Deepgram audio is PCM."""
        if self._passthrough is None:
            self._passthrough = original is not None
        if original is None or not self._passthrough:
            self._leave_container()
        else:
            self._pieces.append((self._buffer.end + len(pcm), original))
        if pcm:
            await self.send(pcm)
        else:
            self._new_audio.set()

    def _leave_container(self) -> None:
        self._passthrough = False
        self._pieces.clear()

    async def send(self, pcm: bytes) -> None:
        if self._passthrough is None:
            self._passthrough = False
        # Caught up, nothing to put before this audio (a pause's Finalize), a whole frame: it can go at once.
        direct = (
            self._direct is not None
            and not (self._container_connection or self._passthrough)
            and self._sent == self._buffer.end
            and len(pcm) >= self._min_send
            and not self._finishing
            and (not self._finalize_at or self._finalize_at[0] > self._buffer.end)
        )
        if self._buffer.append(pcm) and not self._buffer_overflow_reported:
            self._buffer_overflow_reported = True
            self._log.error("deepgram.buffer_overflow", buffered_s=self._settings.deepgram_buffer_s)
            self._leave_container()  # audio is missing from the container's bytes too
            await self._emit(
                TranscriberFailure(
                    "transcriber_busy", "Deepgram is not keeping up; the oldest unsent audio was dropped"
                )
            )
        if not (direct and self._write_now(pcm)):
            self._new_audio.set()
        if self._pauses:
            # After the audio went up, so the VAD's batch never delays it; before the next frame is taken in
            # (the receive loop waits for this), so a pause's Finalize still goes right after this audio.
            await self._watch_pauses(pcm)

    def _write_now(self, pcm: bytes) -> bool:
        """The steady state's path: the frame goes onto the provider's socket from the receive loop, without
        waking the pump (one task hop and its timers per frame). Never waits: with the socket's buffer over
        DIRECT_WRITE_LIMIT_BYTES (a slow provider) or the connection not open, False, and the pump, which
        waits for the socket to drain, takes the audio."""
        socket = self._direct
        if socket.state is not State.OPEN or socket.transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT_BYTES:
            return False
        socket.write_frame_sync(True, Opcode.BINARY, pcm)
        self._sent += len(pcm)
        self._sent_audio()
        return True

    def _sent_audio(self) -> None:
        """Audio went out: KeepAlive can wait; a second of it unanswered starts the watchdog's clock."""
        self._last_send_at = time.monotonic()
        if self._overdue_from is None and self._sent - self._sent_at_last_message >= self._bytes_per_s:
            self._overdue_from = self._last_send_at  # a second of audio sent and not a word back since

    async def finish(self) -> None:
        self._finishing = True
        self._new_audio.set()

    # --- end of turn ------------------------------------------------------------------------------------------

    async def _watch_pauses(self, pcm: bytes) -> None:
        """VAD on the client's audio as it arrives: a pause after speech asks Deepgram for its final now."""
        assert self._policy is not None
        self._last_audio_at = time.monotonic()  # per frame: cheaper than anyio.current_time() (a getpid on 3.11)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
        frames = samples.reshape(-1, self._fmt.channels)
        for channel, pauses in enumerate(self._pauses):
            resumed = await pauses.feed_batched(np.ascontiguousarray(frames[:, channel]))
            if pauses.spoke and pauses.silence_ms >= self._policy.complete_ms:
                pauses.mark()
                # The pump sends Finalize right after this audio, before any that follows it.
                self._finalize_at.append(self._buffer.end)
                self._new_audio.set()
            if not resumed:
                settled = not self._words_pending[channel] and not self._finalize_at
                for event in self._joiners[channel].on_pause(pauses.silence_ms, settled=settled):
                    await self._emit_final(event)

    async def _flush_held(self, *, idle_s: float = 0.0) -> None:
        """Held finals go out: the stream ends, or the client has sent no audio for `idle_s`."""
        if time.monotonic() - self._last_audio_at < idle_s:
            return
        for joiner in self._joiners:
            for event in joiner.flush():
                await self._emit_final(event)

    async def _emit_final(self, event: TranscriptEvent) -> None:
        self._latencies_s.append(self._buffer.end / self._bytes_per_s - event.end)
        await self._emit(event)

    async def events(self) -> AsyncIterator[TranscriberEvent]:
        async with self._receive_events:
            async for event in self._receive_events:
                yield event

    # --- connections ------------------------------------------------------------------------------------------

    @property
    def _options(self) -> dict[str, str]:
        s = self._settings
        # A container says its own encoding, rate and channel count: Deepgram wants none of them said (its docs:
        # "encoding", "sample_rate", "channels" are for raw audio); `multichannel` still asks for one transcript
        # per channel.
        raw = {"encoding": "linear16", "sample_rate": str(self._fmt.sample_rate), "channels": str(self._fmt.channels)}
        options = {
            "model": s.deepgram_model,
            "language": s.deepgram_language,
            **({} if self._container_connection else raw),
            "interim_results": "true",
            "punctuate": "true",
            "smart_format": "true" if s.deepgram_smart_format else "false",
            "diarize": "true" if s.deepgram_diarize else "false",
            "endpointing": str(s.deepgram_endpointing_ms),
            "utterance_end_ms": str(s.deepgram_utterance_end_ms),
            "vad_events": "true",
        }
        if self._fmt.channels > 1:
            options["multichannel"] = "true"
        return options

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until the stream is finished or declared lost."""
        from deepgram.core.api_error import ApiError
        from websockets.exceptions import WebSocketException

        attempt = 0
        outage_since: float | None = None
        async with self._send_events:
            while True:
                self._connections += 1
                # Only a connection that gets the container from its first byte can read it. Until the first
                # audio says which, PCM: a PCM session's connection is open before its first frame.
                self._container_connection = bool(self._passthrough) and self._container_bytes == 0
                if self._passthrough and not self._container_connection:
                    self._leave_container()
                self._log.info(
                    "deepgram.connecting",
                    attempt=self._connections,
                    container=self._container_connection,
                    replay_s=round((self._buffer.end - self._buffer.start) / self._bytes_per_s, 2),
                )
                try:
                    async with self._client.listen.v1.connect(**self._options) as connection:
                        if outage_since is not None:
                            self._log.info("deepgram.recovered", outage_s=round(anyio.current_time() - outage_since, 2))
                            await self._emit(TranscriberStatus("recovered"))
                        outage_since, attempt = None, 0
                        if await self._serve(connection):
                            await self._flush_held()  # the close may have cut short the pump's own flush
                            self._log_summary()
                            return
                        reason = "connection closed by Deepgram"
                except ApiError as exc:
                    status = exc.status_code or 0
                    if status in AUTH_STATUS:
                        self._log.error("deepgram.auth_failed", status=status)
                        await self._fail("transcriber_auth", "Deepgram refused the API key; check DEEPGRAM_API_KEY")
                        return
                    if status not in RETRYABLE_STATUS and status < 500:
                        self._log.error("deepgram.refused", status=status)
                        await self._fail("transcriber_failed", f"Deepgram refused the stream (HTTP {status})")
                        return
                    reason = f"HTTP {status}"
                except NewFormat:
                    self._log.info("deepgram.new_format", container=bool(self._passthrough))
                    continue  # no outage: the next connection takes the container, or the replay and the rest as PCM
                except (OSError, TimeoutError, WebSocketException, StuckStream) as exc:
                    reason = _describe(exc)
                now = anyio.current_time()
                if outage_since is None:
                    outage_since = now
                    self._log.warning("deepgram.disconnected", reason=reason)
                    await self._emit(TranscriberStatus("reconnecting", reason=reason))
                if now - outage_since >= self._settings.deepgram_max_outage_s:
                    self._log.error("deepgram.gave_up", outage_s=round(now - outage_since, 1), reason=reason)
                    await self._fail(
                        "transcriber_failed",
                        f"Deepgram unreachable for {self._settings.deepgram_max_outage_s:.0f} s ({reason})",
                    )
                    return
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                self._log.info("deepgram.backoff", delay_s=round(delay, 2), reason=reason)
                await anyio.sleep(delay)

    async def _serve(self, connection: Any) -> bool:
        """One connection's life; True when the stream finished cleanly, False to reconnect."""
        self._origin = self._sent = self._sent_at_last_message = self._buffer.start
        self._last_message_at = anyio.current_time()
        self._overdue_from = None
        self._unfinalized_since = self._finalize_sent_at = self._interim_end_s = None
        self._words_pending = [False] * self._fmt.channels  # the old connection's interims are void
        self._finalizes_sent = 0
        self._finalize_answers = [0] * self._fmt.channels  # from_finalize results, per channel
        outcome: list[BaseException] = []
        closed = anyio.Event()
        tg: anyio.abc.TaskGroup

        async def guarded(work: Callable[[], Awaitable[None]], *, ends_connection: bool) -> None:
            try:
                await work()
            except Exception as exc:
                outcome.append(exc)
                tg.cancel_scope.cancel()
                return
            if ends_connection:
                tg.cancel_scope.cancel()

        async def read() -> None:
            try:
                await self._read(connection)
            finally:
                closed.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: guarded(read, ends_connection=True))
                tg.start_soon(lambda: guarded(lambda: self._pump(connection, closed), ends_connection=True))
                self._direct = _legacy_socket(connection)
        finally:
            self._direct = None

        if outcome:
            raise outcome[0]
        # Finished: we ended the stream, or Deepgram closed it after answering our Finalize.
        return self._stream_ended or (self._finishing and closed.is_set() and self._finalize_answered.is_set())

    async def _pump(self, connection: Any, closed: anyio.Event) -> None:
        """Audio out (replay first), KeepAlive through silence, the final watchdog, and the end of stream."""
        keepalive_s = self._settings.deepgram_keepalive_s
        self._last_send_at = time.monotonic()
        while True:
            if self._finalize_at and self._sent >= self._finalize_at[0]:
                self._finalize_at.popleft()
                self._turn_finalizes += 1
                self._finalize_sent_at = anyio.current_time()  # the watchdog reconnects if it goes unanswered
                await self._finalize(connection)
                continue
            if self._container_connection:
                if self._pieces:  # a whole piece: its PCM ends where a pause's Finalize may be due, never inside
                    self._sent, piece = self._pieces.popleft()
                    await connection.send_media(piece)
                    self._container_bytes += len(piece)
                    self._sent_audio()
                    continue
                if not self._passthrough:
                    raise NewFormat
            elif self._passthrough and self._container_bytes == 0 and self._sent == 0:
                raise NewFormat  # a container's first piece, on a connection opened for PCM before it came
            # Up to the next pause's Finalize at most: a Finalize after later audio would cut its words.
            limit = min(self._max_send, self._finalize_at[0] - self._sent) if self._finalize_at else self._max_send
            chunk = b"" if self._container_connection else self._buffer.read(self._sent, limit)
            if chunk and len(chunk) < min(self._min_send, limit) and not self._finishing:
                with anyio.move_on_after(COALESCE_WAIT_S):
                    await self._wait_for_audio()
                chunk = self._buffer.read(self._sent, limit)
            if chunk:
                await connection.send_media(chunk)
                self._sent += len(chunk)
                self._sent_audio()
                continue
            if self._finishing:
                await self._end_of_stream(connection, closed)
                return
            if self._joiners and self._policy is not None:
                await self._flush_held(idle_s=self._policy.incomplete_ms / 1000)
            await self._watchdog(connection)
            with anyio.move_on_after(max(0.05, min(keepalive_s - (time.monotonic() - self._last_send_at), 0.5))):
                await self._wait_for_audio()
            if self._buffer.end == self._sent and time.monotonic() - self._last_send_at >= keepalive_s:
                await connection.send_keep_alive()
                self._last_send_at = time.monotonic()

    async def _wait_for_audio(self) -> None:
        await self._new_audio.wait()
        self._new_audio = anyio.Event()

    async def _watchdog(self, connection: Any) -> None:
        """Speech ended (the interims stopped growing) but no final came back: ask for one; if even that goes
        unanswered, reconnect. Timed from the last new word, not the first: while speech goes on, Deepgram may
        hold a final back for several seconds (its own cadence, `endpointing` after a pause), and a Finalize
        then would cut the sentence in two."""
        now = anyio.current_time()
        bound = self._settings.deepgram_final_watchdog_s
        if self._finalize_sent_at is not None:
            if self._last_message_at < self._finalize_sent_at and now - self._finalize_sent_at >= bound:
                self._log.warning("deepgram.stuck", waited_s=round(now - self._finalize_sent_at, 1))
                raise StuckStream("no answer to Finalize")
            return
        waiting = self._unfinalized_since is not None and now - self._unfinalized_since >= bound
        # A second or more of audio is outstanding, and has been for `bound`, with nothing at all coming back.
        silent = self._overdue_from is not None and time.monotonic() - self._overdue_from >= bound
        if waiting or silent:
            self._log.warning("deepgram.final_overdue", waited_s=bound, silent=silent)
            self._finalize_sent_at = now
            await self._finalize(connection)

    async def _finalize(self, connection: Any) -> None:
        self._finalizes_sent += 1
        await connection.send_finalize()

    async def _end_of_stream(self, connection: Any, closed: anyio.Event) -> None:
        """After `stop`: Finalize, wait for its results, CloseStream, read until Deepgram closes."""
        self._finalize_answered = anyio.Event()
        await self._finalize(connection)  # answered once every channel has answered it, and all before it
        with anyio.move_on_after(self._settings.deepgram_finalize_timeout_s):
            await self._finalize_answered.wait()
        await self._flush_held()
        await connection.send_close_stream()
        with anyio.move_on_after(CLOSE_WAIT_S):
            await closed.wait()
        await self._flush_held()  # anything the close itself finalized
        self._stream_ended = True

    # --- results ----------------------------------------------------------------------------------------------

    async def _read(self, connection: Any) -> None:
        async for message in _messages(connection):
            self._last_message_at = anyio.current_time()
            self._sent_at_last_message = self._sent
            self._overdue_from = None
            if isinstance(message, messages.Results):
                await self._on_results(message)
            elif isinstance(message, messages.UtteranceEnd):
                await self._on_utterance_end(message)
            elif isinstance(message, messages.ProviderError):
                self._log.warning(
                    "deepgram.error",
                    variant=getattr(message, "variant", None),
                    description=getattr(message, "description", None),
                )

    async def _on_results(self, result: messages.Results) -> None:
        channel = result.channel_index[0] if result.channel_index else 0
        if not 0 <= channel < self._fmt.channels:
            return
        origin_s = self._origin / self._bytes_per_s
        alternative = result.channel.alternatives[0] if result.channel.alternatives else None
        delivered = self._delivered_s[channel] + DUPLICATE_TOLERANCE_S
        # A replayed connection may hear again words the client already has as finals: those end by `delivered`.
        words = [w for w in (alternative.words if alternative else []) if origin_s + w.end > delivered]
        if not result.is_final:
            if words:
                end_s = origin_s + words[-1].end
                if self._interim_end_s is None or end_s > self._interim_end_s:  # new words: still speaking
                    self._interim_end_s, self._unfinalized_since = end_s, anyio.current_time()
                self._words_pending[channel] = True
                interim = self._piece(words, channel, origin_s, is_final=False, utterance_end=False)
                await self._emit(self._joiners[channel].on_interim(interim) if self._joiners else interim)
            return

        self._unfinalized_since = self._finalize_sent_at = self._interim_end_s = None
        self._words_pending[channel] = False
        if result.from_finalize:
            self._finalize_answers[channel] += 1
            if min(self._finalize_answers) >= self._finalizes_sent:
                self._finalize_answered.set()
        speech_final = bool(result.speech_final)
        pieces = _split_by_speaker(words)
        if self._joiners:
            await self._join(channel, origin_s, pieces, result)
            return
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            await self._emit(self._piece(piece, channel, origin_s, is_final=True, utterance_end=last and speech_final))
        if pieces:
            self._utterance_open[channel] = not speech_final
            if speech_final:
                self._latencies_s.append(self._sent / self._bytes_per_s - (origin_s + pieces[-1][-1].end))
        elif speech_final and self._utterance_open[channel]:
            await self._emit(self._marker(channel, origin_s + result.start))
        self._commit(channel, origin_s, pieces, result)

    async def _join(
        self, channel: int, origin_s: float, pieces: list[list[messages.Word]], result: messages.Results
    ) -> None:
        """Finals through the joiner: it decides when the utterance is over (TURN_DETECTION=text).

        The answer to a pause's Finalize covers the audio up to that pause, so the pause its words are followed
        by is the one the Finalize was asked in, however far the VAD has gone since: the receive loop may have
        taken in the whole pause and the next words before the answer came (a fast client, a replay), and
        judged by the silence now, a finished sentence would wait for and merge with the next one."""
        pauses, joiner = self._pauses[channel], self._joiners[channel]
        silence_ms = max(pauses.silence_ms, pauses.marked_pause_ms) if result.from_finalize else pauses.silence_ms
        for piece in pieces:
            event = self._piece(piece, channel, origin_s, is_final=True, utterance_end=False)
            for out in joiner.on_final(event, silence_ms):
                await (self._emit_final(out) if out.is_final else self._emit(out))
        if result.from_finalize and not pieces:  # the provider owes these words nothing more: judge them now
            settled = not self._words_pending[channel] and not self._finalize_at
            for out in joiner.on_pause(silence_ms, settled=settled):
                await self._emit_final(out)
        self._commit(channel, origin_s, pieces, result)

    def _commit(
        self, channel: int, origin_s: float, pieces: list[list[messages.Word]], result: messages.Results
    ) -> None:
        """A final's words are the client's (a replay drops them) and its audio need not be replayed."""
        if pieces:
            self._delivered_s[channel] = origin_s + pieces[-1][-1].end
        self._committed_s[channel] = max(self._committed_s[channel], origin_s + result.start + result.duration)
        self._buffer.commit(int(min(self._committed_s) * self._fmt.sample_rate) * self._fmt.frame_bytes)

    async def _on_utterance_end(self, message: messages.UtteranceEnd) -> None:
        """UtteranceEnd after a final that did not close the utterance: an empty final carries the flag."""
        if self._joiners:
            return  # the joiner closes every utterance itself
        channels = getattr(message, "channel", None) or [0]
        channel = channels[0]
        if 0 <= channel < self._fmt.channels and self._utterance_open[channel]:
            end = self._origin / self._bytes_per_s + float(getattr(message, "last_word_end", 0.0) or 0.0)
            await self._emit(self._marker(channel, max(end, 0.0)))

    def _marker(self, channel: int, at_s: float) -> TranscriptEvent:
        self._utterance_open[channel] = False
        return TranscriptEvent(
            text="", is_final=True, channel=channel, start=round(at_s, 3), end=round(at_s, 3), utterance_end=True
        )

    @staticmethod
    def _piece(
        words: list[messages.Word], channel: int, origin_s: float, *, is_final: bool, utterance_end: bool
    ) -> TranscriptEvent:
        text = " ".join((w.punctuated_word or w.word) for w in words)
        speakers = [w.speaker for w in words if w.speaker is not None]
        return TranscriptEvent(
            text=text,
            is_final=is_final,
            channel=channel,
            start=round(origin_s + words[0].start, 3),
            end=round(origin_s + words[-1].end, 3),
            confidence=round(sum(w.confidence for w in words) / len(words), 3),
            speaker_id=speakers[-1] if speakers else None,
            utterance_end=utterance_end,
        )

    # --- plumbing ---------------------------------------------------------------------------------------------

    async def _emit(self, event: TranscriberEvent) -> None:
        await self._send_events.send(event)

    async def _fail(self, code: ErrorCode, message: str) -> None:
        await self._flush_held()  # words Deepgram already finalized are the client's, whatever comes next
        await self._emit(TranscriberFailure(code, message, fatal=True))

    def _log_summary(self) -> None:
        latencies = sorted(self._latencies_s)
        self._log.info(
            "deepgram.finished",
            connections=self._connections,
            audio_s=round(self._buffer.end / self._bytes_per_s, 2),
            utterances=len(latencies),
            turn_finalizes=self._turn_finalizes,
            speech_end_to_final_p50_s=round(statistics.median(latencies), 3) if latencies else None,
            speech_end_to_final_max_s=round(latencies[-1], 3) if latencies else None,
        )


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
    """The SDK connection's websockets (legacy) protocol, which `_write_now` writes to; None if this SDK
    version holds something else (then every frame goes through the pump)."""
    socket = getattr(connection, "_websocket", None)
    needed = ("write_frame_sync", "state", "transport")
    return socket if all(hasattr(socket, name) for name in needed) else None


def _split_by_speaker(words: list[messages.Word]) -> list[list[messages.Word]]:
    """A final spoken by several people becomes one piece per speaker turn, each with its own speaker id."""
    pieces: list[list[messages.Word]] = []
    for word in words:
        if pieces and pieces[-1][-1].speaker == word.speaker:
            pieces[-1].append(word)
        else:
            pieces.append([word])
    return pieces


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))


def _describe(exc: BaseException) -> str:
    """A reason for logs and the client that never carries a header or a key."""
    code = getattr(getattr(exc, "rcvd", None), "code", None)
    return f"{type(exc).__name__}" + (f" (close {code})" if code else "")
