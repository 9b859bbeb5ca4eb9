"""Clients vanish at the worst moments; afterwards no session task, transcriber stream or registry entry is left."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import anyio
import pytest

from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from tests.conftest import LiveServer, make_settings
from tests.deepgram_server import FakeDeepgram, Script
from tests.support import FIXTURES

pytestmark = pytest.mark.anyio

KEY = "faults-test-key-0123456789"
FILE = "integrations_answer_us.wav"
PCM = read_wav(FIXTURES / FILE).pcm


@pytest.fixture(scope="module", params=["local", "deepgram"])
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    if request.param == "local":
        live = LiveServer(make_settings(local_max_streams=64)).start()
        yield live
        live.stop()
        return
    with FakeDeepgram(Script.from_manifest(FILE), api_key=KEY) as fake:
        live = LiveServer(make_settings(deepgram_api_key=KEY, deepgram_url=fake.url)).start()
        yield live
        live.stop()


async def server_tasks() -> int:
    return len(asyncio.all_tasks())


def settled(server: LiveServer, baseline_tasks: int) -> bool:
    service = server.service
    return (
        len(service.registry) == 0
        and service.transcriber.open_streams == 0
        and server.call(server_tasks).result(5) <= baseline_tasks
    )


async def vanish_during_handshake(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"GET /ws/session HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")


async def vanish_mid_utterance(server: LiveServer, rng: random.Random) -> None:
    async with connect(server.ws_url) as session:
        await session.send_pcm(PCM[: rng.randrange(640, len(PCM)) // 2 * 2])
        await anyio.sleep(rng.random() * 0.3)


async def vanish_during_stop(server: LiveServer, rng: random.Random) -> None:
    async with connect(server.ws_url) as session:
        await session.send_pcm(PCM[: len(PCM) // 2 // 2 * 2])
        await session.stop()
        await anyio.sleep(rng.random() * 0.05)


async def vanish_mid_frame(server: LiveServer, rng: random.Random) -> None:
    async with connect(server.ws_url) as session:
        await session.send_pcm(PCM[:32000])
        session.ws.transport.abort()  # no close frame: a network drop


async def test_random_disconnects_leave_nothing_behind(server: LiveServer) -> None:
    baseline = server.call(server_tasks).result(5)
    rng = random.Random(11)
    for _ in range(12):
        async with anyio.create_task_group() as tg:
            tg.start_soon(vanish_during_handshake, server)
            tg.start_soon(vanish_mid_utterance, server, rng)
            tg.start_soon(vanish_during_stop, server, rng)
            tg.start_soon(vanish_mid_frame, server, rng)
    assert await anyio.to_thread.run_sync(server.wait_until, lambda: settled(server, baseline), 20.0), (
        len(server.service.registry),
        server.service.transcriber.open_streams,
        server.call(server_tasks).result(5),
        baseline,
    )


async def test_disconnect_during_drain_leaves_nothing_behind() -> None:
    live = LiveServer(make_settings()).start()
    try:
        baseline = live.call(server_tasks).result(5)
        async with connect(live.ws_url) as session:
            await session.send_pcm(PCM[: len(PCM) // 2 // 2 * 2])
            drained = live.call(live.service.drain)
            await anyio.sleep(0.05)
        assert await anyio.to_thread.run_sync(drained.result, 30) == 0
        assert await anyio.to_thread.run_sync(live.wait_until, lambda: settled(live, baseline), 20.0)
    finally:
        live.stop()
