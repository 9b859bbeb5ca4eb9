"""What a session's questions cost the AI team's service, over real sockets on the embedded transcriber: one call
per question, none for a fragment a pause cut off, none for a statement."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from presales_ws.protocol import Status, Suggestion, Transcript
from tests.conftest import LiveServer, make_settings
from tests.support import MANIFEST, transcribe_file

pytestmark = pytest.mark.anyio

CALLS = ("questions_call_two_channel.wav", "call_two_channel.wav")
MAX_CALLS_PER_QUESTION = 1.3


class RecordingService:
    """The AI team's service as a stand-in on loopback: answers every question, and remembers each call."""

    def __init__(self) -> None:
        self.questions: list[str] = []
        app = Starlette(routes=[Route("/suggest", self.suggest, methods=["POST"])])
        self.server = LiveServer(make_settings(), app=app)

    async def suggest(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        self.questions.append(body["question"])
        return JSONResponse({"response": f"About {body['question']!r}: yes.", "confidence": 0.9})


@pytest.fixture(scope="module")
def service() -> Iterator[RecordingService]:
    recording = RecordingService()
    recording.server.start()
    yield recording
    recording.server.stop()


@pytest.fixture(scope="module")
def server(service: RecordingService) -> Iterator[LiveServer]:
    live = LiveServer(make_settings(suggester_url=f"{service.server.http_url}/suggest")).start()
    yield live
    live.stop()


def customer_questions(file: str) -> int:
    return sum(1 for u in MANIFEST[file]["utterances"] if u["channel"] == 1 and u["text"].endswith("?"))


async def test_the_fixture_calls_cost_one_call_per_question(server: LiveServer, service: RecordingService) -> None:
    asked = answered = 0
    for file in CALLS:
        service.questions.clear()
        messages, close_code = await transcribe_file(server.ws_url, file, speed=4.0)
        assert close_code == 1000
        suggestions = [m for m in messages if isinstance(m, Suggestion)]
        assert len(suggestions) == customer_questions(file)  # every customer question answered, once
        assert {s.question for s in suggestions} <= set(service.questions)
        asked += len(service.questions)
        answered += len(suggestions)
    assert answered == 6
    assert asked <= MAX_CALLS_PER_QUESTION * answered, service.questions


async def test_a_question_cut_by_a_pause_is_asked_once_whole_and_never_as_its_fragment(
    server: LiveServer, service: RecordingService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    service.questions.clear()
    # "Could you tell me how" ... 0.9 s ... "your pricing works for large teams?", at real time
    messages, _ = await transcribe_file(server.ws_url, "paused_question_gb.wav", speed=1.0)
    (asked,) = service.questions
    assert asked.lower().startswith("could you tell me how your pricing works"), asked
    (suggestion,) = [m for m in messages if isinstance(m, Suggestion)]
    assert suggestion.question == asked and suggestion.start < 1.0 < 4.0 < suggestion.end
    # The session's closing log line says what it cost.
    session_id = next(m.session_id for m in messages if isinstance(m, Status) and m.state == "ready")
    assert server.wait_until(lambda: closing_line(caplog, session_id) is not None)
    closing = closing_line(caplog, session_id)
    assert closing is not None
    assert closing["suggestions_asked"] == 1 and closing["suggestions_sent"] == 1
    # Held by the prompter and merged, or never cut at all by an engine that waits out unfinished words.
    assert closing["suggestions_held"] == closing["suggestions_merged"] <= 1


async def test_statements_cost_no_call(server: LiveServer, service: RecordingService) -> None:
    service.questions.clear()
    for file in ("integrations_answer_us.wav", "onboarding_answer_us.wav", "two_sentences_us.wav"):
        messages, _ = await transcribe_file(server.ws_url, file, speed=4.0)
        assert not [m for m in messages if isinstance(m, Suggestion)]
    assert service.questions == []


def closing_line(caplog: pytest.LogCaptureFixture, session_id: str | None) -> dict[str, Any] | None:
    for record in caplog.records:
        event = record.msg
        if (
            isinstance(event, dict)
            and event.get("event") == "session.disconnected"
            and event.get("session_id") == session_id
        ):
            return event
    return None


async def test_with_the_fixed_turn_rule_the_prompter_holds_the_fragment_and_merges_it(
    service: RecordingService,
) -> None:
    # TURN_DETECTION=off: every 500 ms pause ends an utterance, so the engine cuts "Could you tell me how".
    live = LiveServer(make_settings(suggester_url=f"{service.server.http_url}/suggest", turn_detection="off")).start()
    try:
        service.questions.clear()
        messages, _ = await transcribe_file(live.ws_url, "paused_question_gb.wav", speed=1.0)
    finally:
        live.stop()
    finals = [m for m in messages if isinstance(m, Transcript) and m.is_final and m.text]
    assert len(finals) == 2  # the fragment was a final of its own
    (asked,) = service.questions
    assert asked.lower().startswith("could you tell me how your pricing works"), asked
    assert [m.question for m in messages if isinstance(m, Suggestion)] == [asked]
