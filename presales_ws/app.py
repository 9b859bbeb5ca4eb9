"""The Starlette application: routes, CORS, and a lifespan that loads what the process shares."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from presales_ws import __version__, protocol
from presales_ws.access import DEV_EXTENSION_ORIGIN_PATTERN, AccessGate
from presales_ws.config import ConfigError, Settings, load_settings
from presales_ws.demo import demo_routes
from presales_ws.health import health
from presales_ws.logs import configure_logging, get_logger
from presales_ws.resume.redis import SharedState
from presales_ws.service import Service
from presales_ws.session import SessionEndpoint
from presales_ws.suggesters import create_suggester
from presales_ws.suggesters.base import Suggester, SuggesterUnavailable
from presales_ws.transcribers import create_transcriber
from presales_ws.transcribers.base import Transcriber, TranscriberUnavailable

log = get_logger("presales_ws.app")


async def protocol_schema(request: Request) -> Response:
    """The wire protocol as JSON Schema, generated from the msgspec structs."""
    return Response(protocol.encoder.encode(protocol.json_schema()), media_type="application/json")


def cors_middleware(settings: Settings) -> Middleware:
    """Chrome extensions call the HTTP routes: the origins allowed to open sessions (ALLOWED_ORIGINS), unless
    CORS_ALLOW_ORIGINS says otherwise; with neither, any extension in development and none in production."""
    origins = settings.cors_allow_origins or settings.allowed_origins
    if origins:
        return Middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET"])
    if settings.environment == "development":
        return Middleware(CORSMiddleware, allow_origin_regex=DEV_EXTENSION_ORIGIN_PATTERN, allow_methods=["GET"])
    return Middleware(CORSMiddleware, allow_origins=[], allow_methods=["GET"])


def create_app(
    settings: Settings | None = None,
    *,
    transcriber: Transcriber | None = None,
    suggester: Suggester | None = None,
) -> Starlette:
    """Build the app from its parts: the engine and the suggester the settings name, unless given here (tests
    and benchmarks inject theirs). With no settings, read them from the environment (uvicorn --factory)."""
    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            print(f"presales-ws: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    configure_logging(settings)
    try:
        transcriber = create_transcriber(settings) if transcriber is None else transcriber
        transcriber.check()
        suggester = create_suggester(settings) if suggester is None else suggester
    except (TranscriberUnavailable, SuggesterUnavailable) as exc:
        print(f"presales-ws: {exc}", file=sys.stderr)  # one plain line, whatever the log format
        raise SystemExit(2) from None
    shared = None
    if settings.redis_url:
        state_ttl_s = settings.resume_window_s + 2 * settings.heartbeat_interval_s  # a live session re-shares each ping
        shared = SharedState(settings.redis_url, state_ttl_s=state_ttl_s)
    service = Service(settings, transcriber, AccessGate(settings), suggester, shared=shared)
    if service.gate.open:
        log.warning("access.open", detail="API_KEYS is not set: anyone who can reach this server may open sessions")
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/protocol.json", protocol_schema, methods=["GET"]),
            WebSocketRoute("/ws/session", SessionEndpoint),
            *demo_routes(),
        ],
        middleware=[cors_middleware(settings)],
        lifespan=partial(lifespan, service),
    )
    app.state.service = service
    return app


@asynccontextmanager
async def lifespan(service: Service, app: Starlette) -> AsyncIterator[None]:
    """Start the engine and the suggester with the server; on shutdown, refuse new sessions and close them."""
    transcriber, suggester = service.transcriber, service.suggester
    await transcriber.start()
    if suggester is not None:
        await suggester.start()
    log.info(
        "service.started",
        version=__version__,
        transcriber=transcriber.name,
        suggester=suggester.name if suggester else None,
    )
    async with anyio.create_task_group() as background:
        if service.shared is not None:  # REDIS_URL: the writer of shared state, the lease refresher, the probe
            await background.start(service.shared.run)
        try:
            yield
        finally:
            service.draining = True
            if suggester is not None:
                await suggester.aclose()
            await transcriber.aclose()
            if service.shared is not None:
                await service.shared.aclose()
            background.cancel_scope.cancel()
            log.info("service.stopped")
