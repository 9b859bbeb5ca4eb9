"""Where one Moonshine final decode spends its time, before and after each change, side by side in one process:
encoder, first decoder step, each later step, and the Python between steps, for a 3 s and a 9 s real utterance
(one thread, as a decode thread runs it; CPU time of the thread, so other processes' load counts less).

Configurations, each a `MoonshineDecoder` on its own files and sessions:

- **before**: the files `--before` (default main) makes, its plain sessions;
- **one-token sessions**: the same files, decoder sessions told batch 1 and one token;
- **+ files made anew**: this tree's files (the first step hands later ones cross-attention's keys as they are
  read; the rotary embedding's "rotate half" one product), one-token sessions (this tree's default).

Every fixture (real, espeak, paused) is also decoded by each: the words, confidence and full-stop probability
must be the same as before's.

    .venv/bin/python -m bench.decode_profile
    taskset -c 1 .venv/bin/python -m bench.decode_profile --repeats 21
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from bench.embedded import source_of
from bench.engines import Clip, clips
from presales_ws.transcribers import moonshine, moonshine_files
from presales_ws.transcribers.moonshine import MoonshineDecoder
from presales_ws.transcribers.turns import Heard

CLIPS = ("real/arctic_slt_a0009.wav", "real/beckett.wav")  # 3.6 s and 9.6 s with their context
MANIFESTS = ("real.json", "fixtures.json", "paused.json")


@dataclass
class Timings:
    """Milliseconds (thread CPU) of one decode, by part."""

    encoder: float = 0.0
    first: float = 0.0
    steps: list[float] = field(default_factory=list)
    total: float = 0.0

    @property
    def between(self) -> float:
        """What the decode spent outside ONNX Runtime's `run` (feeds, argmax, softmax, text)."""
        return self.total - self.encoder - self.first - sum(self.steps)


class Timed:
    """A session whose `run` adds its thread CPU time to a record."""

    def __init__(self, session: Any, record: Callable[[float], None]) -> None:
        self._session, self._record = session, record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        out = self._session.run(*args, **kwargs)
        self._record((time.thread_time() - started) * 1000)
        return out


@contextmanager
def timed(decoder: MoonshineDecoder, timings: Timings) -> Iterator[None]:
    sessions = {name: getattr(decoder, name) for name in ("_encoder", "_first", "_next")}

    def add_encoder(ms: float) -> None:
        timings.encoder += ms

    def add_first(ms: float) -> None:
        timings.first += ms

    decoder._encoder = Timed(sessions["_encoder"], add_encoder)
    decoder._first = Timed(sessions["_first"], add_first)
    decoder._next = Timed(sessions["_next"], timings.steps.append)
    try:
        yield
    finally:
        for name, session in sessions.items():
            setattr(decoder, name, session)


def files_of(commit: str) -> Path:
    """The directory of the model files `commit`'s moonshine_files makes (made first if missing)."""
    with source_of(commit) as source:
        done = subprocess.run(
            [sys.executable, "-m", moonshine_files.MODULE],
            env={**os.environ, "PYTHONPATH": str(source)},
            capture_output=True,
            text=True,
            check=True,
        )
    return Path(done.stdout.strip().splitlines()[-1])


def decoder(files: Path, *, one_token: bool) -> MoonshineDecoder:
    """A decoder on `files`; without `one_token`, every session is made as before this change."""
    plain = moonshine._session
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(moonshine_files, "prepared_dir", lambda *_a, **_k: files))
        if not one_token:
            stack.enter_context(mock.patch.object(moonshine, "_session", lambda path, **_k: plain(path)))
        return MoonshineDecoder()


def median_timings(runs: list[Timings]) -> Timings:
    return Timings(
        encoder=statistics.median(t.encoder for t in runs),
        first=statistics.median(t.first for t in runs),
        steps=[statistics.median(t.steps[i] for t in runs) for i in range(len(runs[0].steps))],
        total=statistics.median(t.total for t in runs),
    )


def profile(decoders: dict[str, MoonshineDecoder], audio: np.ndarray, repeats: int) -> dict[str, Timings]:
    """Each part's median over `repeats` decodes, the configurations taking turns (after a warm-up each)."""
    runs: dict[str, list[Timings]] = {name: [] for name in decoders}
    for d in decoders.values():
        d.hear(audio)
    for _ in range(repeats):
        for name, d in decoders.items():
            timings = Timings()
            with timed(d, timings):
                started = time.thread_time()
                d.hear(audio)
                timings.total = (time.thread_time() - started) * 1000
            runs[name].append(timings)
    return {name: median_timings(r) for name, r in runs.items()}


def words_changed(decoders: dict[str, MoonshineDecoder], fixtures: list[Clip]) -> dict[str, list[str]]:
    """Per configuration, the fixtures whose `Heard` (words, confidence, full-stop probability) differs from
    the first configuration's."""
    reference, *others = decoders
    changed: dict[str, list[str]] = {name: [] for name in others}
    for clip in fixtures:
        before: Heard = decoders[reference].hear(clip.audio)
        for name in others:
            if decoders[name].hear(clip.audio) != before:
                changed[name].append(clip.file)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="main", help="the commit whose files are `before` (default: main)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    ours = moonshine_files.prepared_dir(moonshine.default_model_dir())
    before = files_of(args.before)
    decoders = {
        f"before ({args.before})": decoder(before, one_token=False),
        "one-token sessions": decoder(before, one_token=True),
        "+ files made anew (default)": decoder(ours, one_token=True),
    }
    fixtures = [clip for manifest in MANIFESTS for clip in clips(manifest)]
    changed = words_changed(decoders, fixtures)
    by_file = {clip.file: clip for clip in clips("real.json")}
    print(
        "| configuration | clip | total ms | encoder ms | decoder_first ms | steps | next ms/step (median) "
        "| next ms (sum) | between steps ms | fixtures decoded otherwise |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for file in CLIPS:
        clip = by_file[file]
        for name, t in profile(decoders, clip.audio, args.repeats).items():
            differ = f"{len(changed[name])}/{len(fixtures)}" if name in changed else "-"
            print(
                f"| {name} | {Path(file).name} ({len(clip.audio) / 16000:.1f} s) | {t.total:.1f} | {t.encoder:.1f} "
                f"| {t.first:.1f} | {len(t.steps)} | {statistics.median(t.steps):.2f} | {sum(t.steps):.1f} "
                f"| {t.between:.1f} | {differ} |"
            )
    for name, files in changed.items():
        if files:
            print(f"{name}: decoded otherwise: {', '.join(files)}")


if __name__ == "__main__":
    main()
