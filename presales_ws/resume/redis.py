"""Redis as the shared state of several instances: resume state, per-key leases, and whether Redis is up.

Nothing a transcript waits for touches Redis: writes go into a bounded queue (one entry per session state, the
newest replacing an older one still queued) that one task drains; when Redis is slow or down the oldest entries
give way, with one warning a minute. Reads happen only where a client waits anyway: at connect (a lease) and at
a resume from another instance (a state), each bounded by REDIS_TIMEOUT_S.
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
from presales_ws.resume.leases import LEASE_REFRESH_S, LEASE_TTL_S, TAKE_LEASE, lease_key
from presales_ws.resume.state import SessionState, decoder, encoder

REDIS_TIMEOUT_S = 0.5  # per command: a slow Redis is a down Redis for whoever waits on it
WRITE_QUEUE_MAX = 1000  # queued writes; beyond it the oldest is dropped
RETRY_AFTER_S = 1.0  # after a failed write, before the next try
PROBE_INTERVAL_S = 5.0  # how often the health of Redis is checked (and a lost Redis noticed)
WARN_INTERVAL_S = 60.0  # at most one warning a minute while Redis is down or slow

log = get_logger("presales_ws.redis")

Health = Literal["ok", "down"]


class _Set(msgspec.Struct, frozen=True):
    key: str
    state: SessionState  # encoded by the writer, not by the session that queued it
    ttl_ms: int


class _Delete(msgspec.Struct, frozen=True):
    key: str


class _Release(msgspec.Struct, frozen=True):
    key: str
    member: str


_Write = _Set | _Delete | _Release


def state_key(digest: str) -> str:
    return f"presales:session:{digest}"


class SharedState:
    """One per process, when REDIS_URL is set; `run` (in the app's lifespan) drains writes and keeps leases."""

    def __init__(self, url: str, *, state_ttl_s: float) -> None:
        self._redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S, health_check_interval=0
        )
        self._take_lease = self._redis.register_script(TAKE_LEASE)
        self._state_ttl_ms = int(state_ttl_s * 1000)
        self._queue: OrderedDict[str, _Write] = OrderedDict()
        self._queued = anyio.Event()
        self._leases: dict[str, str] = {}  # session id -> key id, for the sessions this instance holds
        self.health: Health = "ok"
        self.dropped = 0
        self._warned_at = -WARN_INTERVAL_S

    # --- the sessions' side: never waits on Redis ---------------------------------------------------------

    def save(self, digest: str, state: SessionState) -> None:
        self._put(state_key(digest), _Set(state_key(digest), state, self._state_ttl_ms))

    def forget(self, digest: str) -> None:
        """The session ended for good (stop, window passed): nobody may resume it anywhere."""
        self._put(state_key(digest), _Delete(state_key(digest)))

    def release_lease(self, key_id: str, session_id: str) -> None:
        if self._leases.pop(session_id, None) is not None:
            self._put(f"lease:{session_id}", _Release(lease_key(key_id), session_id))

    # --- where a client waits anyway: bounded ------------------------------------------------------------

    async def save_now(self, digest: str, state: SessionState) -> bool:
        """Write a state before going on (a drain, before its 1012); False if Redis did not take it in time."""
        self._queue.pop(state_key(digest), None)
        return await self._do(_Set(state_key(digest), state, self._state_ttl_ms))

    async def load(self, digest: str) -> SessionState | None:
        """A session another instance held; None when unknown, expired, unreadable, or Redis is down."""
        try:
            with anyio.fail_after(REDIS_TIMEOUT_S * 2):
                raw = await self._redis.get(state_key(digest))
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            return None
        self._up()
        if raw is None:
            return None
        try:
            state: SessionState = decoder.decode(raw)
        except msgspec.DecodeError:
            return None
        return state

    async def take_lease(self, key_id: str, session_id: str, limit: int) -> bool | None:
        """Whether this key may hold one more session across every instance; None when Redis cannot say."""
        now = time.time()
        try:
            with anyio.fail_after(REDIS_TIMEOUT_S * 2):
                taken = await self._take_lease(
                    keys=[lease_key(key_id)],
                    args=[now, now + LEASE_TTL_S, limit, session_id, int(LEASE_TTL_S * 2000)],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            return None
        self._up()
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
            task_status.started()

    async def aclose(self) -> None:
        """Write what is still queued (bounded), then close the connections."""
        with anyio.move_on_after(REDIS_TIMEOUT_S * 4):
            while self._queue and self.health == "ok":
                _, write = self._queue.popitem(last=False)
                await self._do(write)
        await self._redis.aclose()

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
            if not await self._do(write):
                if name not in self._queue:  # not replaced by a newer write meanwhile: try it again
                    self._queue[name] = write
                    self._queue.move_to_end(name, last=False)
                await anyio.sleep(RETRY_AFTER_S)

    async def _do(self, write: _Write) -> bool:
        try:
            with anyio.fail_after(REDIS_TIMEOUT_S * 2):
                if isinstance(write, _Set):
                    await self._redis.set(write.key, encoder.encode(write.state), px=write.ttl_ms)
                elif isinstance(write, _Delete):
                    await self._redis.delete(write.key)
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
