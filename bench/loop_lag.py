"""What the embedded engine's per-frame work costs every other session: the event loop's lag under its load.

N sessions of the embedded engine in one process (no sockets: the engine's own `stream`, fed 20 ms frames at
real time, as the session does), and beside them a task that sleeps 5 ms and records how late it wakes: the
delay any other session's task (a Deepgram relay, a heartbeat, a write) would see. Also how long each `send`
took. Run it once per tree to compare (it imports `presales_ws` from `--tree`, or from the commit `--before`):

    .venv/bin/python -m bench.loop_lag --sessions 8
    .venv/bin/python -m bench.loop_lag --sessions 8 --before main
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
PROBE_SLEEP_S = 0.005
FRAME_S = 0.02


def _us(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6:.0f}"


async def measure(sessions: int, fixture: Path) -> str:
    audio_format: Any = importlib.import_module("presales_ws.audio").AudioFormat
    local: Any = importlib.import_module("presales_ws.transcribers.local")
    settings = importlib.import_module("presales_ws.config").settings_from_mapping({})
    try:
        wavfile = importlib.import_module("presales_ws.client.wavfile")
    except ModuleNotFoundError:  # a tree from before the client layer (--before)
        wavfile = importlib.import_module("presales_ws.wavfile")
    wav = wavfile.read_wav(fixture)
    engine = local.LocalTranscriber(settings)
    await engine.start()
    frame = int(FRAME_S * wav.sample_rate) * 2
    sends: list[float] = []
    lags: list[float] = []
    started = time.monotonic() + 0.2

    async def one(index: int) -> None:
        async with engine.stream(audio_format(sample_rate=wav.sample_rate), f"s{index}") as stream:

            async def drain() -> None:
                async for _ in stream.events():
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                for n, offset in enumerate(range(0, len(wav.pcm), frame)):
                    await anyio.sleep(max(0.0, started + n * FRAME_S - time.monotonic()))
                    before = time.perf_counter()
                    await stream.send(wav.pcm[offset : offset + frame])
                    sends.append(time.perf_counter() - before)
                await stream.finish()

    async def probe() -> None:
        while True:
            before = time.perf_counter()
            await anyio.sleep(PROBE_SLEEP_S)
            lags.append(time.perf_counter() - before - PROBE_SLEEP_S)

    async with anyio.create_task_group() as outer:
        outer.start_soon(probe)
        async with anyio.create_task_group() as tg:
            for index in range(sessions):
                tg.start_soon(one, index)
        outer.cancel_scope.cancel()
    return "\n".join(
        [
            "| sessions | loop lag p50 us | p99 us | max us | send p50 us | send p99 us |",
            "|---|---|---|---|---|---|",
            f"| {sessions} | {_us(lags, 0.5)} | {_us(lags, 0.99)} | {_us(lags, 1.0)} | "
            f"{_us(sends, 0.5)} | {_us(sends, 0.99)} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--fixture", type=Path, default=ROOT / "tests" / "fixtures" / "real" / "beckett.wav")
    parser.add_argument("--tree", type=Path, default=ROOT, help="a directory holding the presales_ws to measure")
    parser.add_argument("--before", help="measure presales_ws as it was at this commit instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="presales-loop-") as directory:
        tree = args.tree
        if args.before:
            archive = subprocess.run(
                ["git", "archive", "--format=tar", args.before, "presales_ws"],
                cwd=ROOT,
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
            tree = Path(directory)
        sys.path.insert(0, str(tree))
        print(anyio.run(measure, args.sessions, args.fixture))


if __name__ == "__main__":
    main()
