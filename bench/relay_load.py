"""The relay bench's load generator: N real-time sessions of 20 ms frames, round trip per answered frame.

    .venv/bin/python -m bench.relay_load --url ws://127.0.0.1:8000/ws/session --sessions 50 --seconds 4

Speaks to presales-ws (its `transcript` messages) and to the bare relay (Deepgram's `Results`, forwarded as
they are) with the same WebSocket client, websockets' asyncio one, so the generator's cost per frame is the
same for both. The upstream (bench/peers/deepgram_cadence.py) answers on the audio's own clock, an interim
every 0.25 s and a final every 1 s, and each answer ends exactly where the audio it has heard ends: the
frame whose end is the answer's end is the one that completed it. Round trip = that frame sent -> the first
message covering it received. Frames between two answers have no answer of their own (they wait for the
cadence, not for the service) and are not counted.

The audio (`--audio`): `speech` (the default) is the real recorded speech of tests/fixtures/real, each session
starting at its own place in it, so the service's end of turn (Silero VAD behind an energy gate) works as on a
call; `quiet` is the same quiet, steady signal in every frame (the energy gate then skips Silero almost always:
what the figures before 2026-11-25 22:40 UTC measured).

Output, as bench/load.py's for bench/perf.py's `run_load`: `PHASE` lines, then one `RESULT <json>` line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.load import (
    FRAME_BYTES,
    FRAME_S,
    STAGGER_S,
    frame_tail,
    install_uvloop,
    percentile,
    phase,
    raise_open_files_limit,
)

REAL_SPEECH = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "real"
ANSWER_EVERY_S = 0.25  # the upstream's interim cadence: one answer per this much audio
CONNECT_CONCURRENCY = 64
DRAIN_S = 2.0
OPEN_TIMEOUT_S = 30.0


class Answer(msgspec.Struct):
    """The fields of either server's message that say which audio it covers."""

    type: str = ""
    end: float | None = None  # presales-ws transcript
    start: float | None = None  # Deepgram Results (with duration)
    duration: float | None = None


_decode = msgspec.json.Decoder(Answer).decode


@dataclass
class Log:
    n_frames: int
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self.sent_at = [0.0] * self.n_frames
        self.received_at = [0.0] * self.n_frames


def covered_frame(answer: Answer) -> int | None:
    """The index of the frame whose end is the answer's end, or None for a message that is no answer."""
    if answer.type == "transcript" and answer.end is not None:
        end = answer.end
    elif answer.type == "Results" and answer.start is not None and answer.duration is not None:
        end = answer.start + answer.duration
    else:
        return None
    return round(end / FRAME_S) - 1


def answer_frames(n_frames: int) -> Iterator[int]:
    """The frames that complete an answer: those that carry the audio past a multiple of ANSWER_EVERY_S."""
    for index in range(n_frames):
        if int((index + 1) * FRAME_S / ANSWER_EVERY_S + 1e-9) > int(index * FRAME_S / ANSWER_EVERY_S + 1e-9):
            yield index


async def receive(ws: ClientConnection, log: Log) -> None:
    async for message in ws:
        now = time.monotonic()
        try:
            answer = _decode(message)
        except msgspec.DecodeError:
            log.errors += 1
            continue
        if answer.type == "error":
            log.errors += 1
        frame = covered_frame(answer)
        if frame is not None and 0 <= frame < log.n_frames and not log.received_at[frame]:
            log.received_at[frame] = now


Frames = Callable[[int], bytes]  # sequence -> that frame's bytes


def quiet_frames() -> Frames:
    tail = frame_tail()
    return lambda sequence: sequence.to_bytes(8, "little") + tail


def speech_frames(index: int, sessions: int) -> Frames:
    """Session `index`'s frames: the real-speech fixtures end to end (16 kHz mono s16), from its own offset."""
    speech = _speech()
    count = len(speech) // FRAME_BYTES
    first = index * count // max(1, sessions)

    def frame(sequence: int) -> bytes:
        at = (first + sequence) % count * FRAME_BYTES
        return speech[at : at + FRAME_BYTES]

    return frame


@functools.cache
def _speech() -> bytes:
    from presales_ws.client.wavfile import read_wav

    return b"".join(read_wav(path).pcm for path in sorted(REAL_SPEECH.glob("*.wav")))


async def stream(ws: ClientConnection, log: Log, start_at: float, frames: Frames) -> None:
    for sequence in range(log.n_frames):
        due = start_at + sequence * FRAME_S
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        log.sent_at[sequence] = now
        log.send_lag_s.append(now - due)
        await ws.send(frames(sequence))


async def run(url: str, sessions: int, seconds: float, audio: str = "speech") -> dict[str, object]:
    raise_open_files_limit(sessions * 2 + 256)
    n_frames = round((STAGGER_S + seconds) / FRAME_S)
    logs = [Log(n_frames) for _ in range(sessions)]
    handshakes = asyncio.Semaphore(CONNECT_CONCURRENCY)
    settled = 0
    connected = 0
    all_settled = asyncio.Event()
    go = asyncio.Event()
    start_at = 0.0
    refusals: dict[str, int] = {}
    quiet = quiet_frames()

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == sessions:
            all_settled.set()

    async def one(index: int, log: Log) -> None:
        nonlocal connected
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with handshakes:
                    ws = await stack.enter_async_context(
                        connect(url, compression=None, open_timeout=OPEN_TIMEOUT_S, max_size=2**20)
                    )
                    await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S)  # ready: upstream connected
            except Exception as exc:
                refusals[type(exc).__name__] = refusals.get(type(exc).__name__, 0) + 1
                settle()
                return
            connected += 1
            settle()
            receiver = asyncio.create_task(receive(ws, log))
            try:
                await go.wait()
                frames = quiet if audio == "quiet" else speech_frames(index, sessions)
                await stream(ws, log, start_at + STAGGER_S * index / sessions, frames)
                await asyncio.sleep(DRAIN_S)
            except ConnectionClosed:
                pass
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receiver

    tasks = [asyncio.create_task(one(i, log)) for i, log in enumerate(logs)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_settled.wait(), OPEN_TIMEOUT_S + 10)
    phase("connected", connected)
    usage_start, clock_start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    start_at = clock_start + 0.1
    window_start = start_at + STAGGER_S
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
    expected = answered = 0
    for log in logs:
        for index in answer_frames(log.n_frames):
            sent, received = log.sent_at[index], log.received_at[index]
            if sent and window_start <= sent < window_end:
                expected += 1
                if received:
                    answered += 1
                    rtts.append(received - sent)
        lags += log.send_lag_s
    rtts.sort()
    lags.sort()
    cpu_s = (usage_end.ru_utime - usage_start.ru_utime) + (usage_end.ru_stime - usage_start.ru_stime)
    return {
        "sessions": sessions,
        "connected": connected,
        "refused": sessions - connected,
        "refusals": refusals,
        "frames_sent": expected,  # answers due in the window (perf.run_load's loss check reads these two)
        "frames_lost": expected - answered,
        "window_frames": round(connected * seconds / FRAME_S),
        "frames_per_s": round(connected / FRAME_S, 1),
        "rtt_p50_ms": round(percentile(rtts, 50) * 1000, 3),
        "rtt_p99_ms": round(percentile(rtts, 99) * 1000, 3),
        "rtt_max_ms": round((rtts[-1] if rtts else float("nan")) * 1000, 3),
        "send_lag_p99_ms": round(percentile(lags, 99) * 1000, 3),
        "client_cpu_pct": round(100 * cpu_s / max(1e-9, clock_end - clock_start), 1),
        "errors": sum(log.errors for log in logs),
        "bytes_per_frame": FRAME_BYTES,
        "audio": audio,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--audio", choices=("speech", "quiet"), default="speech")
    args = parser.parse_args(argv)
    install_uvloop()
    if args.audio == "speech":
        _speech()  # read before the clock starts
    result = asyncio.run(run(args.url, args.sessions, args.seconds, args.audio))
    print("RESULT " + msgspec.json.encode(result).decode(), flush=True)
    print(f"bench.relay_load: {result}", file=sys.stderr)
    return 0 if result["connected"] == args.sessions else 1


if __name__ == "__main__":
    sys.exit(main())
