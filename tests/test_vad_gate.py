"""The energy gate in front of Silero (Deepgram path) finds the pauses Silero alone finds, in clean and noisy audio.

Every real-speech and paused fixture (and both channels of the two-channel call) is fed in 20 ms frames, as
the Deepgram engine feeds it, through the ungated batched detector and the gated one; a pause is where the
engine would send Finalize (speech, then 160 ms without). Noise: the same audio with pink noise mixed in at
20 dB below the speech (numpy, fixed seed), so a gate that took steady noise for speech would lose every pause.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from presales_ws.client.wavfile import read_wav
from presales_ws.transcribers import vad_batch
from presales_ws.transcribers.vad import WINDOW_MS, WINDOW_SAMPLES, PauseTracker
from tests.deepgram_server import FIXTURES

FRAME_SAMPLES = 320  # 20 ms at 16 kHz, as the extension sends
PAUSE_MS = 160.0  # TURN_COMPLETE_MS's default: the pause that sends Finalize
SNR_DB = 20.0
SPEECH_WINDOW_MIN_POWER = 10 ** (-4.5)  # -45 dBFS: windows counted as the speech level when mixing noise


@pytest.fixture(autouse=True)
def no_batch_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """One channel at a time: a window has no company to wait for (the verdicts do not depend on it)."""
    monkeypatch.setattr(vad_batch, "BATCH_WAIT_S", 0.0)


def tracks() -> Iterator[tuple[str, np.ndarray]]:
    files = [e["file"] for name in ("real", "paused") for e in json.loads((FIXTURES / f"{name}.json").read_text())]
    for file in [*files, "call_two_channel.wav"]:
        audio = read_wav(str(FIXTURES / file))
        samples = np.frombuffer(audio.pcm, dtype="<i2").reshape(-1, audio.channels)
        for channel in range(audio.channels):
            yield f"{file}:{channel}", samples[:, channel].astype(np.float32) / 32768.0


def pink_noise(n: int, seed: int = 15) -> np.ndarray:
    """Unit-RMS noise with a 1/f spectrum (what a room and a fan sound like, more than white noise)."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise * noise))


def with_noise(track: np.ndarray, snr_db: float = SNR_DB) -> np.ndarray:
    windows = track[: len(track) // WINDOW_SAMPLES * WINDOW_SAMPLES].reshape(-1, WINDOW_SAMPLES)
    power = np.mean(windows * windows, axis=1)
    speech_rms = float(np.sqrt(np.mean(power[power > SPEECH_WINDOW_MIN_POWER])))
    noisy = track + pink_noise(len(track)) * speech_rms * 10 ** (-snr_db / 20)
    return np.clip(noisy, -1.0, 1.0).astype(np.float32)


async def pauses(track: np.ndarray, *, gated: bool) -> tuple[list[float], int]:
    """Where a Finalize would go (ms of audio), and how many windows Silero was asked about."""
    tracker = PauseTracker(16000, batched=True, gated=gated)
    asked = 0
    ask = tracker._batch.probability

    async def counted(channel: object, window: np.ndarray) -> float:
        nonlocal asked
        asked += 1
        return await ask(channel, window)  # type: ignore[arg-type]

    tracker._batch.probability = counted  # type: ignore[method-assign]
    found: list[float] = []
    for offset in range(0, len(track), FRAME_SAMPLES):
        frame = np.ascontiguousarray(track[offset : offset + FRAME_SAMPLES])
        await tracker.feed_batched(frame)
        if tracker.spoke and tracker.silence_ms >= PAUSE_MS:
            tracker.mark()
            found.append((offset + len(frame)) / 16)
    return found, asked


def compare(noisy: bool) -> tuple[list[float], int, int]:
    """Per pause, new minus old (ms), over every track; and windows asked of Silero, gated and in all."""
    shifts: list[float] = []
    asked = total = 0

    async def run() -> None:
        nonlocal asked, total
        for name, clean in tracks():
            track = with_noise(clean) if noisy else clean
            old, _ = await pauses(track, gated=False)
            new, new_asked = await pauses(track, gated=True)
            assert len(new) == len(old), f"{name}: Silero alone {old}, gated {new}"
            shifts.extend(n - o for n, o in zip(new, old, strict=True))
            asked += new_asked
            total += len(track) // WINDOW_SAMPLES

    asyncio.run(run())
    return shifts, asked, total


@pytest.mark.parametrize("noisy", [False, True], ids=["clean", f"pink_noise_{SNR_DB:.0f}dB_snr"])
def test_the_gated_detector_finds_every_pause_silero_alone_finds(noisy: bool) -> None:
    shifts, asked, total = compare(noisy)
    assert len(shifts) >= 40  # every track has a pause at its end, the paused ones one more inside
    # None earlier than Silero's by more than a window; nearly all within two windows (a frame's rounding
    # included); the rest where the gate heard a loud window as speech and Silero did not, at most ~7 windows.
    assert min(shifts) >= -WINDOW_MS - 20
    assert max(shifts) <= WINDOW_MS + 20  # one window late at most (measured at 20 ms frames)
    assert asked <= 0.7 * total  # the gate did skip the model: the comparison is not of two equal detectors


def test_real_speech_end_to_end_has_silero_alones_pauses_for_fewer_model_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real fixtures streamed one after another, as bench/relay.py streams them: the channel's noise floor and
    speech peak carry across recordings, as in a call. Every pause Silero alone finds is found, none later than
    two windows, nearly all at the same window, and the model hears (catch-up included) fewer windows."""
    heard = 0
    hear = vad_batch.SileroBatch._hear

    def counted(batch: vad_batch.SileroBatch, rows: list[int], lengths: list[int], windows: list[Any]) -> list[float]:
        nonlocal heard
        heard += len(windows)
        return hear(batch, rows, lengths, windows)

    monkeypatch.setattr(vad_batch.SileroBatch, "_hear", counted)
    files = [entry["file"] for entry in json.loads((FIXTURES / "real.json").read_text())]
    track = np.concatenate([np.frombuffer(read_wav(str(FIXTURES / f)).pcm, dtype="<i2") for f in files])
    samples = track.astype(np.float32) / 32768.0
    old, _ = asyncio.run(pauses(samples, gated=False))
    heard = 0
    new, _ = asyncio.run(pauses(samples, gated=True))
    assert len(old) >= 20 and len(new) == len(old)
    shifts = [round((n - o) / WINDOW_MS) for n, o in zip(new, old, strict=True)]
    assert all(-1 <= shift <= 2 for shift in shifts), shifts
    assert sum(shift == 0 for shift in shifts) >= 0.8 * len(shifts)
    assert heard <= 0.85 * (len(samples) // WINDOW_SAMPLES)


def test_steady_noise_is_a_pause_without_asking_silero() -> None:
    """A channel nobody speaks on (the other party's turn, or the benchmark's steady signal): after the floor
    has settled, the model hears nothing, however loud the steady noise is."""
    for level_dbfs in (-60.0, -30.0):
        noise = (pink_noise(16000 * 10) * 10 ** (level_dbfs / 20)).astype(np.float32)
        found, asked = asyncio.run(pauses(noise, gated=True))
        assert found == []
        assert asked <= round(1500 / WINDOW_MS)  # the gate's one-second warm-up, then the pause's settling
