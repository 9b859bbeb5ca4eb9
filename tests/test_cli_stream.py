"""`presales-ws stream FILE` against a live server, as a person runs it: plain lines in a pipe, a live view
on a terminal, and a summary whose latency is measured from the end of speech to the final."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from presales_ws.client.connection import session_url
from presales_ws.client.wavfile import read_wav
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, reference_text, word_error_rate

SUMMARY = re.compile(
    r"^-- (?P<finals>\d+) finals, (?P<words>\d+) words, (?P<audio>[\d.]+) s of audio in (?P<elapsed>[\d.]+) s, "
    r"end of speech to final: median (?P<median>[\d.]+) s, max (?P<max>[\d.]+) s, closed (?P<close>\d+)$",
    re.MULTILINE,
)
FINAL_LINE = re.compile(r"^(?P<role>\w+) +\[[\d. -]+\]   (?P<text>.+?)   \(\+(?P<lag>[\d.]+) s\)$", re.MULTILINE)
KEY = "pk_cli_0123456789abcdef"


def stream_command(file: str, url: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "presales_ws", "stream", str(FIXTURES / file), "--url", url, *options]


def run_on_a_terminal(command: list[str], env: dict[str, str], timeout_s: float = 60.0) -> tuple[int, str]:
    """Run with stdout on a pseudo-terminal (so it sees a TTY) and return everything it wrote."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, stdout=terminal, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break
        return process.wait(timeout=10), b"".join(chunks).decode()
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_stream_in_a_pipe_prints_plain_lines_finals_with_roles_and_a_summary(live_server: LiveServer) -> None:
    file = "two_sentences_us.wav"
    result = subprocess.run(
        stream_command(file, live_server.ws_url), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\r" not in out and "█" not in out  # nothing rewritten, no progress bar outside a terminal
    interims = [line for line in out.splitlines() if " … " in line]  # how many depends on the decoder's pace
    assert all(re.fullmatch(r"unknown +\[[\d. -]+\] … .+", line) for line in interims), out  # one plain line each
    finals = [m.groupdict() for m in FINAL_LINE.finditer(out)]
    assert [f["role"] for f in finals] == ["unknown", "unknown"], out
    assert word_error_rate(reference_text(file), " ".join(f["text"] for f in finals)) <= 0.3
    summary = SUMMARY.search(out)
    assert summary is not None, out
    assert int(summary["finals"]) == 2 and summary["close"] == "1000"
    assert int(summary["words"]) == sum(len(f["text"].split()) for f in finals)
    assert float(summary["audio"]) == pytest.approx(9.0, abs=0.2)
    lags = sorted(float(f["lag"]) for f in finals)
    # Endpointing (500 ms of silence, sent at 1.9x) plus a decode: well under the 5 s of a lost final.
    assert 0.1 < float(summary["median"]) < 5.0
    assert float(summary["max"]) == pytest.approx(lags[-1], abs=0.011)


def test_stream_on_a_terminal_rewrites_the_live_line_and_shows_progress(live_server: LiveServer) -> None:
    env = {**os.environ, "COLUMNS": "120"}
    # In real time the engine has time for its interims (about one a second of speech) even on a busy machine.
    command = stream_command("pricing_question_us.wav", live_server.ws_url, "--realtime")
    code, out = run_on_a_terminal(command, env)
    assert code == 0, out
    assert "\r\x1b[K" in out  # the live line is rewritten in place
    assert re.search(r"█+ 100%", out), out  # the progress bar reached the end of the file
    assert re.search(r"\r\x1b\[K█*░* *\d+% .*│  unknown +\[.*\] … \w", out), out  # an interim beside the bar
    lines = out.replace("\r\n", "\n").replace("\r\x1b[K", "\n")  # each rewrite of the live line on a line of its own
    summary = SUMMARY.search(lines)
    assert summary is not None and int(summary["finals"]) == 1, out


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(api_keys=(KEY,))).start()
    yield server
    server.stop()


def test_stream_sends_the_key_from_the_environment(keyed_server: LiveServer) -> None:
    command = stream_command("pricing_question_us.wav", keyed_server.ws_url)
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "unauthorized" in refused.stderr and "4401" in refused.stderr
    admitted = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "PRESALES_WS_KEY": KEY}
    )
    assert admitted.returncode == 0, admitted.stderr
    assert KEY not in admitted.stdout + admitted.stderr
    assert SUMMARY.search(admitted.stdout) is not None


def test_a_three_channel_wav_streams_mixed_down_to_one_channel(live_server: LiveServer, tmp_path: Path) -> None:
    """More than two channels are one microphone to the service: mixed down, not sent as if they were mono."""
    file = "sso_question_us.wav"
    with wave.open(str(FIXTURES / file), "rb") as mono:
        rate, pcm = mono.getframerate(), mono.readframes(mono.getnframes())
    three = tmp_path / "three_channels.wav"
    with wave.open(str(three), "wb") as out:
        out.setnchannels(3)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(np.frombuffer(pcm, dtype="<i2"), 3).tobytes())  # the same voice on all three
    assert read_wav(three) == read_wav(FIXTURES / file)  # the mix of three equal channels is that channel
    command = [sys.executable, "-m", "presales_ws", "stream", str(three), "--url", live_server.ws_url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "'channels': 1" in result.stdout.splitlines()[0], result.stdout
    finals = [m["text"] for m in FINAL_LINE.finditer(result.stdout)]
    assert word_error_rate(reference_text(file), " ".join(finals)) <= 0.3, result.stdout


@pytest.mark.parametrize("suffix", ["webm", "ogg"])
def test_stream_sends_a_recording_as_it_is_and_prints_its_finals(live_server: LiveServer, suffix: str) -> None:
    command = stream_command(f"opus/sso_question_gb.{suffix}", live_server.ws_url)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "'sample_rate': 16000" in result.stdout  # the PCM rate the server decodes the recording to
    finals = [m.groupdict() for m in FINAL_LINE.finditer(result.stdout)]
    text = " ".join(f["text"] for f in finals)
    assert word_error_rate(reference_text("sso_question_gb.wav"), text) < 0.25, result.stdout
    summary = SUMMARY.search(result.stdout)
    assert summary is not None and summary["close"] == "1000", result.stdout
    assert float(summary["audio"]) == pytest.approx(4.1, abs=0.2)


def test_stream_never_prints_the_resume_token() -> None:
    """The token reopens the session (with the key): it stays out of a screen, a pipe and a pasted log."""
    server = LiveServer(make_settings(resume_window_s=60.0)).start()
    try:
        result = subprocess.run(
            stream_command("sso_question_us.wav", server.ws_url), capture_output=True, text=True, timeout=60
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("status ready") and "'session_id'" in result.stdout, result.stdout
    assert "resume_token" not in result.stdout + result.stderr


def test_a_url_with_its_own_query_keeps_it_and_still_gets_the_audio_format() -> None:
    """`--url ...?channel_roles=...` once dropped sample_rate, channels and encoding: a stereo file went as mono."""
    url = session_url(
        "ws://127.0.0.1:1/ws/session?channel_roles=customer,consultant&channels=2",
        sample_rate=48000,
        channels=1,
        encoding="webm-opus",
    )
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "channel_roles": ["customer,consultant"],
        "channels": ["2"],  # the caller's URL wins
        "sample_rate": ["48000"],
        "encoding": ["webm-opus"],
    }
