"""Cutting one channel's audio into utterances with a VAD, and deciding when to decode them.

Pure, synchronous logic: it says *what* to decode and when; the engine decides *where* (worker threads).
When an utterance ends is the turn policy's call (turns.py): at the decode-ahead point the engine reads the
words and gives the segmenter a `TurnCue`, which ends the utterance at once or sets how long its pause may last.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from presales_ws.transcribers.decodes import Ahead, Decode, PauseWindows, ms_to_windows, split_late_final
from presales_ws.transcribers.turns import TurnCue, TurnPolicy
from presales_ws.transcribers.vad import NEGATIVE_MARGIN, SAMPLE_RATE_HZ, WINDOW_SAMPLES, Samples

__all__ = ["Decode", "UtteranceSegmenter", "VoiceProbability"]

VoiceProbability = Callable[[Samples], float]


class UtteranceSegmenter:
    """Feeds 16 kHz float audio through a VAD; emits interim decodes while speech goes on and a final at its end.

    The words decide each pause after the fact: a cue arrives a decode after its decode-ahead, and by then the
    speaker may have gone on (a loaded decoder, or audio sent faster than real time). A pause whose words ended
    the turn, and that lasted long enough for them, still ends the utterance there; what followed starts the
    next one. So the outcome depends on the audio, not on how fast the decoder was.
    """

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
        self._waits = PauseWindows(self._policy)
        self._endpoint_windows = self._waits.default_endpoint
        self._interim_windows = ms_to_windows(interim_interval_ms)
        self._max_windows = ms_to_windows(max_utterance_s * 1000)
        self._aheads: list[Ahead] = []  # this utterance's decode-aheads whose cue has not come
        # Until the current pause's cue arrives, the pause may not end the utterance on the default wait alone:
        # the words may say "wait longer". The longest wait still holds, whatever the decoder does.
        self._awaiting_cue = False
        self._pre_roll: deque[Samples] = deque(maxlen=self._waits.pre_roll)
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
        ahead = self._aheads[-1] if self._aheads else None
        if ahead is not None and self._silent_run > 0 and ahead.pause == self._silent_run:
            # The audio ends in a pause whose words are read (or being read): the final is that decode-ahead's
            # audio, so its words serve; the rest of the silence would only cost a second decode.
            keep = ahead.length
        else:
            if len(self._pending):
                self._utterance.append(self._pending)
                self._pending = np.zeros(0, dtype=np.float32)
            keep = len(self._utterance)
        decode = self._close_utterance(utterance_end=True, keep_windows=keep)
        return [decode] if decode else []

    def cue(self, key: tuple[float, int], cue: TurnCue) -> list[Decode]:
        """The words of the decode-ahead `key` read `cue`. If its pause lasted long enough for them (a complete
        sentence: the short silence it was decoded at), the utterance ends there: its final, and, if the speaker
        has since gone on, a decode-ahead for the new utterance's pause in progress. If the pause is still on,
        `cue` sets how long it may last. A cue for a pause the speaker cut short, or for an utterance already
        closed, changes nothing."""
        ahead = next((a for a in self._aheads if a.key == key), None)
        if ahead is None or not self._in_speech:
            return []
        live = ahead is self._aheads[-1] and self._silent_run > 0 and ahead.pause == self._silent_run
        need = self._waits.need(cue)
        if ahead.pause >= need:
            return self._end_at(ahead, live=live)
        if live:
            self._awaiting_cue = False
            self._endpoint_windows = need
        else:
            self._aheads.remove(ahead)  # the speaker went on before this pause could end anything
        return []

    def settled(self, key: tuple[float, int]) -> bool:
        """The pause read by the decode-ahead `key` goes on and is already as long as a complete sentence's: its
        words, if not final yet, are worth acting on (an eager interim). A pause read earlier than that is as
        often a gap between words ("Does your platform support ... single sign-on?")."""
        ahead = next((a for a in self._aheads if a.key == key), None)
        return ahead is not None and ahead.pause >= self._waits.need(TurnCue.COMPLETE)

    def split(self, final: Decode, cues: Mapping[tuple[float, int], TurnCue]) -> list[Decode]:
        """A final that closed before the words of its pauses were read, cut where they ended the turn."""
        return split_late_final(final, cues, self._waits)

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
            if self._silent_run:  # the speaker went on: the pause's own wait is over (its cue may still cut)
                self._awaiting_cue = False
                self._endpoint_windows = self._waits.default_endpoint
            self._silent_run = 0
            self._last_speech = index
            self._speech_windows += 1
            self._since_interim += 1
        else:
            self._silent_run += 1
            if self._aheads and self._aheads[-1].pause == self._silent_run - 1:
                self._aheads[-1].pause = self._silent_run  # the latest decode-ahead's pause goes on

        if (self._silent_run >= self._endpoint_windows and not self._awaiting_cue) or (
            self._silent_run >= self._waits.longest
        ):
            keep = len(self._utterance) - self._silent_run + self._waits.trail
            return self._close_utterance(utterance_end=True, keep_windows=keep)
        if len(self._utterance) >= self._max_windows:
            return self._close_utterance(utterance_end=False, keep_windows=len(self._utterance))
        if self._silent_run == self._waits.trail < self._endpoint_windows and (
            self._speech_windows >= self._waits.min_speech
        ):
            # The final's audio is all here now (speech + the short silence): decode it, and let its words
            # say how long this pause may last (`cue`).
            return self._decode_ahead()
        if self._since_interim >= self._interim_windows and self._silent_run == 0:
            self._since_interim = 0
            return self._decode(is_final=False, keep_windows=len(self._utterance), utterance_end=False)
        return None

    def _decode_ahead(self) -> Decode:
        """The utterance up to the short silence into the current pause, as a speculative interim."""
        length = len(self._utterance) - self._silent_run + self._waits.trail
        decode = self._decode(is_final=False, keep_windows=length, utterance_end=False, speculative=True)
        speech_end = self._utterance_start + len(self._utterance) - self._silent_run
        self._aheads.append(Ahead(decode.key, length, self._silent_run, speech_end))
        self._awaiting_cue = not self._policy.fixed
        return decode

    def _end_at(self, ahead: Ahead, *, live: bool) -> list[Decode]:
        """The turn ended at `ahead`'s pause: its final; whatever was said after it is the next utterance."""
        if live:
            decode = self._close_utterance(utterance_end=True, keep_windows=ahead.length)
            return [decode] if decode else []
        final = self._decode(
            is_final=True, keep_windows=ahead.length, utterance_end=True, speech_end_window=ahead.speech_end
        )
        # Speech resumed `ahead.pause` windows after the speech end: keep a pre-roll before it, drop the rest.
        resumed = ahead.length - self._waits.trail + ahead.pause
        first = max(ahead.length, resumed - self._waits.pre_roll)
        self._utterance = self._utterance[first:]
        self._utterance_start += first
        self._speech_windows = max(self._waits.min_speech, len(self._utterance) - self._silent_run)
        self._since_interim = 0
        # Later pauses keep their decode-aheads, now counted from the new start: their words still end with
        # what was said at that pause, so their cue still holds (the final is decoded again, without the
        # sentence that went before).
        later = self._aheads[self._aheads.index(ahead) + 1 :]
        for other in later:
            other.length -= first
        self._aheads = [a for a in later if a.length > 0]
        decodes = [final]
        live = bool(self._aheads) and self._aheads[-1].pause == self._silent_run > 0
        if not live:
            self._awaiting_cue = False
            self._endpoint_windows = self._waits.default_endpoint
            if self._silent_run >= self._waits.trail:
                decodes.append(self._decode_ahead())  # the new utterance is already in a pause: read it too
        return decodes

    def _close_utterance(self, *, utterance_end: bool, keep_windows: int) -> Decode | None:
        cuts = tuple(replace(a) for a in self._aheads if a.length < keep_windows)  # frozen copies
        decode = (
            self._decode(is_final=True, keep_windows=keep_windows, utterance_end=utterance_end, cuts=cuts)
            if self._speech_windows >= self._waits.min_speech
            else None
        )
        leftover = self._utterance[keep_windows:]
        self._utterance = []
        self._speech_windows = 0
        self._silent_run = 0
        self._since_interim = 0
        self._aheads = []
        self._awaiting_cue = False
        self._endpoint_windows = self._waits.default_endpoint
        if utterance_end:
            self._in_speech = False
            self._pre_roll.extend(leftover)
        else:
            # A forced cut in continuous speech: the next utterance starts right here.
            self._utterance_start = self._windows_seen
        return decode

    def _decode(
        self,
        *,
        is_final: bool,
        keep_windows: int,
        utterance_end: bool,
        speculative: bool = False,
        speech_end_window: int | None = None,
        cuts: tuple[Ahead, ...] = (),
    ) -> Decode:
        windows = self._utterance[:keep_windows]
        audio = np.concatenate(windows) if windows else np.zeros(0, dtype=np.float32)
        start = self._utterance_start * WINDOW_SAMPLES / SAMPLE_RATE_HZ
        speech_end = self._last_speech + 1 if speech_end_window is None else speech_end_window
        end = min(start + len(audio) / SAMPLE_RATE_HZ, speech_end * WINDOW_SAMPLES / SAMPLE_RATE_HZ)
        return Decode(
            audio=audio,
            is_final=is_final,
            start=round(start, 3),
            end=round(end, 3),
            utterance_end=utterance_end,
            speculative=speculative,
            cuts=cuts,
        )
