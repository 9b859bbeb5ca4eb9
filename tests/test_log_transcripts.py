"""LOG_TRANSCRIPTS: each final's text on the session's logger when asked, and never otherwise."""

from __future__ import annotations

import logging

import pytest

from presales_ws.protocol import Status
from tests.conftest import LiveServer, make_settings
from tests.support import finals, transcribe_file

pytestmark = pytest.mark.anyio

FIXTURE = "pricing_question_us.wav"


@pytest.mark.parametrize("log_transcripts", [True, False], ids=["on", "off"])
async def test_finals_are_logged_only_with_log_transcripts(
    log_transcripts: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server = LiveServer(make_settings(log_level="info", log_transcripts=log_transcripts)).start()
    caplog.set_level(logging.INFO)
    logging.getLogger().addHandler(caplog.handler)  # the app's logging set-up replaced the root's handlers
    try:
        messages, close_code = await transcribe_file(server.ws_url, FIXTURE)
        assert server.wait_until(lambda: len(server.service.registry) == 0)
    finally:
        server.stop()
        logging.getLogger().removeHandler(caplog.handler)
    ready = messages[0]
    assert isinstance(ready, Status) and close_code == 1000
    sent = finals(messages)
    assert sent
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "transcript.final"]
    everything = "\n".join(str(r.msg) for r in caplog.records)
    if not log_transcripts:
        assert logged == []
        for final in sent:
            assert final.text not in everything  # no other event carries the words either
        return
    assert [m["text"] for m in logged] == [f.text for f in sent]
    for entry, final in zip(logged, sent, strict=True):
        assert entry["session_id"] == ready.session_id
        assert (entry["speaker"], entry["channel"], entry["start"], entry["end"], entry["confidence"]) == (
            final.speaker,
            final.channel,
            final.start,
            final.end,
            final.confidence,
        )
