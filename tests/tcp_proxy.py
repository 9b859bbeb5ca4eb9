"""A loopback TCP proxy whose connections a test can cut at any moment, as a dropped Wi-Fi or a NAT timeout does."""

from __future__ import annotations

import asyncio
import contextlib


class CuttingProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>; `cut()` resets every connection through it, both sides;
    `freeze()` lets nothing through them any more, telling neither side; `hold()` keeps what clients send until
    `release()` (requests that reach the server at the same moment)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding = False
        self._held: dict[asyncio.StreamWriter, bytearray] = {}
        self._frozen: set[asyncio.StreamWriter] = set()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/session"

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def retarget(self, upstream_port: int) -> None:
        """New connections go to another server (a router sending the client to another instance)."""
        self.upstream_port = upstream_port

    def cut(self) -> None:
        """Reset every open connection: neither side gets a close frame."""
        self.cuts += 1
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    def freeze(self) -> None:
        """The network path goes dead without a reset (a laptop that switched networks): from now on nothing
        passes either way, and neither side is told; new connections still go through."""
        self._frozen = {writer for link in self._links for writer in link}

    def hold(self) -> None:
        """From now on, what clients send waits here (their connections stay open)."""
        self._holding = True

    def held(self) -> list[bytes]:
        """What each connection sent since `hold()`, not yet passed on."""
        return [bytes(data) for data in self._held.values()]

    def release(self) -> None:
        """Pass on everything held, one connection right after the other, and stop holding."""
        self._holding = False
        held, self._held = self._held, {}
        for sink, data in held.items():
            with contextlib.suppress(OSError, RuntimeError):
                sink.write(bytes(data))

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        for source, sink, upstream in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.ensure_future(self._pipe(source, sink, link, upstream=upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, ...],
        *,
        upstream: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                if sink in self._frozen:
                    continue
                if upstream and self._holding:
                    self._held.setdefault(sink, bytearray()).extend(data)
                    continue
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(OSError, RuntimeError):
            sink.close()
        self._links.discard(link)


class ThreadedProxy:
    """A CuttingProxy on an event loop of its own, for synchronous tests (a browser driven by Playwright)."""

    def __init__(self, upstream_port: int) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = asyncio.run_coroutine_threadsafe(CuttingProxy(upstream_port).start(), self._loop).result(10)

    @property
    def port(self) -> int:
        return self.proxy.port

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.cut)

    def retarget(self, upstream_port: int) -> None:
        self._loop.call_soon_threadsafe(self.proxy.retarget, upstream_port)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
