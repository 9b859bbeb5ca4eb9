"""Keeping a Deepgram connection up: the reconnect loop Nova-3 (deepgram_stream.py) and Flux (flux.py) share.

The SDK does not reconnect. Here a dropped connection (or a close 1011, or a handshake answered 429/5xx) is
opened again with jittered exponential backoff, the client hears of the outage once (`reconnecting`, then
`recovered`), a refused key gets one `transcriber_auth` error and no retry, and an outage longer than
DEEPGRAM_MAX_OUTAGE_S ends the stream with `transcriber_failed`. What each connection does, and how the audio
no final covered yet is replayed on the next one, is the engine's.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import msgspec

from presales_ws.protocol import ErrorCode

BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 8.0
RETRYABLE_STATUS = frozenset({408, 425, 429})  # and every 5xx
AUTH_STATUS = frozenset({401, 403})


class StuckStream(Exception):
    """The provider took audio (and a Finalize) but answered nothing: worth a new connection."""


class ReconnectNow(Exception):
    """The connection must be replaced for a reason of ours, not an outage: connect again at once."""


class RetryPolicy(msgspec.Struct, frozen=True):
    """How long to wait before the next attempt, and how long an outage may last before the stream gives up."""

    max_outage_s: float
    first_s: float = BACKOFF_FIRST_S
    max_s: float = BACKOFF_MAX_S

    def delay_s(self, attempt: int) -> float:
        """Exponential from `first_s`, capped at `max_s`, jittered so sessions cut together do not return together."""
        backoff_s: float = min(self.max_s, self.first_s * 2**attempt)
        return backoff_s * random.uniform(0.5, 1.0)


def describe(exc: BaseException) -> str:
    """A reason for logs and the client that never carries a header or a key."""
    code = getattr(getattr(exc, "rcvd", None), "code", None)
    return f"{type(exc).__name__}" + (f" (close {code})" if code else "")


async def keep_connected(
    *,
    connect: Callable[[], AbstractAsyncContextManager[Any]],
    serve: Callable[[Any], Awaitable[bool]],
    disconnected: Callable[[str], Awaitable[None]],
    recovered: Callable[[], Awaitable[None]],
    fail: Callable[[ErrorCode, str], Awaitable[None]],
    retry: RetryPolicy,
    log: Any,
    name: str,
) -> None:
    """Connect and `serve` (True: the stream finished) until the stream finishes or is declared lost.

    `disconnected(reason)` and `recovered()` bracket each outage; `fail(code, message)` is called once when the
    stream cannot go on. `name` prefixes the log events (`deepgram.backoff`, `flux.backoff`)."""
    from deepgram.core.api_error import ApiError
    from websockets.exceptions import WebSocketException

    attempt = 0
    outage_since: float | None = None
    while True:
        try:
            async with connect() as connection:
                if outage_since is not None:
                    log.info(f"{name}.recovered", outage_s=round(anyio.current_time() - outage_since, 2))
                    await recovered()
                outage_since, attempt = None, 0
                if await serve(connection):
                    return
                reason = "connection closed by Deepgram"
        except ApiError as exc:
            status = exc.status_code or 0  # never log `exc`: its headers hold the key
            if status in AUTH_STATUS:
                log.error(f"{name}.auth_failed", status=status)
                await fail("transcriber_auth", "Deepgram refused the API key; check DEEPGRAM_API_KEY")
                return
            if status not in RETRYABLE_STATUS and status < 500:
                log.error(f"{name}.refused", status=status)
                await fail("transcriber_failed", f"Deepgram refused the stream (HTTP {status})")
                return
            reason = f"HTTP {status}"
        except ReconnectNow:
            continue
        except (OSError, TimeoutError, WebSocketException, StuckStream) as exc:
            reason = describe(exc)
        now = anyio.current_time()
        if outage_since is None:
            outage_since = now
            log.warning(f"{name}.disconnected", reason=reason)
            await disconnected(reason)
        if now - outage_since >= retry.max_outage_s:
            log.error(f"{name}.gave_up", outage_s=round(now - outage_since, 1), reason=reason)
            await fail("transcriber_failed", f"Deepgram unreachable for {retry.max_outage_s:.0f} s ({reason})")
            return
        delay = retry.delay_s(attempt)
        attempt += 1
        log.info(f"{name}.backoff", delay_s=round(delay, 2), reason=reason)
        await anyio.sleep(delay)


async def read_and_pump(read: Callable[[], Awaitable[None]], pump: Callable[[anyio.Event], Awaitable[None]]) -> bool:
    """One connection's reader and pump, until either ends (the other is cancelled): either side ending ends the
    connection. Re-raises the first error either met; returns whether the reader ended (the connection closed).
    The pump gets that as an event: after CloseStream it waits for it."""
    outcome: list[BaseException] = []
    closed = anyio.Event()

    async with anyio.create_task_group() as tg:

        async def guarded(work: Callable[[], Awaitable[None]]) -> None:
            try:
                await work()
            except Exception as exc:
                outcome.append(exc)
            tg.cancel_scope.cancel()

        async def reading() -> None:
            try:
                await read()
            finally:
                closed.set()

        tg.start_soon(guarded, reading)
        tg.start_soon(guarded, lambda: pump(closed))

    if outcome:
        raise outcome[0]
    return closed.is_set()
