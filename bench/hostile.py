"""Hostile and broken clients against a real `presales-ws serve` process, over raw sockets (issue 17).

    .venv/bin/python -m bench.hostile

Each attack is bounded in count and time and measured from the outside: the server's RSS, what the client
receives, when its socket is closed, when the server exits. The server runs the bench-echo engine with
`API_KEYS` set (no transcription: the transport and the session are what is attacked). Prints a table and
writes docs/RELIABILITY.md (section "hostile"); tests/test_hostile.py runs the same attacks at small sizes
and asserts the bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from bench.perf import Server, presales, running
from bench.report import write_section
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Transcript
from tests.deepgram_server import FIXTURES, FakeDeepgram, Plan, Script, write_mono_mix

KEY = "hostile-bench-key-0123456789"
WRONG_KEY = "not-the-key-0123456789abcdef"
SESSION_PATH = "/ws/session?sample_rate=16000&channels=1"
OP_TEXT, OP_CLOSE, OP_PING = 0x1, 0x8, 0x9
SMALL_RCVBUF_BYTES = 4096  # a client that stops reading: the server's writes back up sooner
HUGE_HEADER_BYTES = 64 * 1024 * 1024
CLOSED_WAIT_S = 30.0  # how long any probe waits for the server to close a socket


def server_env(**extra: str) -> dict[str, str]:
    # RESUME_WINDOW_S=0: a probe that vanishes ends its session at once (kept for a resume, it would stay in
    # /health's count for a minute); parked sessions have their own tests (tests/test_resume.py).
    env = {"API_KEYS": KEY, "LOG_LEVEL": "info", "RESUME_WINDOW_S": "0"}
    env.update(extra)
    return env


@contextlib.contextmanager
def hostile_server(log_dir: Path, **env: str) -> Iterator[Server]:
    with running(presales("hostile", **server_env(**env)), None, log_dir) as server:
        yield server


# --- raw sockets --------------------------------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One masked client frame (payloads under 64 KiB)."""
    mask = os.urandom(4)
    length = (
        bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    )
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode]) + length + mask + masked


def upgrade(port: int, key: str | None, *, rcvbuf: int | None = None, extra: str = "") -> tuple[socket.socket, int]:
    """A WebSocket handshake by hand; returns the socket and the HTTP status of the answer."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    sock.sendall(
        (
            f"GET {SESSION_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {os.urandom(16).hex()[:22]}==\r\nSec-WebSocket-Version: 13\r\n{auth}{extra}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: what follows the head stays unread in the socket
        if not chunk:
            return sock, 0
        head += chunk
    return sock, int(head.split(b" ", 2)[1])


def closed_within(sock: socket.socket, timeout_s: float) -> tuple[float | None, bytes]:
    """Read (and keep) everything until the server closes or resets the socket: (seconds taken, bytes read)."""
    started = time.monotonic()
    received = bytearray()
    while (left := timeout_s - (time.monotonic() - started)) > 0:
        readable, _, _ = select.select([sock], [], [], min(left, 0.5))
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except OSError:  # reset
            return time.monotonic() - started, bytes(received)
        if not chunk:
            return time.monotonic() - started, bytes(received)
        received += chunk
    return None, bytes(received)


def close_codes(data: bytes) -> list[int]:
    """Close codes in a stream of server (unmasked) frames, as far as it parses."""
    codes, at = [], 0
    while at + 2 <= len(data):
        opcode, length, at = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if length == 126:
            length, at = struct.unpack("!H", data[at : at + 2])[0], at + 2
        elif length == 127:
            length, at = struct.unpack("!Q", data[at : at + 8])[0], at + 8
        if opcode == OP_CLOSE and length >= 2 and at + 2 <= len(data):
            codes.append(struct.unpack("!H", data[at : at + 2])[0])
        at += length
    return codes


def sessions_open(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
        return int(json.loads(answer.read())["sessions"])


class RssPeak:
    """The server's RSS, sampled every 20 ms in a thread while the block runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.before_kib = self.peak_kib = server.rss_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(Exception):
                self.peak_kib = max(self.peak_kib, self.server.rss_kib())

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.before_kib) / 1024


# --- 4. WebSocket PING flood ---------------------------------------------------------------------------------


@dataclass
class Flood:
    status: int
    sent_mib: float
    rss_growth_mib: float
    reset_after_s: float | None  # the server cut the connection (a refused handshake)
    server_cpu_pct: float  # of one core, over the flood


def ping_flood(server: Server, key: str, seconds: float) -> Flood:
    """PING frames as fast as the socket takes them, never reading a pong, for `seconds`."""
    sock, status = upgrade(server.port, key, rcvbuf=SMALL_RCVBUF_BYTES)
    batch = memoryview(ws_frame(OP_PING, b"x" * 125) * 4000)
    sent, reset_after = 0, None
    sock.settimeout(0.5)
    cpu_before = server.cpu_s()
    with RssPeak(server) as rss:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            offset = 0
            while offset < len(batch) and time.monotonic() - started < seconds:
                try:
                    offset += sock.send(batch[offset:])
                except TimeoutError:
                    continue  # the server reads more slowly than we send: keep pushing
                except OSError:
                    reset_after = time.monotonic() - started
                    break
            sent += offset
            if reset_after is not None:
                break
        elapsed = time.monotonic() - started
        cpu_pct = 100 * (server.cpu_s() - cpu_before) / elapsed
        time.sleep(0.2)  # what is in flight lands
    sock.close()
    return Flood(status, sent / 2**20, rss.growth_mib, reset_after, cpu_pct)


# --- 3. a client that stops reading --------------------------------------------------------------------------


@dataclass
class StalledReader:
    status: int
    frames_sent: int
    session_gone_after_s: float | None
    closed_after_s: float | None
    close_codes: list[int]


PING = b'{"type":"ping"}'  # answered with a pong, which is never dropped
ECHOED = b'{"type":"' + b"x" * 32_000 + b'"}'  # answered with an `unknown_type` error quoting it: 32 KB back


def stalled_reader(
    server: Server, frame: bytes, *, frames: int, batch: int, limit_s: float = CLOSED_WAIT_S
) -> StalledReader:
    """Send `frames` text frames that each get an answer, never read, then wait for the session and the socket.

    Pings flood the session faster than it writes: its outbox overflows at once (4499). Frames answered by
    32 KB errors (which give way in the outbox rather than overflow it) fill the socket's buffers instead:
    the session's writes stall, with nothing else to end it.
    """
    sock, status = upgrade(server.port, KEY, rcvbuf=SMALL_RCVBUF_BYTES)
    burst = ws_frame(OP_TEXT, frame) * batch
    sent, gone_after, closed_after, received = 0, None, None, b""
    sock.settimeout(2.0)
    started = time.monotonic()
    with contextlib.suppress(OSError):  # the server stopped reading us (its session is gone), or reset us
        while sent < frames:
            sock.sendall(burst)
            sent += batch
    while time.monotonic() - started < limit_s:
        if sessions_open(server.port) == 0:
            gone_after = time.monotonic() - started
            break
        time.sleep(0.25)
    if gone_after is not None:
        waited, received = closed_within(sock, limit_s - (time.monotonic() - started))
        closed_after = None if waited is None else time.monotonic() - started
    sock.close()
    return StalledReader(status, sent, gone_after, closed_after, close_codes(received))


@dataclass
class StalledDrain:
    exit_after_s: float
    exit_code: int | None
    log: str


def sigterm_with_stalled_reader(log_dir: Path, drain_timeout_s: float, **env: str) -> StalledDrain:
    """A client fills its socket with answers it never reads; SIGTERM; how long until the server has exited."""
    with hostile_server(log_dir, DRAIN_TIMEOUT_S=f"{drain_timeout_s:g}", **env) as server:
        sock, _ = upgrade(server.port, KEY, rcvbuf=SMALL_RCVBUF_BYTES)
        sock.settimeout(2.0)
        with contextlib.suppress(OSError):
            sock.sendall(ws_frame(OP_TEXT, ECHOED) * 300)
        time.sleep(1.0)  # the server reads them all, answers, and its writes stall on our full socket
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            code: int | None = server.process.wait(drain_timeout_s + 60)
        except subprocess.TimeoutExpired:
            code = None
        exit_after = time.monotonic() - signalled
        sock.close()
        log = server.log_path.read_text()
    return StalledDrain(exit_after, code, log)


# --- 5. the HTTP surface -------------------------------------------------------------------------------------


@dataclass
class Refusal:
    status: int | None
    closed_after_s: float | None


def send_head(port: int, head: bytes, *, timeout_s: float = CLOSED_WAIT_S) -> Refusal:
    """Send a request head (from a thread: it may be 64 MB) while reading the answer until the socket closes."""
    sock = socket.create_connection(("127.0.0.1", port))

    def push() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(head)

    sender = threading.Thread(target=push, daemon=True)
    started = time.monotonic()
    sender.start()
    waited, answer = closed_within(sock, timeout_s)
    sock.close()
    sender.join(5)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return Refusal(status, None if waited is None else time.monotonic() - started)


def upgrade_head(port: int, extra_headers: str) -> bytes:
    return (
        f"GET {SESSION_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {KEY}\r\n{extra_headers}\r\n"
    ).encode()


def long_header_line(port: int) -> Refusal:
    return send_head(port, upgrade_head(port, "X-Pad: " + "a" * 9000 + "\r\n"))


def many_headers(port: int, count: int = 200) -> Refusal:
    return send_head(port, upgrade_head(port, "".join(f"X-H{i}: {i}\r\n" for i in range(count))))


@dataclass
class HugeHeads:
    refusals: list[Refusal]
    rss_growth_mib: float


def huge_headers(server: Server, clients: int, size: int = HUGE_HEADER_BYTES) -> HugeHeads:
    """`clients` plain HTTP requests at once, each with one `size`-byte header."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * size + b"\r\n\r\n"
    refusals: list[Refusal] = []
    with RssPeak(server) as rss:
        threads = [
            threading.Thread(target=lambda: refusals.append(send_head(server.port, head))) for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CLOSED_WAIT_S + 10)
    return HugeHeads(refusals, rss.growth_mib)


@dataclass
class Slowloris:
    connections: int
    closed: int
    last_closed_after_s: float | None
    rss_growth_mib: float


def slowloris(server: Server, connections: int, limit_s: float) -> Slowloris:
    """Connections that send a request head one header every second and never finish it."""
    with RssPeak(server) as rss:
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(connections)]
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
        open_socks, last_closed = set(socks), None
        next_trickle = started + 1.0
        while open_socks and time.monotonic() - started < limit_s:
            readable, _, _ = select.select(list(open_socks), [], [], 0.2)
            for sock in readable:
                try:
                    gone = not sock.recv(4096)
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    open_socks.discard(sock)
                    last_closed = time.monotonic() - started
            if time.monotonic() >= next_trickle:
                next_trickle += 1.0
                for sock in open_socks:
                    with contextlib.suppress(OSError):
                        sock.send(b"X-a: b\r\n")
    for sock in socks:
        sock.close()
    return Slowloris(connections, connections - len(open_socks), last_closed, rss.growth_mib)


def half_open_cost_kib(server: Server, connections: int, head_bytes: int = 15_000) -> float:
    """Server RSS per connection holding an unfinished request head just under the 16 KiB limit: what a flood
    of half-open connections costs until HEADER_TIMEOUT_S (their number is bounded only by file descriptors)."""
    before = server.rss_kib()
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(connections)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * head_bytes)
    time.sleep(2.0)  # the server reads what they sent (well within HEADER_TIMEOUT_S)
    grown = server.rss_kib() - before
    for sock in socks:
        sock.close()
    return grown / connections


# --- 6. the Deepgram final watchdog over a soak ----------------------------------------------------------------


@dataclass
class WatchdogSoak:
    sessions: int
    audio_s: float
    connections: int
    watchdog_finalizes: int
    finals: int
    turns: int


def watchdog_soak(log_dir: Path, sessions: int, seconds: float, drop_every_s: float) -> WatchdogSoak:
    """Sessions stream the two-speaker call (mixed to mono: pauses of 1 s, not longer than the default
    endpointing) in a loop at real time against the test Deepgram, which cuts every connection after
    `drop_every_s` of audio; counts the Finalize messages the watchdog sent (each `stop` sends one more)."""
    call = "call_two_channel.wav"
    mono = log_dir / "call_mono.wav"
    write_mono_mix(FIXTURES / call, mono)
    pcm = read_wav(mono).pcm
    frame = 640
    drop = int(drop_every_s * 32000)
    plan = Plan(drop_after_bytes={attempt: drop for attempt in range(100 * sessions)})
    finals = 0

    async def one(server: Server, index: int) -> None:
        nonlocal finals
        await anyio.sleep(index * 0.37)  # not all in step
        async with connect(f"ws://127.0.0.1:{server.port}/ws/session", key=KEY) as session:

            async def send() -> None:
                started = anyio.current_time()
                for n in range(int(seconds * 50)):
                    await anyio.sleep(max(0.0, started + n * 0.02 - anyio.current_time()))
                    offset = n * frame % (len(pcm) // frame * frame)
                    await session.send_pcm(pcm[offset : offset + frame])
                await session.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                got = [m async for m in session]
            finals += sum(1 for m in got if isinstance(m, Transcript) and m.is_final and m.text)

    script = Script.from_manifest(call, {0: 1, 1: 0}, mono_mix=True)
    with FakeDeepgram(script, api_key=KEY, plan=plan, record_audio=False) as fake:
        env = {"TRANSCRIBER": "deepgram", "DEEPGRAM_API_KEY": KEY, "DEEPGRAM_URL": fake.url}
        with hostile_server(log_dir, **env) as server:

            async def run_all() -> None:
                async with anyio.create_task_group() as tg:
                    for index in range(sessions):
                        tg.start_soon(one, server, index)

            anyio.run(run_all)
        records = fake.connections
    finalizes = sum(r.control.count("Finalize") for r in records) - sessions
    turns = round(seconds / (len(pcm) / 32000) * len(script.utterances))
    return WatchdogSoak(sessions, seconds, len(records), finalizes, finals, turns * sessions)


# --- the report ----------------------------------------------------------------------------------------------


def fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def main(soak_sessions: int, soak_s: float) -> None:
    rows: list[tuple[str, str, str, str]] = []  # attack, bound, measured, test (tests/test_hostile.py unless said)

    def row(attack: str, bound: str, measured: str, test: str) -> None:
        rows.append((attack, bound, measured, test))
        print(f"  {attack}: {measured}", flush=True)

    with tempfile.TemporaryDirectory() as workdir:
        log_dir = Path(workdir)
        with hostile_server(log_dir) as server:
            for label, key, case in (("a wrong key", WRONG_KEY, "refused"), ("a valid key", KEY, "authenticated")):
                flood = ping_flood(server, key, 10.0)
                cut = f", cut after {fmt_s(flood.reset_after_s)}" if flood.reset_after_s else ""
                row(
                    f"WebSocket PING flood for 10 s with {label}, never reading a pong",
                    "server RSS grows < 64 MiB",
                    f"**+{flood.rss_growth_mib:.1f} MiB** ({flood.sent_mib:.0f} MiB of pings{cut}; server CPU "
                    f"{flood.server_cpu_pct:.0f}% of a core)",
                    f"`test_a_ping_flood_never_read_grows_the_server_by_less_than_64_mib[{case}]`",
                )
            for label, frame, frames, test in (
                (
                    "floods text pings (its outbox overflows)",
                    PING,
                    200_000,
                    "that_never_reads_ends_in_4499_not_internal",
                ),
                ("gets 300 answers of 32 KB (its socket fills, writes stall)", ECHOED, 300, None),
            ):
                reader = stalled_reader(server, frame, frames=frames, batch=100)
                row(
                    f"a client stops reading and {label}",
                    "session ended and socket closed within 30 s, no traceback",
                    f"session gone after **{fmt_s(reader.session_gone_after_s)}**, socket closed after "
                    f"{fmt_s(reader.closed_after_s)}; close codes received: {reader.close_codes or 'none (reset)'}",
                    f"`test_a_ping_flood_{test}`"
                    if test
                    else "`test_a_client_whose_socket_fills_is_cut_after_the_send_timeout`",
                )
            for label, refusal, test in (
                ("an upgrade with a 9 KB header line", long_header_line(server.port), "a_9_kb_header_line"),
                ("an upgrade with 200 headers", many_headers(server.port), "200_headers"),
            ):
                row(
                    label,
                    "431 (or 400) received, socket closed within 5 s",
                    f"**{refusal.status}**, socket closed after {fmt_s(refusal.closed_after_s)}",
                    f"`test_an_upgrade_with_{test}_gets_431_and_the_socket_closes`",
                )
            heads = huge_headers(server, 8)
            statuses = ", ".join(sorted({str(r.status) for r in heads.refusals}))
            slowest = max((r.closed_after_s or math.inf) for r in heads.refusals)
            row(
                "8 plain HTTP requests at once, each with a 64 MB header",
                "16 KiB of head read (+ one 256 KiB socket read), 431",
                f"{statuses}; server RSS **+{heads.rss_growth_mib:.1f} MiB**; sockets closed after {fmt_s(slowest)}",
                "`test_64_mb_headers_are_refused_431_without_being_read_whole`",
            )
            loris = slowloris(server, 300, 30.0)
            row(
                "slowloris: 300 connections sending a header line a second",
                "closed `HEADER_TIMEOUT_S` (10 s) after they opened",
                f"{loris.closed}/300 closed, the last after **{fmt_s(loris.last_closed_after_s)}**; server RSS "
                f"+{loris.rss_growth_mib:.1f} MiB while they were open",
                "`test_slowloris_connections_are_closed_after_the_header_timeout`",
            )
        with hostile_server(log_dir) as fresh:  # a server no earlier attack has grown: a clean per-connection figure
            per_connection = half_open_cost_kib(fresh, 2000)
        row(
            "2,000 connections, each holding a 15 KB request head it never finishes",
            "none in the server but `HEADER_TIMEOUT_S` and file descriptors: see docs/SECURITY.md",
            f"server RSS **{per_connection:.0f} KiB a connection** ({per_connection * 2000 / 1024:.0f} MiB), "
            "released after `HEADER_TIMEOUT_S`",
            "(bench only)",
        )
        drained = sigterm_with_stalled_reader(log_dir, 20.0)
        row(
            "SIGTERM while a client has stopped reading (`DRAIN_TIMEOUT_S` 20)",
            "exit within `DRAIN_TIMEOUT_S` + 5 s",
            f"exit after **{drained.exit_after_s:.1f} s** (the stalled write's `SEND_TIMEOUT_S`), "
            f"code {drained.exit_code}",
            "`test_sigterm_with_a_stalled_reader_exits_within_drain_timeout_plus_5_s` (drain 3 s)",
        )
        soak = watchdog_soak(log_dir, soak_sessions, soak_s, 40.0)
        row(
            f"Deepgram path: {soak.sessions} sessions x {soak.audio_s:.0f} s of a two-speaker call at real time "
            "(pauses = `endpointing`), a drop every 40 s of audio",
            "no watchdog Finalize while words keep coming",
            f"watchdog Finalize calls **{soak.watchdog_finalizes}**; {soak.connections} connections "
            f"({soak.connections - soak.sessions} after drops); {soak.finals} finals for {soak.turns} turns",
            "`tests/test_deepgram.py::test_pauses_as_long_as_endpointing_end_each_turn_with_no_watchdog`, "
            "`::test_watchdog_leaves_speech_whole_while_the_words_keep_coming`",
        )
    table = "\n".join(f"| {a} | {b} | {m} | {t} |" for a, b, m, t in rows)
    body = f"""## Hostile clients: raw sockets against `presales-ws serve`

`.venv/bin/python -m bench.hostile` (a real server process: bench-echo engine, `API_KEYS` set, otherwise the
defaults, `SEND_TIMEOUT_S` 10 and `HEADER_TIMEOUT_S` 10; RSS and CPU are the server process's, RSS sampled
every 20 ms; the last row runs the Deepgram engine against the test server). Tests are in
`tests/test_hostile.py` unless named otherwise; they run the same attacks, smaller, with 2 s timeouts.

| attack | bound | measured | test |
|---|---|---|---|
{table}
"""
    print(body)
    write_section("RELIABILITY.md", "hostile", body, "Reliability")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-sessions", type=int, default=10)
    parser.add_argument("--soak-s", type=float, default=120.0)
    args = parser.parse_args()
    main(args.soak_sessions, args.soak_s)
