"""The VAD segmenter on scripted voice probabilities: when it asks for interims and finals, and of what."""

from __future__ import annotations

import itertools

import numpy as np

from presales_ws.transcribers.utterances import SAMPLE_RATE_HZ, WINDOW_SAMPLES, Decode, UtteranceSegmenter

WINDOW_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ


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
    _, decodes, _ = scripted(pattern, endpointing_ms=500, interim_interval_ms=10_000)
    assert [(d.is_final, d.speculative) for d in decodes] == [(False, True), (True, False)]
    final = decodes[1]
    assert final.is_final and final.utterance_end
    windows = windows_of(final)
    assert windows[0] == 20 - 7  # 224 ms of pre-roll kept so the first word is not clipped
    assert 49 in windows and max(windows) <= 49 + 6  # trailing silence kept short
    assert abs(final.start - 13 * WINDOW_S) < 1e-3 and abs(final.end - 50 * WINDOW_S) < 1e-3


def test_interims_come_about_every_interval_of_speech() -> None:
    _, decodes, _ = scripted("s" * 100 + "." * 20, interim_interval_ms=1000)
    interims = [d for d in decodes if not d.is_final and not d.speculative]
    assert len(interims) == 3  # 100 windows = 3.2 s of speech
    assert all(len(a.audio) < len(b.audio) for a, b in itertools.pairwise(interims))
    assert decodes[-1].is_final


def test_a_short_pause_does_not_end_the_utterance() -> None:
    _, decodes, _ = scripted("s" * 20 + "." * 10 + "s" * 20 + "." * 20, endpointing_ms=500, interim_interval_ms=10_000)
    # A speculative decode at each pause's start; only the second one's audio is the final's.
    assert [(d.is_final, d.speculative) for d in decodes] == [(False, True), (False, True), (True, False)]
    assert decodes[0].key != decodes[2].key and decodes[1].key == decodes[2].key
    assert np.array_equal(decodes[1].audio, decodes[2].audio)


def test_the_final_is_decoded_ahead_once_its_audio_is_all_in() -> None:
    pattern = "." * 10 + "s" * 30 + "." * 20
    _, decodes, _ = scripted(pattern, endpointing_ms=500, interim_interval_ms=10_000)
    speculative, final = decodes
    assert speculative.key == final.key and np.array_equal(speculative.audio, final.audio)
    assert max(windows_of(speculative)) == 40 + 5  # asked for 6 windows (192 ms) into the silence, not 16
    assert final.end == speculative.end


def test_continuous_speech_is_cut_at_the_maximum_length_without_losing_audio() -> None:
    pattern = "s" * 200 + "." * 20
    _, decodes, _ = scripted(pattern, max_utterance_s=2.0, interim_interval_ms=10_000)
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
