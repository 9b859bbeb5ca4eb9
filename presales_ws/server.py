"""uvicorn, configured once, with bounded connections and a graceful drain in front of its shutdown.

On SIGTERM uvicorn closes every WebSocket at once (1012), cutting the finals still in flight. This server
first drains: /health turns 503 and new sessions are refused at once, every live session flushes its finals
and closes with 1012, all within DRAIN_TIMEOUT_S; only then does uvicorn's own shutdown run.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn

from presales_ws.config import Settings
from presales_ws.logs import get_logger
from presales_ws.service import Service
from presales_ws.transport.http import BoundedH11Protocol
from presales_ws.transport.limits import LimitedConfig, TransportLimits
from presales_ws.transport.websocket import BoundedWebSocketProtocol

log = get_logger("presales_ws.server")

GRACEFUL_SHUTDOWN_MARGIN_S = 5  # uvicorn's own graceful timeout, after our drain
# A young-generation collection every this many allocations (Python's default: 700). Each one that reaches the
# older generations walks every session's live objects on the event loop: at 200 Deepgram sessions those pauses
# were the p99 round trip (6.8-16.4 ms against 3.2-5.6 with 10,000, the bare relay 2.4-6.2; docs/BENCHMARKS.md).
# The older generations keep Python's ratios, so a full collection still comes, 14x less often.
YOUNG_GENERATION_ALLOCATIONS = 10_000


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The one uvicorn configuration: `presales-ws serve`, the test servers and the benchmarks' peers use it.

    The protocols are chosen, not "auto": h11 (a bounded request head; httptools has no limit) and
    websockets-sansio, each subclassed in `transport/` for what uvicorn leaves unbounded. `ws_max_queue`
    is not set: only uvicorn's legacy `websockets` protocol reads it; websockets-sansio stops reading the
    socket while one message waits for the app, which bounds what a client can queue.
    """
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        http=BoundedH11Protocol,
        ws=BoundedWebSocketProtocol,
        ws_max_size=4 * max(settings.max_frame_bytes, settings.max_text_frame_bytes),
        # No permessage-deflate: PCM hardly compresses, and zlib per message cost ~10% of the server's CPU and
        # ~37 KiB per idle session in docs/BENCHMARKS.md ("What we tried").
        ws_per_message_deflate=False,
        # Protocol-level keepalive, under our own heartbeat: a peer that answers no ping for 20 s after one is
        # sent is closed (and reset, transport/websocket.py), whatever the app is doing.
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_keep_alive=5,  # an idle keep-alive HTTP connection, between requests
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + GRACEFUL_SHUTDOWN_MARGIN_S,
        log_config=None,
    )
    options.update(overrides)
    return LimitedConfig(app, limits=TransportLimits.from_settings(settings), **options)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its shutdown; uses only its public `run`, `serve`, `handle_exit`
    and `should_exit`, so no private attribute of uvicorn's ties it to one version."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._drain_signal: int | None = None

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve; after a drain, re-raise its signal so the process ends as signalled (exit -15 for SIGTERM)."""
        super().run(sockets)
        if self._drain_signal is not None:
            signal.raise_signal(self._drain_signal)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's own shutdown (SIGINT twice: force)
            return
        self._drain_signal = sig
        self.service.draining = True  # /health says 503 from this instant
        self._loop.call_soon_threadsafe(self._start_drain, signal.Signals(sig).name)

    def _start_drain(self, signal_name: str) -> None:
        self._drain = asyncio.ensure_future(self._drain_then_exit(signal_name))

    async def _drain_then_exit(self, signal_name: str) -> None:
        sessions = len(self.service.registry)
        log.info(
            "server.draining", signal=signal_name, sessions=sessions, timeout_s=self.service.settings.drain_timeout_s
        )
        left = await self.service.drain()
        log.info("server.drained", sessions=sessions, cut=left)
        self.should_exit = True


def run_server(app: Any, settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Serve `app` (from `create_app`) until a signal, draining first: `presales-ws serve` and the benchmarks."""
    gc.set_threshold(YOUNG_GENERATION_ALLOCATIONS, *gc.get_threshold()[1:])
    config = uvicorn_config(app, settings, host=host or settings.host, port=settings.port if port is None else port)
    DrainingServer(config, app.state.service).run()
