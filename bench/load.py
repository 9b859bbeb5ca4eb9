"""The load generator: N sessions streaming 16 kHz mono PCM in real time, as the browser extension does.

    .venv/bin/python -m bench.load --url ws://127.0.0.1:8000/ws/session --sessions 50 --seconds 5 --mode binary

Run it in its own process (bench/perf.py pins it to a core of its own): what it measures is the service
seen from outside. Every session goes through presales_ws.client, THE client. Sessions connect first,
then start streaming staggered over the first second so their frames don't all align; each sends one
640-byte frame (20 ms) every 20 ms, on schedule, whatever comes back. A frame's first 8 bytes carry its
id (session << 32 | sequence); the bench-echo engine, the bare app and the FastAPI peer send it back in a
final's text, so each answer is matched to its frame: round trip = sent -> final received.

Modes: `binary` (binary frames), `json` (`audio_chunk` with base64, the seed's form), `peer` (the same
frames as `json`, for the FastAPI peer), `idle` (connect, send nothing, hold `--seconds`: the heartbeat
keeps sessions alive; for memory per session).

Stdout is for bench/perf.py: `PHASE <name>` lines as they happen (connected, window-start, window-end,
closed), then one `RESULT <json>` line. A summary goes to stderr. Times are CLOCK_MONOTONIC, which other
processes on the machine share (the Deepgram test server's receive times are compared with them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import msgspec

from presales_ws.client import Session, SessionRefused, connect
from presales_ws.protocol import Error, Transcript

FRAME_BYTES = 640  # 20 ms of 16 kHz mono s16
FRAME_S = 0.02
STAGGER_S = 1.0  # session starts are spread over this
CONNECT_CONCURRENCY = 64  # handshakes in flight at once
DRAIN_S = 2.0  # after the last frame, how long answers still count
SEQUENCE_BITS = 32
Mode = Literal["binary", "json", "peer", "idle"]


def raise_open_files_limit(wanted: int = 65536) -> int:
    """1000+ sockets need more than the usual 1024 descriptors; the hard limit allows it on Linux."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def frame_tail() -> bytes:
    """The 632 bytes after the id: a quiet, non-zero signal, the same in every frame."""
    return bytes((i * 37) % 7 for i in range(FRAME_BYTES - 8))


def phase(name: str, detail: object = "") -> None:
    print(f"PHASE {name} {detail}".rstrip(), flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class SessionLog:
    """One session's frames: when each was sent, when its answer came back (0.0: not yet)."""

    index: int
    n_frames: int
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)  # how late each send was against its schedule
    errors: dict[str, int] = field(default_factory=dict)
    unmatched: int = 0  # finals whose id is not one of this session's frames
    done: asyncio.Event = field(default_factory=asyncio.Event)
    answered: int = 0

    def __post_init__(self) -> None:
        self.sent_at = [0.0] * self.n_frames
        self.received_at = [0.0] * self.n_frames


@dataclass
class Result:
    """What perf.py reads; times in ms, rates per second."""

    mode: str
    sessions: int
    connected: int
    refused: int
    refusals: dict[str, int]
    seconds: float
    frames_sent: int
    frames_received: int
    frames_lost: int
    window_s: float
    window_frames_received: int
    frames_per_s: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    rtt_max_ms: float
    send_lag_p99_ms: float
    send_lag_max_ms: float
    client_cpu_pct: float
    errors: dict[str, int]
    unmatched: int
    window_start: float
    window_end: float
    frames: list[tuple[int, float, float]] | None = None  # (frame id, sent, received) with --dump-frames


async def receive(session: Session, log: SessionLog) -> None:
    """Match each final to its frame; anything else is counted (errors) or ignored (statuses)."""
    mask = (1 << SEQUENCE_BITS) - 1
    while True:
        message = await session.recv()
        now = time.monotonic()
        if isinstance(message, Transcript):
            if not message.is_final or not message.text:
                continue
            frame_id = int(message.text)
            sequence = frame_id & mask
            if frame_id >> SEQUENCE_BITS != log.index or sequence >= log.n_frames or log.received_at[sequence]:
                log.unmatched += 1
                continue
            log.received_at[sequence] = now
            log.answered += 1
            if log.answered == log.n_frames:
                log.done.set()
        elif isinstance(message, Error):
            log.errors[message.code] = log.errors.get(message.code, 0) + 1


async def stream(session: Session, log: SessionLog, start_at: float, mode: Mode, tail: bytes) -> None:
    """One frame every 20 ms from `start_at`, on schedule: a late answer never delays the next frame."""
    head = log.index << SEQUENCE_BITS
    for sequence in range(log.n_frames):
        due = start_at + sequence * FRAME_S
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = (head | sequence).to_bytes(8, "little") + tail
        now = time.monotonic()
        log.sent_at[sequence] = now
        log.send_lag_s.append(now - due)
        if mode == "binary":
            await session.send_pcm(frame)
        else:
            await session.send_chunk(frame, sequence=sequence)


async def run(
    url: str, sessions: int, seconds: float, mode: Mode, dump_frames: bool = False, connect_timeout_s: float = 30.0
) -> Result:
    raise_open_files_limit(sessions * 2 + 256)
    # Every session streams through the whole window [start + STAGGER_S, start + STAGGER_S + seconds].
    n_frames = 0 if mode == "idle" else round((STAGGER_S + seconds) / FRAME_S)
    logs = [SessionLog(index, n_frames) for index in range(sessions)]
    refusals: dict[str, int] = {}
    connected = 0
    all_connected = asyncio.Event()
    go = asyncio.Event()
    start_at = 0.0
    handshakes = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tail = frame_tail()
    settled = 0

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == sessions:
            all_connected.set()

    async def one(log: SessionLog) -> None:
        nonlocal connected
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with handshakes:
                    session = await stack.enter_async_context(connect(url, open_timeout_s=connect_timeout_s))
            except (SessionRefused, OSError, TimeoutError) as exc:
                reason = exc.code or "closed" if isinstance(exc, SessionRefused) else type(exc).__name__
                refusals[reason] = refusals.get(reason, 0) + 1
                settle()
                return
            connected += 1
            settle()
            receiver = asyncio.create_task(receive(session, log))
            try:
                await go.wait()
                if mode == "idle":
                    await asyncio.sleep(STAGGER_S + seconds)
                    return
                await stream(session, log, start_at + STAGGER_S * log.index / sessions, mode, tail)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(log.done.wait(), DRAIN_S)
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receiver

    tasks = [asyncio.create_task(one(log)) for log in logs]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_connected.wait(), connect_timeout_s + 5)
    phase("connected", connected)
    usage_start, clock_start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    start_at = clock_start + 0.1
    window_start = start_at + STAGGER_S  # from here every session is streaming
    window_end = window_start + seconds
    go.set()
    await asyncio.sleep(max(0.0, window_start - time.monotonic()))
    phase("window-start")
    await asyncio.sleep(max(0.0, window_end - time.monotonic()))
    phase("window-end")
    usage_end, clock_end = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    phase("closed")

    rtts: list[float] = []
    lags: list[float] = []
    window_received = 0
    errors: dict[str, int] = {}
    frames: list[tuple[int, float, float]] = []
    for log in logs:
        for sequence, (sent, received) in enumerate(zip(log.sent_at, log.received_at, strict=True)):
            if dump_frames and sent:
                frames.append(((log.index << SEQUENCE_BITS) | sequence, sent, received))
            if window_start <= sent < window_end and received:
                rtts.append(received - sent)
                window_received += 1
        lags += log.send_lag_s
        for code, n in log.errors.items():
            errors[code] = errors.get(code, 0) + n
    rtts.sort()
    lags.sort()
    sent_total = sum(1 for log in logs for t in log.sent_at if t)
    received_total = sum(log.answered for log in logs)
    window_s = max(1e-9, window_end - window_start)
    cpu_s = (usage_end.ru_utime - usage_start.ru_utime) + (usage_end.ru_stime - usage_start.ru_stime)
    return Result(
        mode=mode,
        sessions=sessions,
        connected=connected,
        refused=sessions - connected,
        refusals=refusals,
        seconds=seconds,
        frames_sent=sent_total,
        frames_received=received_total,
        frames_lost=sent_total - received_total,
        window_s=round(window_s, 3),
        window_frames_received=window_received,
        frames_per_s=round(window_received / window_s, 1),
        rtt_p50_ms=round(percentile(rtts, 50) * 1000, 3),
        rtt_p99_ms=round(percentile(rtts, 99) * 1000, 3),
        rtt_max_ms=round((rtts[-1] if rtts else float("nan")) * 1000, 3),
        send_lag_p99_ms=round(percentile(lags, 99) * 1000, 3),
        send_lag_max_ms=round((lags[-1] if lags else float("nan")) * 1000, 3),
        client_cpu_pct=round(100 * cpu_s / max(1e-9, clock_end - clock_start), 1),
        errors=errors,
        unmatched=sum(log.unmatched for log in logs),
        window_start=window_start,
        window_end=window_end,
        frames=frames if dump_frames else None,
    )


def install_uvloop() -> str:
    """uvloop, as the servers use (uvicorn's "auto"): the generator spends less of its core per frame."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://host:port/ws/session")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="the measurement window, after the 1 s stagger (idle: holding time)"
    )
    parser.add_argument("--mode", choices=["binary", "json", "peer", "idle"], default="binary")
    parser.add_argument("--dump-frames", action="store_true", help="every frame's (id, sent, received) in RESULT")
    args = parser.parse_args(argv)
    loop_name = install_uvloop()
    result = asyncio.run(run(args.url, args.sessions, args.seconds, args.mode, args.dump_frames))
    print("RESULT " + msgspec.json.encode(asdict(result)).decode(), flush=True)
    summary = {k: v for k, v in asdict(result).items() if k != "frames"}
    print(f"bench.load ({loop_name}): " + json.dumps(summary), file=sys.stderr)
    return 0 if result.connected == result.sessions else 1


if __name__ == "__main__":
    sys.exit(main())
