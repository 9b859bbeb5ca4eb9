"""What the segmenter asks the engine to decode, and the turn policy counted in VAD windows.

A `Decode` is audio with its place on the channel's clock; an `Ahead` is a decode-ahead whose words will say
whether its pause ended the turn. When audio comes faster than the decoder, a final can close before those
words are read: `split_late_final` cuts it afterwards where they ended the turn, so the utterances are the
ones the words would have made in time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from presales_ws.transcribers.turns import TurnCue, TurnPolicy
from presales_ws.transcribers.vad import SAMPLE_RATE_HZ, WINDOW_SAMPLES, Samples

PRE_ROLL_MS = 224  # kept before speech starts so first words are not clipped (7 windows)
MIN_SPEECH_MS = 96  # shorter bursts (clicks, breaths) are not utterances: Whisper would invent words


@dataclass(slots=True)
class Ahead:
    """A decode-ahead awaiting its words: where it cuts the utterance, and how long the pause there lasted."""

    key: tuple[float, int]
    length: int  # utterance windows it holds (speech + the short silence)
    pause: int  # silent windows after the speech at that point (grows until the speaker goes on)
    speech_end: int  # window index just past its last speech window


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
    # A final's pauses whose words had not been read when it closed (audio came faster than the decoder):
    # `split_late_final` cuts it at those whose words ended the turn.
    cuts: tuple[Ahead, ...] = ()

    @property
    def key(self) -> tuple[float, int]:
        """Two decodes with the same key hold the same audio."""
        return (self.start, len(self.audio))


def ms_to_windows(ms: float) -> int:
    return max(1, round(ms * SAMPLE_RATE_HZ / 1000 / WINDOW_SAMPLES))


class PauseWindows:
    """The turn policy's silences in VAD windows: what a pause must last to end an utterance."""

    def __init__(self, policy: TurnPolicy) -> None:
        self.policy = policy
        self.trail = ms_to_windows(policy.decode_ahead_ms)  # silence kept after speech in a final
        self.complete = ms_to_windows(policy.complete_ms)  # pause that ends a complete sentence
        # The pause that ends an utterance until its words are read (a cue arrives a decode after the pause).
        self.default_endpoint = ms_to_windows(policy.silence_ms(TurnCue.UNSURE))
        self.longest = ms_to_windows(max(policy.silence_ms(c) for c in TurnCue))
        self.min_speech = ms_to_windows(MIN_SPEECH_MS)
        self.pre_roll = ms_to_windows(PRE_ROLL_MS)

    def need(self, cue: TurnCue) -> int:
        """Windows of silence after the speech that `cue` needs to end the utterance."""
        if cue is TurnCue.COMPLETE and not self.policy.fixed:
            return max(self.trail, self.complete)
        return max(self.trail + 1, ms_to_windows(self.policy.silence_ms(cue)))


def split_late_final(final: Decode, cues: Mapping[tuple[float, int], TurnCue], windows: PauseWindows) -> list[Decode]:
    """A final that closed before the words of its pauses were read, cut where they ended the turn: the same
    utterances the cues would have made had they come in time."""
    pieces: list[Decode] = []
    total = -(-len(final.audio) // WINDOW_SAMPLES)
    begin = 0  # window offset in the final of the piece being built
    for ahead in final.cuts:
        cue = cues.get(ahead.key)
        resumed = ahead.length - windows.trail + ahead.pause
        after = total - resumed  # windows said after the pause: too few to be speech, no cut
        if cue is None or ahead.length <= begin or after < windows.min_speech:
            continue
        if ahead.pause < windows.need(cue):
            continue
        pieces.append(_piece(final, begin, ahead.length, ahead.speech_end, utterance_end=True))
        begin = max(ahead.length, resumed - windows.pre_roll)
    if not pieces:
        return [replace(final, cuts=())]
    speech_end = round(final.end * SAMPLE_RATE_HZ / WINDOW_SAMPLES)
    return [*pieces, _piece(final, begin, total, speech_end, utterance_end=final.utterance_end)]


def _piece(final: Decode, begin: int, stop: int, speech_end: int, *, utterance_end: bool) -> Decode:
    audio = final.audio[begin * WINDOW_SAMPLES : stop * WINDOW_SAMPLES]
    start = final.start + begin * WINDOW_SAMPLES / SAMPLE_RATE_HZ
    end = min(start + len(audio) / SAMPLE_RATE_HZ, speech_end * WINDOW_SAMPLES / SAMPLE_RATE_HZ)
    return Decode(audio=audio, is_final=True, start=round(start, 3), end=round(end, 3), utterance_end=utterance_end)
