"""SIGTERM to a real server process: every live session gets its finals, then 1012; none is cut."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from presales_ws.client import connect
from presales_ws.protocol import ServerMessage, Status
from presales_ws.wavfile import read_wav
from tests.deepgram_server import FakeDeepgram, Script
from tests.support import FIXTURES, final_text

pytestmark = pytest.mark.anyio

KEY = "drain-test-key-0123456789"
SESSIONS = 50
FILE = "integrations_answer_us.wav"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigterm_drains_fifty_sessions_mid_utterance(tmp_path: Path) -> None:
    pcm = read_wav(FIXTURES / FILE).pcm
    cut = len(pcm) * 3 // 4 // 640 * 640  # mid-sentence: no endpointing yet, the final is still to come
    port = free_port()
    with FakeDeepgram(Script.from_manifest(FILE), api_key=KEY) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM", "API_KEYS"))}
        env.update(
            DEEPGRAM_API_KEY=KEY,
            DEEPGRAM_URL=fake.url,
            LOG_FORMAT="json",
            DRAIN_TIMEOUT_S="20",
            RATE_LIMIT_FACTOR="100",
            MAX_SESSIONS=str(2 * SESSIONS),
        )
        log_path = tmp_path / "server.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the test needs the handle to signal
                [sys.executable, "-m", "presales_ws", "serve", "--port", str(port)],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as http:
                with anyio.fail_after(30):
                    while True:
                        try:
                            if (await http.get("/health")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await anyio.sleep(0.1)

                results: list[tuple[list[ServerMessage], int | None]] = []
                all_sent = anyio.Event()
                sent = 0

                async def one() -> None:
                    nonlocal sent
                    async with connect(f"ws://127.0.0.1:{port}/ws/session") as session:
                        await session.send_pcm(pcm[:cut])
                        sent += 1
                        if sent == SESSIONS:
                            all_sent.set()
                        results.append(([m async for m in session], session.close_code))

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for _ in range(SESSIONS):
                            tg.start_soon(one)
                        await all_sent.wait()
                        received = lambda: sum(c.audio_bytes for c in fake.connections) == SESSIONS * cut  # noqa: E731
                        assert await anyio.to_thread.run_sync(fake.wait_for, received, 20.0)
                        process.send_signal(signal.SIGTERM)
                        started = time.monotonic()
                        health = await http.get("/health")
                        assert health.status_code == 503 and health.json()["reason"] == "shutting down"
            drained_in = time.monotonic() - started
            assert await anyio.to_thread.run_sync(process.wait, 30) is not None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert len(results) == SESSIONS
    for messages, close_code in results:
        assert close_code == 1012
        states = [m.state for m in messages if isinstance(m, Status)]
        assert "closing" in states and states[-1] == "closed"
        text = final_text(messages)
        assert text.startswith("Yes, we integrate with Salesforce"), text  # the words received before SIGTERM
    log = log_path.read_text()
    assert '"event": "server.drained"' in log and '"cut": 0' in log, log[-2000:]
    assert KEY not in log
    print(f"\n{SESSIONS} sessions drained in {drained_in:.2f} s")
