"""Flux's turns as transcript events: one channel's TurnInfo messages, rebased onto session time, no word twice.

Flux reports each turn as it grows, every message carrying the whole turn so far. The mapping:
StartOfTurn and Update -> an interim; EagerEndOfTurn -> an interim marked eager (Flux is fairly sure the turn is
over: a speculative suggestion lookup may start), and it stays eager while Flux waits in that state;
TurnResumed -> an interim not eager (the speaker went on: a newer reading); EndOfTurn -> the final, which ends
the utterance. An interim that repeats the last one (Flux sends an Update every 0.25 s of audio whether or not
the words changed) is not sent again.
"""

from __future__ import annotations

from typing import Any

import msgspec

from presales_ws.transcribers.base import TranscriptEvent

DUPLICATE_TOLERANCE_S = 0.005  # word times are rounded to ms upstream


class TurnReader:
    """One channel's turns. Times are session seconds: a connection's own clock plus its `origin_s`."""

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.delivered_s = 0.0  # end of the last word the client has in a final
        self.committed_s = 0.0  # audio every word of which is in a final: a new connection starts here
        self.open: TranscriptEvent | None = None  # the open turn as the client last saw it
        self._awaiting_end = False  # between EagerEndOfTurn and EndOfTurn / TurnResumed

    def reset(self) -> None:
        """A new connection: the old one's open turn will be heard again from the replayed audio."""
        self.open = None
        self._awaiting_end = False

    def read(self, message: Any, origin_s: float) -> TranscriptEvent | None:
        """A TurnInfo message; the event to send for it, if any."""
        event = message.event
        words = self._new_words(message, origin_s)
        if event == "EndOfTurn":
            self.open, self._awaiting_end = None, False
            self.committed_s = max(self.committed_s, origin_s + float(message.audio_window_end))
            return self._final(words) if words else None
        if event == "EagerEndOfTurn":
            self._awaiting_end = True
        elif event in ("TurnResumed", "StartOfTurn"):
            self._awaiting_end = False
        if not words:
            return None
        interim = self._piece(words, is_final=False, eager=self._awaiting_end)
        if self.open is not None and (self.open.text, self.open.eager) == (interim.text, interim.eager):
            return None
        self.open = interim
        return interim

    def close_turn(self) -> TranscriptEvent | None:
        """The open turn's words as the final, when the stream ends (or the turn's audio stopped) before Flux
        ended the turn: Flux documents its last Update as the final transcript then."""
        if self.open is None:
            return None
        final = msgspec.structs.replace(self.open, is_final=True, eager=False, utterance_end=True)
        self.reset()
        self.delivered_s = final.end
        self.committed_s = max(self.committed_s, final.end)
        return final

    def _final(self, words: list[tuple[str, float, float, float]]) -> TranscriptEvent:
        final = self._piece(words, is_final=True, eager=False)
        self.delivered_s = final.end
        self.committed_s = max(self.committed_s, final.end)
        return final

    def _new_words(self, message: Any, origin_s: float) -> list[tuple[str, float, float, float]]:
        """(text, start, end, confidence) of the words the client has no final for yet, in session seconds."""
        window_start, window_end = float(message.audio_window_start), float(message.audio_window_end)
        words = []
        for word in message.words or []:
            start = origin_s + (word.start if word.start is not None else window_start)
            end = origin_s + (word.end if word.end is not None else window_end)
            if end > self.delivered_s + DUPLICATE_TOLERANCE_S:
                words.append((word.word, start, end, float(word.confidence)))
        return words

    def _piece(self, words: list[tuple[str, float, float, float]], *, is_final: bool, eager: bool) -> TranscriptEvent:
        return TranscriptEvent(
            text=" ".join(text for text, _, _, _ in words),
            is_final=is_final,
            channel=self.channel,
            start=round(words[0][1], 3),
            end=round(words[-1][2], 3),
            confidence=round(sum(c for _, _, _, c in words) / len(words), 3),
            speaker_id=None,  # Flux does not diarize: a channel is one speaker, and mono calls have no labels
            utterance_end=is_final,
            eager=eager,
        )
