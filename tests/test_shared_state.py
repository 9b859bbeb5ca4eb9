"""REDIS_URL: per-key limits across instances, /health's `redis`, and sessions that go on when Redis does not.

A real redis-server on a free loopback port; two service instances in this process share it.
"""

from __future__ import annotations

import signal

import anyio
import httpx
import pytest
import redis

from bench.echo_server import EchoTranscriber
from presales_ws.access import key_id
from presales_ws.app import create_app
from presales_ws.client import Session, SessionRefused, connect
from presales_ws.lookups import Question
from presales_ws.protocol import Suggestion, Transcript
from presales_ws.resume.redis import state_key
from presales_ws.resume.state import SessionState, decoder, encoder
from presales_ws.resume.tokens import new_token, token_digest
from tests.conftest import LiveServer, make_settings
from tests.redis_server import RedisServer, free_port
from tests.test_suggestions_e2e import SAMPLE_KB

pytestmark = pytest.mark.anyio

KEY = "shared-state-test-key-0123"
OTHER_KEY = "another-valid-key-4567890"
FRAME = b"\x01\x00" * 320  # 20 ms of 16 kHz mono


def echo_server(redis_url: str, **overrides: object) -> LiveServer:
    options: dict[str, object] = {"api_keys": (KEY,), "resume_window_s": 30.0, **overrides}
    settings = make_settings(redis_url=redis_url, **options)
    return LiveServer(settings, create_app(settings, transcriber=EchoTranscriber())).start()


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


def handed_on_state(store: RedisServer) -> str:
    """A session another instance held, as it left it in Redis; returns its resume token."""
    token = new_token()
    digest = token_digest(token)
    assert digest is not None
    state = SessionState(
        session_id="s_elsewhere",
        key_id=key_id(KEY),
        sample_rate=16000,
        channels=1,
        channel_roles=("consultant", "customer"),
        questions={0: 2, 1: 0},  # speaker 0 asked two questions: the customer, at 0.75
        context=[("customer", "We have about three hundred people.")],
        unanswered=[Question("What does it cost per seat?", "customer", 0, 1.0, 3.0)],
        finals_end=[3.0],
        received_s=4.0,
    )
    client = redis.Redis(port=store.port)
    client.set(state_key(digest), encoder.encode(state))
    client.close()
    return token


async def test_a_session_is_taken_up_from_the_state_another_instance_left(redis_server: RedisServer) -> None:
    token = handed_on_state(redis_server)
    server = echo_server(redis_server.url, knowledge_base=str(SAMPLE_KB))
    try:
        async with connect(server.ws_url, key=KEY, resume=token, finals_end="3.0") as session:
            ready = session.ready
            assert ready.resumed is True and ready.session_id == "s_elsewhere" and ready.resume_token == token
            assert ready.received_s == 3.0  # the end of the last final the client has: resend from there
            assert ready.roles == {"0": "customer", "1": "consultant"}
            suggestion = None
            with anyio.fail_after(10):
                while suggestion is None:
                    message = await session.recv()
                    if isinstance(message, Suggestion) and not message.partial:
                        suggestion = message
            assert suggestion.question == "What does it cost per seat?" and "45 USD per seat" in suggestion.response
            got = await finals_for(session, 5)
            assert got[0].start == pytest.approx(3.0) and got[0].speaker == "customer"  # the session's clock, roles
    finally:
        server.stop()


async def test_another_keys_token_gets_a_new_session(redis_server: RedisServer) -> None:
    token = handed_on_state(redis_server)
    server = echo_server(redis_server.url, api_keys=(KEY, OTHER_KEY))
    try:
        async with connect(server.ws_url, key=OTHER_KEY, resume=token) as session:
            assert session.ready.resumed is False and session.ready.session_id != "s_elsewhere"
            assert session.ready.received_s == 0.0 and not session.ready.roles
    finally:
        server.stop()
