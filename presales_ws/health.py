"""GET /health: what a load balancer's probe needs to decide whether to route sessions here."""

from __future__ import annotations

import time
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from presales_ws import __version__
from presales_ws.service import Service


class TranscriberHealth(msgspec.Struct):
    engine: str
    ready: bool
    open_streams: int


class HealthReport(msgspec.Struct, omit_defaults=True):
    status: Literal["ok", "unavailable"]
    version: str
    uptime_s: float
    sessions: int
    transcriber: TranscriberHealth
    redis: Literal["ok", "down"] | None = None  # only with REDIS_URL; "down" still serves sessions (no resume)
    reason: str | None = None


_encoder = msgspec.json.Encoder()


def health_report(service: Service) -> HealthReport:
    transcriber = service.transcriber
    reason = None
    if service.draining:
        reason = "shutting down"
    elif not transcriber.ready:
        reason = "transcriber not ready"
    return HealthReport(
        status="unavailable" if reason else "ok",
        version=__version__,
        uptime_s=round(time.monotonic() - service.started_at, 1),
        sessions=len(service.registry),
        transcriber=TranscriberHealth(transcriber.name, transcriber.ready, transcriber.open_streams),
        redis=service.shared.health if service.shared is not None else None,
        reason=reason,
    )


async def health(request: Request) -> Response:
    """200 while sessions are welcome, 503 (same shape, with `reason`) while they are not."""
    report = health_report(request.app.state.service)
    return Response(
        _encoder.encode(report),
        status_code=200 if report.status == "ok" else 503,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
