"""Shared test plumbing: a real uvicorn server on 127.0.0.1 per settings, started and stopped by the fixture."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvicorn
from starlette.applications import Starlette

from presales_ws.app import create_app
from presales_ws.config import Settings
from presales_ws.server import uvicorn_config
from presales_ws.service import Service
from tests.redis_server import RedisServer

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LiveServer:
    """uvicorn serving the app in a thread of its own, on a free loopback port."""

    def __init__(self, settings: Settings, app: Starlette | None = None) -> None:
        """The service built from `settings`, or any other `app` (a suggester stand-in) under the same uvicorn."""
        self.app: Starlette = app if app is not None else create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        # `presales-ws serve`'s configuration (protocols and limits included), on our own socket.
        config = uvicorn_config(self.app, settings, lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def service(self) -> Service:
        service: Service = self.app.state.service
        return service

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/session"

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self._sock.close()

    def call(self, coroutine_function: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the server's own event loop (its thread), e.g. `service.drain`."""
        loop = self.server.servers[0].get_loop()
        return asyncio.run_coroutine_threadsafe(coroutine_function(), loop)

    def wait_until(self, predicate: object, timeout_s: float = 10.0) -> bool:
        """Poll a condition on the server's state (sessions gone, streams closed) without sleeping blindly."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())


def make_settings(**overrides: object) -> Settings:
    # Tests stream fixtures faster than real time: the rate limit has its own tests at its defaults.
    # No resume unless a test asks: the tests of vanishing clients expect their session gone at once.
    base: dict[str, object] = {
        "log_format": "console",
        "log_level": "warning",
        "rate_limit_factor": 100.0,
        "resume_window_s": 0.0,
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for one test (skipped where it is not installed)."""
    server = RedisServer().start()
    yield server
    server.stop()
