"""End of turn: how long to wait, after a pause, before the words so far become a final.

A fixed silence (the old 500 ms) is both too slow and too quick: a finished question waits half a second for
nothing, and a speaker who pauses mid-sentence ("Could you tell me how ... the pricing works?") is cut in two.
The words decoded at the start of the pause say which it is. A sentence that ends as sentences do is final
after a short silence; one that ends on a word a sentence cannot end on (a conjunction, a preposition, an
article, "how") waits much longer for the speaker to go on; anything else waits the classic endpointing.
Engines share this: the embedded engine reads its decode-ahead, the Deepgram engine its latest interim.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

import msgspec

from presales_ws.config import Settings


class TurnCue(enum.Enum):
    """What the words at a pause say about the turn."""

    COMPLETE = "complete"  # ends like a sentence: finalize after the short silence
    UNSURE = "unsure"  # no sign either way: the classic endpointing
    INCOMPLETE = "incomplete"  # ends where a sentence cannot: wait for the speaker to go on


# Words an English sentence does not end on. Kept small on purpose: a word missing here costs a wait of the
# classic endpointing (UNSURE), a word wrongly here costs a long wait; a false COMPLETE costs a split.
# Particles that end phrasal verbs ("log in", "turn it on", "I think so", "no") are left out on purpose.
_CONJUNCTIONS = "and or but because if which who whom whose than as although though while whereas unless"
_PREPOSITIONS = (
    "to of for with at from by into onto between during without within across against among toward towards per via"
)
_DETERMINERS = "the a an your our my their every another"
_AUXILIARIES = "am is are was were be been being do does did have has had can could will would should may might must"
_OPENERS = "how what when where why whether"  # "Could you tell me how" waits; "How?" alone does not
_FILLERS = "um uh er erm i we they he she let's i'm we're you're they're it's there's"
_DEGREE = "very quite rather"  # "a rather", "is very": a degree word wants the word it modifies
_COMPARATIVES = frozenset(["more", "less", "most", "least"])  # after a determiner: "a more", "the most"
_NEVER_LAST = frozenset(f"{_CONJUNCTIONS} {_PREPOSITIONS} {_DETERMINERS} {_FILLERS} {_DEGREE}".split())
_AUXILIARY = frozenset(_AUXILIARIES.split())
_OPENER = frozenset(_OPENERS.split())
_DETERMINER = frozenset(_DETERMINERS.split())
_SUBJECTS = frozenset(["i", "we", "you", "they", "he", "she", "it", "there", "that", "this"])

_SUBJECT_PRONOUNS = "i|we|you|they|he|she|it"
# A subject and an adverb that stands before a verb, and no verb yet: "And you always", "We usually". Adverbs
# that also end sentences after an object ("we saw it already", "we use it often") are left out.
_SUBJECT_THEN_ADVERB = re.compile(
    rf"\b(?:{_SUBJECT_PRONOUNS}) (?:always|never|usually|just|really|actually|also|even|only|still|generally"
    r"|typically|normally)[.?!]*$"
)
# A question word, then its auxiliary and subject with no verb after them: "How do you", "How long does it".
# Copulas are left out: "How much is it?" is whole.
_QUESTION_WITHOUT_VERB = re.compile(
    rf"\b(?:how|what|when|where|why|which|who)\b[^.?!]* (?:do|does|did|can|could|will|would|should|may|might|must)"
    rf" (?:{_SUBJECT_PRONOUNS})[.?!]*$"
)
_WORD = re.compile(r"[a-z']+")
_TRAILING_QUOTES = "\"')]} "


CUE_MIN_CONFIDENCE = 0.75  # a model unsure of the words is unsure of their full stop too


class Heard(NamedTuple):
    """A decoder's words and how sure it was of them: `confidence` is the mean token probability; `full_stop`
    the probability it gave the final full stop, question or exclamation mark itself (None when the words do not
    end with one, or the decoder does not say)."""

    text: str
    confidence: float | None
    full_stop: float | None = None


def turn_cue(
    text: str, confidence: float | None = None, *, full_stop: float | None = None, full_stop_threshold: float = 0.0
) -> TurnCue:
    """Read the end of the words so far (punctuated, cased transcript text as the engines give it). Words the
    model heard with a low `confidence` (mean token probability) are never COMPLETE: a fragment like "And you
    always" comes back as "And you always." at 0.65, where finished sentences score 0.8-0.99. Nor are words whose
    full stop the model itself gave below `full_stop_threshold` (its `full_stop` probability): on sentences cut at a
    pause, Moonshine often ends the fragment with a full stop it is unsure of; finished sentences' marks mostly
    score higher (docs/BENCHMARKS.md, "Paused sentences")."""
    stripped = text.rstrip(_TRAILING_QUOTES)
    if not stripped:
        return TurnCue.UNSURE
    words = _WORD.findall(stripped.lower())
    if not words:
        return TurnCue.UNSURE
    last = words[-1]
    if stripped.endswith(("...", "…", ",", "-", "—", ";", ":")):
        return TurnCue.INCOMPLETE
    if last in _NEVER_LAST:
        return TurnCue.INCOMPLETE
    if last in _COMPARATIVES and len(words) >= 2 and words[-2] in _DETERMINER:
        return TurnCue.INCOMPLETE
    if last in _OPENER and len(words) > 2:
        return TurnCue.INCOMPLETE
    if last in _AUXILIARY and not (len(words) >= 2 and words[-2] in _SUBJECTS):
        return TurnCue.INCOMPLETE  # "the plan would" goes on; "yes, we can." / "I think it is." end
    lower = stripped.lower()
    if _SUBJECT_THEN_ADVERB.search(lower) or _QUESTION_WITHOUT_VERB.search(lower):
        return TurnCue.INCOMPLETE
    sure = (confidence is None or confidence >= CUE_MIN_CONFIDENCE) and (
        full_stop is None or full_stop >= full_stop_threshold
    )
    if stripped.endswith((".", "?", "!")) and sure:
        return TurnCue.COMPLETE
    return TurnCue.UNSURE


class TurnPolicy(msgspec.Struct, frozen=True):
    """Silences (ms) that end an utterance, by what its words say. `fixed` ignores the words."""

    complete_ms: int = 160
    unsure_ms: int = 800
    incomplete_ms: int = 1500
    fixed: bool = False
    read_ahead_ms: int = 0  # see decode_ahead_ms; 0 = complete_ms
    full_stop_threshold: float = 0.0  # a full stop the model gave below this probability is not one (see turn_cue)

    @classmethod
    def from_settings(cls, settings: Settings) -> TurnPolicy:
        return cls(
            complete_ms=settings.turn_complete_ms,
            unsure_ms=settings.turn_unsure_ms,
            incomplete_ms=settings.turn_incomplete_ms,
            read_ahead_ms=settings.turn_decode_ahead_ms,
            full_stop_threshold=settings.turn_full_stop_threshold,
        )

    @classmethod
    def fixed_endpointing(cls, endpointing_ms: int, decode_ahead_ms: int) -> TurnPolicy:
        """The classic rule: every utterance ends after `endpointing_ms`; the decode-ahead still saves a decode."""
        return cls(complete_ms=decode_ahead_ms, unsure_ms=endpointing_ms, incomplete_ms=endpointing_ms, fixed=True)

    @property
    def decode_ahead_ms(self) -> int:
        """When the embedded engine reads the words (the final's audio is the speech and this much silence):
        before the short silence is over, so that a complete sentence's decode (~100-150 ms for 3 s of speech on
        this CPU) mostly runs while that silence is still going on, not after it."""
        return self.read_ahead_ms if 0 < self.read_ahead_ms <= self.complete_ms else self.complete_ms

    def cue(self, heard: Heard) -> TurnCue:
        """What `heard`'s words say of the turn; no words are no sign either way."""
        if not heard.text:
            return TurnCue.UNSURE
        return turn_cue(
            heard.text, heard.confidence, full_stop=heard.full_stop, full_stop_threshold=self.full_stop_threshold
        )

    def silence_ms(self, cue: TurnCue) -> int:
        if self.fixed:
            return self.unsure_ms
        if cue is TurnCue.COMPLETE:
            return self.complete_ms
        return self.incomplete_ms if cue is TurnCue.INCOMPLETE else self.unsure_ms
