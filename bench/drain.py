"""SIGTERM to a real `presales-ws serve` process with N sessions mid-utterance (Deepgram path, loopback).

    .venv/bin/python -m bench.drain [--sessions 50]

Every session must get its finals (the words it sent before the signal), `status: closing`/`closed` and a
1012 close. Prints the figures and writes docs/RELIABILITY.md (section "drain"). tests/test_drain.py runs it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from bench.report import write_section
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import ServerMessage
from tests.deepgram_server import FakeDeepgram, Script

KEY = "drain-test-key-0123456789"
FILE = "integrations_answer_us.wav"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


@dataclass
class DrainRun:
    sessions: list[tuple[list[ServerMessage], int | None]] = field(default_factory=list)
    health_after_signal: int = 0
    health_reason: str | None = None
    drain_s: float = 0.0
    exit_code: int | None = None
    log: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drain_run(sessions: int, workdir: Path) -> DrainRun:
    """Start the server, open `sessions` sessions each mid-sentence, SIGTERM it, collect what clients got."""
    pcm = read_wav(FIXTURES / FILE).pcm
    cut = len(pcm) * 3 // 4 // 640 * 640  # mid-sentence: no endpointing yet, the final is still to come
    port = free_port()
    run = DrainRun()
    with FakeDeepgram(Script.from_manifest(FILE), api_key=KEY) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM", "API_KEYS"))}
        env.update(
            DEEPGRAM_API_KEY=KEY,
            DEEPGRAM_URL=fake.url,
            LOG_FORMAT="json",
            DRAIN_TIMEOUT_S="20",
            RATE_LIMIT_FACTOR="100",
            MAX_SESSIONS=str(2 * sessions),
            MAX_SESSIONS_PER_KEY=str(2 * sessions),
        )
        log_path = workdir / "server.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; we need the handle to signal it
                [sys.executable, "-m", "presales_ws", "serve", "--port", str(port)],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                with anyio.fail_after(30):
                    while True:
                        try:
                            if (await http.get("/health")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await anyio.sleep(0.1)
                all_sent = anyio.Event()
                sent = 0

                async def one() -> None:
                    nonlocal sent
                    async with connect(f"ws://127.0.0.1:{port}/ws/session", auto_resume=False) as session:
                        await session.send_pcm(pcm[:cut])
                        sent += 1
                        if sent == sessions:
                            all_sent.set()
                        run.sessions.append(([m async for m in session], session.close_code))

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for _ in range(sessions):
                            tg.start_soon(one)
                        await all_sent.wait()

                        def everything_received() -> bool:
                            return sum(c.audio_bytes for c in fake.connections) == sessions * cut

                        await anyio.to_thread.run_sync(fake.wait_for, everything_received, 20.0)
                        process.send_signal(signal.SIGTERM)
                        started = time.monotonic()
                        health = await http.get("/health")
                        run.health_after_signal = health.status_code
                        run.health_reason = health.json().get("reason")
                run.drain_s = time.monotonic() - started
            run.exit_code = await anyio.to_thread.run_sync(process.wait, 30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    run.log = log_path.read_text()
    return run


async def main(sessions: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        run = await drain_run(sessions, Path(workdir))
    codes: dict[int | None, int] = {}
    for _, code in run.sessions:
        codes[code] = codes.get(code, 0) + 1
    with_final = sum(1 for messages, _ in run.sessions if any(getattr(m, "is_final", False) for m in messages))
    body = f"""## Drain: SIGTERM with {sessions} sessions mid-utterance

`.venv/bin/python -m bench.drain --sessions {sessions}` (real `presales-ws serve` process, Deepgram path against
the loopback test server; each session has sent 3/4 of a sentence, no final yet, when SIGTERM arrives)

| figure | value |
|---|---|
| /health right after SIGTERM | {run.health_after_signal} ({run.health_reason}) |
| sessions that received their final | {with_final} / {sessions} |
| close codes | {", ".join(f"{code}: {n}" for code, n in sorted(codes.items(), key=str))} |
| SIGTERM -> last session closed | {run.drain_s:.2f} s (DRAIN_TIMEOUT_S 20) |
| server exit | {run.exit_code} (uvicorn re-raises the SIGTERM after its shutdown) |
"""
    print(body)
    write_section("RELIABILITY.md", "drain", body, "Reliability")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    anyio.run(main, args.sessions)
