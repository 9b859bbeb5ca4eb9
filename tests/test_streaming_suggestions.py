"""Streaming answers (text/event-stream) from the AI team's service, through a live session: the answer as it is
written, then complete; a broken stream costs that suggestion only."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterable, Iterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from presales_ws.protocol import Suggestion, Transcript
from presales_ws.suggesters.sse import event_data
from tests.conftest import LiveServer, make_settings
from tests.support import transcribe_file
from tests.test_cli_stream import run_on_a_terminal, stream_command

ANSWER = "Yes. SSO via SAML 2.0 and OpenID Connect, with ready-made apps for Okta and Entra ID."
FILE = "sso_question_gb.wav"


def sse(*events: object) -> list[bytes]:
    return [f"data: {json.dumps(event)}\n\n".encode() for event in events]


def written(answer: str = ANSWER) -> list[bytes]:
    """What a well-behaved service streams: the confidence, the answer word by word, `done`."""
    words = answer.split(" ")
    return sse({"confidence": 0.8}, *({"delta": w + (" " if i < len(words) - 1 else "")} for i, w in enumerate(words)))


class StreamingService:
    """Streams `chunks` with `gap_s` between them; `cut` ends the connection mid-body instead of finishing."""

    def __init__(self, chunks: list[bytes], *, gap_s: float = 0.03, cut: bool = False) -> None:
        self.chunks, self.gap_s, self.cut = chunks, gap_s, cut
        self.calls = 0
        self.server = LiveServer(
            make_settings(), app=Starlette(routes=[Route("/suggest", self.suggest, methods=["POST"])])
        )

    async def suggest(self, request: Request) -> Response:
        await request.json()
        self.calls += 1
        return StreamingResponse(self.body(), media_type="text/event-stream")

    async def body(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
            await anyio.sleep(self.gap_s)
        if self.cut:
            raise ConnectionAbortedError("the service died mid-answer")  # uvicorn drops the connection


async def suggestions_from(service: StreamingService, caplog: pytest.LogCaptureFixture) -> list[Suggestion]:
    service.server.start()
    server = LiveServer(make_settings(suggester_url=f"{service.server.http_url}/suggest")).start()
    caplog.set_level(logging.INFO)
    logging.getLogger().addHandler(caplog.handler)  # building the app set up logging anew, without it
    try:
        messages, close_code = await transcribe_file(server.ws_url, FILE, speed=2.0)
    finally:
        logging.getLogger().removeHandler(caplog.handler)
        server.stop()
        service.server.stop()
    assert close_code == 1000
    assert [m for m in messages if isinstance(m, Transcript) and m.is_final and m.text]  # the transcript is whole
    assert service.calls == 1
    return [m for m in messages if isinstance(m, Suggestion)]


def logged(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


@pytest.mark.anyio
async def test_a_streamed_answer_arrives_as_partials_then_once_complete(caplog: pytest.LogCaptureFixture) -> None:
    service = StreamingService(written() + sse({"done": True}))
    *partials, complete = await suggestions_from(service, caplog)
    assert partials and all(p.partial for p in partials)
    assert len(partials) < len(ANSWER.split(" "))  # 16 deltas 30 ms apart, forwarded at most every 100 ms
    assert all(ANSWER.startswith(p.response) and p.response for p in partials)
    assert [len(p.response) for p in partials] == sorted({len(p.response) for p in partials})  # always further on
    assert not complete.partial and complete.response == ANSWER and complete.confidence == 0.8
    assert {(s.question, s.start, s.end, s.source) for s in [*partials, complete]} == {
        (complete.question, complete.start, complete.end, "http")
    }


@pytest.mark.parametrize(
    ("chunks", "cut", "why"),
    [
        (written(), True, "cut: RemoteProtocolError"),
        ([*written()[:4], b"data: {not json\n\n", *written()[4:], *sse({"done": True})], False, "not a stream event"),
        (written(), False, "without done"),
    ],
    ids=["cut-mid-answer", "invalid-json", "no-done"],
)
@pytest.mark.anyio
async def test_a_broken_stream_withdraws_its_partials_and_costs_only_that_suggestion(
    chunks: list[bytes], cut: bool, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    suggestions = await suggestions_from(StreamingService(chunks, cut=cut), caplog)
    *partials, last = suggestions
    assert partials and all(p.partial for p in partials)
    assert not last.partial and last.response == ""  # withdrawn: the client drops what it showed
    (broken,) = logged(caplog, "suggester.http_bad_stream")
    assert why in str(broken["detail"]), broken
    assert logged(caplog, "suggestion.withdrawn")


@pytest.mark.anyio
async def test_a_stream_below_the_confidence_threshold_is_dropped_unread(caplog: pytest.LogCaptureFixture) -> None:
    service = StreamingService(sse({"confidence": 0.2}) + written()[1:] + sse({"done": True}))
    assert await suggestions_from(service, caplog) == []
    assert not logged(caplog, "suggester.http_bad_stream")


async def chunks_of(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize(
    "pieces",
    [
        [b'data: {"a": 1}\n\ndata: {"b": 2}\n\n'],
        [b'data: {"a"', b": 1}\r", b"\n\r\ndata:", b' {"b": 2}\r\r'],  # lines split anywhere, CRLF and CR
        [b': a comment\nevent: delta\nid: 7\ndata: {"a": 1}\n\n', b'retry: 10\ndata: {"b": 2}\n\n'],
        [b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: {"c": 3}'],  # the last event never closed: dropped
    ],
)
@pytest.mark.anyio
async def test_server_sent_events_are_read_as_the_standard_says(pieces: list[bytes]) -> None:
    assert [data async for data in event_data(chunks_of(pieces))] == ['{"a": 1}', '{"b": 2}']


@pytest.mark.anyio
async def test_event_data_keeps_line_separators_json_allows_and_joins_data_lines() -> None:
    pieces = ['data: {"delta": "a\u2028b"}\n\n'.encode(), b"data: first\ndata:second\n\n"]
    assert [d async for d in event_data(chunks_of(pieces))] == ['{"delta": "a\u2028b"}', "first\nsecond"]


@pytest.fixture
def streaming_server() -> Iterator[LiveServer]:
    service = StreamingService([*written(), *sse({"done": True})], gap_s=0.08)
    service.server.start()
    live = LiveServer(make_settings(suggester_url=f"{service.server.http_url}/suggest")).start()
    yield live
    live.stop()
    service.server.stop()


def test_presales_ws_stream_prints_the_answer_as_it_is_written(streaming_server: LiveServer) -> None:
    command = stream_command(FILE, streaming_server.ws_url)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    partials = [line.split(" -> ", 1)[1] for line in lines if line.startswith("suggestion … ")]
    assert partials and all(ANSWER.startswith(p) for p in partials), result.stdout  # a plain line each, in a pipe
    (complete,) = [line for line in lines if line.startswith("suggestion (")]
    assert complete.startswith("suggestion (0.80) ") and complete.endswith(f" -> {ANSWER}")
    assert lines.index(complete) > max(i for i, line in enumerate(lines) if line.startswith("suggestion … "))


def test_presales_ws_stream_on_a_terminal_writes_the_answer_on_the_live_line(streaming_server: LiveServer) -> None:
    code, out = run_on_a_terminal(stream_command(FILE, streaming_server.ws_url), {**os.environ, "COLUMNS": "400"})
    assert code == 0, out
    assert re.search(r"\r\x1b\[K.*suggestion … .+ -> Yes\.", out), out  # rewritten in place while written
    assert re.search(rf"\nsuggestion \(0\.80\) .+ -> {re.escape(ANSWER)}\r?\n", out.replace("\r\x1b[K", "\n")), out
