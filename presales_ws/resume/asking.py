"""The Redis commands a client waits on: a claim at a resume, a lease at connect.

They go through connections of their own, whose commands redis-py never resends by itself (by default it does,
after a connection error or a timeout): a claim must reach Redis at most once. Each is bounded; a Redis that is
down or too slow answers None, and the client goes on without it (a new session, this instance's own count).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.maint_notifications import MaintNotificationsConfig

from presales_ws.resume.leases import TAKE_LEASE
from presales_ws.resume.ownership import TAKE

# redis-py checks a pooled connection for a close Redis already sent before it hands it out (so a command is not
# written to a connection Redis closed, e.g. after a restart), unless it listens for maintenance notices (RESP3's
# default), which a single Redis never sends.
NO_NOTICES = MaintNotificationsConfig(enabled=False)


class Asker:
    """The claims' and leases' connections, and how a command on them is sent and answered."""

    def __init__(
        self, url: str, timeout_s: float, down: Callable[[BaseException], None], up: Callable[[], None]
    ) -> None:
        self._timeout_s = timeout_s
        self._redis: Any = aioredis.Redis.from_url(
            url,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=NO_NOTICES,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        self.take_lease = self._redis.register_script(TAKE_LEASE)
        self.take = self._redis.register_script(TAKE)
        self._down, self._up = down, up

    async def ask(self, script: Any, *, keys: list[str], args: list[Any], once: bool = False) -> Any:
        """One script a client waits on, bounded; None when Redis is down or too slow. A connection Redis closed
        (it restarted since the pool last used it) means the idle ones are stale too: they are dropped, and the
        script is sent again on a new connection; unless it must run at most once (`once`: a claim, which Redis
        may have run before the connection broke): that one is sent again only if sending it failed."""
        try:
            with anyio.fail_after(self._timeout_s * 2):
                if once:
                    answer = await self._run_once(script, keys, args)
                else:
                    try:
                        answer = await script(keys=keys, args=args)
                    except RedisConnectionError:
                        await self._redis.connection_pool.disconnect(inuse_connections=False)
                        answer = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            return None
        self._up()
        return answer

    async def _run_once(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Send `script` on one connection and read its answer. Sent again only when it did not leave: a stale
        connection fails as it is written to, and a Redis that lost its scripts (a restart) answers NOSCRIPT
        without running it. A connection left with an answer unread (a timeout) is closed, never reused."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            try:
                await connection.send_command(*command)
            except RedisConnectionError:
                await pool.disconnect(inuse_connections=False)
                await connection.send_command(*command)
            try:
                return await connection.read_response()
            except NoScriptError:
                await connection.send_command("SCRIPT", "LOAD", script.script)
                await connection.read_response()
                await connection.send_command(*command)
                return await connection.read_response()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.disconnect(nowait=True)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await pool.release(connection)

    async def check(self) -> None:
        """The connection claims go out on, checked with each probe (made again after a Redis restart): a claim
        finds one ready, which a stale one would cost its single send."""
        try:
            await self._redis.ping()
        except RedisConnectionError:
            await self._redis.connection_pool.disconnect(inuse_connections=False)
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
