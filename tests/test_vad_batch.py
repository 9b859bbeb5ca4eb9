"""The batched Silero VAD of the Deepgram path hears what a model per channel hears."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from presales_ws.client.wavfile import read_wav
from presales_ws.transcribers import vad_batch
from presales_ws.transcribers.vad import WINDOW_SAMPLES, PauseTracker, SileroProbability
from presales_ws.transcribers.vad_batch import ChannelState, SileroBatch
from tests.deepgram_server import FIXTURES
from tests.support import MANIFEST

FRAME_SAMPLES = 320  # 20 ms at 16 kHz


def channel_audio(channel: int) -> np.ndarray:
    audio = read_wav(str(FIXTURES / "call_two_channel.wav"))
    samples = np.frombuffer(audio.pcm, dtype="<i2").reshape(-1, audio.channels)[:, channel]
    return samples.astype(np.float32) / 32768.0


def test_batched_probabilities_equal_one_model_per_channel() -> None:
    tracks = [channel_audio(0), channel_audio(1)]
    n_windows = min(len(t) for t in tracks) // WINDOW_SAMPLES

    def windows(track: np.ndarray) -> list[np.ndarray]:
        return [np.ascontiguousarray(track[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES]) for i in range(n_windows)]

    alone = [SileroProbability() for _ in tracks]  # one model per channel, as before the batch
    expected = [[alone[c](w) for w in windows(track)] for c, track in enumerate(tracks)]

    async def batched() -> list[list[float]]:
        batch, states = SileroBatch.current(), [ChannelState() for _ in tracks]
        per_channel = [windows(track) for track in tracks]
        out: list[list[float]] = [[] for _ in tracks]
        for i in range(n_windows):  # both channels' windows in one batch each time
            got = await asyncio.gather(*(batch.probability(states[c], per_channel[c][i]) for c in range(len(tracks))))
            for c, p in enumerate(got):
                out[c].append(p)
        return out

    got = asyncio.run(batched())
    assert np.allclose(np.array(got), np.array(expected), atol=1e-4)  # the batched graph: test_silero_model.py
    assert max(max(channel) for channel in expected) > 0.9  # the fixture has speech: the comparison means something


def test_a_batched_pause_tracker_finds_the_same_pauses_as_its_own_model() -> None:
    track = channel_audio(1)
    frames = [np.ascontiguousarray(track[i : i + FRAME_SAMPLES]) for i in range(0, len(track), FRAME_SAMPLES)]
    own = PauseTracker(16000)
    expected = [(own.feed(f), own.silence_ms, own.spoke) for f in frames]

    async def batched() -> list[tuple[bool, float, bool]]:
        tracker = PauseTracker(16000, batched=True)
        return [(await tracker.feed_batched(f), tracker.silence_ms, tracker.spoke) for f in frames]

    assert asyncio.run(batched()) == expected
    assert any(resumed for resumed, _, _ in expected)  # speech started at least once


def test_the_pause_a_final_was_asked_in_keeps_its_length_after_speech_resumes() -> None:
    """The Deepgram engine judges the answer to a pause's Finalize by that pause (`TurnDetector.on_final`): the answer
    may come after the next sentence began, when the silence is 0 again."""
    audio = read_wav(str(FIXTURES / "two_sentences_us.wav"))
    track = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768.0
    utterances = MANIFEST["two_sentences_us.wav"]["utterances"]
    gap_ms = (utterances[1]["start_s"] - utterances[0]["end_s"]) * 1000
    tracker = PauseTracker(16000)
    marked_at_ms = None
    for offset in range(0, len(track), FRAME_SAMPLES):
        resumed = tracker.feed(np.ascontiguousarray(track[offset : offset + FRAME_SAMPLES]))
        if marked_at_ms is None and tracker.spoke and tracker.silence_ms >= 160:
            tracker.mark()
            marked_at_ms = tracker.silence_ms
            assert tracker.marked_pause_ms == marked_at_ms  # while it goes on: the pause so far
        elif marked_at_ms is not None and resumed:
            break
    assert marked_at_ms is not None and tracker.silence_ms == 0.0
    assert gap_ms - 300 <= tracker.marked_pause_ms <= gap_ms + 100  # the whole pause, Silero's tails aside


def test_channels_keep_their_own_state_when_the_rows_grow_and_are_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch keeps every channel's state in rows of two matrices (StateRows): more channels than rows make
    them grow, a closed channel's row goes to the next channel, and neither moves a channel's probabilities."""
    monkeypatch.setattr(vad_batch, "INITIAL_ROWS", 2)
    monkeypatch.setattr(vad_batch, "BATCH_WAIT_S", 0.0)
    track = channel_audio(1)
    windows = [np.ascontiguousarray(track[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES]) for i in range(60)]

    async def alone() -> list[float]:
        batch, channel = SileroBatch(asyncio.get_running_loop()), ChannelState()
        return [await batch.probability(channel, window) for window in windows]

    async def among_others() -> list[float]:
        batch, channel, got = SileroBatch(asyncio.get_running_loop()), ChannelState(), []
        others = [ChannelState() for _ in range(3)]
        for i, window in enumerate(windows):
            if i % 7 == 0:  # one leaves, a new one comes: it must start from a zero state in the reused row
                others = [*others[1:], ChannelState()]
            noise = [np.full(WINDOW_SAMPLES, 0.1 * (k + 1), dtype=np.float32) for k in range(len(others))]
            theirs = (batch.probability(other, n) for other, n in zip(others, noise, strict=True))
            results = await asyncio.gather(batch.probability(channel, window), *theirs)
            got.append(results[0])
        assert len(batch._rows.contexts) == 4  # it grew from 2, once: the rows of channels gone were reused
        return got

    assert asyncio.run(among_others()) == pytest.approx(asyncio.run(alone()), abs=1e-6)


def test_the_vad_bench_feeds_every_channel_and_times_the_model() -> None:
    """bench/relay_vad.py's in-situ loop (a few channels, one second): frames counted, windows heard, runs timed."""
    from bench.relay_vad import in_situ

    got = in_situ(channels=4, seconds=1.0, vad=True)
    assert got["us_per_frame"] > 0 and got["model_us_per_frame"] > 0
    assert 0.9 <= got["heard_share"] <= 1.0  # the gate's first second: Silero hears every window
    assert got["windows_per_run"] >= 1
