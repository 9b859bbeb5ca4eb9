"""The Deepgram path against its limit: presales-ws on its Deepgram engine vs a bare ASGI relay, one run.

    .venv/bin/python -m bench.relay                       # `make bench` runs this; writes docs/BENCHMARKS.md
    .venv/bin/python -m bench.relay --steps 50,200 --seconds 3 --no-write

Both servers relay the same sessions to the same Deepgram-compatible upstream (bench/peers/deepgram_cadence.py:
an interim every 0.25 s of audio, a final every 1 s, in a process of its own): presales-ws through its real
Deepgram engine and the SDK (`TRANSCRIBER=deepgram`, every other setting at its default), the relay
(bench/peers/relay.py) forwarding frames and messages and doing nothing else. The server under test is pinned
to core 0; the load generator (bench/relay_load.py) and the upstream share core 1, and their CPU is in the
table, so a step where they, not the server, ran out of CPU shows. At each N the two servers run one after the
other, so both see the same machine. N goes up to 200 in any case (the targets compare there), then on while
either server's p99 stays under 50 ms.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec
import psutil

from bench.load import raise_open_files_limit
from bench.perf import (
    P99_LIMIT_MS,
    ROOT,
    Budget,
    Step,
    Target,
    cores,
    fmt,
    free_port,
    pinned,
    presales,
    run_load,
    running,
)
from bench.report import write_section

STEPS = (50, 100, 200, 300, 400, 500)
ALWAYS_UP_TO = 200
FRAMES_PER_S = 50
BUDGET_S = 200.0
STEP_OVERHEAD_S = 15.0
UPSTREAM_KEY = "bench-relay-key-0123456789"
UPSTREAM_START_TIMEOUT_S = 15.0


@contextmanager
def upstream(core: int | None, log_dir: Path) -> Iterator[tuple[str, psutil.Process]]:
    """The cadence server in its own process on the generator's core; (its URL, its process)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.peers.deepgram_cadence", "--port", str(port), "--key", UPSTREAM_KEY]
    log = (log_dir / "upstream.log").open("w")
    process = subprocess.Popen(pinned(argv, core), stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + UPSTREAM_START_TIMEOUT_S
        while time.monotonic() < deadline and not process.stdout.readline().startswith("READY"):
            if process.poll() is not None:
                raise RuntimeError(f"the upstream exited: {(log_dir / 'upstream.log').read_text()[-2000:]}")
        yield f"ws://127.0.0.1:{port}", psutil.Process(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class Variant(msgspec.Struct, frozen=True):
    """A presales-ws configuration to measure: a name, settings, and optionally another tree's presales_ws."""

    name: str
    settings: dict[str, str] = {}
    tree: str | None = None


DEFAULT_VARIANTS = (Variant("presales-ws deepgram"),)


def targets(upstream_url: str, variants: Sequence[Variant]) -> list[Target]:
    """The bare relay, then each presales-ws variant, all relaying to `upstream_url`."""
    relay = Target(
        "bare relay", ["bench.peers.relay"], "binary", {"RELAY_UPSTREAM": upstream_url, "RELAY_KEY": UPSTREAM_KEY}
    )
    out = [relay]
    for variant in variants:
        ours = presales("binary", TRANSCRIBER="deepgram", DEEPGRAM_API_KEY=UPSTREAM_KEY, DEEPGRAM_URL=upstream_url)
        ours.env.update(variant.settings)
        if variant.tree:
            ours.env["PYTHONPATH"] = variant.tree
        ours.name = variant.name
        out.append(ours)
    return out


def us_per_frame(step: Step) -> float:
    """Server CPU per client frame, µs: the window's CPU share over the frames it took in."""
    if math.isnan(step.server_cpu_pct) or not step.result:
        return math.nan
    return 1e6 * step.server_cpu_pct / 100 / (step.sessions * FRAMES_PER_S)


def measure(
    steps: Sequence[int],
    seconds: float,
    log_dir: Path,
    budget: Budget,
    variants: Sequence[Variant] = DEFAULT_VARIANTS,
    audio: str = "speech",
) -> list[list[Step]]:
    """Per N, one step per target (the relay first), one after the other."""
    server_core, load_core = cores()
    rows: list[list[Step]] = []
    with upstream(load_core, log_dir) as (url, upstream_process):
        servers = targets(url, variants)
        for n in steps:
            if not budget.allows(f"relay N={n}", len(servers) * (seconds + STEP_OVERHEAD_S)):
                break
            row: list[Step] = []
            for target in servers:
                with running(target, server_core, log_dir) as server:
                    step = run_load(
                        server,
                        server.url + "?sample_rate=16000&channels=1",
                        n,
                        seconds,
                        "binary",
                        load_core,
                        generator="bench.relay_load",
                        also_measured=upstream_process,
                        generator_args=["--audio", audio],
                    )
                step.target = target.name
                row.append(step)
                print(f"  {describe(step)}", flush=True)
            rows.append(row)
            over = all(s.failed or s.p99 > P99_LIMIT_MS for s in row)
            if n >= ALWAYS_UP_TO and over:
                break
    return rows


def describe(step: Step) -> str:
    if not step.result:
        return f"{step.target:<22} N={step.sessions:<4} FAILED: {step.failed}"
    return (
        f"{step.target:<22} N={step.sessions:<4} p50 {fmt(step.get('rtt_p50_ms'), 2)} ms"
        f"  p99 {fmt(step.get('rtt_p99_ms'), 2)} ms"
        f"  server CPU {step.server_cpu_pct:.0f}% ({us_per_frame(step):.1f} µs/frame)"
        f"  generator {step.get('client_cpu_pct'):.0f}%  upstream {step.other_cpu_pct:.0f}%"
        + (f"  FAILED: {step.failed}" if step.failed else "")
    )


def capacity(steps: list[Step]) -> int:
    ok = [s.sessions for s in steps if not s.failed and s.p99 <= P99_LIMIT_MS]
    return max(ok) if ok else 0


def ratio(a: float, b: float) -> str:
    if not (a and b) or any(math.isnan(x) or math.isinf(x) for x in (a, b)):
        return "-"
    return f"{a / b:.2f}x"


def report(rows: list[list[Step]], seconds: float, command: str, audio: str = "speech") -> str:
    table = [
        "| server | N | p50 ms | p99 ms | max ms | server CPU % | µs CPU / frame | RSS MiB |"
        " generator CPU % | upstream CPU % | answers lost | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = [s.target for s in rows[0][1:]] if rows else []
    ratios = ["| server | N | CPU per frame / relay | p50 / relay | p99 / relay |", "|---|---|---|---|---|"]
    for row in rows:
        for s in row:
            table.append(
                f"| {s.target} | {s.sessions} | {fmt(s.get('rtt_p50_ms'), 2)} | {fmt(s.get('rtt_p99_ms'), 2)} |"
                f" {fmt(s.get('rtt_max_ms'))} | {fmt(s.server_cpu_pct, 0)} | {fmt(us_per_frame(s))} |"
                f" {fmt(s.server_rss_kib / 1024, 0)} | {fmt(s.get('client_cpu_pct'), 0)} | {fmt(s.other_cpu_pct, 0)} |"
                f" {s.result.get('frames_lost', '-')} | {s.failed or ''} |"
            )
    for name in names:
        for row in rows:
            relay, ours = row[0], next((s for s in row[1:] if s.target == name), None)
            if ours is not None and relay.result and ours.result:
                ratios.append(
                    f"| {name} | {relay.sessions} | {ratio(us_per_frame(ours), us_per_frame(relay))} |"
                    f" {ratio(ours.get('rtt_p50_ms'), relay.get('rtt_p50_ms'))} |"
                    f" {ratio(ours.get('rtt_p99_ms'), relay.get('rtt_p99_ms'))} |"
                )
    capacities = ", ".join(
        f"{name} **{capacity([s for row in rows for s in row if s.target == name])}**"
        for name in ["bare relay", *names]
    )
    heard = (
        "real recorded speech (tests/fixtures/real end to end, each session from its own offset)"
        if audio == "speech"
        else "a quiet steady signal (the energy gate then skips Silero almost always)"
    )
    return f"""## Deepgram path against a bare relay (`bench/relay.py`)

`{command}` ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, Python {platform.python_version()},
load average at the end {", ".join(f"{x:.2f}" for x in os.getloadavg())})

N sessions stream 16 kHz mono s16 at real time in 20 ms frames for {seconds:g} s after a 1 s staggered start,
{heard},
through the server on core 0 to a Deepgram-compatible upstream (`bench/peers/deepgram_cadence.py`, in its own
process beside the generator on core 1) that answers on the audio's clock, an interim every 0.25 s and a final
every 1 s. presales-ws runs its real Deepgram engine through the SDK with default settings (text end of turn:
Silero VAD behind an energy gate) unless the row says otherwise; the bare relay (`bench/peers/relay.py`) forwards
frames up and messages down and nothing else. Round trip: the frame that completes an answer (its end is the
answer's end) sent -> the first message covering it received. CPU per frame: the server's CPU over the window
/ the frames it took in. At each N the servers run one after the other.

{chr(10).join(table)}

Sessions per core at p99 <= {P99_LIMIT_MS:g} ms (of the steps run): {capacities}.

{chr(10).join(ratios)}
"""


def parse_variant(text: str) -> Variant:
    """`main:/tmp/main-tree;TURN_DETECTION=off` -> Variant("main", {"TURN_DETECTION": "off"}, "/tmp/main-tree")."""
    head, *settings = text.split(";")
    name, _, tree = head.partition(":")
    return Variant(name, dict(x.split("=", 1) for x in settings if x), tree or None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", help=f"session counts (default {','.join(map(str, STEPS))})")
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement window per step")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S)
    parser.add_argument("--section", default="relay", help="the docs/BENCHMARKS.md section to write")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--audio",
        choices=("speech", "quiet"),
        default="speech",
        help="real recorded speech (default) or a quiet steady signal (bench/relay_load.py)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[:TREE][;SETTING=VALUE...]",
        help="a presales-ws configuration (default: this tree, default settings); repeatable",
    )
    args = parser.parse_args(argv)
    steps = [int(x) for x in args.steps.split(",")] if args.steps else list(STEPS)
    raise_open_files_limit(8 * max(steps) + 1024)
    command = ".venv/bin/python -m bench.relay" + (" " + shlex.join(sys.argv[1:]) if len(sys.argv) > 1 else "")
    budget = Budget(args.budget_s)
    with tempfile.TemporaryDirectory(prefix="presales-relay-") as tmp:
        variants = [parse_variant(text) for text in args.variant] or list(DEFAULT_VARIANTS)
        rows = measure(steps, args.seconds, Path(tmp), budget, variants, args.audio)
    body = report(rows, args.seconds, command, args.audio)
    print(body, flush=True)
    if not args.no_write:
        write_section("BENCHMARKS.md", args.section, body, "Benchmarks")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
