"""A session resumed on another instance while the first still holds it (REDIS_URL, no sticky router).

Instances in this process (real sockets, the echo engine) share a real redis-server; a loopback proxy stands in
for a router that sends each reconnect wherever it likes. The copy an instance still holds ends when another
takes the session over: its client gets 4409, and it writes, deletes and releases nothing any more.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
import redis

from bench.echo_server import EchoStream, EchoTranscriber
from presales_ws.access import key_id
from presales_ws.app import create_app
from presales_ws.audio import AudioFormat
from presales_ws.client import Session, SessionRefused, connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import KEY_PREFIX, SUBPROTOCOL, Status, Transcript
from presales_ws.resume import redis as shared_state
from presales_ws.resume.leases import lease_key
from presales_ws.resume.ownership import SUPERSEDED_CHANNEL, TAKE, claim_key, owner_key
from presales_ws.resume.redis import state_key
from presales_ws.resume.tokens import new_token, token_digest
from presales_ws.transcribers.base import TranscriberBusy
from tests.conftest import LiveServer, make_settings
from tests.redis_server import RedisServer
from tests.support import FIXTURES, final_text, reference_text, word_error_rate, words
from tests.tcp_proxy import CuttingProxy
from tests.test_resume import FRAME_MS, MAX_WER, assert_no_final_twice, echo_live, readies, stream_with_cuts
from tests.test_shared_state import finals_for

pytestmark = pytest.mark.anyio

KEY = "cross-instance-key-0123456"


def instance(redis_url: str, **overrides: object) -> LiveServer:
    return echo_live(make_settings(redis_url=redis_url, resume_window_s=30.0, **overrides))


def gone(*servers: LiveServer) -> bool:
    return all(len(server.service.registry) == 0 for server in servers)


async def until(server: LiveServer, predicate: object, timeout_s: float = 15.0) -> bool:
    return await anyio.to_thread.run_sync(lambda: server.wait_until(predicate, timeout_s))


async def eventually(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 (Redis and the proxy are polled: there is no event to wait on)
            await anyio.sleep(0.01)


async def shared_state_written(store: redis.Redis, digest: str) -> None:
    await eventually(lambda: store.get(state_key(digest)) is not None)


def digest_of(session: Session) -> tuple[str, str]:
    token = session.ready.resume_token
    assert token is not None
    digest = token_digest(token)
    assert digest is not None
    return token, digest


async def test_three_cuts_each_resumed_on_the_other_instance(redis_server: RedisServer) -> None:
    # The echo engine answers each frame with a final covering exactly its audio: the finals tile the session's
    # audio without a gap or an overlap only if every frame arrived once, whichever instance took it.
    first, second = instance(redis_server.url), instance(redis_server.url)
    proxy = await CuttingProxy(first.port).start()
    try:
        frames = 300
        pcm = b"\x01\x00" * (16000 * FRAME_MS // 1000) * frames
        reroute = {60: second.port, 140: first.port, 220: second.port}  # cut 1 -> B, cut 2 -> A, cut 3 -> B
        messages, session = await stream_with_cuts(proxy, pcm, 1, set(reroute), frame_pause_s=0.004, reroute=reroute)

        ready = readies(messages)
        assert [r.resumed for r in ready] == [False, True, True, True] and session.resumes == 3
        assert len({r.session_id for r in ready}) == 1
        got = [m for m in messages if isinstance(m, Transcript) and m.is_final]
        assert got[0].start == 0.0
        for before, after in itertools.pairwise(got):
            assert abs(after.start - before.end) < 1e-3, (before, after)  # no gap, no final twice
        assert abs(got[-1].end - frames * FRAME_MS / 1000) < 1e-3
        assert isinstance(messages[-1], Status) and messages[-1].state == "closed" and session.close_code == 1000
        # Every copy ended, and the one that ended last (by `stop`) deleted the state: no older copy wrote it back.
        assert await until(first, lambda: gone(first, second))
        store = redis.Redis(port=redis_server.port)
        try:
            await eventually(lambda: not store.keys("presales:session:*"))
        finally:
            store.close()
    finally:
        await proxy.stop()
        first.stop()
        second.stop()


async def test_speech_cut_three_times_each_resumed_on_the_other_instance(redis_server: RedisServer) -> None:
    # The embedded engine on both instances: each takeover transcribes again, from the end of the last final the
    # client has, the audio the client resends; the copy left behind delivers nothing more.
    settings = make_settings(redis_url=redis_server.url, resume_window_s=30.0)
    first, second = LiveServer(settings).start(), LiveServer(settings).start()
    proxy = await CuttingProxy(first.port).start()
    try:
        file = "two_sentences_us.wav"
        audio = read_wav(FIXTURES / file)
        # Cuts 1.0 s into the audio (inside the first sentence, 0.5-4.5 s), then 6.5 s and 7.5 s (inside the
        # second, 5.7-8.5 s, after the first one's final): cut 1 -> B, cut 2 -> A, cut 3 -> B.
        reroute = {50: second.port, 325: first.port, 375: second.port}
        messages, session = await stream_with_cuts(
            proxy, audio.pcm, 1, set(reroute), frame_pause_s=0.01, reroute=reroute
        )

        ready = readies(messages)
        assert [r.resumed for r in ready] == [False, True, True, True]
        assert session.resumes == 3 and len({r.session_id for r in ready}) == 1
        reference, heard = reference_text(file), final_text(messages)
        assert word_error_rate(reference, heard) < MAX_WER, heard
        assert_no_final_twice(messages)
        assert all(words(heard).count(w) <= words(reference).count(w) for w in words(reference)), heard
        assert isinstance(messages[-1], Status) and messages[-1].state == "closed"
    finally:
        await proxy.stop()
        first.stop()
        second.stop()


async def superseded_close(session: Session) -> tuple[int | None, list[str]]:
    """Read the raw connection until it closes: its close code and the text frames it got last."""
    texts: list[str] = []
    with anyio.fail_after(15), pytest.raises(Exception):  # noqa: B017 - closed, whatever its last message
        while True:
            frame = await session.ws.recv()
            if isinstance(frame, str):
                texts.append(frame)
    return session.ws.close_code, texts


async def test_a_live_connection_is_superseded_by_a_resume_on_another_instance(redis_server: RedisServer) -> None:
    first, second = (instance(redis_server.url, api_keys=(KEY,), max_sessions_per_key=1) for _ in range(2))
    proxy = await CuttingProxy(second.port).start()
    store = redis.Redis(port=redis_server.port)
    try:
        async with connect(first.ws_url, key=KEY, auto_resume=False) as old:
            token, digest = digest_of(old)
            assert len(await finals_for(old, 10)) == 10
            await shared_state_written(store, digest)

            async with connect(proxy.ws_url, key=KEY, resume=token, finals_end="0.2", auto_resume=False) as new:
                assert new.ready.resumed is True and new.ready.session_id == old.session_id
                code, texts = await superseded_close(old)
                assert code == 4409 and any('"code":"superseded"' in text for text in texts)
                assert await until(first, lambda: gone(first))  # the older copy ended at once

                got = await finals_for(new, 5)  # the session goes on where it was
                assert got[0].start == pytest.approx(0.2) and got[-1].end == pytest.approx(0.3)
                # The older copy left everything shared to the new holder: the state, and the key's lease (the
                # limit is 1: a new session of the key is refused on either instance).
                assert store.get(state_key(digest)) is not None
                with pytest.raises(SessionRefused) as refused:
                    async with connect(first.ws_url, key=KEY):
                        pass
                assert refused.value.code == "too_many_sessions"

                # The new holder's connection breaks; the client comes back to the first instance, which has no
                # copy any more: it takes the session over from the state the second one wrote.
                await shared_state_written(store, digest)
                proxy.cut()
                assert await until(second, lambda: any(s.links.parked for s in second.service.local_sessions))
            async with connect(first.ws_url, key=KEY, resume=token, finals_end="0.3") as back:
                assert back.ready.resumed is True and back.ready.session_id == old.session_id
                assert back.ready.received_s == pytest.approx(0.3)
                got = await finals_for(back, 5)
                assert got[0].start == pytest.approx(0.3)
                assert await until(second, lambda: gone(second))  # its parked copy ended: taken over
                owner = store.get(owner_key(digest))
                assert owner is not None and owner.decode() in {s.sharing.owner for s in first.service.local_sessions}
                await back.stop()
                assert [m async for m in back][-1].state == "closed"  # type: ignore[union-attr]
    finally:
        store.close()
        await proxy.stop()
        first.stop()
        second.stop()


@pytest.mark.parametrize("racers", [(1, 2), (0, 1)], ids=["two-other-instances", "holder-and-another"])
async def test_two_instances_taking_one_token_at_once_resume_it_once(
    redis_server: RedisServer, racers: tuple[int, int]
) -> None:
    # Every instance reaches Redis through a proxy that can hold their commands: the two resumes' claims then
    # reach Redis back to back. Exactly one resumes the session; the other gets a new one.
    redis_proxy = await CuttingProxy(redis_server.port).start()
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    servers = [instance(url) for _ in range(3)]
    holder = servers[0]
    client_proxy = await CuttingProxy(holder.port).start()
    store = redis.Redis(port=redis_server.port)
    claim = store.script_load(TAKE).encode()  # loaded: a claim is one command
    try:
        async with connect(client_proxy.ws_url, auto_resume=False) as session:
            token, digest = digest_of(session)
            assert len(await finals_for(session, 10)) == 10
            await shared_state_written(store, digest)
            client_proxy.cut()
            assert await until(holder, lambda: any(s.links.parked for s in holder.service.local_sessions))

        redis_proxy.hold()
        async with contextlib.AsyncExitStack() as opened_sessions:
            opened: list[Session] = []

            async def resume(server: LiveServer) -> None:
                url = server.ws_url
                opened.append(await opened_sessions.enter_async_context(connect(url, resume=token, finals_end="0.2")))

            async with anyio.create_task_group() as tg:
                for index in racers:
                    tg.start_soon(resume, servers[index])
                await eventually(lambda: sum(data.count(claim) for data in redis_proxy.held()) >= 2)  # both wait
                redis_proxy.release()

            assert sorted(s.ready.resumed for s in opened) == [False, True]
            winner = next(s for s in opened if s.ready.resumed)
            loser = next(s for s in opened if not s.ready.resumed)
            assert winner.ready.session_id == session.session_id != loser.ready.session_id
            got = await finals_for(winner, 5)
            assert got[0].start == pytest.approx(0.2)
            assert len(await finals_for(loser, 5)) == 5  # a session of its own, not a second copy
            sessions = [s.session_id for server in servers for s in server.service.local_sessions]
            assert sessions.count(session.session_id) == 1  # never two live copies
    finally:
        store.close()
        await client_proxy.stop()
        await redis_proxy.stop()
        for server in servers:
            server.stop()


async def test_resume_on_the_same_instance_with_redis_keeps_its_copy(redis_server: RedisServer) -> None:
    server = instance(redis_server.url)
    try:
        async with connect(server.ws_url, auto_resume=False) as first:
            token = first.ready.resume_token
            assert token is not None and len(await finals_for(first, 5)) == 5
            async with connect(server.ws_url, resume=token, finals_end="0.1") as second:
                assert second.ready.resumed is True and second.ready.session_id == first.session_id
                code, _ = await superseded_close(first)
                assert code == 4409
                got = await finals_for(second, 5)
                assert got[0].start == pytest.approx(0.1)
    finally:
        server.stop()


async def test_after_redis_restarts_a_takeover_still_ends_the_older_copy(redis_server: RedisServer) -> None:
    first, second = instance(redis_server.url), instance(redis_server.url)
    try:
        async with connect(first.ws_url, auto_resume=False) as old:
            token, digest = digest_of(old)
            assert len(await finals_for(old, 5)) == 5
            redis_server.kill()
            redis_server.start()  # the same port, nothing in it
            store = redis.Redis(port=redis_server.port)
            try:
                # Both instances listen for takeovers again, and the live copy writes its state again.
                await eventually(lambda: store.pubsub_numsub(SUPERSEDED_CHANNEL)[0][1] == 2, 15)
                assert len(await finals_for(old, 5)) == 5
                await shared_state_written(store, digest)
            finally:
                store.close()
            async with connect(second.ws_url, resume=token, finals_end="0.2") as new:
                assert new.ready.resumed is True and new.ready.session_id == old.session_id
                code, _ = await superseded_close(old)
                assert code == 4409
                assert len(await finals_for(new, 5)) == 5
    finally:
        first.stop()
        second.stop()


async def test_a_half_open_connection_is_superseded_without_waiting_for_its_heartbeat(
    redis_server: RedisServer,
) -> None:
    # The client's network path died silently: the instance holding the session still counts it live (its
    # heartbeat gives up only after HEARTBEAT_TIMEOUT_S, 45 s). The client resumes on the other instance.
    first, second = (instance(redis_server.url, api_keys=(KEY,), max_sessions_per_key=1) for _ in range(2))
    proxy = await CuttingProxy(first.port).start()
    store = redis.Redis(port=redis_server.port)
    try:
        async with connect(proxy.ws_url, key=KEY, auto_resume=False) as old:
            token, digest = digest_of(old)
            assert len(await finals_for(old, 10)) == 10
            await shared_state_written(store, digest)
            proxy.freeze()
            async with connect(second.ws_url, key=KEY, resume=token, finals_end="0.2") as new:
                assert new.ready.resumed is True and new.ready.session_id == old.session_id
                assert await until(first, lambda: gone(first), 15.0)  # ended at once, not by its heartbeat
                got = await finals_for(new, 5)
                assert got[0].start == pytest.approx(0.2)
                assert store.get(state_key(digest)) is not None
                with pytest.raises(SessionRefused):  # the key's one lease is still the session's
                    async with connect(first.ws_url, key=KEY):
                        pass
    finally:
        store.close()
        await proxy.stop()
        first.stop()
        second.stop()


def scripts_run(store: redis.Redis) -> int:
    stats = store.info("commandstats").get("cmdstat_evalsha")
    return int(stats["calls"]) if stats else 0


class BusyEcho(EchoTranscriber):
    """The echo engine, at capacity while `busy`: it refuses a stream as the embedded engine does when full."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = True

    @asynccontextmanager
    async def stream(self, fmt: AudioFormat, session_id: str) -> AsyncIterator[EchoStream]:
        if self.busy:
            raise TranscriberBusy("the engine is at capacity; try again later")
        async with super().stream(fmt, session_id) as stream:
            yield stream


@pytest.mark.parametrize("back_on", ["first", "second"])
async def test_a_takeover_the_new_instance_cannot_serve_leaves_the_session_to_resume(
    redis_server: RedisServer, back_on: str
) -> None:
    # The second instance claims the session (the copy on the first ends at once), then its engine refuses the
    # stream: it hands the state back as it took it. The client's next resume takes the session over, on the
    # first instance or on the second once it has room, with nothing lost.
    engine = BusyEcho()
    settings = make_settings(redis_url=redis_server.url, resume_window_s=30.0)
    first = instance(redis_server.url)
    second = LiveServer(settings, create_app(settings, transcriber=engine)).start()
    store = redis.Redis(port=redis_server.port)
    try:
        async with connect(first.ws_url, auto_resume=False) as old:
            token, digest = digest_of(old)
            assert len(await finals_for(old, 10)) == 10
            await shared_state_written(store, digest)
            with pytest.raises(SessionRefused) as refused:
                async with connect(second.ws_url, resume=token, finals_end="0.2", auto_resume=False):
                    pass
            assert refused.value.code == "transcriber_busy" and refused.value.close_code == 1013
            code, _ = await superseded_close(old)
            assert code == 4409
        assert await until(second, lambda: gone(first, second))

        engine.busy = False
        back_to = first if back_on == "first" else second
        async with connect(back_to.ws_url, resume=token, finals_end="0.2") as back:
            assert back.ready.resumed is True and back.ready.session_id == old.session_id
            assert back.ready.received_s == pytest.approx(0.2)
            got = await finals_for(back, 5)
            assert got[0].start == pytest.approx(0.2) and got[-1].end == pytest.approx(0.3)
    finally:
        store.close()
        first.stop()
        second.stop()


async def test_a_client_gone_during_the_handshake_leaves_nothing_behind(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resume waits on its claim before the handshake completes (the proxy holds the claim); the client leaves
    # meanwhile. The session the server then opens (it takes the key's lease first) cannot even accept the socket:
    # it lets go of its place here and of its lease, which nothing else would release.
    monkeypatch.setattr(shared_state, "REDIS_TIMEOUT_S", 30.0)  # the claim waits for the test, not a timeout
    redis_proxy = await CuttingProxy(redis_server.port).start()
    server = instance(f"redis://127.0.0.1:{redis_proxy.port}/0", api_keys=(KEY,))
    store = redis.Redis(port=redis_server.port)
    claim, lease = store.script_load(TAKE).encode(), lease_key(key_id(KEY))
    try:
        async with connect(server.ws_url, key=KEY, resume=new_token()) as warm:  # the claims' connection, pooled
            assert warm.ready.resumed is False
        shared = server.service.shared
        assert shared is not None
        await eventually(lambda: gone(server) and not server.server.server_state.connections and not shared.queued)
        store.config_resetstat()

        redis_proxy.hold()
        request = (
            f"GET /ws/session?resume={new_token()}&sample_rate=16000&channels=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}, {KEY_PREFIX}{KEY}\r\n\r\n"
        )
        client = await anyio.connect_tcp("127.0.0.1", server.port)
        await client.send(request.encode())
        await eventually(lambda: any(claim in data for data in redis_proxy.held()))
        await client.aclose()  # gone before the server answers the handshake
        await eventually(lambda: not server.server.server_state.connections)
        redis_proxy.release()

        # The claim, the key's lease, then what the session let go of: the lease (and its token's state), and its
        # place here. Without that, two scripts ran and the lease stayed, kept alive from here.
        await eventually(lambda: scripts_run(store) >= 3 and not store.zcard(lease), 15)
        assert gone(server) and not server.service.local_sessions and not len(shared.takeovers.holders)
    finally:
        store.close()
        await redis_proxy.stop()
        server.stop()


async def test_a_takeover_refused_by_the_keys_limit_after_its_claim_leaves_the_session_to_resume(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key's limit across instances can only be checked once the claim named the session: a takeover refused
    # there hands the session back (its claim ended), so a resume once the key has room takes it over.
    monkeypatch.setattr(shared_state, "LEASE_REFRESH_S", 3600.0)  # a lease taken out of Redis stays out
    first, second = (instance(redis_server.url, api_keys=(KEY,), max_sessions_per_key=2) for _ in range(2))
    store = redis.Redis(port=redis_server.port)
    lease = lease_key(key_id(KEY))
    try:
        async with connect(first.ws_url, key=KEY, auto_resume=False) as old:
            token, digest = digest_of(old)
            assert len(await finals_for(old, 10)) == 10
            await shared_state_written(store, digest)
            store.zrem(lease, old.session_id)  # its lease lapsed (its instance was cut off from Redis for a while)
            async with (
                connect(second.ws_url, key=KEY, auto_resume=False) as other,
                connect(first.ws_url, key=KEY, auto_resume=False) as third,
            ):
                with pytest.raises(SessionRefused) as refused:  # the key's two places are taken
                    async with connect(second.ws_url, key=KEY, resume=token, finals_end="0.2", auto_resume=False):
                        pass
                assert refused.value.code == "too_many_sessions"
                code, _ = await superseded_close(old)  # the claim had ended the older copy
                assert code == 4409
                assert not store.exists(claim_key(digest))  # handed back: no claim left to block a resume
                await third.stop()
                assert [m async for m in third][-1].state == "closed"  # type: ignore[union-attr]
                await eventually(lambda: store.zcard(lease) == 1)

                async with connect(first.ws_url, key=KEY, resume=token, finals_end="0.2") as back:
                    assert back.ready.resumed is True and back.ready.session_id == old.session_id
                    got = await finals_for(back, 5)
                    assert got[0].start == pytest.approx(0.2)
                assert len(await finals_for(other, 2)) == 2
    finally:
        store.close()
        first.stop()
        second.stop()
