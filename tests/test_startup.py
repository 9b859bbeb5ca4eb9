"""Start-up refuses clearly: no transcriber, or a bad setting, is one line saying what to do."""

from __future__ import annotations

import os
import subprocess
import sys

SERVE_WITHOUT_LOCAL_EXTRA = """
import sys
sys.modules["faster_whisper"] = None  # as if the 'local' extra were not installed
from presales_ws.cli import main
sys.exit(main(["serve", "--port", "0"]))
"""


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM", "TRANSCRIBER"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environ, cwd="/"
    )


def test_no_key_and_no_local_extra_fails_with_one_clear_line() -> None:
    result = run(SERVE_WITHOUT_LOCAL_EXTRA)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("presales-ws:")]
    assert len(lines) == 1, result.stderr
    assert "DEEPGRAM_API_KEY" in lines[0] and "presales-ws[local]" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_setting_fails_naming_the_variable() -> None:
    result = run("from presales_ws.cli import main; import sys; sys.exit(main(['serve']))", LOCAL_ENDPOINTING_MS="x")
    assert result.returncode == 2
    assert "LOCAL_ENDPOINTING_MS" in result.stderr and "Traceback" not in result.stderr


def test_an_unreadable_knowledge_base_fails_naming_the_variable_and_the_file() -> None:
    code = "from presales_ws.cli import main; import sys; sys.exit(main(['serve', '--port', '0']))"
    result = run(code, KNOWLEDGE_BASE="/nonexistent/kb.md")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("presales-ws:")]
    assert len(lines) == 1 and "KNOWLEDGE_BASE" in lines[0] and "/nonexistent/kb.md" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
