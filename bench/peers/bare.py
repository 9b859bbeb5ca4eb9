"""The limit: a raw ASGI WebSocket app on uvicorn that answers each binary frame and does nothing else.

    .venv/bin/python -m bench.peers.bare --port 8010

No Starlette, no session, no transcriber: what is left is uvicorn, its WebSocket implementation and the
event loop, which no application on them can beat. Each binary frame gets one text frame shaped like a
presales-ws final (same fields, about the same size) carrying the frame id from the frame's first 8 bytes,
so the load generator and the real client decode the same thing from every server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench.peers import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READY = '{"type":"status","state":"ready","session_id":"bare","transcriber":"bare","sample_rate":16000,"channels":1}'
FINAL_HEAD = '{"type":"transcript","text":"'
FINAL_TAIL = (
    '","speaker":"unknown","is_final":true,"speaker_id":0,"channel":0,"start":0.0,"end":0.02,'
    '"confidence":1.0,"utterance_end":true,"role_confidence":0.0}'
)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await websocket(receive, send)
    elif scope["type"] == "http":  # /health, so the harness waits for every server the same way
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok\n"})
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


async def websocket(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": READY})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            frame_id = int.from_bytes(data[:8], "little")
            await send({"type": "websocket.send", "text": f"{FINAL_HEAD}{frame_id}{FINAL_TAIL}"})


if __name__ == "__main__":
    serve(app, __doc__.splitlines()[0])
