"""The HTTP routes a load balancer and a developer use: /health and /protocol.json, over a real socket."""

from __future__ import annotations

import re

import httpx
import jsonschema
import pytest

from presales_ws import __version__
from presales_ws.client import connect
from tests.conftest import LiveServer

pytestmark = pytest.mark.anyio


async def test_health_reports_ok_version_sessions_and_transcriber(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.http_url) as http:
        response = await http.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok" and body["version"] == __version__
        assert body["transcriber"]["engine"] == "local" and body["transcriber"]["ready"] is True
        assert isinstance(body["uptime_s"], float) and "reason" not in body
        before = body["sessions"]
        async with connect(live_server.ws_url):
            during = (await http.get("/health")).json()["sessions"]
        assert during == before + 1


async def test_health_is_503_with_reason_while_draining(live_server: LiveServer) -> None:
    service = live_server.service
    service.draining = True
    try:
        async with httpx.AsyncClient(base_url=live_server.http_url) as http:
            response = await http.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable" and body["reason"] == "shutting down"
        assert set(body) >= {"version", "uptime_s", "sessions", "transcriber"}
    finally:
        service.draining = False


async def test_protocol_json_is_a_schema_that_validates_real_messages(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.http_url) as http:
        schema = (await http.get("/protocol.json")).json()
    jsonschema.Draft202012Validator.check_schema(schema)
    client_schema = {"$defs": schema["$defs"], **schema["properties"]["client_to_server"]}
    server_schema = {"$defs": schema["$defs"], **schema["properties"]["server_to_client"]}
    jsonschema.validate({"type": "audio_chunk", "data": "AAA=", "sequence": 1}, client_schema)
    jsonschema.validate({"type": "stop"}, client_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "dance"}, client_schema)
    async with connect(live_server.ws_url) as session:
        import msgspec

        jsonschema.validate(msgspec.json.decode(msgspec.json.encode(session.ready)), server_schema)


async def test_cors_allows_chrome_extensions_in_development(live_server: LiveServer) -> None:
    origin = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
    async with httpx.AsyncClient(base_url=live_server.http_url) as http:
        allowed = await http.get("/health", headers={"Origin": origin})
        other = await http.get("/health", headers={"Origin": "https://evil.example"})
        not_an_id = await http.get("/health", headers={"Origin": "chrome-extension://" + "z" * 32})  # ids are a-p
    assert allowed.headers.get("access-control-allow-origin") == origin
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in not_an_id.headers


async def test_demo_page_and_its_modules_are_served_from_the_package_with_nothing_from_outside(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=live_server.http_url) as http:
        page = await http.get("/demo")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        local = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert sorted(local) == ["/static/demo.css", "/static/demo.js"]
        scripts = {
            path: await http.get(path)
            for path in ("/static/demo.js", "/static/capture.js", "/static/capture-worklet.js")
        }
        for path, response in scripts.items():
            assert response.status_code == 200, path
            assert "javascript" in response.headers["content-type"], path  # or the browser refuses the module
        assert (await http.get("/static/demo.css")).status_code == 200
        assert (await http.get("/static/../app.py")).status_code == 404
    everything = page.text + "".join(r.text for r in scripts.values())
    assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", everything)  # no CDN, no remote asset
