"""SIGTERM to a real server process: every live session gets its finals, then 1012; none is cut."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bench.drain import KEY, drain_run
from presales_ws.protocol import Status
from tests.support import final_text

pytestmark = pytest.mark.anyio

SESSIONS = 50


async def test_sigterm_drains_fifty_sessions_mid_utterance(tmp_path: Path) -> None:
    run = await drain_run(SESSIONS, tmp_path)
    assert run.health_after_signal == 503 and run.health_reason == "shutting down"
    assert len(run.sessions) == SESSIONS
    for messages, close_code in run.sessions:
        assert close_code == 1012
        states = [m.state for m in messages if isinstance(m, Status)]
        assert "closing" in states and states[-1] == "closed"
        text = final_text(messages)
        assert text.startswith("Yes, we integrate with Salesforce"), text  # the words received before SIGTERM
    assert '"event": "server.drained"' in run.log and '"cut": 0' in run.log, run.log[-2000:]
    assert KEY not in run.log
    assert run.exit_code == -signal.SIGTERM  # the signal re-raised after the drain: the process ends as signalled
