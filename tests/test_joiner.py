"""The joiner on its own: finals held until their words end the turn, then one final per utterance."""

from __future__ import annotations

from presales_ws.transcribers.base import TranscriptEvent
from presales_ws.transcribers.joiner import UtteranceJoiner
from presales_ws.transcribers.turns import TurnPolicy

POLICY = TurnPolicy(complete_ms=160, unsure_ms=500, incomplete_ms=1500)


def piece(text: str, start: float, end: float, speaker: int | None = 0, final: bool = True) -> TranscriptEvent:
    return TranscriptEvent(text=text, is_final=final, channel=0, start=start, end=end, speaker_id=speaker)


def test_a_complete_sentence_goes_out_at_once_in_a_pause() -> None:
    out = UtteranceJoiner(POLICY).on_final(piece("What is the pricing?", 0.5, 2.0), silence_ms=192)
    assert [(e.text, e.is_final, e.utterance_end) for e in out] == [("What is the pricing?", True, True)]


def test_a_fragment_is_held_shown_as_an_interim_and_joined_with_what_follows() -> None:
    joiner = UtteranceJoiner(POLICY)
    held = joiner.on_final(piece("Could you tell me how", 0.5, 1.8), silence_ms=192)
    assert [(e.text, e.is_final, e.eager) for e in held] == [("Could you tell me how", False, False)]
    assert joiner.on_pause(700) == []  # 700 ms: a fragment waits up to 1.5 s
    interim = joiner.on_interim(piece("the pricing", 2.5, 3.1, final=False))
    assert interim.text == "Could you tell me how the pricing" and interim.start == 0.5
    [final] = joiner.on_final(piece("the pricing works?", 2.5, 3.4), silence_ms=192)
    assert final.text == "Could you tell me how the pricing works?" and (final.start, final.end) == (0.5, 3.4)


def test_words_with_no_sign_either_way_are_eager_and_wait_the_unsure_pause() -> None:
    joiner = UtteranceJoiner(POLICY)
    [interim] = joiner.on_final(piece("We use Salesforce", 0.5, 1.8), silence_ms=192)
    assert interim.eager and not interim.is_final  # the moment a suggestion lookup may start
    assert joiner.on_pause(400) == []
    [final] = joiner.on_pause(500)
    assert final.text == "We use Salesforce"
    assert joiner.on_pause(900, settled=True) == []  # nothing held any more


def test_a_provider_that_still_owes_a_final_holds_the_words_up_to_the_longest_wait() -> None:
    joiner = UtteranceJoiner(POLICY)
    joiner.on_final(piece("We use Salesforce.", 0.5, 1.8), silence_ms=0)  # finalized mid-speech upstream
    assert joiner.on_pause(600, settled=False) == []
    assert [e.text for e in joiner.on_pause(1500, settled=False)] == ["We use Salesforce."]


def test_another_speaker_ends_the_held_turn() -> None:
    joiner = UtteranceJoiner(POLICY)
    joiner.on_final(piece("So the plan would", 0.5, 1.5, speaker=0), silence_ms=192)
    assert joiner.on_interim(piece("Yes", 2.0, 2.2, speaker=1, final=False)).text == "Yes"  # not joined
    out = joiner.on_final(piece("Yes, it does.", 2.0, 2.6, speaker=1), silence_ms=192)
    assert [(e.text, e.speaker_id, e.is_final) for e in out] == [
        ("So the plan would", 0, True),
        ("Yes, it does.", 1, True),
    ]
