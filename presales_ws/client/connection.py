"""An async client for /ws/session: the reference for how a client sends audio and reads transcripts.

async with connect("ws://127.0.0.1:8000/ws/session", key=API_KEY) as session:
    await session.send_pcm(pcm)
    await session.stop()
    async for message in session:
        print(message)
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from presales_ws.protocol import (
    KEY_PREFIX,
    SUBPROTOCOL,
    AudioChunk,
    ClientMessage,
    Error,
    Ping,
    Pong,
    ServerMessage,
    Status,
    Stop,
)

MAX_SEND_FRAME_S = 0.5  # 16 KiB of 16 kHz mono: well under the server's default 64 KiB frame limit

server_decoder = msgspec.json.Decoder(ServerMessage)
_client_encoder = msgspec.json.Encoder()


class SessionRefused(Exception):
    """The server closed the session at connect; `code` is the protocol error code, if one was sent."""

    def __init__(self, code: str | None, message: str, close_code: int | None) -> None:
        super().__init__(f"{code or 'closed'}: {message} (close {close_code})")
        self.code = code
        self.message = message
        self.close_code = close_code


class Session:
    """A live session, client side. Iterate it for server messages; server pings are answered for you."""

    def __init__(self, ws: ClientConnection, ready: Status, *, auto_pong: bool = True) -> None:
        self.ws = ws
        self.ready = ready
        self.session_id = ready.session_id
        self._auto_pong = auto_pong
        frame = 2 * (ready.channels or 1)
        self._max_frame_bytes = int(MAX_SEND_FRAME_S * (ready.sample_rate or 16000)) * frame

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason

    async def send_pcm(self, pcm: bytes) -> None:
        """Binary frames of raw little-endian s16 PCM, channels interleaved (the efficient path).

        A long buffer goes out as several frames of at most MAX_SEND_FRAME_S, under the server's frame limit.
        """
        step = self._max_frame_bytes
        if len(pcm) <= step:
            await self.ws.send(pcm)
            return
        for offset in range(0, len(pcm), step):
            await self.ws.send(pcm[offset : offset + step])

    async def send_chunk(self, pcm: bytes, sequence: int | None = None) -> None:
        """The JSON form: base64 PCM in an `audio_chunk`."""
        await self.send(AudioChunk(base64.b64encode(pcm).decode("ascii"), sequence))

    async def send(self, message: ClientMessage) -> None:
        await self.ws.send(_client_encoder.encode(message).decode())

    async def ping(self, ts: float | None = None) -> None:
        await self.send(Ping(ts=ts))

    async def stop(self) -> None:
        """Ask for the last finals; the server then sends `status: closed` and closes (1000)."""
        await self.send(Stop())

    async def recv(self) -> ServerMessage:
        """The next server message; raises ConnectionClosed when the session is over."""
        while True:
            message: ServerMessage = server_decoder.decode(await self.ws.recv())
            if isinstance(message, Ping) and self._auto_pong:
                await self.send(Pong(ts=message.ts))
                continue
            return message

    async def __aiter__(self) -> AsyncIterator[ServerMessage]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosed:
            return


def session_url(url: str, *, sample_rate: int = 16000, channels: int = 1, **extra: str) -> str:
    parts = urlsplit(url)
    query = {"sample_rate": str(sample_rate), "channels": str(channels), **extra}
    if parts.query:
        return url
    return urlunsplit(parts._replace(query=urlencode(query)))


@asynccontextmanager
async def connect(
    url: str,
    *,
    sample_rate: int = 16000,
    channels: int = 1,
    key: str | None = None,
    auto_pong: bool = True,
    open_timeout_s: float = 10.0,
    **params: str,
) -> AsyncIterator[Session]:
    """Open a session and wait for its `ready` status; SessionRefused if the server says no.

    `key` travels as a `key.<KEY>` subprotocol beside `presales.v1`, as a browser must send it, so this
    client exercises the same handshake as the extension (the server selects `presales.v1` only).
    """
    target = session_url(url, sample_rate=sample_rate, channels=channels, **params)
    subprotocols = None if key is None else [Subprotocol(SUBPROTOCOL), Subprotocol(KEY_PREFIX + key)]
    async with ws_connect(
        target, open_timeout=open_timeout_s, max_size=2**22, ping_interval=None, subprotocols=subprotocols
    ) as ws:
        try:
            first = server_decoder.decode(await ws.recv())
        except ConnectionClosed:
            raise SessionRefused(None, "closed before ready", ws.close_code) from None
        if not (isinstance(first, Status) and first.state == "ready"):
            code, message = (first.code, first.message) if isinstance(first, Error) else (None, repr(first))
            with suppress(ConnectionClosed):
                await ws.recv()
            raise SessionRefused(code, message, ws.close_code)
        yield Session(ws, first, auto_pong=auto_pong)

