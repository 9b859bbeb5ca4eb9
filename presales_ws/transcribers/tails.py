"""Decoding only what an earlier decode-ahead has not read: the cheap final when every decode thread is busy.

Each decode-ahead of a long utterance decodes it from its start, so a sentence with four pauses is decoded four
times over, and when many sessions reach a pause at once (the worst case: every session ending a sentence
together) those decodes queue behind each other. The words up to an earlier pause are already known, and the
audio there is silence: decoding only what follows it and joining the words costs a fraction (bench/embedded.py,
capacity). The whole utterance, decoded at once, reads a little better (more context), so the engine does this
only when no decode thread is free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from presales_ws.transcribers.turns import TurnCue

MIN_HEAD_SAMPLES = 16000  # a head under 1 s saves little decode and costs the tail its context
_SENTENCE_END = ".?!"
_FIRST_PERSON = re.compile(r"I\b|I'")


class Head(msgspec.Struct, frozen=True):
    """The words of an utterance's first `samples`, read by a decode-ahead, and what they said of the turn."""

    samples: int
    text: str
    confidence: float | None
    cue: TurnCue


def head_of(
    read: Mapping[tuple[float, int], tuple[TurnCue, str, float | None]], start: float, samples: int
) -> Head | None:
    """The longest decode-ahead of the utterance starting at `start` that holds part of its `samples`."""
    best: Head | None = None
    for (ahead_start, ahead_samples), (cue, text, confidence) in read.items():
        if ahead_start != start or not text or not MIN_HEAD_SAMPLES <= ahead_samples < samples:
            continue
        if best is None or ahead_samples > best.samples:
            best = Head(ahead_samples, text, confidence, cue)
    return best


def joined(head: Head, tail: str) -> str:
    """The head's words and the tail's as one utterance. Words that went on lose the full stop the model put
    where the audio stopped ("Could you tell me how?" + "Your pricing works" -> one question); a sentence that
    was complete keeps its own."""
    if not tail:
        return head.text
    text = head.text
    if head.cue is not TurnCue.COMPLETE:
        text = text.rstrip(_SENTENCE_END)
        if tail[:1].isupper() and not _FIRST_PERSON.match(tail):
            tail = tail[0].lower() + tail[1:]
    return f"{text} {tail}"
