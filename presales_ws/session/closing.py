"""How a session's socket is closed: always bounded in time, and, when there is a reason to give, with an
`error` first. One path for every refusal, at connect or later, so each gets the same safety."""

from __future__ import annotations

import contextlib

import anyio
from starlette.websockets import WebSocket, WebSocketState

from presales_ws import protocol
from presales_ws.protocol import Error
from presales_ws.transport.websocket import abort_connection

CLOSE_TIMEOUT_S = 5.0  # a close that cannot even be written (the client stopped reading) gives up after this


async def close(
    websocket: WebSocket, code: int, reason: str, *, error: Error | None = None, subprotocol: str | None = None
) -> None:
    """Say `error` if given, then close with `code`. A socket not yet accepted is accepted first (a refusal
    before any frame is read: the client learns the reason and the code); one already closed is left alone.

    Shielded, so a refusal on the way out of a cancelled session still goes out, and bounded by CLOSE_TIMEOUT_S:
    a client that stopped reading cannot take even a close frame, and has its connection reset instead."""
    with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True) as scope, contextlib.suppress(Exception):
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.accept(subprotocol=subprotocol)
        if websocket.application_state != WebSocketState.CONNECTED:
            return
        if error is not None:
            await websocket.send_text(protocol.encode(error).decode())
        await websocket.close(code, reason)
    if scope.cancelled_caught:
        abort_connection(websocket.scope)
