"""Hostile and broken clients over raw sockets against a real `presales-ws serve` process (issue 17).

The attacks are bench/hostile.py's, at small sizes; each waits for what it checks with a deadline (the
bound under test), never for a fixed time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("psutil", reason="the `bench` extra is not installed")

from bench.hostile import (
    ECHOED,
    KEY,
    PING,
    WRONG_KEY,
    hostile_server,
    huge_headers,
    long_header_line,
    many_headers,
    ping_flood,
    sessions_open,
    sigterm_with_stalled_reader,
    slowloris,
    stalled_reader,
    upgrade,
)
from bench.perf import Server

SEND_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 3.0  # presales_ws/transport/limits.py
RSS_GROWTH_LIMIT_MIB = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with hostile_server(
        tmp_path_factory.mktemp("hostile"),
        SEND_TIMEOUT_S=f"{SEND_TIMEOUT_S:g}",
        HEADER_TIMEOUT_S=f"{HEADER_TIMEOUT_S:g}",
    ) as server:
        yield server


def session_lines(server: Server) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if '"presales_ws.session"' in line]


def assert_no_failure_logged(server: Server) -> None:
    log = server.log_path.read_text()
    assert "Traceback" not in log and "session.failed" not in log, log[-3000:]


# --- a client that stops reading -------------------------------------------------------------------------------


def test_a_ping_flood_that_never_reads_ends_in_4499_not_internal(server: Server) -> None:
    reader = stalled_reader(server, PING, frames=200_000, batch=1000, limit_s=30)
    assert reader.status == 101
    assert reader.session_gone_after_s is not None, "the session is still registered after 30 s"
    assert reader.closed_after_s is not None, "the server never closed the socket"
    assert 4499 in reader.close_codes  # the socket still took a close frame: delivered
    assert any('"close_code": 4499' in line for line in session_lines(server))
    assert_no_failure_logged(server)


def test_a_client_whose_socket_fills_is_cut_after_the_send_timeout(server: Server) -> None:
    """Answers it never reads fill the socket; the session's writes stall, then it ends (4499) and resets."""
    reader = stalled_reader(server, ECHOED, frames=300, batch=100, limit_s=30)
    assert reader.status == 101
    assert reader.session_gone_after_s is not None, "the session is still registered after 30 s"
    assert reader.closed_after_s is not None, "the server never closed the socket"
    stalled = [line for line in session_lines(server) if '"writes stalled"' in line]
    assert stalled, session_lines(server)[-5:]
    assert any('"close_code": 4499' in line and '"errors_sent": 300' in line for line in session_lines(server))
    assert_no_failure_logged(server)


def test_sigterm_with_a_stalled_reader_exits_within_drain_timeout_plus_5_s(tmp_path: Path) -> None:
    """The drain (3 s) gives up on the stalled session; uvicorn's shutdown then resets it instead of waiting."""
    drain_timeout_s = 3.0
    run = sigterm_with_stalled_reader(tmp_path, drain_timeout_s)  # SEND_TIMEOUT_S stays at 10 s: past the drain
    assert run.exit_code is not None, "still running a minute after SIGTERM"
    assert run.exit_after_s <= drain_timeout_s + 5, run.log[-3000:]
    assert "Traceback" not in run.log and KEY not in run.log


# --- WebSocket PING floods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [WRONG_KEY, KEY], ids=["refused", "authenticated"])
def test_a_ping_flood_never_read_grows_the_server_by_less_than_64_mib(server: Server, key: str) -> None:
    # A refused handshake is cut once its close times out: flood long enough to see it on a loaded machine too.
    flood = ping_flood(server, key, seconds=4.0 if key != WRONG_KEY else CLOSE_TIMEOUT_S + 6)
    assert flood.status == 101
    assert flood.sent_mib > 16  # a real flood: the server kept reading it
    assert flood.rss_growth_mib < RSS_GROWTH_LIMIT_MIB
    if key == WRONG_KEY:
        assert flood.reset_after_s is not None


# --- the HTTP surface --------------------------------------------------------------------------------------------


def test_an_upgrade_with_a_9_kb_header_line_gets_431_and_the_socket_closes(server: Server) -> None:
    refusal = long_header_line(server.port)
    assert refusal.status == 431
    assert refusal.closed_after_s is not None and refusal.closed_after_s <= 5


def test_an_upgrade_with_200_headers_gets_431_and_the_socket_closes(server: Server) -> None:
    refusal = many_headers(server.port, 200)
    assert refusal.status == 431
    assert refusal.closed_after_s is not None and refusal.closed_after_s <= 5


def test_64_mb_headers_are_refused_431_without_being_read_whole(server: Server) -> None:
    heads = huge_headers(server, clients=4)
    assert [r.status for r in heads.refusals] == [431] * 4
    assert all(r.closed_after_s is not None and r.closed_after_s <= 5 for r in heads.refusals)
    assert heads.rss_growth_mib < 16  # four 64 MB heads, not read whole


def test_slowloris_connections_are_closed_after_the_header_timeout(server: Server) -> None:
    loris = slowloris(server, connections=50, limit_s=HEADER_TIMEOUT_S + 5)
    assert loris.closed == 50
    assert sessions_open(server.port) == 0


# --- and then --------------------------------------------------------------------------------------------------


def test_after_every_attack_a_normal_client_is_served(server: Server) -> None:
    sock, status = upgrade(server.port, KEY)
    with sock:
        assert status == 101
        ready = sock.recv(4096)
        assert re.search(rb'"state":"ready"', ready), ready
    assert_no_failure_logged(server)
