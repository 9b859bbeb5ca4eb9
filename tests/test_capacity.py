"""The embedded engine refuses a session it cannot serve in real time, instead of slowing everyone."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from presales_ws.client import SessionRefused, connect
from presales_ws.protocol import Status
from tests.conftest import LiveServer, make_settings
from tests.support import final_text, reference_text, transcribe_file, word_error_rate

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def one_stream_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(local_max_streams=2)).start()
    yield server
    server.stop()


async def test_session_beyond_capacity_gets_transcriber_busy_and_1013(one_stream_server: LiveServer) -> None:
    async with connect(one_stream_server.ws_url, channels=2):  # takes both streams
        with pytest.raises(SessionRefused) as refused:
            async with connect(one_stream_server.ws_url):
                pass
        assert refused.value.code == "transcriber_busy" and refused.value.close_code == 1013
    # capacity comes back when the session ends (the server's side of it: the client's close returns first)
    transcriber = one_stream_server.service.transcriber
    assert one_stream_server.wait_until(lambda: transcriber.open_streams == 0)
    messages, close_code = await transcribe_file(one_stream_server.ws_url, "pricing_question_gb.wav")
    assert close_code == 1000
    assert word_error_rate(reference_text("pricing_question_gb.wav"), final_text(messages)) < 0.25


async def test_session_events_are_logged_with_its_session_id(
    one_stream_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    messages, _ = await transcribe_file(one_stream_server.ws_url, "pricing_question_us.wav")
    ready = messages[0]
    assert isinstance(ready, Status) and ready.session_id

    def events() -> dict[str, dict[str, object]]:
        return {
            r.msg["event"]: r.msg
            for r in caplog.records
            if isinstance(r.msg, dict) and r.msg.get("session_id") == ready.session_id
        }

    assert one_stream_server.wait_until(lambda: "session.disconnected" in events())
    for name in ("session.connected", "session.ending", "session.disconnected"):  # all bound to the session
        assert name in events(), name
    done = events()["session.disconnected"]
    assert done["close_code"] == 1000 and done["finals_sent"] == 1 and done["bytes_in"] == 111336
    assert isinstance(done["duration_s"], float) and done["duration_s"] > 0
