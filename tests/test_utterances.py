"""The VAD segmenter on scripted voice probabilities: when it asks for interims and finals, and of what."""

from __future__ import annotations

import itertools

import numpy as np

from presales_ws.transcribers.turns import TurnCue, TurnPolicy
from presales_ws.transcribers.utterances import Decode, UtteranceSegmenter
from presales_ws.transcribers.vad import SAMPLE_RATE_HZ, WINDOW_SAMPLES

WINDOW_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ
FIXED_500 = TurnPolicy.fixed_endpointing(500, 192)  # the classic rule: 500 ms of silence, decoded ahead at 192


def scripted(pattern: str, **kwargs: object) -> tuple[UtteranceSegmenter, list[Decode], np.ndarray]:
    """'s' = a speech window, '.' = silence; each window's samples hold its index so audio can be traced."""
    probabilities = iter(1.0 if c == "s" else 0.0 for c in pattern)
    segmenter = UtteranceSegmenter(lambda _: next(probabilities), **kwargs)  # type: ignore[arg-type]
    audio = np.repeat(np.arange(len(pattern), dtype=np.float32), WINDOW_SAMPLES)
    decodes: list[Decode] = []
    for offset in range(0, len(audio), 320):  # 20 ms frames, not aligned with VAD windows
        decodes += segmenter.feed(audio[offset : offset + 320])
    return segmenter, decodes, audio


def windows_of(decode: Decode) -> list[int]:
    return sorted({int(v) for v in decode.audio})


def test_silence_asks_for_nothing() -> None:
    _, decodes, _ = scripted("." * 100)
    assert decodes == []


def test_speech_then_endpointing_silence_gives_one_final_with_pre_roll() -> None:
    pattern = "." * 20 + "s" * 30 + "." * 20
    _, decodes, _ = scripted(pattern, policy=FIXED_500, interim_interval_ms=10_000)
    assert [(d.is_final, d.speculative) for d in decodes] == [(False, True), (True, False)]
    final = decodes[1]
    assert final.is_final and final.utterance_end
    windows = windows_of(final)
    assert windows[0] == 20 - 7  # 224 ms of pre-roll kept so the first word is not clipped
    assert 49 in windows and max(windows) <= 49 + 6  # trailing silence kept short
    assert abs(final.start - 13 * WINDOW_S) < 1e-3 and abs(final.end - 50 * WINDOW_S) < 1e-3


def test_interims_come_about_every_interval_of_speech() -> None:
    _, decodes, _ = scripted("s" * 100 + "." * 20, policy=FIXED_500, interim_interval_ms=1000)
    interims = [d for d in decodes if not d.is_final and not d.speculative]
    assert len(interims) == 3  # 100 windows = 3.2 s of speech
    assert all(len(a.audio) < len(b.audio) for a, b in itertools.pairwise(interims))
    assert decodes[-1].is_final


def test_a_short_pause_does_not_end_the_utterance() -> None:
    pattern = "s" * 20 + "." * 10 + "s" * 20 + "." * 20
    _, decodes, _ = scripted(pattern, policy=FIXED_500, interim_interval_ms=10_000)
    # A speculative decode at each pause's start; only the second one's audio is the final's.
    assert [(d.is_final, d.speculative) for d in decodes] == [(False, True), (False, True), (True, False)]
    assert decodes[0].key != decodes[2].key and decodes[1].key == decodes[2].key
    assert np.array_equal(decodes[1].audio, decodes[2].audio)


def test_the_final_is_decoded_ahead_once_its_audio_is_all_in() -> None:
    pattern = "." * 10 + "s" * 30 + "." * 20
    _, decodes, _ = scripted(pattern, policy=FIXED_500, interim_interval_ms=10_000)
    speculative, final = decodes
    assert speculative.key == final.key and np.array_equal(speculative.audio, final.audio)
    assert max(windows_of(speculative)) == 40 + 5  # asked for 6 windows (192 ms) into the silence, not 16
    assert final.end == speculative.end


def test_continuous_speech_is_cut_at_the_maximum_length_without_losing_audio() -> None:
    pattern = "s" * 200 + "." * 20
    _, decodes, _ = scripted(pattern, policy=FIXED_500, max_utterance_s=2.0, interim_interval_ms=10_000)
    finals = [d for d in decodes if d.is_final]
    assert len(finals) >= 3
    assert [d.utterance_end for d in finals][-1] is True and not any(d.utterance_end for d in finals[:-1])
    covered = sorted(w for d in finals for w in windows_of(d))
    assert set(range(200)) <= set(covered)  # every speech window decoded
    assert len(covered) == len(set(covered))  # and none twice


def test_flush_makes_the_unfinished_utterance_final() -> None:
    segmenter, decodes, _ = scripted("." * 5 + "s" * 40, interim_interval_ms=10_000)
    assert decodes == []
    flushed = segmenter.flush()
    assert len(flushed) == 1 and flushed[0].is_final and 44 in windows_of(flushed[0])
    assert segmenter.flush() == []


def test_clicks_shorter_than_minimum_speech_are_dropped() -> None:
    _, decodes, _ = scripted("." * 10 + "s" + "." * 30)
    assert decodes == []


def cued(pattern: str, cue: TurnCue, *, lag_windows: int = 3, **kwargs: object) -> list[Decode]:
    """Like `scripted`, one window at a time, with every decode-ahead's words read as `cue` a decode later."""
    probabilities = iter(1.0 if c == "s" else 0.0 for c in pattern)
    segmenter = UtteranceSegmenter(lambda _: next(probabilities), **kwargs)  # type: ignore[arg-type]
    decodes: list[Decode] = []
    pending: list[tuple[int, Decode]] = []  # (due window, decode-ahead)
    for index in range(len(pattern)):
        decodes += segmenter.feed(np.full(WINDOW_SAMPLES, index, dtype=np.float32))
        pending += [(index + lag_windows, d) for d in decodes if d.speculative and all(d is not p for _, p in pending)]
        for _, ahead in [p for p in pending if p[0] == index]:
            decodes += segmenter.cue(ahead.key, cue)
    return decodes


TEXT_POLICY = TurnPolicy(complete_ms=160, unsure_ms=500, incomplete_ms=1500)


def test_a_complete_sentence_is_final_as_soon_as_its_words_are_read() -> None:
    decodes = cued("." * 10 + "s" * 30 + "." * 40, TurnCue.COMPLETE, policy=TEXT_POLICY, interim_interval_ms=10_000)
    ahead, final = decodes
    assert ahead.speculative and final.is_final and final.utterance_end
    assert final.key == ahead.key  # the words already decoded are the final's: no second decode
    assert max(windows_of(ahead)) == 40 + 4  # 160 ms (5 windows) into the pause
    assert final.end == ahead.end


def test_words_that_clearly_go_on_survive_a_700_ms_pause_as_one_final() -> None:
    pattern = "." * 10 + "s" * 30 + "." * 22 + "s" * 30 + "." * 60  # 22 windows = 704 ms
    decodes = cued(pattern, TurnCue.INCOMPLETE, policy=TEXT_POLICY, interim_interval_ms=10_000)
    finals = [d for d in decodes if d.is_final]
    assert len(finals) == 1
    assert {10, 39, 62, 91} <= set(windows_of(finals[0]))  # both halves, the pause between them
    assert max(windows_of(finals[0])) < 92 + 48  # the second pause ended it: 1.5 s, not the whole tail


def test_the_same_pause_splits_the_sentence_under_fixed_endpointing() -> None:
    pattern = "." * 10 + "s" * 30 + "." * 22 + "s" * 30 + "." * 60
    decodes = cued(pattern, TurnCue.INCOMPLETE, policy=FIXED_500, interim_interval_ms=10_000)
    assert len([d for d in decodes if d.is_final]) == 2  # the words are ignored: 500 ms ends each half


def test_words_with_no_sign_either_way_wait_the_classic_endpointing() -> None:
    pattern = "." * 10 + "s" * 30 + "." * 40
    decodes = cued(pattern, TurnCue.UNSURE, policy=TEXT_POLICY, interim_interval_ms=10_000)
    ahead, final = decodes
    assert final.is_final and final.key == ahead.key
    unsure = cued("." * 10 + "s" * 30 + "." * 12 + "s" * 30 + "." * 40, TurnCue.UNSURE, policy=TEXT_POLICY)
    assert len([d for d in unsure if d.is_final]) == 1  # a 384 ms pause is under 500 ms


def test_a_late_cue_still_ends_a_complete_sentence_at_its_pause() -> None:
    # The words arrive 8 windows after the decode-ahead, when the speaker has already gone on: the sentence
    # still ends at that pause (as it would have at real time), and what followed is the next utterance.
    pattern = "." * 10 + "s" * 30 + "." * 6 + "s" * 30 + "." * 40
    decodes = cued(pattern, TurnCue.COMPLETE, lag_windows=8, policy=TEXT_POLICY, interim_interval_ms=10_000)
    finals = [d for d in decodes if d.is_final]
    assert len(finals) == 2
    assert {10, 39} <= set(windows_of(finals[0])) and max(windows_of(finals[0])) == 44
    assert {46, 75} <= set(windows_of(finals[1])) and min(windows_of(finals[1])) >= 45  # no word twice
    assert finals[0].end <= finals[1].start + 1e-9


def test_a_late_cue_for_words_that_go_on_changes_nothing_once_the_speaker_continued() -> None:
    pattern = "." * 10 + "s" * 30 + "." * 6 + "s" * 30 + "." * 60  # 1.5 s ends even words that go on
    decodes = cued(pattern, TurnCue.INCOMPLETE, lag_windows=8, policy=TEXT_POLICY, interim_interval_ms=10_000)
    finals = [d for d in decodes if d.is_final]
    assert len(finals) == 1 and {10, 45, 75} <= set(windows_of(finals[0]))


def test_audio_sent_faster_than_the_decoder_gives_the_same_utterances_as_real_time() -> None:
    # Two complete sentences 12 windows (384 ms) apart; cues 30 windows late, as when a client streams a file.
    pattern = "." * 10 + "s" * 40 + "." * 12 + "s" * 40 + "." * 80
    late = cued(pattern, TurnCue.COMPLETE, lag_windows=30, policy=TEXT_POLICY, interim_interval_ms=10_000)
    prompt = cued(pattern, TurnCue.COMPLETE, lag_windows=1, policy=TEXT_POLICY, interim_interval_ms=10_000)
    assert [windows_of(d) for d in late if d.is_final] == [windows_of(d) for d in prompt if d.is_final]
    assert len([d for d in late if d.is_final]) == 2


def test_a_late_cue_is_waited_for_rather_than_splitting_on_the_default_wait() -> None:
    # A loaded decoder: the words arrive 20 windows (640 ms) after the decode-ahead, past the 500 ms default.
    pattern = "." * 10 + "s" * 30 + "." * 28 + "s" * 30 + "." * 80
    decodes = cued(pattern, TurnCue.INCOMPLETE, lag_windows=20, policy=TEXT_POLICY, interim_interval_ms=10_000)
    assert len([d for d in decodes if d.is_final]) == 1


def test_with_no_cue_at_all_the_longest_wait_still_ends_the_utterance() -> None:
    probabilities = iter([0.0] * 10 + [1.0] * 30 + [0.0] * 60)
    segmenter = UtteranceSegmenter(lambda _: next(probabilities), policy=TEXT_POLICY, interim_interval_ms=10_000)
    decodes = [d for i in range(100) for d in segmenter.feed(np.full(WINDOW_SAMPLES, i, dtype=np.float32))]
    assert [d.is_final for d in decodes] == [False, True]  # a decoder that never answers cannot hold the turn


def test_a_final_closed_before_any_words_were_read_is_cut_where_they_end_the_turn() -> None:
    # All audio arrives before the decoder reads a single decode-ahead (a file streamed at full speed): the
    # longest wait closes one final over both sentences, and `split` cuts it as prompt cues would have.
    pattern = "." * 10 + "s" * 40 + "." * 12 + "s" * 40 + "." * 80
    probabilities = iter(1.0 if c == "s" else 0.0 for c in pattern)
    segmenter = UtteranceSegmenter(lambda _: next(probabilities), policy=TEXT_POLICY, interim_interval_ms=10_000)
    decodes = [d for i in range(len(pattern)) for d in segmenter.feed(np.full(WINDOW_SAMPLES, i, dtype=np.float32))]
    aheads = [d for d in decodes if d.speculative]
    [merged] = [d for d in decodes if d.is_final]
    assert len(aheads) == 2 and len(merged.cuts) == 1
    pieces = segmenter.split(merged, {a.key: TurnCue.COMPLETE for a in aheads})
    prompt = cued(pattern, TurnCue.COMPLETE, lag_windows=1, policy=TEXT_POLICY, interim_interval_ms=10_000)
    assert [windows_of(p) for p in pieces] == [windows_of(d) for d in prompt if d.is_final]
    assert pieces[0].key == aheads[0].key  # its words are already decoded
    assert not any(p.cuts for p in pieces)
    fragment = segmenter.split(merged, {a.key: TurnCue.INCOMPLETE for a in aheads})
    assert len(fragment) == 1 and not fragment[0].cuts  # words that go on: one utterance, as it closed


EARLY_POLICY = TurnPolicy(complete_ms=160, unsure_ms=500, incomplete_ms=1500, read_ahead_ms=96)


def cued_at(pattern: str, cue: TurnCue, *, lag_windows: int, **kwargs: object) -> list[tuple[int, Decode]]:
    """As `cued`, with the window each decode was asked for at."""
    probabilities = iter(1.0 if c == "s" else 0.0 for c in pattern)
    segmenter = UtteranceSegmenter(lambda _: next(probabilities), **kwargs)  # type: ignore[arg-type]
    decodes: list[tuple[int, Decode]] = []
    for index in range(len(pattern)):
        decodes += [(index, d) for d in segmenter.feed(np.full(WINDOW_SAMPLES, index, dtype=np.float32))]
        decodes += [
            (index, d)
            for i, a in decodes
            if a.speculative and i + lag_windows == index
            for d in segmenter.cue(a.key, cue)
        ]
    return decodes


def test_words_read_early_in_the_pause_end_a_complete_sentence_once_the_pause_is_long_enough() -> None:
    # Decoded 96 ms (3 windows) into the pause; the words come back a window later, before the 160 ms (5
    # windows) a complete sentence needs: the final waits for the fifth window, and is the decode-ahead's audio.
    decodes = cued_at("." * 10 + "s" * 30 + "." * 40, TurnCue.COMPLETE, lag_windows=1, policy=EARLY_POLICY)
    (asked, ahead), (closed, final) = [(i, d) for i, d in decodes if d.speculative or d.is_final]
    assert asked == 40 + 2 and max(windows_of(ahead)) == 40 + 2  # the third silent window
    assert closed == 40 + 4 and final.key == ahead.key  # the fifth: no second decode
    # Words that come back after the 160 ms end the sentence at once.
    late = cued_at("." * 10 + "s" * 30 + "." * 40, TurnCue.COMPLETE, lag_windows=4, policy=EARLY_POLICY)
    [(closed, final)] = [(i, d) for i, d in late if d.is_final]
    assert closed == 40 + 2 + 4 and final.key == ahead.key


def test_a_pause_shorter_than_the_complete_wait_does_not_end_a_sentence_read_early() -> None:
    pattern = "." * 10 + "s" * 30 + "." * 4 + "s" * 30 + "." * 40  # 128 ms: decoded at 96, ends at 160
    decodes = cued_at(pattern, TurnCue.COMPLETE, lag_windows=1, policy=EARLY_POLICY, interim_interval_ms=10_000)
    finals = [d for _, d in decodes if d.is_final]
    assert len(finals) == 1 and {10, 39, 44, 73} <= set(windows_of(finals[0]))
    prompt = cued(pattern, TurnCue.COMPLETE, lag_windows=30, policy=EARLY_POLICY, interim_interval_ms=10_000)
    assert [windows_of(d) for d in prompt if d.is_final] == [windows_of(f) for f in finals]  # late words too


def test_audio_that_ends_in_a_read_pause_is_final_with_the_words_already_read() -> None:
    # A client stops 320 ms into a pause whose words go on: the final is the decode-ahead's audio, whose words
    # are already decoded, not the speech plus every window of silence (a second decode of the same words).
    probabilities = iter([0.0] * 10 + [1.0] * 30 + [0.0] * 10)
    segmenter = UtteranceSegmenter(lambda _: next(probabilities), policy=EARLY_POLICY, interim_interval_ms=10_000)
    decodes = [d for i in range(50) for d in segmenter.feed(np.full(WINDOW_SAMPLES, i, dtype=np.float32))]
    [ahead] = decodes
    assert segmenter.cue(ahead.key, TurnCue.INCOMPLETE) == []
    [final] = segmenter.flush()
    assert final.is_final and final.key == ahead.key and not final.cuts
    assert segmenter.flush() == []
