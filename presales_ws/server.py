"""uvicorn, with a graceful drain in front of its shutdown.

On SIGTERM uvicorn closes every WebSocket at once (1012), cutting the finals still in flight. This server
first drains: /health turns 503 and new sessions are refused at once, every live session flushes its finals
and closes with 1012, all within DRAIN_TIMEOUT_S; only then does uvicorn's own shutdown run.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

import uvicorn

from presales_ws.logs import get_logger
from presales_ws.service import Service

log = get_logger("presales_ws.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's own shutdown (SIGINT twice: force)
            return
        self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
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
