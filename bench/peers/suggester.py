"""A stand-in for the AI team's suggester: three kinds of LLM service on loopback, each call recorded.

    .venv/bin/python -m bench.peers.suggester --port 8012

`POST /instant` answers at once, `POST /slow` after SLOW_S, `POST /stream` as server-sent events: the
confidence at once, the first delta after FIRST_DELTA_S, then a delta every DELTA_GAP_S, then `done`.
Every question is answered (confidence 0.9), so every question the service is asked for shows. `GET /calls`
lists the calls since the last `POST /reset` (question, and when on the machine's monotonic clock, which
every process shares): the bench counts them and times them against the end of each question.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from bench.peers import serve

SLOW_S = 1.0
FIRST_DELTA_S = 0.3
DELTA_GAP_S = 0.05
ANSWER = "Yes: that is covered, and I will send you the details in writing after this call so your team has them."

calls: list[dict[str, str | float]] = []


async def asked(request: Request) -> None:
    arrived = time.monotonic()
    calls.append({"question": (await request.json())["question"], "at": arrived})


async def instant(request: Request) -> Response:
    await asked(request)
    return JSONResponse({"response": ANSWER, "confidence": 0.9})


async def slow(request: Request) -> Response:
    await asked(request)
    await anyio.sleep(SLOW_S)
    return JSONResponse({"response": ANSWER, "confidence": 0.9})


async def stream(request: Request) -> Response:
    await asked(request)

    async def events() -> AsyncIterator[str]:
        yield f"data: {json.dumps({'confidence': 0.9})}\n\n"
        await anyio.sleep(FIRST_DELTA_S)
        words = ANSWER.split(" ")
        for index, word in enumerate(words):
            if index:
                await anyio.sleep(DELTA_GAP_S)
            yield f"data: {json.dumps({'delta': word if index == 0 else ' ' + word})}\n\n"
        yield f"data: {json.dumps({'done': True})}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def list_calls(request: Request) -> Response:
    return JSONResponse(calls)


async def reset(request: Request) -> Response:
    calls.clear()
    return PlainTextResponse("ok\n")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok\n")


app = Starlette(
    routes=[
        Route("/instant", instant, methods=["POST"]),
        Route("/slow", slow, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
        Route("/calls", list_calls),
        Route("/reset", reset, methods=["POST"]),
        Route("/health", health),
    ]
)

if __name__ == "__main__":
    serve(app, __doc__ or "")
