"""What the service costs per session and per frame, measured from outside; writes docs/BENCHMARKS.md.

    .venv/bin/python -m bench.perf                 # everything (`make bench`), bounded to a few minutes
    .venv/bin/python -m bench.perf --only overhead,limit --steps 1,50 --seconds 2 --no-write

Every server runs as a subprocess pinned (taskset) to core 0 and the load generator (bench/load.py) to
core 1, so neither steals the other's CPU; with one core nothing is pinned and the tables say so. Servers
are started per step and always stopped (also on Ctrl-C or an error). Sections:

- overhead: presales-ws on the bench-echo engine (one final per frame, zero compute), binary frames, N up
  from 1 until p99 passes 50 ms or a step fails;
- limit: the same load on a bare uvicorn ASGI app (bench/peers/bare.py): what no app on uvicorn can beat;
- peer: presales-ws (JSON and binary) against an idiomatic FastAPI + pydantic version of the seed's design
  (bench/peers/fastapi_peer.py), on its JSON/base64 path;
- memory: RSS per idle session (1,000 connected, silent) and after they close;
- deepgram: the service's overhead on each side of a Deepgram-compatible loopback server answering at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from bench.load import raise_open_files_limit
from bench.report import write_section

VERSIONS_OF = ("uvicorn", "websockets", "starlette", "msgspec", "anyio", "uvloop", "httptools", "fastapi", "pydantic")
ROOT = Path(__file__).resolve().parent.parent
P99_LIMIT_MS = 50.0
MAX_LOSS = 0.001  # a step that loses more than 0.1% of its frames has failed
STEPS = (1, 50, 200, 500, 750, 1000, 1500)
PEER_STEPS = (1, 50, 200, 500)
DEEPGRAM_STEPS = (1, 25, 50, 100)
IDLE_SESSIONS = 1000
IDLE_HOLD_S = 6.0
SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 15.0
LOAD_SLACK_S = 60.0  # a generator run may take its window plus this (connects, drain) before it is killed
BUDGET_S = 420.0  # the whole run; a step that might not fit in what is left is skipped (and the table says so)
STEP_OVERHEAD_S = 20.0  # a step's server start, connects and drain, on top of its window, at most N

DEEPGRAM_KEY = "bench-deepgram-key-0123456789"


# --- processes ----------------------------------------------------------------------------------------------


class Budget:
    """The wall-clock allowance of one run, so `make bench` stays bounded whatever the machine does."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.skipped: list[str] = []

    def allows(self, what: str, seconds: float) -> bool:
        if time.monotonic() + seconds <= self.deadline:
            return True
        self.skipped.append(what)
        print(f"  skipped (time budget): {what}", flush=True)
        return False


BUDGET = Budget(BUDGET_S)


def cores() -> tuple[int | None, int | None]:
    """(server core, generator core): different cores when there are two or more, else no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2 and shutil.which("taskset"):
        return available[0], available[1]
    return None, None


def pinned(argv: list[str], core: int | None) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if core is not None else argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Target:
    """A server to measure: how to start it and which load mode it speaks."""

    name: str
    module: list[str]  # python -m ...
    mode: str
    env: dict[str, str] = field(default_factory=dict)


def presales(mode: str, **env: str) -> Target:
    """presales-ws on the echo engine (bench/echo_server.py), or `presales-ws serve` if env names a TRANSCRIBER."""
    settings = {
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "MAX_SESSIONS": "5000",  # the default 500 would refuse the upper steps
        # RATE_LIMIT_FACTOR stays at its default (2x real time): real-time streaming never touches it.
    }
    settings.update(env)
    module = ["presales_ws", "serve"] if "TRANSCRIBER" in env else ["bench.echo_server"]
    return Target(f"presales-ws {mode}", module, mode, settings)


BARE = Target("bare uvicorn", ["bench.peers.bare"], "binary")
PEER = Target("FastAPI peer", ["bench.peers.fastapi_peer"], "peer")


class Server:
    """One server subprocess on a free port, pinned to the server core; stopped on exit, whatever happens."""

    def __init__(self, target: Target, core: int | None, log_dir: Path) -> None:
        self.target = target
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM", "API_KEYS", "TRANSCRIBER"))}
        env.update(target.env)
        # cwd: no .env here. A target's own PYTHONPATH goes first: another tree's presales_ws, to compare.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [target.env.get("PYTHONPATH"), str(ROOT), os.environ.get("PYTHONPATH")])
        )
        argv = [sys.executable, "-m", *target.module, "--port", str(self.port)]
        self.log_path = log_dir / f"{target.name.replace(' ', '_')}.{self.port}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                pinned(argv, core), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir
            )
        self.ps = psutil.Process(self.process.pid)  # taskset execs the server: same pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/session"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited: {self.log_path.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.target.name} did not start in {SERVER_START_TIMEOUT_S:.0f} s")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as answer:
            result: dict[str, Any] = msgspec.json.decode(answer.read())
            return result

    def rss_kib(self) -> int:
        return int(self.ps.memory_info().rss // 1024)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running(target: Target, core: int | None, log_dir: Path) -> Iterator[Server]:
    server = Server(target, core, log_dir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# --- one load run --------------------------------------------------------------------------------------------


class Step(msgspec.Struct, kw_only=True):
    """One load run against one server: the generator's figures plus the server's CPU and RSS."""

    target: str
    sessions: int
    result: dict[str, Any]
    server_cpu_pct: float = math.nan
    other_cpu_pct: float = math.nan  # run_load's `also_measured`
    server_rss_kib: int = 0
    rss_idle_kib: int = 0  # idle mode: while every session is connected
    failed: str | None = None

    def get(self, name: str) -> Any:
        return self.result.get(name, math.nan)

    @property
    def p99(self) -> float:
        value = self.result.get("rtt_p99_ms")
        return math.inf if value is None else float(value)


def run_load(
    server: Server | None,
    url: str,
    sessions: int,
    seconds: float,
    mode: str,
    core: int | None,
    *,
    dump_frames: bool = False,
    on_connected: Any = None,
    generator: str = "bench.load",
    also_measured: psutil.Process | None = None,
    generator_args: Sequence[str] = (),
) -> Step:
    """Run bench/load.py (or `generator`) in its own pinned process; sample the server's CPU (and that of
    `also_measured`, another process the run depends on) over the measurement window."""
    argv = [sys.executable, "-m", generator, "--url", url, "--sessions", str(sessions), "--seconds", str(seconds)]
    if generator == "bench.load":
        argv += ["--mode", mode] + (["--dump-frames"] if dump_frames else [])
    argv += generator_args
    process = subprocess.Popen(pinned(argv, core), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    step = Step(target="", sessions=sessions, result={})
    cpu_start = clock_start = other_start = 0.0
    deadline = time.monotonic() + seconds + LOAD_SLACK_S
    finished = False
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                step.failed = "generator timed out"
                break
            if line is None:
                finished = True
                break
            if line.startswith("PHASE connected") and on_connected is not None:
                on_connected(step)
            elif line.startswith("PHASE window-start") and server is not None:
                cpu_start, clock_start = server.cpu_s(), time.monotonic()
                other_start = _cpu_s(also_measured)
            elif line.startswith("PHASE window-end") and server is not None:
                elapsed = time.monotonic() - clock_start
                step.server_cpu_pct = round(100 * (server.cpu_s() - cpu_start) / elapsed, 1)
                step.other_cpu_pct = round(100 * (_cpu_s(also_measured) - other_start) / elapsed, 1)
                step.server_rss_kib = server.rss_kib()
            elif line.startswith("RESULT "):
                step.result = msgspec.json.decode(line[len("RESULT ") :])
    finally:
        if not finished and process.poll() is None:  # timed out, Ctrl-C or an error here: no orphan generator
            process.kill()
        stderr = process.communicate(timeout=30)[1]
    if not step.result and not step.failed:
        step.failed = f"generator exited {process.returncode}: {stderr[-500:]}"
    elif step.result:
        sent = step.get("frames_sent") or 0
        if step.get("refused"):
            step.failed = f"{step.get('refused')} sessions refused {step.get('refusals')}"
        elif sent and step.get("frames_lost") > MAX_LOSS * sent:
            step.failed = f"{step.get('frames_lost')} of {sent} frames unanswered"
    return step


def _cpu_s(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def series(
    target: Target,
    steps: Sequence[int],
    seconds: float,
    log_dir: Path,
    *,
    stop_at_p99: bool = True,
    mode: str | None = None,
) -> list[Step]:
    """N up the steps, a fresh server each; stop after the first step past P99_LIMIT_MS or failing."""
    server_core, load_core = cores()
    out: list[Step] = []
    for n in steps:
        if not BUDGET.allows(f"{target.name} N={n}", seconds + STEP_OVERHEAD_S):
            break
        began = time.monotonic()
        with running(target, server_core, log_dir) as server:
            step = run_load(server, server.url, n, seconds, mode or target.mode, load_core)
        step.target = target.name
        out.append(step)
        print(f"  {target.name:<22} N={n:<5} {describe(step)}  ({time.monotonic() - began:.0f} s)", flush=True)
        if step.failed or (stop_at_p99 and step.p99 > P99_LIMIT_MS):
            break
    return out


def describe(step: Step) -> str:
    if not step.result:
        return f"FAILED: {step.failed}"
    return (
        f"p50 {step.get('rtt_p50_ms'):.2f} ms  p99 {step.get('rtt_p99_ms'):.2f} ms  max {step.get('rtt_max_ms'):.1f} ms"
        f"  {step.get('frames_per_s'):.0f} frames/s  server CPU {step.server_cpu_pct:.0f}%"
        f"  RSS {step.server_rss_kib / 1024:.0f} MiB  generator CPU {step.get('client_cpu_pct'):.0f}%"
        + (f"  FAILED: {step.failed}" if step.failed else "")
    )


# --- sections ------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def step_table(steps: list[Step]) -> str:
    rows = [
        "| server | N | p50 ms | p99 ms | max ms | frames/s | lost | server CPU % | server RSS MiB | generator CPU % |"
        " send lag p99 ms | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        rows.append(
            f"| {s.target} | {s.sessions} | {fmt(s.get('rtt_p50_ms'), 2)} | {fmt(s.get('rtt_p99_ms'), 2)} |"
            f" {fmt(s.get('rtt_max_ms'))} | {fmt(s.get('frames_per_s'), 0)} | {s.result.get('frames_lost', '-')} |"
            f" {fmt(s.server_cpu_pct, 0)} | {fmt(s.server_rss_kib / 1024, 0)} | {fmt(s.get('client_cpu_pct'), 0)} |"
            f" {fmt(s.get('send_lag_p99_ms'), 2)} | {s.failed or ''} |"
        )
    return "\n".join(rows)


def ratio(a: float, b: float) -> str:
    if not (a and b) or math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return "-"
    return f"{a / b:.2f}x"


def ratio_table(ours: list[Step], theirs: list[Step], label: str) -> str:
    """Per N both ran: presales-ws / other, for p50, p99 and server CPU (lower is better for all three)."""
    by_n = {s.sessions: s for s in theirs if s.result}
    rows = [f"| N | p50 {label} | p99 {label} | server CPU {label} |", "|---|---|---|---|"]
    for s in ours:
        other = by_n.get(s.sessions)
        if other is None or not s.result:
            continue
        rows.append(
            f"| {s.sessions} | {ratio(s.get('rtt_p50_ms'), other.get('rtt_p50_ms'))} |"
            f" {ratio(s.get('rtt_p99_ms'), other.get('rtt_p99_ms'))} |"
            f" {ratio(s.server_cpu_pct, other.server_cpu_pct)} |"
        )
    return "\n".join(rows)


def capacity(steps: list[Step]) -> str:
    ok = [s.sessions for s in steps if not s.failed and s.p99 <= P99_LIMIT_MS]
    return f"{max(ok):,}" if ok else "none"


def overhead_and_limit(steps: Sequence[int], seconds: float, log_dir: Path) -> str:
    print("overhead: presales-ws (bench-echo, binary) and the bare uvicorn limit", flush=True)
    ours = series(presales("binary"), steps, seconds, log_dir)
    reached = [s.sessions for s in ours]
    if ours and not ours[-1].failed and len(reached) < len(steps):
        reached.append(steps[len(reached)])  # one more for the limit, if it still holds there
    limit = series(BARE, reached, seconds, log_dir, stop_at_p99=False)
    return f"""## Server overhead and the limit (binary frames)

Each session streams 16 kHz mono s16 in 20 ms frames (640 bytes, 50 frames/s) at real time for
{seconds:g} s after a 1 s staggered start; the bench-echo engine answers each frame with a final carrying
its id, through the real session path (speaker tracker with a diarized speaker id, question check,
outbox, msgspec encoding). Round trip = frame sent -> its final received, client side. The bare uvicorn
app answers each frame with a text frame of the same shape and does nothing else. Steps go up until p99
passes {P99_LIMIT_MS:g} ms or a step fails (refusals, or more than {MAX_LOSS:.1%} of frames unanswered).

{step_table(ours + limit)}

Sessions served with p99 <= {P99_LIMIT_MS:g} ms: presales-ws **{capacity(ours)}**, bare uvicorn
**{capacity(limit)}** (of the steps run).

presales-ws / limit (the share of the per-frame cost that is the application's):

{ratio_table(ours, limit, "ours/limit")}
"""


def peer_section(steps: Sequence[int], seconds: float, log_dir: Path) -> str:
    print("peer: FastAPI + pydantic (JSON/base64) vs presales-ws JSON and binary", flush=True)
    peer = series(PEER, steps, seconds, log_dir)
    ours_json = series(presales("json"), steps, seconds, log_dir)
    ours_binary = series(presales("binary"), steps, seconds, log_dir)
    return f"""## Against the peer: FastAPI + pydantic, the seed's design

`bench/peers/fastapi_peer.py`: `{{"type":"audio_chunk","data":"<base64>"}}` validated by a pydantic model,
a ConnectionManager with one asyncio.Queue per connection, a consumer task per connection answering each
chunk with a pydantic transcript (`model_dump_json`), on the same uvicorn settings. presales-ws is
measured on the same JSON/base64 frames (`audio_chunk`) and on its binary frames.

{step_table(peer + ours_json + ours_binary)}

presales-ws JSON / peer:

{ratio_table(ours_json, peer, "ours/peer")}

presales-ws binary / peer (JSON):

{ratio_table(ours_binary, peer, "ours/peer")}
"""


def memory_section(sessions: int, hold_s: float, log_dir: Path) -> str:
    print(f"memory: {sessions} idle sessions", flush=True)
    if not BUDGET.allows(f"memory with {sessions} sessions", hold_s + 4 * STEP_OVERHEAD_S):
        return "## Memory\n\nSkipped: the run's time budget was spent.\n"
    server_core, load_core = cores()
    with running(presales("idle"), server_core, log_dir) as server:
        time.sleep(1.0)
        baseline = server.rss_kib()
        held: dict[str, int] = {}

        def on_connected(_: Step) -> None:
            time.sleep(min(2.0, hold_s / 2))  # the generator holds them for 1 s + hold_s
            held["rss"], held["sessions"] = server.rss_kib(), int(server.health().get("sessions", -1))

        step = run_load(server, server.url, sessions, hold_s, "idle", load_core, on_connected=on_connected)
        after = settled_rss(server)
        # A second round tells a leak (grows again) from the allocator keeping its high-water mark (reused).
        again = run_load(server, server.url, sessions, 1.0, "idle", load_core)
        after_again = settled_rss(server)
        left = int(server.health().get("sessions", -1))
    per_session = (held.get("rss", 0) - baseline) / max(1, held.get("sessions", 0))
    print(f"  baseline {baseline} KiB, {held}, after {after} KiB, again {after_again} KiB", flush=True)
    return f"""## Memory: {sessions:,} idle sessions

presales-ws (bench-echo engine) with {sessions:,} sessions connected and silent for {hold_s:g} s (the
heartbeat's default timeout is 45 s), then all closed by the clients. RSS of the server process.

| | RSS KiB | sessions open (/health) |
|---|---|---|
| baseline (started, no session) | {baseline:,} | 0 |
| {sessions:,} sessions connected | {held.get("rss", 0):,} | {held.get("sessions", "-")} |
| after they all closed | {after:,} | 0 |
| after {sessions:,} more connected and closed | {after_again:,} | {left} |

**{per_session:.1f} KiB per idle session**. After closing: {after - baseline:+,} KiB vs baseline; after a
second round: {after_again - after:+,} KiB more (a leak would grow by about as much again; the allocator's
high-water mark, reused by the next sessions, does not). Sessions refused: {step.get("refused")},
{again.get("refused")}.
"""


def settled_rss(server: Server) -> int:
    """RSS once /health counts no session (closes finish asynchronously), plus a second for the frees."""
    deadline = time.monotonic() + 10
    while server.health().get("sessions") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    return server.rss_kib()


def deepgram_section(steps: Sequence[int], seconds: float, log_dir: Path) -> str:
    """The service between a client and a Deepgram-compatible server that answers every frame at once."""
    print("deepgram: overhead each side of the loopback Deepgram server", flush=True)
    server_core, load_core = cores()
    rows = []
    affinity = os.sched_getaffinity(0)
    try:
        if load_core is not None:
            os.sched_setaffinity(0, {load_core})  # the test server's thread shares the generator's core
        for n in steps:
            if not BUDGET.allows(f"deepgram N={n}", seconds + STEP_OVERHEAD_S):
                break
            row = deepgram_step(n, seconds, log_dir, server_core, load_core)
            rows.append(row)
            print(f"  deepgram N={n:<4} in {row[2]}  out {row[3]}  {describe(row[1])}", flush=True)
            if row[1].failed or row[1].p99 > P99_LIMIT_MS:
                break
    finally:
        os.sched_setaffinity(0, affinity)
    table = [
        "| N | client -> Deepgram p50 / p99 / max ms | Deepgram -> client p50 / p99 / max ms |"
        " round trip p50 / p99 ms | server CPU % | |",
        "|---|---|---|---|---|---|",
    ]
    for n, step, inbound_stats, outbound_stats in rows:
        table.append(
            f"| {n} | {inbound_stats} | {outbound_stats} | {fmt(step.get('rtt_p50_ms'), 2)} /"
            f" {fmt(step.get('rtt_p99_ms'), 2)} | {fmt(step.server_cpu_pct, 0)} | {step.failed or ''} |"
        )
    return f"""## Deepgram path: what the service adds on each side

presales-ws on its Deepgram engine (the real SDK) against the loopback Deepgram-compatible test server
(`tests/deepgram_server.py`, `echo_frames`), which answers every 20 ms frame at once with a final whose
word is the frame id. Both sides are timed on CLOCK_MONOTONIC, shared by the processes: client frame sent
-> the test server reading it (service inbound: session, replay buffer, pump, SDK send), and the test
server sending the final -> the client reading it (outbound: SDK parse, results, session, outbox). The
test server runs on the generator's core, so at higher N its own queueing shows in both columns.

{chr(10).join(table)}
"""


def deepgram_step(
    n: int, seconds: float, log_dir: Path, server_core: int | None, load_core: int | None
) -> tuple[int, Step, str, str]:
    """One run: (N, the step, client -> Deepgram stats, Deepgram -> client stats), over the window's frames."""
    from tests.deepgram_server import FakeDeepgram, Script

    with FakeDeepgram(Script(()), api_key=DEEPGRAM_KEY, record_audio=False, echo_frames=True) as fake:
        target = presales("binary", TRANSCRIBER="deepgram", DEEPGRAM_API_KEY=DEEPGRAM_KEY, DEEPGRAM_URL=fake.url)
        with running(target, server_core, log_dir) as server:
            step = run_load(server, server.url, n, seconds, "binary", load_core, dump_frames=True)
        echoes = {frame_id: (got, sent) for c in fake.connections for frame_id, got, sent in c.echoes}
    step.target = "presales-ws deepgram"
    window = (step.get("window_start"), step.get("window_end"))
    inbound, outbound = [], []
    for frame_id, client_sent, client_received in step.result.get("frames") or []:
        if not (window[0] <= client_sent < window[1]) or frame_id not in echoes:
            continue
        got, sent = echoes[frame_id]
        inbound.append(got - client_sent)
        if client_received:
            outbound.append(client_received - sent)
    inbound.sort()
    outbound.sort()
    step.result.pop("frames", None)
    return n, step, stats(inbound), stats(outbound)


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    p = [values[min(len(values) - 1, round(q * (len(values) - 1)))] * 1000 for q in (0.5, 0.99)]
    return f"{p[0]:.2f} / {p[1]:.2f} / {values[-1] * 1000:.2f}"


def machine_section(command: str) -> str:
    from presales_ws.app import create_app  # noqa: F401 - the versions below are the ones the server imports
    from presales_ws.config import Settings
    from presales_ws.server import uvicorn_config

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    versions = ", ".join(f"{name} {_version(name)}" for name in VERSIONS_OF)
    config = uvicorn_config(_no_app, Settings())
    config.load()
    server_core, load_core = cores()
    pinning = (
        f"server on core {server_core}, load generator on core {load_core} (taskset)"
        if server_core is not None
        else "not pinned (one core, or no taskset): server and generator share the CPU"
    )
    return f"""## Machine and command

`{command}` ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})

- {os.cpu_count()} cores, {model}; load average at start {", ".join(f"{x:.2f}" for x in os.getloadavg())}
- {pinning}
- Python {platform.python_version()}; {versions}
- uvicorn protocols: ws `{config.ws_protocol_class.__name__ if config.ws_protocol_class else "-"}`,
  http `{getattr(config.http_protocol_class, "__name__", "-")}`, loop {_loop_name()} (same settings for every server:
  `bench/peers/__init__.py` uses `presales-ws serve`'s uvicorn.Config, server.uvicorn_config)
"""


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """Only for asking uvicorn which protocol classes the configuration resolves to."""


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _loop_name() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


# --- main ----------------------------------------------------------------------------------------------------

SECTIONS = ("overhead", "peer", "memory", "deepgram")
# The embedded transcriber's latency ("embedded" in docs/BENCHMARKS.md) is bench/speech_latency.py's: real
# speech at real time needs a quiet machine of its own; `make bench` runs it after this.


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: servers and generators are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--steps", help=f"session counts for overhead/limit (default {','.join(map(str, STEPS))})")
    parser.add_argument("--peer-steps", help=f"for the peer section (default {','.join(map(str, PEER_STEPS))})")
    parser.add_argument("--deepgram-steps", help=f"default {','.join(map(str, DEEPGRAM_STEPS))}")
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement window per step")
    parser.add_argument("--idle-sessions", type=int, default=IDLE_SESSIONS)
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="skip steps that would run past this")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    def ints(text: str | None, default: Sequence[int]) -> list[int]:
        return [int(x) for x in text.split(",")] if text else list(default)

    raise_open_files_limit(4 * max([*ints(args.steps, STEPS), args.idle_sessions]) + 1024)
    command = ".venv/bin/python -m bench.perf" + (" " + shlex.join(sys.argv[1:]) if len(sys.argv) > 1 else "")
    started = time.monotonic()
    BUDGET.deadline = started + args.budget_s
    bodies: dict[str, str] = {"machine": machine_section(command)}
    print(bodies["machine"], flush=True)
    with tempfile.TemporaryDirectory(prefix="presales-bench-") as tmp:
        log_dir = Path(tmp)
        if "overhead" in only:
            bodies["overhead"] = overhead_and_limit(ints(args.steps, STEPS), args.seconds, log_dir)
        if "peer" in only:
            bodies["peer"] = peer_section(ints(args.peer_steps, PEER_STEPS), args.seconds, log_dir)
        if "memory" in only:
            bodies["memory"] = memory_section(args.idle_sessions, IDLE_HOLD_S, log_dir)
        if "deepgram" in only:
            bodies["deepgram"] = deepgram_section(ints(args.deepgram_steps, DEEPGRAM_STEPS), args.seconds, log_dir)
    bodies["machine"] += f"- whole run: {time.monotonic() - started:.0f} s (budget {args.budget_s:.0f} s)\n"
    if BUDGET.skipped:
        bodies["machine"] += f"- skipped for time: {', '.join(BUDGET.skipped)}\n"
    for name, body in bodies.items():
        print(body, flush=True)
        if not args.no_write:
            write_section("BENCHMARKS.md", name, body, "Benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
