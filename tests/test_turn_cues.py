"""What the words at a pause say of the turn (turns.py): the rules on text alone, and the model's own full stop."""

from __future__ import annotations

import pytest

from presales_ws.transcribers.turns import Heard, TurnCue, TurnPolicy, turn_cue
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("And you always.", TurnCue.INCOMPLETE),  # a subject and an adverb: the verb is still to come
        ("We usually.", TurnCue.INCOMPLETE),
        ("Thank you, really.", TurnCue.COMPLETE),  # the adverb stands alone after a comma
        ("We saw it already.", TurnCue.COMPLETE),  # adverbs that end sentences are not on the list
        ("How do you?", TurnCue.INCOMPLETE),  # a question stopped at its auxiliary and subject
        ("How long does it?", TurnCue.INCOMPLETE),
        ("How much is it?", TurnCue.COMPLETE),  # a copula needs no verb after it
        ("Do you?", TurnCue.COMPLETE),  # no question word: a question of its own
        ("Yes. Do you?", TurnCue.COMPLETE),
        ("What is the pricing for the enterprise tier?", TurnCue.COMPLETE),
        ("Could you tell me how", TurnCue.INCOMPLETE),
        ("We have been using", TurnCue.UNSURE),  # no punctuation, no sign either way: the classic wait
    ],
)
def test_text_cues(text: str, cue: TurnCue) -> None:
    assert turn_cue(text, 0.95) is cue


def test_a_full_stop_the_model_is_unsure_of_is_no_full_stop() -> None:
    assert turn_cue("He was not.", 0.95, full_stop=0.34, full_stop_threshold=0.5) is TurnCue.UNSURE
    assert turn_cue("He was not.", 0.95, full_stop=0.82, full_stop_threshold=0.5) is TurnCue.COMPLETE
    assert turn_cue("He was not.", 0.95, full_stop=0.34) is TurnCue.COMPLETE  # threshold 0: off
    assert turn_cue("He was not.", 0.95, full_stop=None, full_stop_threshold=0.5) is TurnCue.COMPLETE  # unknown


def test_the_policy_reads_its_threshold_from_the_settings() -> None:
    policy = TurnPolicy.from_settings(make_settings(turn_full_stop_threshold=0.6))
    assert policy.full_stop_threshold == 0.6
    assert policy.cue(Heard("Can we try it?", 0.98, 0.55)) is TurnCue.UNSURE
    assert policy.cue(Heard("Can we try it?", 0.98, 0.93)) is TurnCue.COMPLETE
    assert policy.cue(Heard("", None)) is TurnCue.UNSURE
    assert TurnPolicy.from_settings(make_settings()).full_stop_threshold == 0.5
