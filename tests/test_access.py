"""Who may connect: keys at the handshake (subprotocol, bearer, query only if enabled), origins; no key in logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import msgspec
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from presales_ws.access import same_origin
from presales_ws.client import SessionRefused, connect
from presales_ws.protocol import Error, ServerMessage, Status
from tests.conftest import LiveServer, make_settings

pytestmark = pytest.mark.anyio

KEY = "pk_live_0123456789abcdef"
OTHER_KEY = "pk_live_fedcba9876543210"
EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LiveServer]:
    server = LiveServer(
        make_settings(api_keys=(KEY, OTHER_KEY), allowed_origins=(EXTENSION,), max_sessions_per_key=2)
    ).start()
    yield server
    server.stop()


async def first_message_and_close(
    url: str,
    *,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
) -> tuple[ServerMessage, int | None, str | None]:
    async with ws_connect(
        url,
        subprotocols=subprotocols,
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
    ) as ws:
        first = msgspec.json.decode(await ws.recv(), type=ServerMessage)
        selected = ws.subprotocol
        if isinstance(first, Status):
            return first, None, selected
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return first, ws.close_code, selected


async def test_key_as_subprotocol_is_accepted_and_only_presales_v1_is_selected(keyed_server: LiveServer) -> None:
    first, _, selected = await first_message_and_close(
        keyed_server.ws_url, subprotocols=["presales.v1", f"key.{KEY}"], origin=EXTENSION
    )
    assert isinstance(first, Status) and first.state == "ready"
    assert selected == "presales.v1"  # the key is never echoed back in the handshake


async def test_bearer_key_is_accepted_without_origin(keyed_server: LiveServer) -> None:
    first, _, _ = await first_message_and_close(keyed_server.ws_url, headers={"Authorization": f"Bearer {KEY}"})
    assert isinstance(first, Status) and first.state == "ready"


@pytest.mark.parametrize(
    ("how", "kwargs"),
    [
        ("no key", {}),
        ("wrong key", {"headers": {"Authorization": "Bearer pk_live_not_a_real_key_000"}}),
        ("wrong subprotocol key", {"subprotocols": ["presales.v1", "key.pk_live_not_a_real_key_000"]}),
        ("key without presales.v1", {"subprotocols": [f"key.{KEY}"]}),
        ("key in the query, not enabled", {"query": f"?key={KEY}"}),
        ("wrong scheme", {"headers": {"Authorization": f"Basic {KEY}"}}),
    ],
)
async def test_refused_before_any_audio_with_4401(
    keyed_server: LiveServer, how: str, kwargs: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = keyed_server.ws_url + str(kwargs.pop("query", ""))
    first, close_code, _ = await first_message_and_close(url, **kwargs)  # type: ignore[arg-type]
    assert isinstance(first, Error) and first.code == "unauthorized", how
    assert close_code == 4401
    assert KEY not in first.message
    # What the server logged (at debug, handshake headers included), rendered as it would be written.
    server_lines = [
        keyed_server_formatter().format(r) for r in caplog.records if not r.name.startswith("websockets.client")
    ]
    assert server_lines and not [line for line in server_lines if KEY in line]
    assert keyed_server.wait_until(lambda: len(keyed_server.service.registry) == 0)


async def test_other_browser_origin_is_refused_with_4403_even_with_a_key(keyed_server: LiveServer) -> None:
    first, close_code, selected = await first_message_and_close(
        keyed_server.ws_url, subprotocols=["presales.v1", f"key.{KEY}"], origin="https://evil.example"
    )
    assert isinstance(first, Error) and first.code == "forbidden_origin" and close_code == 4403
    assert selected == "presales.v1"  # or Chrome fails the handshake (1006) and the page never learns why


async def test_a_refused_browser_key_still_gets_presales_v1_so_the_browser_reads_why(keyed_server: LiveServer) -> None:
    first, close_code, selected = await first_message_and_close(
        keyed_server.ws_url, subprotocols=["presales.v1", "key.pk_live_not_a_real_key_000"]
    )
    assert isinstance(first, Error) and first.code == "unauthorized" and close_code == 4401
    assert selected == "presales.v1"


async def test_a_page_the_server_served_itself_is_admitted_by_origin_but_still_needs_the_key(
    keyed_server: LiveServer,
) -> None:
    own_origin = keyed_server.http_url  # the Origin of /demo, as a browser sends it
    first, _, selected = await first_message_and_close(
        keyed_server.ws_url, subprotocols=["presales.v1", f"key.{KEY}"], origin=own_origin
    )
    assert isinstance(first, Status) and first.state == "ready" and selected == "presales.v1"
    first, close_code, _ = await first_message_and_close(
        keyed_server.ws_url, subprotocols=["presales.v1"], origin=own_origin
    )
    assert isinstance(first, Error) and first.code == "unauthorized" and close_code == 4401
    other_port = f"http://127.0.0.1:{keyed_server.port + 1}"  # same host, another server: another origin
    first, close_code, _ = await first_message_and_close(
        keyed_server.ws_url, subprotocols=["presales.v1", f"key.{KEY}"], origin=other_port
    )
    assert isinstance(first, Error) and first.code == "forbidden_origin" and close_code == 4403


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://Presales.Example.com", "presales.example.com", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("chrome-extension://127.0.0.1:8000", "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),
    ],
)
def test_same_origin_compares_scheme_host_and_port(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


async def test_python_client_sends_its_key_as_a_subprotocol(keyed_server: LiveServer) -> None:
    async with connect(keyed_server.ws_url, key=KEY) as session:
        assert session.ready.state == "ready" and session.ws.subprotocol == "presales.v1"
        await session.stop()
    with pytest.raises(SessionRefused) as refused:
        async with connect(keyed_server.ws_url, key=OTHER_KEY[::-1]):
            pass
    assert refused.value.code == "unauthorized" and refused.value.close_code == 4401


async def test_sessions_per_key_are_capped_with_4429(keyed_server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {OTHER_KEY}"}
    async with (
        ws_connect(keyed_server.ws_url, additional_headers=headers) as a,
        ws_connect(keyed_server.ws_url, additional_headers=headers) as b,
    ):
        await a.recv(), await b.recv()
        first, close_code, _ = await first_message_and_close(keyed_server.ws_url, headers=headers)
        assert isinstance(first, Error) and first.code == "too_many_sessions" and close_code == 4429
        # another key is not affected
        first, _, _ = await first_message_and_close(keyed_server.ws_url, headers={"Authorization": f"Bearer {KEY}"})
        assert isinstance(first, Status)


async def test_query_key_works_only_when_enabled() -> None:
    server = LiveServer(make_settings(api_keys=(KEY,), allow_query_key=True)).start()
    try:
        first, _, _ = await first_message_and_close(f"{server.ws_url}?key={KEY}")
        assert isinstance(first, Status) and first.state == "ready"
    finally:
        server.stop()


def keyed_server_formatter() -> logging.Formatter:
    formatter = logging.getLogger().handlers[0].formatter
    assert formatter is not None
    return formatter


async def test_open_server_warns_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    server = LiveServer(make_settings(log_level="info")).start()
    server.stop()
    assert "access.open" in capsys.readouterr().err


def _percent_encode_all(text: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in text)


QUERY_KEY_SPELLINGS = [
    ("plain", f"key={KEY}"),
    ("encoded name", f"k%65y={KEY}"),
    ("name all encoded", f"{_percent_encode_all('key')}={KEY}"),
    ("upper-case hex", f"%4B%45%59={KEY}"),
    ("value all encoded", f"key={_percent_encode_all(KEY)}"),
    ("plus in name", f"ke+y={KEY}"),
    ("double encoded name", f"%256B%2565%2579={KEY}"),
    ("after session params", f"sample_rate=16000&channels=1&k%65y={KEY}"),
]


@pytest.fixture(scope="module")
def query_key_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(api_keys=(KEY,), allow_query_key=True)).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("how", "query"), QUERY_KEY_SPELLINGS, ids=[h for h, _ in QUERY_KEY_SPELLINGS])
async def test_no_spelling_of_a_query_key_reaches_the_log(
    query_key_server: LiveServer, how: str, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an attacker: `?k%65y=KEY` is `key` to the server but slipped past a literal `key=` scrubber."""
    caplog.set_level(logging.DEBUG)
    await first_message_and_close(f"{query_key_server.ws_url}?{query}")
    server_lines = [
        keyed_server_formatter().format(r) for r in caplog.records if not r.name.startswith("websockets.client")
    ]
    assert any("WebSocket /ws/session" in line for line in server_lines), how  # the access line is there
    value = query.rsplit("=", 1)[1]
    for line in server_lines:
        assert KEY not in line and value not in line and KEY[-10:] not in line, (how, line)
