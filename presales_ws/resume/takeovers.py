"""Hearing of takeovers (REDIS_URL): which copies of sessions this instance holds, and the one subscription per
instance that says another holder took one over, so that copy ends at once. A message missed while Redis was away
is made up for by a check of every copy held here against Redis, after each (re)subscription and each health
probe; a write refused because another holder owns the session ends its copy too (resume/redis.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from redis.exceptions import RedisError

from presales_ws.resume.ownership import SUPERSEDED_CHANNEL, owner_key

LISTEN_POLL_S = 1.0  # the subscriber's wait for a message, between checks that its connection is still there
RESUBSCRIBE_AFTER_S = 1.0  # after the subscription failed (Redis down), before the next try
RECONCILE_TIMEOUT_S = 2.0  # one MGET of the owners of every copy held here


class Holder(msgspec.Struct):
    owner: str
    generation: int  # the takeover that made it the owner (0: the session began here)
    superseded: Callable[[], None]  # end this copy: another holder has the session


class Holders:
    """The sessions this instance holds in Redis, by token digest: which copy to end when another holder has it."""

    def __init__(self) -> None:
        self._holders: dict[str, Holder] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def add(self, digest: str, holder: Holder) -> None:
        self._holders[digest] = holder

    def remove(self, digest: str, owner: str) -> None:
        if (holder := self._holders.get(digest)) is not None and holder.owner == owner:
            del self._holders[digest]

    def owners(self) -> dict[str, str]:
        return {digest: holder.owner for digest, holder in self._holders.items()}

    def taken(self, digest: str, generation: int, owner: str) -> None:
        """Another instance (or this one) took the session over: a copy from before that takeover ends. A message
        older than this copy's own takeover (a lower number) is stale; the same number under another owner is a
        later takeover whose count started again (SAVE puts it back with the state, so that stays rare)."""
        holder = self._holders.get(digest)
        if holder is not None and holder.owner != owner and holder.generation <= generation:
            self._end(digest, holder)

    def refused(self, digest: str, owner: str) -> None:
        """Redis names another owner than `owner`: that copy, if it is still held here, ends."""
        holder = self._holders.get(digest)
        if holder is not None and holder.owner == owner:
            self._end(digest, holder)

    def _end(self, digest: str, holder: Holder) -> None:
        del self._holders[digest]
        holder.superseded()


class Takeovers:
    """The copies held here (`holders`) and the subscription that ends them; `listen` runs in SharedState.run."""

    def __init__(self, redis: Any, on_error: Callable[[BaseException], None]) -> None:
        self._redis = redis
        self._on_error = on_error  # Redis down or slow: SharedState's health and its warning
        self.holders = Holders()

    async def listen(self) -> None:
        """Hear of every takeover and end the copies here it superseded; after each (re)subscription, check the
        copies held here against Redis for the messages missed meanwhile."""
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(SUPERSEDED_CHANNEL)
                    await self.reconcile()
                    while True:
                        message = await pubsub.get_message(timeout=LISTEN_POLL_S)
                        if message is not None and message.get("type") == "message":
                            self._taken(message["data"])
            except (RedisError, OSError, TimeoutError) as exc:
                self._on_error(exc)
            await anyio.sleep(RESUBSCRIBE_AFTER_S)

    async def reconcile(self) -> None:
        """The copies held here whose session Redis names another owner for end (a takeover whose message this
        instance missed). Raises what Redis raises: the caller knows whether it is down."""
        held = self.holders.owners()
        if not held:
            return
        with anyio.fail_after(RECONCILE_TIMEOUT_S):
            owners = await self._redis.mget([owner_key(digest) for digest in held])
        for (digest, owner), named in zip(held.items(), owners, strict=True):
            if named is not None and named.decode() != owner:
                self.holders.refused(digest, owner)

    def _taken(self, data: bytes) -> None:
        """A takeover message, `<digest> <generation> <owner>` (ownership.TAKE publishes it)."""
        try:
            digest, generation, owner = data.decode().split(" ")
            self.holders.taken(digest, int(generation), owner)
        except (UnicodeDecodeError, ValueError):
            return
