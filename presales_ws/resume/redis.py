"""Redis as the shared state of several instances: resume state, per-key leases, and whether Redis is up.

Nothing a transcript waits for touches Redis: writes go into a bounded queue (one entry per session state, the
newest replacing an older one still queued) that one task drains; when Redis is slow or down the oldest entries
give way, with one warning a minute. Reads happen where a client waits anyway: at connect (a lease) and at a
resume (a claim, and from another instance a state), each bounded by REDIS_TIMEOUT_S (resume/asking.py); and in
the background, the health probe every PROBE_INTERVAL_S, which also reads (one MGET) the owner of every session
held here, to end a copy whose takeover message was missed (resume/takeovers.py). Each write checks, in the
same script, that its session's copy here still owns it (resume/ownership.py); resume/takeovers.py hears of the
takeovers other instances make.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Literal

import anyio
import anyio.abc
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from presales_ws.logs import get_logger
from presales_ws.resume.asking import Asker
from presales_ws.resume.leases import LEASE_REFRESH_S, LEASE_TTL_S, lease_key
from presales_ws.resume.ownership import (
    CLAIM_TTL_S,
    FORGET,
    RELEASE,
    SAVE,
    SUPERSEDED_CHANNEL,
    claim_key,
    generation_key,
    owner_key,
)
from presales_ws.resume.state import SessionState, decoder, encoder
from presales_ws.resume.takeovers import Holder, Takeovers

REDIS_TIMEOUT_S = 0.5  # per command: a slow Redis is a down Redis for whoever waits on it
WRITE_QUEUE_MAX = 1000  # queued writes; beyond it the oldest is dropped
RETRY_AFTER_S = 1.0  # after a failed write, before the next try
PROBE_INTERVAL_S = 5.0  # how often the health of Redis is checked (and a lost Redis noticed)
WARN_INTERVAL_S = 60.0  # at most one warning a minute while Redis is down or slow

log = get_logger("presales_ws.redis")

Health = Literal["ok", "down"]
Claim = Literal["here", "contended"] | tuple[int, SessionState] | None


class _Set(msgspec.Struct, frozen=True):
    digest: str
    owner: str
    state: SessionState  # encoded by the writer, not by the session that queued it
    ttl_ms: int
    generation: int  # the takeover that made `owner` the holder: kept in Redis as long as the state


class _Delete(msgspec.Struct, frozen=True):
    digest: str
    owner: str


class _Release(msgspec.Struct, frozen=True):
    key: str
    member: str
    digest: str | None  # the session's token digest: released only while its copy here owns it
    owner: str


_Write = _Set | _Delete | _Release


_SCRIPTS = {"save": SAVE, "forget": FORGET, "release": RELEASE}


def state_key(digest: str) -> str:
    return f"presales:session:{digest}"


def _decode(raw: bytes) -> SessionState | None:
    try:
        state: SessionState = decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    return state


class SharedState:
    """One per process, when REDIS_URL is set; `run` (in the app's lifespan) drains writes, keeps leases, and
    hears of takeovers."""

    def __init__(self, url: str, *, state_ttl_s: float) -> None:
        timeouts: dict[str, Any] = {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S}
        self._redis: Any = aioredis.Redis.from_url(url, health_check_interval=0, **timeouts)
        self._asker = Asker(url, REDIS_TIMEOUT_S, self._down, self._up)  # what a client waits on: asking.py
        self._scripts = {name: self._redis.register_script(code) for name, code in _SCRIPTS.items()}
        self._state_ttl_ms = int(state_ttl_s * 1000)
        self._queue: OrderedDict[str, _Write] = OrderedDict()
        self._queued = anyio.Event()
        self._writing = 0  # the write the writer task is doing now
        self._leases: dict[str, str] = {}  # session id -> key id, for the sessions this instance holds
        self.takeovers = Takeovers(self._redis, self._down)
        self.health: Health = "ok"
        self.dropped = 0
        self._warned_at = -WARN_INTERVAL_S

    @property
    def queued(self) -> int:
        """Writes not yet done: waiting for Redis, or being written."""
        return len(self._queue) + self._writing

    # --- the sessions' side: never waits on Redis ---------------------------------------------------------

    def hold(self, digest: str, holder: Holder) -> None:
        """This copy of a session is the one to end if another instance takes the session over."""
        self.takeovers.holders.add(digest, holder)

    def unhold(self, digest: str, owner: str) -> None:
        """The copy ended here: no longer told of takeovers (its writes stay queued)."""
        self.takeovers.holders.remove(digest, owner)

    def save(self, digest: str, owner: str, state: SessionState, *, generation: int = 0) -> None:
        self._put(state_key(digest), _Set(digest, owner, state, self._state_ttl_ms, generation))

    def forget(self, digest: str, owner: str) -> None:
        """The session ended for good (stop, window passed): nobody may resume it anywhere."""
        self._put(state_key(digest), _Delete(digest, owner))

    def release_lease(self, key_id: str, session_id: str, digest: str | None, owner: str) -> None:
        if self._leases.pop(session_id, None) is not None:
            self._put(f"lease:{session_id}", _Release(lease_key(key_id), session_id, digest, owner))

    def let_go(self, digest: str | None, owner: str, session_id: str) -> None:
        """This copy ended here without a say over the session any more (another holder has it): its queued
        writes go, its lease is no longer kept alive from here, nothing is deleted or released."""
        if digest is not None:
            self.unhold(digest, owner)
        for name, write in list(self._queue.items()):
            if write.owner == owner:
                del self._queue[name]
        self._leases.pop(session_id, None)

    # --- where a client waits anyway: bounded ------------------------------------------------------------

    async def save_now(self, digest: str, owner: str, state: SessionState, *, generation: int = 0) -> bool:
        """Write a state before going on (a drain, before its 1012); False if Redis did not take it in time."""
        self._queue.pop(state_key(digest), None)
        return await self._do(_Set(digest, owner, state, self._state_ttl_ms, generation))

    async def take(
        self, digest: str, owner: str, key_id: str | None, sample_rate: int, channels: int, *, here: str | None
    ) -> Claim:
        """Claim a session for a resume, if Redis has it for this key and format and no other resume is taking it:
        "here" when the copy held here (owner `here`) still owns it, else its generation and last state, taken
        over for `owner` (the copy that held it is told to end). "contended" or None: a new session (None also
        when Redis cannot say: a copy held here then goes on from its own memory)."""
        keys = [state_key(digest), owner_key(digest), claim_key(digest), generation_key(digest)]
        args = [owner, self._state_ttl_ms, int(CLAIM_TTL_S * 1000), SUPERSEDED_CHANNEL, digest]
        args += [key_id or "", sample_rate, channels, here or ""]
        taken = await self._asker.ask(self._asker.take, keys=keys, args=args, once=True)
        if taken == 1:
            return "here"
        if taken == -1:
            log.info("session.takeover_contended")  # another resume of the token is taking it: that one goes on
            return "contended"
        if not isinstance(taken, list):
            return None
        generation, raw = taken
        state = _decode(raw)
        return (int(generation), state) if state is not None else None

    async def take_lease(self, key_id: str, session_id: str, limit: int) -> bool | None:
        """Whether this key may hold one more session across every instance; None when Redis cannot say."""
        now = time.time()
        args = [now, now + LEASE_TTL_S, limit, session_id, int(LEASE_TTL_S * 2000)]
        taken = await self._asker.ask(self._asker.take_lease, keys=[lease_key(key_id)], args=args)
        if taken is None:
            return None
        if taken:
            self._leases[session_id] = key_id
        return bool(taken)

    def hold_lease(self, key_id: str, session_id: str) -> None:
        """Refresh this session's lease from here on (Redis could not be asked when it started)."""
        self._leases[session_id] = key_id

    # --- the background work ------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write_loop)
            tg.start_soon(self._lease_loop)
            tg.start_soon(self._probe_loop)
            tg.start_soon(self.takeovers.listen)
            task_status.started()

    async def aclose(self) -> None:
        """Write what is still queued (bounded), then close the connections."""
        with anyio.move_on_after(REDIS_TIMEOUT_S * 4):
            while self._queue and self.health == "ok":
                _, write = self._queue.popitem(last=False)
                await self._do(write)
        await self._redis.aclose()
        await self._asker.aclose()

    def _put(self, name: str, write: _Write) -> None:
        self._queue.pop(name, None)
        self._queue[name] = write
        while len(self._queue) > WRITE_QUEUE_MAX:
            self._queue.popitem(last=False)
            self.dropped += 1
            self._warn("redis.writes_dropped", dropped=self.dropped)
        self._queued.set()

    async def _write_loop(self) -> None:
        while True:
            while not self._queue:
                self._queued = anyio.Event()
                await self._queued.wait()
            name, write = self._queue.popitem(last=False)
            self._writing = 1
            done = await self._do(write)
            self._writing = 0
            if not done:
                if name not in self._queue:  # not replaced by a newer write meanwhile: try it again
                    self._queue[name] = write
                    self._queue.move_to_end(name, last=False)
                await anyio.sleep(RETRY_AFTER_S)

    async def _do(self, write: _Write) -> bool:
        """One write, if its copy still owns the session (a refused state write ends that copy); False when
        Redis did not take it."""
        try:
            with anyio.fail_after(REDIS_TIMEOUT_S * 2):
                if isinstance(write, _Set):
                    keys = [state_key(write.digest), owner_key(write.digest), claim_key(write.digest)]
                    keys.append(generation_key(write.digest))
                    args: list[str | bytes | int] = [write.owner, encoder.encode(write.state), write.ttl_ms]
                    args.append(write.generation)
                    if not await self._scripts["save"](keys=keys, args=args):
                        self.takeovers.holders.refused(write.digest, write.owner)
                elif isinstance(write, _Delete):
                    keys = [state_key(write.digest), owner_key(write.digest)]
                    await self._scripts["forget"](keys=keys, args=[write.owner])
                elif write.digest is not None:
                    keys = [write.key, owner_key(write.digest)]
                    await self._scripts["release"](keys=keys, args=[write.owner, write.member])
                else:
                    await self._redis.zrem(write.key, write.member)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            return False
        self._up()
        return True

    async def _lease_loop(self) -> None:
        while True:
            await anyio.sleep(LEASE_REFRESH_S)
            if not self._leases:
                continue
            lapse = time.time() + LEASE_TTL_S
            try:
                with anyio.fail_after(REDIS_TIMEOUT_S * 4):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for session_id, key_id in list(self._leases.items()):
                            pipe.zadd(lease_key(key_id), {session_id: lapse})
                            pipe.pexpire(lease_key(key_id), int(LEASE_TTL_S * 2000))
                        await pipe.execute()
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
            else:
                self._up()

    async def _probe_loop(self) -> None:
        while True:
            try:
                with anyio.fail_after(REDIS_TIMEOUT_S * 2):
                    await self._redis.ping()
                    await self._asker.check()
                await self.takeovers.reconcile()
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
            else:
                self._up()
            await anyio.sleep(PROBE_INTERVAL_S)

    def _down(self, exc: BaseException) -> None:
        self.health = "down"
        self._warn("redis.unavailable", error=type(exc).__name__)

    def _up(self) -> None:
        if self.health == "down":
            log.info("redis.recovered")
        self.health = "ok"

    def _warn(self, event: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_INTERVAL_S:
            self._warned_at = now
            log.warning(event, **fields)
