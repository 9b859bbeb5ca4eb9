"""Request heads, bounded: uvicorn's h11 protocol with a header timeout and refusals that reach the client.

uvicorn's default HTTP protocol (httptools) puts no limit on a request head: one 64 MB header was read
whole (eight at once: 578 MB). h11 refuses a head over `h11_max_incomplete_event_size` (`max_head_bytes`)
having read at most that plus one socket read. Neither has a header timeout: a client trickling header
bytes (slowloris) held its connection for as long as it liked. Here a head must be complete within
`header_timeout_s` of the connection opening or of the previous response.

A refused head is answered 431 (too large) or 400, then the connection is half-closed and whatever the
client still sends is read and dropped for `close_timeout_s`: closing a socket that has unread input
resets it (RST), which can destroy the answer before the client has read it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from presales_ws.logs import get_logger
from presales_ws.transport.limits import limits_of
from presales_ws.transport.reset import ResetTimer

log = get_logger("presales_ws.transport")


class BoundedH11Protocol(H11Protocol):
    """`http=` for uvicorn; see the module docstring for what it bounds and why."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits = limits_of(config)
        self._head_timer: asyncio.TimerHandle | None = None
        self._reset = ResetTimer(self.loop, self.limits.close_timeout_s, self._abort)
        self._refused = False
        self._lost = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._head_arrived()
        self._reset.connection_lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped while the refusal reaches the client
        super().data_received(data)
        if self.transport.get_protocol() is self and self.conn.their_state is h11.IDLE:
            self._await_head()
        else:
            self._head_arrived()  # complete, refused, or upgraded to a WebSocket (no longer ours)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        too_large = len(self.conn.trailing_data[0]) > self.limits.max_head_bytes
        status, text = (431, "Request header fields too large.") if too_large else (400, msg)
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status])
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self._refuse()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._reset.start()

    def shutdown(self) -> None:
        super().shutdown()
        self._reset.start()

    # --- timers ----------------------------------------------------------------------------------------------

    def _await_head(self) -> None:
        if self._head_timer is None and not self._lost:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._lost or self.transport.get_protocol() is not self or self.conn.their_state is not h11.IDLE:
            return
        log.info("http.header_timeout", client=self.client and f"{self.client[0]}:{self.client[1]}")
        self.transport.abort()

    def _refuse(self) -> None:
        """Half-close after the answer; the client's EOF (or `close_timeout_s`) ends the connection."""
        self._refused = True
        self._head_arrived()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._reset.start()

    def _abort(self) -> None:
        self.transport.abort()
