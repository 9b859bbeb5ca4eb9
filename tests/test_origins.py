"""One origin setting: ALLOWED_ORIGINS admits an extension to /ws/session and, by default, to CORS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from presales_ws.access import KEY_PREFIX, SUBPROTOCOL
from presales_ws.protocol import Error, Status
from tests.conftest import LiveServer, make_settings
from tests.test_access import first_message_and_close

pytestmark = pytest.mark.anyio

KEY = "pk_live_0123456789abcdef"
EXTENSION = "chrome-extension://nmgidhkcampkdeodifmoghlabkmidbgj"
OTHER_EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
DASHBOARD = "https://dashboard.example.com"


def production(**overrides: object) -> LiveServer:
    settings = make_settings(environment="production", api_keys=(KEY,), allowed_origins=(EXTENSION,), **overrides)
    return LiveServer(settings).start()


@pytest.fixture(scope="module")
def one_setting() -> Iterator[LiveServer]:
    server = production()
    yield server
    server.stop()


async def open_as(server: LiveServer, origin: str) -> tuple[object, int | None]:
    """The handshake an extension makes: its Origin, the key as a subprotocol."""
    first, close_code, _ = await first_message_and_close(
        server.ws_url, subprotocols=[SUBPROTOCOL, KEY_PREFIX + KEY], origin=origin
    )
    return first, close_code


async def cors_origin(server: LiveServer, origin: str) -> str | None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/health", headers={"Origin": origin})
    return response.headers.get("access-control-allow-origin")


async def test_allowed_origins_alone_admits_the_extension_in_production(one_setting: LiveServer) -> None:
    first, _ = await open_as(one_setting, EXTENSION)
    assert isinstance(first, Status) and first.state == "ready"
    assert await cors_origin(one_setting, EXTENSION) == EXTENSION
    # Nothing else: another extension is refused at the socket and gets no CORS header.
    first, close_code = await open_as(one_setting, OTHER_EXTENSION)
    assert isinstance(first, Error) and first.code == "forbidden_origin" and close_code == 4403
    assert await cors_origin(one_setting, OTHER_EXTENSION) is None


async def test_cors_allow_origins_still_wins_when_cors_must_differ() -> None:
    server = production(cors_allow_origins=(EXTENSION, DASHBOARD))
    try:
        assert await cors_origin(server, DASHBOARD) == DASHBOARD
        assert await cors_origin(server, EXTENSION) == EXTENSION
        first, close_code = await open_as(server, DASHBOARD)  # CORS opens no socket
        assert isinstance(first, Error) and close_code == 4403
        first, _ = await open_as(server, EXTENSION)
        assert isinstance(first, Status) and first.state == "ready"
    finally:
        server.stop()
