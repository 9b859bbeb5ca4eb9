"""Cutting one channel's audio into utterances with a VAD, and deciding when to decode them.

Pure, synchronous logic: it says *what* to decode and when; the engine decides *where* (worker threads).
When an utterance ends is the turn policy's call (turns.py): at the decode-ahead point the engine reads the
words and gives the segmenter a `TurnCue`, which ends the utterance at once or sets how long its pause may last.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from presales_ws.transcribers.turns import TurnCue, TurnPolicy

SAMPLE_RATE_HZ = 16000
WINDOW_SAMPLES = 512  # Silero VAD's 32 ms window at 16 kHz
PRE_ROLL_MS = 224  # kept before speech starts so first words are not clipped (7 windows)
MIN_SPEECH_MS = 96  # shorter bursts (clicks, breaths) are not utterances: Whisper would invent words
NEGATIVE_MARGIN = 0.15  # hysteresis: speech continues until the probability drops this far below the threshold

Samples = npt.NDArray[np.float32]
VoiceProbability = Callable[[Samples], float]


@dataclass(frozen=True, slots=True)
class Decode:
    """Audio to decode and where it sits on the channel's clock (seconds)."""

    audio: Samples
    is_final: bool
    start: float
    end: float
    utterance_end: bool
    # An interim of exactly the audio the final will hold if the silence lasts (speech + the policy's short
    # silence): decoded ahead, so the final needs no decode of its own, and its words decide the turn.
    speculative: bool = False

    @property
    def key(self) -> tuple[float, int]:
        """Two decodes with the same key hold the same audio."""
        return (self.start, len(self.audio))


def _ms_to_windows(ms: float) -> int:
    return max(1, round(ms * SAMPLE_RATE_HZ / 1000 / WINDOW_SAMPLES))


class UtteranceSegmenter:
    """Feeds 16 kHz float audio through a VAD; emits interim decodes while speech goes on and a final at its end."""

    def __init__(
        self,
        vad: VoiceProbability,
        *,
        threshold: float = 0.5,
        policy: TurnPolicy | None = None,
        interim_interval_ms: int = 1000,
        max_utterance_s: float = 20.0,
    ) -> None:
        self._vad = vad
        self._threshold = threshold
        self._policy = policy or TurnPolicy()
        # The pause that ends an utterance until its words are read (a cue arrives a decode after the pause).
        self._default_endpoint_windows = _ms_to_windows(self._policy.silence_ms(TurnCue.UNSURE))
        self._endpoint_windows = self._default_endpoint_windows
        self._interim_windows = _ms_to_windows(interim_interval_ms)
        self._max_windows = _ms_to_windows(max_utterance_s * 1000)
        self._trail_windows = _ms_to_windows(self._policy.decode_ahead_ms)  # silence kept after speech in a final
        self._ahead_key: tuple[float, int] | None = None  # the decode-ahead of the current pause
        # Until its cue arrives, a pause may not end the utterance on the default wait alone: the words may say
        # "wait longer", and a loaded decoder must not turn into split sentences. The longest wait still holds.
        self._awaiting_cue = False
        self._longest_windows = _ms_to_windows(max(self._policy.silence_ms(c) for c in TurnCue))
        self._min_speech_windows = _ms_to_windows(MIN_SPEECH_MS)
        self._pre_roll: deque[Samples] = deque(maxlen=_ms_to_windows(PRE_ROLL_MS))
        self._pending = np.zeros(0, dtype=np.float32)
        self._windows_seen = 0  # the channel clock, in windows
        self._utterance: list[Samples] = []
        self._utterance_start = 0  # window index
        self._speech_windows = 0
        self._silent_run = 0
        self._since_interim = 0
        self._in_speech = False
        self._last_speech = 0  # window index of the latest speech window

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def seconds_seen(self) -> float:
        return (self._windows_seen * WINDOW_SAMPLES + len(self._pending)) / SAMPLE_RATE_HZ

    def feed(self, samples: Samples) -> list[Decode]:
        """Consume audio; return what should be decoded now, oldest first."""
        buffer = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        whole = len(buffer) // WINDOW_SAMPLES * WINDOW_SAMPLES
        self._pending = buffer[whole:].copy()
        decodes: list[Decode] = []
        for offset in range(0, whole, WINDOW_SAMPLES):
            decode = self._window(np.ascontiguousarray(buffer[offset : offset + WINDOW_SAMPLES]))
            if decode is not None:
                decodes.append(decode)
        return decodes

    def flush(self) -> list[Decode]:
        """End of audio: the utterance in progress (with any partial window) becomes final."""
        if not self._in_speech:
            return []
        if len(self._pending):
            self._utterance.append(self._pending)
            self._pending = np.zeros(0, dtype=np.float32)
        decode = self._close_utterance(utterance_end=True, keep_windows=len(self._utterance))
        return [decode] if decode else []

    def _window(self, window: Samples) -> Decode | None:
        probability = self._vad(window)
        index = self._windows_seen
        self._windows_seen += 1
        if not self._in_speech:
            if probability < self._threshold:
                self._pre_roll.append(window)
                return None
            self._in_speech = True
            self._last_speech = index
            self._utterance = [*self._pre_roll, window]
            self._utterance_start = index - len(self._pre_roll)
            self._pre_roll.clear()
            self._speech_windows = 1
            self._silent_run = 0
            self._since_interim = 1
            return None

        self._utterance.append(window)
        if probability >= self._threshold - NEGATIVE_MARGIN:
            if self._silent_run:  # the speaker went on: the last pause's cue no longer applies
                self._ahead_key = None
                self._awaiting_cue = False
                self._endpoint_windows = self._default_endpoint_windows
            self._silent_run = 0
            self._last_speech = index
            self._speech_windows += 1
            self._since_interim += 1
        else:
            self._silent_run += 1

        if (self._silent_run >= self._endpoint_windows and not self._awaiting_cue) or (
            self._silent_run >= self._longest_windows
        ):
            keep = len(self._utterance) - self._silent_run + self._trail_windows
            return self._close_utterance(utterance_end=True, keep_windows=keep)
        if len(self._utterance) >= self._max_windows:
            return self._close_utterance(utterance_end=False, keep_windows=len(self._utterance))
        if self._silent_run == self._trail_windows < self._endpoint_windows and (
            self._speech_windows >= self._min_speech_windows
        ):
            # The final's audio is all here now (speech + the short silence): decode it, and let its words
            # say how long this pause may last (`cue`).
            decode = self._decode(
                is_final=False, keep_windows=len(self._utterance), utterance_end=False, speculative=True
            )
            self._ahead_key = decode.key
            self._awaiting_cue = not self._policy.fixed
            return decode
        if self._since_interim >= self._interim_windows and self._silent_run == 0:
            self._since_interim = 0
            return self._decode(is_final=False, keep_windows=len(self._utterance), utterance_end=False)
        return None

    def cue(self, key: tuple[float, int], cue: TurnCue) -> Decode | None:
        """The words of the decode-ahead `key` read `cue`: the final now, if the pause is still on and they end
        the turn; otherwise the pause this utterance may take. A cue for audio the speaker has since
        continued, or for an utterance already closed, changes nothing."""
        if self._ahead_key != key or not self._in_speech:
            return None
        self._awaiting_cue = False
        self._endpoint_windows = max(self._trail_windows + 1, _ms_to_windows(self._policy.silence_ms(cue)))
        if self._silent_run >= self._endpoint_windows or (cue is TurnCue.COMPLETE and not self._policy.fixed):
            keep = len(self._utterance) - self._silent_run + self._trail_windows
            return self._close_utterance(utterance_end=True, keep_windows=keep)
        return None

    def _close_utterance(self, *, utterance_end: bool, keep_windows: int) -> Decode | None:
        decode = (
            self._decode(is_final=True, keep_windows=keep_windows, utterance_end=utterance_end)
            if self._speech_windows >= self._min_speech_windows
            else None
        )
        leftover = self._utterance[keep_windows:]
        self._utterance = []
        self._speech_windows = 0
        self._silent_run = 0
        self._since_interim = 0
        self._ahead_key = None
        self._awaiting_cue = False
        self._endpoint_windows = self._default_endpoint_windows
        if utterance_end:
            self._in_speech = False
            self._pre_roll.extend(leftover)
        else:
            # A forced cut in continuous speech: the next utterance starts right here.
            self._utterance_start = self._windows_seen
        return decode

    def _decode(self, *, is_final: bool, keep_windows: int, utterance_end: bool, speculative: bool = False) -> Decode:
        windows = self._utterance[:keep_windows]
        audio = np.concatenate(windows) if windows else np.zeros(0, dtype=np.float32)
        start = self._utterance_start * WINDOW_SAMPLES / SAMPLE_RATE_HZ
        end = min(start + len(audio) / SAMPLE_RATE_HZ, (self._last_speech + 1) * WINDOW_SAMPLES / SAMPLE_RATE_HZ)
        return Decode(
            audio=audio,
            is_final=is_final,
            start=round(start, 3),
            end=round(end, 3),
            utterance_end=utterance_end,
            speculative=speculative,
        )
