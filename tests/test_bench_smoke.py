"""The benchmark harness runs end to end at a tiny size: servers start and stop, every frame is answered.

Nothing here asserts on time (the figures depend on the machine); `make bench` produces the real ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("psutil", reason="the `bench` extra is not installed")

from bench.perf import BARE, PEER, Step, deepgram_step, presales, run_load, running

SESSIONS = 2
SECONDS = 1.0


def check_every_frame_answered(step: Step, sessions: int = SESSIONS) -> None:
    assert step.failed is None, step.failed
    result = step.result
    assert result["connected"] == sessions and result["refused"] == 0
    assert result["frames_sent"] == sessions * round((1.0 + SECONDS) / 0.02)  # the 1 s stagger + the window
    assert result["frames_received"] == result["frames_sent"] and result["frames_lost"] == 0
    assert result["unmatched"] == 0 and result["errors"] == {}
    assert result["window_frames_received"] > 0
    for name in ("rtt_p50_ms", "rtt_p99_ms", "rtt_max_ms", "frames_per_s", "client_cpu_pct"):
        assert math.isfinite(result[name]) and result[name] >= 0, name
    assert result["rtt_p50_ms"] <= result["rtt_p99_ms"] <= result["rtt_max_ms"]
    assert math.isfinite(step.server_cpu_pct) and step.server_rss_kib > 0


@pytest.mark.parametrize("mode", ["binary", "json"])
def test_presales_echo_answers_every_frame(tmp_path: Path, mode: str) -> None:
    with running(presales(mode), None, tmp_path) as server:
        step = run_load(server, server.url, SESSIONS, SECONDS, mode, None)
    assert server.process.returncode is not None  # stopped
    check_every_frame_answered(step)


def test_bare_limit_answers_every_frame(tmp_path: Path) -> None:
    with running(BARE, None, tmp_path) as server:
        step = run_load(server, server.url, SESSIONS, SECONDS, "binary", None)
    assert server.process.returncode is not None
    check_every_frame_answered(step)


def test_fastapi_peer_answers_every_frame(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the `bench` extra is not installed")
    with running(PEER, None, tmp_path) as server:
        step = run_load(server, server.url, SESSIONS, SECONDS, "peer", None)
    check_every_frame_answered(step)


def test_deepgram_path_is_timed_on_both_sides(tmp_path: Path) -> None:
    _, step, inbound, outbound = deepgram_step(1, SECONDS, tmp_path, None, None)
    check_every_frame_answered(step, sessions=1)
    for figures in (inbound, outbound):  # "p50 / p99 / max" in ms
        p50, p99, top = (float(x) for x in figures.split(" / "))
        assert 0 <= p50 <= p99 <= top


@pytest.mark.anyio
async def test_speech_latency_measures_a_sentence_and_its_suggestion() -> None:
    from bench.speech_latency import measure

    table = await measure(quick=True)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 1 |" in rows["end of speech -> final transcript"]  # one sentence, one final
    assert "| 1 |" in rows["end of a question -> suggestion"]
    assert "Utterances with no final: 0" in table


@pytest.mark.anyio
async def test_suggestion_bench_counts_the_calls_and_times_the_answer() -> None:
    from bench.suggestions import main_async

    table = await main_async(quick=True, before=None)
    (row,) = [line for line in table.splitlines() if line.startswith("| this branch |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:5] == ["instant", "1", "1", "1 (0 superseded, 0 on statements)"]  # one question, one call
    assert cells[5] == "**1.00**"


def test_relay_bench_answers_on_the_cadence_through_both_servers(tmp_path: Path) -> None:
    from bench.perf import Budget
    from bench.relay import measure

    rows = measure([SESSIONS], 2.0, tmp_path, Budget(300.0))
    assert len(rows) == 1 and len(rows[0]) == 2  # the relay, presales-ws
    for step in rows[0]:
        assert step.failed is None, step
        result = step.result
        assert result["connected"] == SESSIONS and result["errors"] == 0
        # an answer per 0.25 s of audio over the 2 s window (a send late past the window's end counts outside)
        assert SESSIONS * 7 <= result["frames_sent"] <= SESSIONS * 8
        assert result["frames_lost"] == 0
        assert result["rtt_p50_ms"] <= result["rtt_p99_ms"] <= result["rtt_max_ms"]
        assert math.isfinite(step.server_cpu_pct) and math.isfinite(step.other_cpu_pct)


def test_turn_cue_bench_counts_each_half_and_reads_main_s_rules() -> None:
    """bench/turn_cues.py's table from readings (no decoding): splits and early finals per half, and main's
    turns.py loaded from git beside this tree's."""
    from bench.turn_cues import Reading, main_cue, table
    from presales_ws.transcribers.turns import TurnPolicy

    readings = [
        Reading("espeak", "a", False, "And you always", "And you always.", 0.95, 0.34),
        Reading("espeak", "a", True, "Can we try it?", "Can we try it?", 0.98, 0.93),
        Reading("espeak", "b", False, "How do you", "How do you?", 0.95, 0.9),
        Reading("espeak", "b", True, "Not yet.", "Not yet.", 0.9, 0.45),
    ]
    rows = table(readings, {"off": TurnPolicy().cue, "0.5": TurnPolicy(full_stop_threshold=0.5).cue})
    assert rows[2:] == [
        "| off | tuning | 0/1 (0%) | 1/1 (100%) | 0/0 |",
        "| off | held-out | 0/1 (0%) | 1/1 (100%) | 0/0 |",
        "| 0.5 | tuning | 0/1 (0%) | 1/1 (100%) | 0/0 |",
        "| 0.5 | held-out | 0/1 (0%) | 0/1 (0%) | 0/0 |",
    ]
    before = main_cue("HEAD")
    assert before(readings[1].heard()).value == "complete"
