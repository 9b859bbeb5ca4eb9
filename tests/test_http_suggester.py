"""The HTTP suggester against a stand-in for the AI team's service on loopback, through a live session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from presales_ws.protocol import Status, Suggestion, Transcript
from presales_ws.suggesters.http import HttpSuggester
from tests.conftest import LiveServer, make_settings
from tests.support import transcribe_file
from tests.test_suggestions_e2e import SAMPLE_KB

pytestmark = pytest.mark.anyio

AI_KEY = "ai-service-key-0123456789"
OFFICE_ANSWER = "We have offices in London, Berlin and Singapore."


class AiService:
    """Answers questions about offices after `delay_s`; `status` other than 200 plays a broken service."""

    def __init__(self, delay_s: float = 0.0, status: int = 200) -> None:
        self.delay_s = delay_s
        self.status = status
        self.requests: list[tuple[dict[str, str], Any]] = []
        app = Starlette(routes=[Route("/suggest", self.suggest, methods=["POST"])])
        self.server = LiveServer(make_settings(), app=app)

    async def suggest(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        await anyio.sleep(self.delay_s)
        if self.status != 200:
            return Response("upstream broke", status_code=self.status)
        if "office" in body["question"].lower():
            return JSONResponse({"response": OFFICE_ANSWER, "confidence": 0.8})
        return JSONResponse({"response": None})

    @property
    def url(self) -> str:
        return f"{self.server.http_url}/suggest"


def serve(ai: AiService, **settings: object) -> LiveServer:
    ai.server.start()
    return LiveServer(make_settings(suggester_url=ai.url, suggester_api_key=AI_KEY, **settings)).start()


@pytest.fixture
def ai() -> Iterator[AiService]:
    service = AiService()
    yield service
    service.server.stop()


async def test_the_knowledge_base_answers_what_it_knows_and_the_ai_service_the_rest(ai: AiService) -> None:
    server = serve(ai, knowledge_base=str(SAMPLE_KB))
    try:
        messages, close_code = await transcribe_file(server.ws_url, "questions_call_two_channel.wav", speed=4.0)
    finally:
        server.stop()
    assert close_code == 1000
    suggestions = [m for m in messages if isinstance(m, Suggestion)]
    assert [s.source for s in suggestions] == ["knowledge_base"] * 3 + ["http"]
    assert suggestions[-1].response == OFFICE_ANSWER and suggestions[-1].confidence == 0.8
    # The service was asked only what the knowledge base could not answer, with the conversation so far.
    session_id = next(m.session_id for m in messages if isinstance(m, Status) and m.state == "ready")
    (headers, body) = next((h, b) for h, b in ai.requests if "office" in b["question"].lower())
    assert headers["authorization"] == f"Bearer {AI_KEY}"
    assert body["session_id"] == session_id
    assert {"speaker": "customer", "text": suggestions[-2].question} in body["context"]
    assert all(set(line) == {"speaker", "text"} for line in body["context"])
    assert not [b for _, b in ai.requests if "single sign" in b["question"].lower()]  # the KB had it


@pytest.mark.parametrize(("delay_s", "status"), [(1.5, 200), (0.0, 500)])
async def test_a_slow_or_broken_ai_service_costs_the_suggestion_not_the_transcript(delay_s: float, status: int) -> None:
    ai = AiService(delay_s=delay_s, status=status)
    server = serve(ai, suggester_timeout_s=0.3)
    try:
        messages, close_code = await transcribe_file(server.ws_url, "questions_call_two_channel.wav", speed=4.0)
    finally:
        server.stop()
        ai.server.stop()
    assert close_code == 1000
    assert ai.requests  # it was asked
    assert not [m for m in messages if isinstance(m, Suggestion)]
    finals = [m for m in messages if isinstance(m, Transcript) and m.is_final and m.text]
    assert len([f for f in finals if f.channel == 1]) == 4  # every customer question, transcribed all the same
    assert len(finals) >= 6  # ("Yes." then a pause may be a final of its own: a complete sentence)


async def test_a_reply_without_a_confidence_is_no_suggestion() -> None:
    async def answer(request: Request) -> Response:
        return JSONResponse({"response": "We have offices everywhere."})  # no confidence: cannot be judged

    stand_in = LiveServer(make_settings(), app=Starlette(routes=[Route("/suggest", answer, methods=["POST"])])).start()
    suggester = HttpSuggester(f"{stand_in.http_url}/suggest", timeout_s=2.0, min_confidence=0.5)
    try:
        await suggester.start()
        assert await suggester.suggest("Do you have an office in Singapore?", [], "s_test") is None
    finally:
        await suggester.aclose()
        stand_in.stop()
