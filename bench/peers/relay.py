"""The limit of the Deepgram path: a raw ASGI app that relays each session to an upstream WebSocket.

    RELAY_UPSTREAM=ws://127.0.0.1:8770 RELAY_KEY=KEY .venv/bin/python -m bench.peers.relay --port 8010

No Starlette, no session, no SDK: each client frame goes to the upstream connection as it arrives, each
upstream message back to the client as it arrives, nothing else (one text frame, `READY`, once the upstream
connection is open, so the load generator starts streaming at the same point as with presales-ws). It runs
on the uvicorn configuration `presales-ws serve` uses; the upstream client is websockets' asyncio client,
which the Deepgram SDK's connection also rests on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.peers import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READY = '{"type":"status","state":"ready","session_id":"relay","transcriber":"relay"}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
    elif scope["type"] == "http":  # /health, so the harness waits for every server the same way
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok\n"})
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    query = scope.get("query_string", b"").decode()
    url = f"{os.environ['RELAY_UPSTREAM']}/v1/listen?{query}"
    headers = {"Authorization": f"Token {os.environ['RELAY_KEY']}"}
    async with connect(url, additional_headers=headers, compression=None) as upstream:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": READY})
        back = asyncio.create_task(downstream(upstream, send))
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                await upstream.send(data if data is not None else message["text"])
        except ConnectionClosed:
            return
        finally:
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await back


async def downstream(upstream: ClientConnection, send: Send) -> None:
    async for message in upstream:
        key = "bytes" if isinstance(message, bytes) else "text"
        await send({"type": "websocket.send", key: message})


if __name__ == "__main__":
    serve(app, __doc__.splitlines()[0])
