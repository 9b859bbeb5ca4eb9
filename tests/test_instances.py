"""Two service instances behind one address share a Redis: a session survives the loss of the one holding it.

Real processes (SIGKILL is a crash, SIGTERM a deploy's drain), a real redis-server, the Deepgram engine against the
fake Deepgram (it diarizes, so roles are learned), and a loopback proxy standing in for the PaaS router.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
import redis

from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import ServerMessage, Status
from presales_ws.resume.state import decoder
from tests.deepgram_server import FakeDeepgram, Script
from tests.redis_server import RedisServer, free_port
from tests.support import FIXTURES, MANIFEST, finals
from tests.tcp_proxy import CuttingProxy

pytestmark = pytest.mark.anyio

KEY = "test-key-0123456789"
CALL = "call_two_channel.wav"
CALL_TURNS = [u["text"] for u in MANIFEST[CALL]["utterances"]]
FRAME_BYTES = 640  # 20 ms of 16 kHz mono


def call_mono_pcm() -> bytes:
    stereo = np.frombuffer(read_wav(FIXTURES / CALL).pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
    return stereo.sum(axis=1).clip(-32768, 32767).astype("<i2").tobytes()


class Instance:
    """`presales-ws serve` in a process of its own, on a free port."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM", "API_KEYS", "REDIS", "TRANS"))}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "presales_ws", "serve", "--port", str(self.port)],
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    async def wait_healthy(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as http:
            with anyio.fail_after(60):
                while True:
                    try:
                        if (await http.get("/health")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(15)

    @property
    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisServer, Instance, Instance]]:
    store = RedisServer().start()
    with FakeDeepgram(Script.from_manifest(CALL, speakers={0: 1, 1: 0}, mono_mix=True), api_key=KEY) as fake:
        env = {
            "DEEPGRAM_API_KEY": KEY,
            "DEEPGRAM_URL": fake.url,
            "DEEPGRAM_ENDPOINTING_MS": "500",
            "REDIS_URL": store.url,
            "RESUME_WINDOW_S": "60",
            "RATE_LIMIT_FACTOR": "100",
            "LOG_FORMAT": "json",
        }
        first, second = Instance("first", tmp_path, env), Instance("second", tmp_path, env)
        try:
            yield store, first, second
        finally:
            first.stop()
            second.stop()
            store.stop()


async def wait_for_shared_finals(store: RedisServer, count: int) -> None:
    """Until the shared state counts `count` finals' evidence (written off the hot path, a moment after them)."""
    client = redis.Redis(port=store.port)
    try:
        with anyio.fail_after(10):
            while True:
                names = client.keys("presales:session:*")
                raw = client.get(names[0]) if names else None
                if raw is not None and sum(decoder.decode(raw).questions.values()) >= count:
                    return
                await anyio.sleep(0.02)
    finally:
        client.close()


async def call_across_a_lost_instance(
    store: RedisServer, first: Instance, second: Instance, lose: signal.Signals
) -> list[ServerMessage]:
    """Stream the call through the proxy to `first`; once roles are known, send `first` the signal and let the
    proxy route new connections to `second`. Returns every message the client got."""
    await first.wait_healthy()
    await second.wait_healthy()
    proxy = await CuttingProxy(first.port).start()
    pcm = call_mono_pcm()
    messages: list[ServerMessage] = []
    try:
        with anyio.fail_after(90):
            async with connect(proxy.ws_url) as session:
                messages.append(session.ready)

                async def sender() -> None:
                    for offset in range(0, len(pcm), FRAME_BYTES):
                        await session.send_pcm(pcm[offset : offset + FRAME_BYTES])
                        await anyio.sleep(0.005)
                    await session.stop()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    async for message in session:
                        messages.append(message)
                        if isinstance(message, Status) and message.state == "roles" and first.process.poll() is None:
                            await wait_for_shared_finals(store, 2)  # the customer's two questions
                            proxy.retarget(second.port)
                            first.process.send_signal(lose)
                            if lose == signal.SIGKILL:
                                proxy.cut()
    finally:
        await proxy.stop()
    return messages


async def test_sigkill_of_the_instance_holding_a_session(cluster: tuple[RedisServer, Instance, Instance]) -> None:
    store, first, second = cluster
    messages = await call_across_a_lost_instance(store, first, second, signal.SIGKILL)

    readies = [m for m in messages if isinstance(m, Status) and m.state == "ready"]
    assert len(readies) == 2, second.log[-3000:]
    assert readies[1].resumed is True and readies[1].session_id == readies[0].session_id
    assert readies[1].roles == {"0": "customer", "1": "consultant"}  # the evidence came along
    got = finals(messages)
    assert [m.text for m in got] == CALL_TURNS  # every turn once, none repeated
    assert got[-1].speaker == "consultant"  # labelled on the second instance from the first one's evidence
    assert abs(got[-1].start - MANIFEST[CALL]["utterances"][-1]["start_s"]) < 0.05  # on the session's clock
    assert isinstance(messages[-1], Status) and messages[-1].state == "closed"
    assert '"event": "session.connected"' in second.log
    token = readies[0].resume_token
    assert token and token not in first.log and token not in second.log  # a token is never logged


async def test_a_drained_instance_hands_its_session_on(cluster: tuple[RedisServer, Instance, Instance]) -> None:
    store, first, second = cluster
    messages = await call_across_a_lost_instance(store, first, second, signal.SIGTERM)

    statuses = [m for m in messages if isinstance(m, Status)]
    readies = [m for m in statuses if m.state == "ready"]
    assert "closing" in [m.state for m in statuses]  # the drain announced itself, flushed, closed 1012
    assert len(readies) == 2 and readies[1].resumed is True and readies[1].session_id == readies[0].session_id
    got = finals(messages)
    assert [m.text for m in got] == CALL_TURNS
    assert got[-1].speaker == "consultant"
    assert first.process.wait(30) is not None
    assert '"event": "server.drained"' in first.log and '"cut": 0' in first.log
