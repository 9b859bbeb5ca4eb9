"""REDIS_URL: per-key limits across instances, /health's `redis`, and sessions that go on when Redis does not.

A real redis-server on a free loopback port; two service instances in this process share it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import anyio
import httpx
import pytest
import redis

from presales_ws.client import Session, SessionRefused, connect
from presales_ws.protocol import Transcript
from presales_ws.resume.state import decoder
from tests.conftest import LiveServer, make_settings
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio

KEY = "shared-state-test-key-0123"
FRAME = b"\x01\x00" * 320  # 20 ms of 16 kHz mono


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def echo_server(redis_url: str, **overrides: object) -> LiveServer:
    settings = make_settings(
        transcriber="bench-echo",
        bench_echo=True,
        resume_window_s=30.0,
        redis_url=redis_url,
        api_keys=(KEY,),
        **overrides,
    )
    return LiveServer(settings).start()


async def finals_for(session: Session, frames: int) -> list[Transcript]:
    """Send `frames` 20 ms frames and read their finals (the echo engine answers each at once)."""
    got: list[Transcript] = []
    for _ in range(frames):
        await session.send_pcm(FRAME)
    with anyio.fail_after(10):
        while len(got) < frames:
            message = await session.recv()
            if isinstance(message, Transcript) and message.is_final:
                got.append(message)
    return got


def health(server: LiveServer) -> httpx.Response:
    return httpx.get(f"{server.http_url}/health", timeout=5)


async def test_per_key_limit_holds_across_two_instances(redis_server: RedisServer) -> None:
    first, second = (
        echo_server(redis_server.url, max_sessions_per_key=1),
        echo_server(redis_server.url, max_sessions_per_key=1),
    )
    try:
        async with connect(first.ws_url, key=KEY):
            with pytest.raises(SessionRefused) as refused:
                async with connect(second.ws_url, key=KEY):
                    pass
            assert refused.value.code == "too_many_sessions" and refused.value.close_code == 4429
        # The session ended: its lease goes, and the other instance takes the key's session.
        with anyio.fail_after(10):
            while True:
                try:
                    async with connect(second.ws_url, key=KEY) as session:
                        assert session.ready.session_id
                        break
                except SessionRefused:
                    await anyio.sleep(0.1)
    finally:
        first.stop()
        second.stop()


async def test_health_says_redis_down_and_stays_200(redis_server: RedisServer) -> None:
    server = echo_server(redis_server.url)
    try:
        report = health(server)
        assert report.status_code == 200 and report.json()["redis"] == "ok"
        redis_server.kill()
        shared = server.service.shared
        assert shared is not None
        assert await anyio.to_thread.run_sync(server.wait_until, lambda: shared.health == "down", 15.0)
        report = health(server)
        assert report.status_code == 200 and report.json()["redis"] == "down"
    finally:
        server.stop()


async def test_no_redis_field_without_redis_url() -> None:
    server = LiveServer(make_settings()).start()
    try:
        assert "redis" not in health(server).json()
    finally:
        server.stop()


async def test_session_state_is_shared_and_sessions_go_on_when_redis_dies(redis_server: RedisServer) -> None:
    server = echo_server(redis_server.url)
    try:
        async with connect(server.ws_url, key=KEY) as session:
            assert len(await finals_for(session, 25)) == 25
            store = redis.Redis(port=redis_server.port)
            for _ in range(200):  # the write happens off the hot path, a moment after the finals
                if names := store.keys("presales:session:*"):
                    break
                await anyio.sleep(0.05)
            state = decoder.decode(store.get(names[0]))
            assert state.session_id == session.session_id and state.key_id and KEY not in str(store.get(names[0]))
            assert state.received_s > 0 and state.finals_end[0] > 0
            store.close()
            redis_server.kill()
            got = await finals_for(session, 50)  # Redis gone mid-call: transcripts go on
            assert len(got) == 50 and got[-1].end == pytest.approx(75 * 0.02)
            await session.stop()
            assert [m async for m in session][-1].state == "closed"  # type: ignore[union-attr]
            assert session.close_code == 1000
    finally:
        server.stop()


async def test_a_frozen_redis_delays_no_transcript(redis_server: RedisServer) -> None:
    server = echo_server(redis_server.url)
    try:
        async with connect(server.ws_url, key=KEY) as session:
            assert redis_server.process is not None
            redis_server.process.send_signal(signal.SIGSTOP)  # every Redis command now waits until its timeout
            try:
                assert len(await finals_for(session, 100)) == 100
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
    finally:
        server.stop()


async def test_redis_down_at_start_sessions_still_work() -> None:
    server = echo_server(f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with connect(server.ws_url, key=KEY) as session:
            assert session.ready.resume_token
            assert len(await finals_for(session, 10)) == 10
        assert health(server).json()["redis"] == "down"
    finally:
        server.stop()
