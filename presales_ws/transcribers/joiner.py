"""One final per utterance from a provider that finalizes at every pause.

On Deepgram the service asks for a final (Finalize) as soon as a pause begins, which makes a finished
sentence final in ~250 ms, but also finalizes the first half of "Could you tell me how ... the pricing
works?". The joiner holds each channel's finals until the turn is over by the words' cue (turns.py): a
complete sentence goes out at once; a fragment waits for its continuation, and the two go out as one final.
While it holds words, interims show them first, so the client's line never loses what was said.
"""

from __future__ import annotations

import msgspec

from presales_ws.transcribers.base import TranscriptEvent
from presales_ws.transcribers.turns import TurnCue, TurnPolicy, turn_cue


class UtteranceJoiner:
    """The held finals of one channel; every method returns the events to send now, in order."""

    def __init__(self, policy: TurnPolicy) -> None:
        self._policy = policy
        self._held: list[TranscriptEvent] = []
        self._cue = TurnCue.UNSURE

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def on_final(self, piece: TranscriptEvent, silence_ms: float) -> list[TranscriptEvent]:
        """A final from the provider; `silence_ms` is the pause so far on this channel."""
        out: list[TranscriptEvent] = []
        if self._held and piece.speaker_id != self._held[-1].speaker_id:
            out += self.flush()  # another speaker: the held words were a turn of their own
        if not piece.text:
            return out
        self._held.append(piece)
        self._cue = turn_cue(self._text())
        out += self.on_pause(silence_ms)
        if self._held:
            out.append(self._interim(eager=self._cue is not TurnCue.INCOMPLETE))
        return out

    def on_interim(self, piece: TranscriptEvent) -> TranscriptEvent:
        """An interim after held words reads as their continuation."""
        if not self._held or piece.speaker_id != self._held[-1].speaker_id:
            return piece
        return msgspec.structs.replace(
            piece, text=f"{self._text()} {piece.text}", start=self._held[0].start, eager=False
        )

    def on_pause(self, silence_ms: float, *, settled: bool = True) -> list[TranscriptEvent]:
        """The pause has lasted `silence_ms`: the held words go out if it is long enough for their cue.

        Not `settled` (the provider still owes a final for words it has shown): they wait for it, since it
        may continue them, up to the longest wait."""
        wait_ms = self._policy.silence_ms(self._cue) if settled else self._policy.incomplete_ms
        if self._held and silence_ms >= wait_ms:
            return self.flush()
        return []

    def flush(self) -> list[TranscriptEvent]:
        """Whatever is held, as one final: the turn is over (or the stream is)."""
        if not self._held:
            return []
        first, last = self._held[0], self._held[-1]
        confidences = [p.confidence for p in self._held if p.confidence is not None]
        joined = TranscriptEvent(
            text=self._text(),
            is_final=True,
            channel=first.channel,
            start=first.start,
            end=last.end,
            confidence=round(sum(confidences) / len(confidences), 3) if confidences else None,
            speaker_id=last.speaker_id,
            utterance_end=True,
        )
        self._held = []
        self._cue = TurnCue.UNSURE
        return [joined]

    def _text(self) -> str:
        return " ".join(p.text for p in self._held)

    def _interim(self, *, eager: bool) -> TranscriptEvent:
        first, last = self._held[0], self._held[-1]
        return TranscriptEvent(
            text=self._text(),
            is_final=False,
            channel=first.channel,
            start=first.start,
            end=last.end,
            confidence=last.confidence,
            speaker_id=last.speaker_id,
            eager=eager,
        )
