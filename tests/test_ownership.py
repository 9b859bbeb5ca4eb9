"""One holder owns a session's shared state: the Redis scripts of resume/ownership.py, against a real redis-server.

Two SharedState objects stand for two instances; no service runs. The end-to-end behaviour (4409, takeovers over
real sockets) is in test_cross_instance.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis

from presales_ws.resume import redis as shared_state
from presales_ws.resume.leases import lease_key
from presales_ws.resume.ownership import TAKE, claim_key, generation_key
from presales_ws.resume.redis import SharedState, state_key
from presales_ws.resume.state import SessionState, decoder
from presales_ws.resume.takeovers import Holder
from presales_ws.resume.tokens import new_token, token_digest
from tests.redis_server import RedisServer
from tests.tcp_proxy import CuttingProxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The health probe (which also ends a copy Redis names another owner for) runs once, at start: a copy that
    ends is then one the takeover's message reached."""
    monkeypatch.setattr(shared_state, "PROBE_INTERVAL_S", 3600.0)


@pytest.fixture
async def instances(redis_server: RedisServer) -> AsyncIterator[tuple[SharedState, SharedState]]:
    first, second = (SharedState(redis_server.url, state_ttl_s=60.0) for _ in range(2))
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        await tg.start(second.run)
        yield first, second
        tg.cancel_scope.cancel()
    await first.aclose()
    await second.aclose()


def state(received_s: float, key_id: str | None = None) -> SessionState:
    return SessionState(
        session_id="s_owned",
        key_id=key_id,
        sample_rate=16000,
        channels=1,
        channel_roles=("consultant", "customer"),
        questions={},
        context=[],
        unanswered=[],
        finals_end=[received_s],
        received_s=received_s,
    )


def digest() -> str:
    value = token_digest(new_token())
    assert value is not None
    return value


def stored(redis_server: RedisServer, name: str) -> SessionState | None:
    client = redis.Redis(port=redis_server.port)
    try:
        raw = client.get(state_key(name))
    finally:
        client.close()
    return decoder.decode(raw) if raw is not None else None


async def test_a_takeover_ends_the_older_copy_and_refuses_its_writes(
    redis_server: RedisServer, instances: tuple[SharedState, SharedState]
) -> None:
    first, second = instances
    name, told = digest(), anyio.Event()
    first.hold(name, Holder("first", 0, told.set))
    assert await first.save_now(name, "first", state(1.0))

    taken = await second.take(name, "second", None, 16000, 1, here=None)
    assert isinstance(taken, tuple) and taken[1].received_s == 1.0
    with anyio.fail_after(5):
        await told.wait()  # the takeover's message reached the instance holding the older copy
    assert await second.save_now(name, "second", state(2.0))

    # Writes the older copy had queued still reach Redis: each is refused there, and nothing changes.
    assert await second.take_lease("key", "s_owned", 1) is True
    assert await first.save_now(name, "first", state(1.5))
    first.forget(name, "first")
    first.hold_lease("key", "s_owned")
    first.release_lease("key", "s_owned", name, "first")
    with anyio.fail_after(5):
        while first.queued:  # noqa: ASYNC110 (the writer task drains a plain queue)
            await anyio.sleep(0.01)
    current = stored(redis_server, name)
    assert current is not None and current.received_s == 2.0
    client = redis.Redis(port=redis_server.port)
    try:
        assert client.zscore(lease_key("key"), "s_owned") is not None  # the new holder's lease stays
    finally:
        client.close()


async def test_a_write_refused_ends_a_copy_that_missed_the_takeover(
    redis_server: RedisServer, instances: tuple[SharedState, SharedState]
) -> None:
    first, second = instances
    name, told = digest(), anyio.Event()
    assert await first.save_now(name, "first", state(1.0))
    assert isinstance(await second.take(name, "second", None, 16000, 1, here=None), tuple)
    first.hold(name, Holder("first", 0, told.set))  # it held the copy, but the message went by unheard
    first.save(name, "first", state(1.5))
    with anyio.fail_after(5):
        await told.wait()
    current = stored(redis_server, name)
    assert current is not None and current.received_s == 1.0


async def test_one_of_two_claims_at_once_wins(instances: tuple[SharedState, SharedState]) -> None:
    first, second = instances
    name = digest()
    assert await first.save_now(name, "holder", state(1.0))
    # Whichever reaches Redis first takes it; the other finds the claim in progress until the winner's first
    # write, then may take it over in turn (a later resume supersedes).
    assert isinstance(await first.take(name, "one", None, 16000, 1, here=None), tuple)
    assert await second.take(name, "two", None, 16000, 1, here=None) == "contended"
    assert await first.take(name, "three", None, 16000, 1, here="holder") == "contended"
    assert await first.save_now(name, "one", state(1.2))
    assert isinstance(await second.take(name, "two", None, 16000, 1, here=None), tuple)


async def test_the_copy_held_here_is_claimed_in_place(
    redis_server: RedisServer, instances: tuple[SharedState, SharedState]
) -> None:
    first, second = instances
    name = digest()
    assert await first.save_now(name, "holder", state(1.0, key_id="k1"))
    assert await first.take(name, "new", "k1", 16000, 1, here="holder") == "here"  # no takeover, same owner
    assert await second.take(name, "other", "k1", 16000, 1, here=None) == "contended"
    assert await first.save_now(name, "holder", state(1.1, key_id="k1"))  # settles the claim
    # Another key, another format, an unknown session: nothing is claimed.
    assert await second.take(name, "other", "k2", 16000, 1, here=None) is None
    assert await second.take(name, "other", None, 16000, 1, here=None) is None
    assert await second.take(name, "other", "k1", 48000, 1, here=None) is None
    assert await second.take(digest(), "other", "k1", 16000, 1, here=None) is None
    current = stored(redis_server, name)
    assert current is not None and current.received_s == 1.1


async def test_a_copy_taken_over_twice_is_told_after_redis_lost_the_count(
    no_probe: None, redis_server: RedisServer, instances: tuple[SharedState, SharedState]
) -> None:
    first, second = instances
    name, told = digest(), anyio.Event()
    assert await first.save_now(name, "zero", state(1.0))
    one = await second.take(name, "one", None, 16000, 1, here=None)
    assert isinstance(one, tuple) and one[0] == 1
    assert await second.save_now(name, "one", state(1.1), generation=1)
    two = await first.take(name, "two", None, 16000, 1, here=None)
    assert isinstance(two, tuple) and two[0] == 2
    first.hold(name, Holder("two", 2, told.set))
    assert await first.save_now(name, "two", state(1.2), generation=2)

    store = redis.Redis(port=redis_server.port)
    try:
        store.flushall()  # Redis lost every key (a restart without persistence): the count restarts from nothing
        assert await first.save_now(name, "two", state(1.3), generation=2)  # the copy's next write (a final, a ping)
        assert store.get(generation_key(name)) == b"2" and store.pttl(generation_key(name)) > 0  # as the state
    finally:
        store.close()
    three = await second.take(name, "three", None, 16000, 1, here=None)
    assert isinstance(three, tuple) and three[0] == 3
    with anyio.fail_after(5):
        await told.wait()  # by the takeover's message (the probe is off, and the copy wrote nothing since)


async def test_a_takeover_whose_count_started_again_still_ends_the_older_copy(
    no_probe: None, redis_server: RedisServer, instances: tuple[SharedState, SharedState]
) -> None:
    first, second = instances
    name, told = digest(), anyio.Event()
    assert await first.save_now(name, "zero", state(1.0))
    assert isinstance(await first.take(name, "one", None, 16000, 1, here=None), tuple)
    first.hold(name, Holder("one", 1, told.set))
    assert await first.save_now(name, "one", state(1.1), generation=1)
    store = redis.Redis(port=redis_server.port)
    try:
        store.delete(generation_key(name))  # the count went (it expired), the state did not
    finally:
        store.close()
    taken = await second.take(name, "two", None, 16000, 1, here=None)
    assert isinstance(taken, tuple) and taken[0] == 1  # the same number as the copy's own takeover
    with anyio.fail_after(5):
        await told.wait()


async def test_a_claim_whose_answer_was_lost_is_not_sent_again(redis_server: RedisServer) -> None:
    # The claim reaches Redis, which runs it; the connection breaks before the answer comes back. Sending it again
    # would find its own claim and answer "contended": the copy held here would lose its client to a new session.
    proxy = await CuttingProxy(redis_server.port).start()
    asker = SharedState(f"redis://127.0.0.1:{proxy.port}/0", state_ttl_s=60.0)  # not run: only its claims
    writer = SharedState(redis_server.url, state_ttl_s=60.0)
    store = redis.Redis(port=redis_server.port)
    try:
        name = digest()
        assert await writer.save_now(name, "holder", state(1.0))
        sha = store.script_load(TAKE).encode()
        assert await asker.take(digest(), "warm", None, 16000, 1, here=None) is None  # a connection in its pool
        store.config_resetstat()
        answers: list[object] = []

        async def claim() -> None:
            answers.append(await asker.take(name, "new", None, 16000, 1, here="holder"))

        proxy.hold()
        async with anyio.create_task_group() as tg:
            tg.start_soon(claim)
            with anyio.fail_after(5):
                while not any(sha in data for data in proxy.held()):  # noqa: ASYNC110 (the proxy is polled)
                    await anyio.sleep(0.01)
            proxy.release()  # the claim goes to Redis ...
            proxy.cut()  # ... and its connection breaks before the answer

        assert answers == [None]  # Redis could not say: the copy held here goes on from its own memory
        assert store.info("commandstats")["cmdstat_evalsha"]["calls"] == 1  # the claim ran once
        assert store.get(claim_key(name)) == b"holder"
    finally:
        store.close()
        await proxy.stop()
        await asker.aclose()
        await writer.aclose()
