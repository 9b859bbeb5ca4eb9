"""Decoding only the tail of an utterance: which earlier decode-ahead is its head, and how the words join."""

from __future__ import annotations

from presales_ws.transcribers.tails import Head, head_of, joined
from presales_ws.transcribers.turns import TurnCue

S = 16000  # samples a second


def test_the_head_is_the_longest_earlier_read_of_the_same_utterance() -> None:
    read = {
        (1.0, 2 * S): (TurnCue.UNSURE, "Ever tried", 0.9),
        (1.0, 3 * S): (TurnCue.INCOMPLETE, "Ever tried, ever failed,", 0.9),
        (1.0, 5 * S): (TurnCue.UNSURE, "longer than the final", 0.9),
        (4.0, 3 * S): (TurnCue.UNSURE, "another utterance", 0.9),
        (1.0, S // 2): (TurnCue.UNSURE, "too short to be worth it", 0.9),
    }
    head = head_of(read, 1.0, 4 * S)
    assert head == Head(3 * S, "Ever tried, ever failed,", 0.9, TurnCue.INCOMPLETE)
    assert head_of(read, 2.0, 4 * S) is None  # no read of this utterance
    assert head_of({(1.0, 2 * S): (TurnCue.UNSURE, "", None)}, 1.0, 4 * S) is None  # nothing heard: nothing saved


def test_words_that_went_on_join_as_one_sentence() -> None:
    head = Head(S, "Could you tell me how?", 0.8, TurnCue.INCOMPLETE)
    assert joined(head, "Your pricing works for large teams?") == (
        "Could you tell me how your pricing works for large teams?"
    )
    assert joined(Head(S, "Ever tried, ever failed,", 0.9, TurnCue.INCOMPLETE), "No matter.") == (
        "Ever tried, ever failed, no matter."
    )
    assert joined(Head(S, "So", 0.9, TurnCue.UNSURE), "I think we can.") == "So I think we can."


def test_a_complete_sentence_keeps_its_full_stop_and_an_empty_tail_adds_nothing() -> None:
    head = Head(S, "Try again.", 0.9, TurnCue.COMPLETE)
    assert joined(head, "Fail again.") == "Try again. Fail again."
    assert joined(head, "") == "Try again."
