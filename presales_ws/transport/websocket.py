"""The WebSocket under a session: uvicorn's websockets-sansio protocol, with what it leaves unbounded bounded.

- **A peer that stops reading.** uvicorn's `send` waits for the socket to drain with no limit, and
  `transport.close()` flushes first, with no limit either; ASGI has no abort to say "give up on this peer".
  Each connection puts one in its scope (`abort_connection(scope)`, the `presales.abort` extension): the
  session bounds every write and, when one stalls, resets the connection (RST) rather than wait.
- **Pongs nobody reads.** websockets answers every ping and uvicorn writes each pong at once: one socket
  flooding pings without reading grew the server by 250+ MiB in 10 s, with or without a valid key. Pongs
  are dropped while the write buffer is over its high-water mark, so a flood costs CPU, not memory.
- **Connections that outlive their app.** A refusal or a close waited 10 s for the peer's close frame,
  then flushed forever. Once the app is done (or uvicorn shuts down, or gives up on keepalive pongs), a
  peer that has not finished closing within `close_timeout_s` is reset.
- **Request heads websockets refuses** (a line over 8 KiB, more than 128 headers): websockets prepares a
  431 (or 414) that uvicorn never sent, leaving the client waiting on an open socket. It is sent, then
  the connection closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from presales_ws.transport.limits import limits_of
from presales_ws.transport.reset import ResetTimer

ABORT_EXTENSION = "presales.abort"


def abort_connection(scope: Mapping[str, Any]) -> bool:
    """Reset the client's connection now; False when the server put no abort in the scope (another server)."""
    extension = (scope.get("extensions") or {}).get(ABORT_EXTENSION)
    if extension is None:
        return False
    extension["abort"]()
    return True


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """`ws=` for uvicorn; see the module docstring for what it bounds and why."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits = limits_of(config)
        self.close_timeout = self.limits.close_timeout_s  # uvicorn's wait for the peer's close frame (10 s)
        self._reset = ResetTimer(self.loop, self.limits.close_timeout_s, self.abort)

    def abort(self) -> None:
        """Drop the connection without flushing: nothing still buffered for this peer is worth waiting for."""
        if not self.disconnected:
            self.transport.abort()

    def reset_unless_closed(self) -> None:
        """The peer has `close_timeout_s` to finish closing (and read what is buffered for it), then an RST."""
        self._reset.start()

    def connection_lost(self, exc: Exception | None) -> None:
        self._reset.connection_lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None and not self.transport.is_closing():
            # websockets refused the request head and queued its answer (431, 414, or just EOF): send it.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            self.reset_unless_closed()

    def handle_ping(self) -> None:
        pongs = self.conn.data_to_send()  # taken either way: left in websockets' buffer, they would pile up there
        if self.writable.is_set():
            self.transport.write(b"".join(pongs))

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self.reset_unless_closed()

    def shutdown(self) -> None:
        super().shutdown()
        self.reset_unless_closed()

    async def run_asgi(self) -> None:
        self.scope.setdefault("extensions", {})[ABORT_EXTENSION] = {"abort": self.abort}
        try:
            await super().run_asgi()
        finally:
            self.reset_unless_closed()
