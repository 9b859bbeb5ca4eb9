"""Flux's TurnInfo messages (the SDK's own type, as parsed off the wire) as transcript events."""

from __future__ import annotations

from deepgram.listen.v2.types import ListenV2TurnInfo

from presales_ws.transcribers.flux_turns import TurnReader

WORDS = [("Is", 0.5, 0.7), ("there", 0.7, 0.9), ("an", 0.9, 1.0), ("API?", 1.0, 1.4)]


def turn(event: str, n_words: int, *, window_end: float = 1.5, index: int = 0) -> ListenV2TurnInfo:
    words = WORDS[:n_words]
    return ListenV2TurnInfo.model_validate(
        {
            "type": "TurnInfo",
            "request_id": "r",
            "sequence_id": 1,
            "event": event,
            "turn_index": index,
            "audio_window_start": 0.5,
            "audio_window_end": window_end,
            "transcript": " ".join(w for w, _, _ in words),
            "words": [{"word": w, "confidence": 0.9, "start": s, "end": e} for w, s, e in words],
            "end_of_turn_confidence": 0.5,
        }
    )


def test_eager_lasts_until_flux_takes_it_back_and_repeats_are_not_sent() -> None:
    reader = TurnReader(channel=1)
    start = reader.read(turn("StartOfTurn", 2), origin_s=0.0)
    assert start is not None and (start.text, start.is_final, start.eager) == ("Is there", False, False)
    assert reader.read(turn("Update", 2), origin_s=0.0) is None  # the same reading: not sent again
    eager = reader.read(turn("EagerEndOfTurn", 4), origin_s=0.0)
    assert eager is not None and eager.eager and eager.text == "Is there an API?"
    assert reader.read(turn("Update", 4), origin_s=0.0) is None  # still Flux's eager reading
    resumed = reader.read(turn("TurnResumed", 4), origin_s=0.0)
    assert resumed is not None and not resumed.eager  # a newer reading: the lookup's words are void
    assert reader.read(turn("EagerEndOfTurn", 4), origin_s=0.0) is not None
    final = reader.read(turn("EndOfTurn", 4, window_end=1.8), origin_s=0.0)
    assert final is not None and final.is_final and final.utterance_end and not final.eager
    assert (final.channel, final.speaker_id, final.start, final.end) == (1, None, 0.5, 1.4)
    assert reader.committed_s == 1.8 and reader.open is None


def test_a_replayed_connection_drops_words_already_final_and_rebases_the_rest() -> None:
    reader = TurnReader(channel=0)
    reader.read(turn("EndOfTurn", 2, window_end=0.95), origin_s=10.0)  # "Is there" final, up to 10.9 s
    reader.reset()  # a new connection, whose time 0 is session time 10.0 again (its replay)
    again = reader.read(turn("EndOfTurn", 4), origin_s=10.0)
    assert again is not None and again.text == "an API?" and (again.start, again.end) == (10.9, 11.4)


def test_the_open_turn_becomes_the_final_when_the_stream_ends_first() -> None:
    reader = TurnReader(channel=0)
    assert reader.close_turn() is None
    reader.read(turn("Update", 3), origin_s=2.0)
    final = reader.close_turn()
    assert final is not None and final.is_final and final.utterance_end and final.text == "Is there an"
    assert reader.read(turn("EndOfTurn", 3), origin_s=2.0) is None  # Flux's late EndOfTurn: nothing new in it
