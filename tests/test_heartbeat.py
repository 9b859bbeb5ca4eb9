"""The server pings; a client that answers (or streams) stays, a silent one is closed with 4408."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from presales_ws.client import connect
from presales_ws.protocol import Ping, Pong
from tests.conftest import LiveServer, make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fast_heartbeat_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(heartbeat_interval_s=0.2, heartbeat_timeout_s=1.6)).start()
    yield server
    server.stop()


async def test_server_pings_and_a_client_that_answers_stays(fast_heartbeat_server: LiveServer) -> None:
    async with connect(fast_heartbeat_server.ws_url, auto_pong=False) as session:
        pings = 0
        with anyio.move_on_after(4.0):  # 2.5 idle timeouts; 1.6 s outlasts a busy CI machine's stalls
            while True:
                message = await session.recv()
                if isinstance(message, Ping):
                    pings += 1
                    await session.send(Pong(ts=message.ts))
        assert pings >= 3
        assert session.close_code is None
        await session.stop()


async def test_silent_client_is_closed_with_4408(fast_heartbeat_server: LiveServer) -> None:
    async with connect(fast_heartbeat_server.ws_url, auto_pong=False) as session:
        with anyio.fail_after(10), pytest.raises(ConnectionClosed):
            while True:
                await session.recv()  # reads pings, never answers
        assert session.close_code == 4408
    assert await anyio.to_thread.run_sync(
        fast_heartbeat_server.wait_until, lambda: len(fast_heartbeat_server.service.registry) == 0
    )
