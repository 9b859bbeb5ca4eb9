"""An async client for /ws/session: the reference for how a client sends audio and reads transcripts.

async with connect("ws://127.0.0.1:8000/ws/session", key=API_KEY) as session:
    await session.send_pcm(pcm)
    await session.stop()
    async for message in session:
        print(message)
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from presales_ws.client.resend import ResendBuffer
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
    Transcript,
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


RESUMABLE_CLOSE_CODES = frozenset({1001, 1005, 1006, 1012, 4408})  # a broken link, not an ended session
RESUME_WITHIN_S = 60.0  # how long a client keeps trying to resume (the server's RESUME_WINDOW_S default)
RESUME_RETRY_S = (0.1, 0.25, 0.5, 1.0, 2.0)  # waits between attempts, the last repeated


class Session:
    """A live session, client side. Iterate it for server messages; server pings are answered for you.

    When the connection breaks without `stop` and the server gave a `resume_token`, the session reconnects by
    itself: it resends the audio the server does not have (from `received_s`, out of the audio not yet covered
    by a final), and the iteration goes on with the new `ready` (`resumed` says whether it is the same session).
    """

    def __init__(
        self,
        ws: ClientConnection,
        ready: Status,
        connector: Connector,
        *,
        auto_pong: bool = True,
        auto_resume: bool = True,
    ) -> None:
        self.ws = ws
        self.ready = ready
        self.session_id = ready.session_id
        self._connector = connector
        self._auto_pong = auto_pong
        self._auto_resume = auto_resume
        frame = 2 * (ready.channels or 1)
        self._max_frame_bytes = int(MAX_SEND_FRAME_S * (ready.sample_rate or 16000)) * frame
        self._buffer = ResendBuffer(ready.sample_rate or 16000, ready.channels or 1)
        self._finals_end: dict[int, float] = {}
        self._lock = anyio.Lock(fast_acquire=True)  # no yield per frame: sending stays as fast as a bare send
        self._pending: list[ServerMessage] = []
        self._stopped = False
        self.resumes = 0  # connections broken and resumed (same session) or replaced (a new one)

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
        async with self._lock:
            self._buffer.sent(pcm)
            try:
                await self._send_frames(pcm)
            except ConnectionClosed as closed:
                await self._resume_locked(closed)  # resends this audio too

    async def _send_frames(self, pcm: bytes) -> None:
        step = self._max_frame_bytes
        for offset in range(0, len(pcm), step):
            await self.ws.send(pcm[offset : offset + step])

    async def send_chunk(self, pcm: bytes, sequence: int | None = None) -> None:
        """The JSON form: base64 PCM in an `audio_chunk` (not resent on a resume: use send_pcm for that)."""
        await self.send(AudioChunk(base64.b64encode(pcm).decode("ascii"), sequence))

    async def send(self, message: ClientMessage) -> None:
        await self.ws.send(_client_encoder.encode(message).decode())

    async def ping(self, ts: float | None = None) -> None:
        await self.send(Ping(ts=ts))

    async def stop(self) -> None:
        """Ask for the last finals; the server then sends `status: closed` and closes (1000)."""
        self._stopped = True
        async with self._lock:
            try:
                await self.send(Stop())
            except ConnectionClosed as closed:
                await self._resume_locked(closed)  # sends `stop` again

    async def recv(self) -> ServerMessage:
        """The next server message; raises ConnectionClosed when the session is over."""
        while True:
            if self._pending:
                return self._pending.pop(0)
            ws = self.ws
            try:
                message: ServerMessage = server_decoder.decode(await ws.recv())
            except ConnectionClosed as closed:
                async with self._lock:
                    if self.ws is ws:
                        await self._resume_locked(closed)
                continue
            if isinstance(message, Ping) and self._auto_pong:
                with suppress(ConnectionClosed):
                    await self.send(Pong(ts=message.ts))
                continue
            if isinstance(message, Transcript) and message.is_final:
                self._finals_end[message.channel] = max(message.end, self._finals_end.get(message.channel, 0.0))
                self._buffer.covered(message.channel, message.end)
            return message

    async def _resume_locked(self, closed: ConnectionClosed) -> None:
        """Reconnect with the resume token and resend what the server lacks; re-raise if this cannot resume."""
        code = self.ws.close_code
        token = self.ready.resume_token
        if not self._auto_resume or token is None or (code is not None and code not in RESUMABLE_CLOSE_CODES):
            raise closed
        channels = self.ready.channels or 1
        finals_end = ",".join(f"{self._finals_end.get(c, 0.0):.3f}" for c in range(channels))
        ws, ready = await self._connector.reconnect(resume=token, finals_end=finals_end)
        with suppress(Exception):
            await self.ws.close()
        self.ws, self.ready, self.resumes = ws, ready, self.resumes + 1
        if not ready.resumed:  # a new session: the audio not yet final starts it
            self.session_id = ready.session_id
            self._finals_end.clear()
            self._buffer.restart()
        self._pending.append(ready)
        await self._send_frames(self._buffer.since(ready.received_s or 0.0))
        if self._stopped:
            await self.send(Stop())

    async def aclose(self) -> None:
        await self.ws.close()

    async def __aiter__(self) -> AsyncIterator[ServerMessage]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosed:
            return


class Connector:
    """Opens the connections of one session: the first, and each resume, with the same URL, key and options."""

    def __init__(self, url: str, key: str | None, open_timeout_s: float) -> None:
        self.url = url
        self.subprotocols = None if key is None else [Subprotocol(SUBPROTOCOL), Subprotocol(KEY_PREFIX + key)]
        self.open_timeout_s = open_timeout_s

    async def open(self, **extra: str) -> tuple[ClientConnection, Status]:
        """One connection and its `ready`; SessionRefused if the server says no."""
        target = self.url
        if extra:
            target += ("&" if urlsplit(target).query else "?") + urlencode(extra)
        ws = await ws_connect(
            target, open_timeout=self.open_timeout_s, max_size=2**22, ping_interval=None, subprotocols=self.subprotocols
        )
        try:
            first = server_decoder.decode(await ws.recv())
        except ConnectionClosed:
            raise SessionRefused(None, "closed before ready", ws.close_code) from None
        if not (isinstance(first, Status) and first.state == "ready"):
            code, message = (first.code, first.message) if isinstance(first, Error) else (None, repr(first))
            with suppress(ConnectionClosed):
                await ws.recv()
            await ws.close()
            raise SessionRefused(code, message, ws.close_code)
        return ws, first

    async def reconnect(self, **extra: str) -> tuple[ClientConnection, Status]:
        """`open`, retried while the network or server is away, for up to RESUME_WITHIN_S."""
        deadline = anyio.current_time() + RESUME_WITHIN_S
        for attempt in itertools.count():
            try:
                return await self.open(**extra)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, SessionRefused) as exc:
                refused_for_good = isinstance(exc, SessionRefused) and exc.close_code not in (None, 1012, 1013)
                if refused_for_good or anyio.current_time() > deadline:
                    raise
            await anyio.sleep(RESUME_RETRY_S[min(attempt, len(RESUME_RETRY_S) - 1)])
        raise AssertionError("unreachable")


def session_url(url: str, *, sample_rate: int = 16000, channels: int = 1, **extra: str) -> str:
    """The session URL with the audio's format; what the caller's URL already says wins (its own parameters,
    e.g. `channel_roles`, stay), and nothing it leaves out is lost (a two-channel file stays two channels)."""
    parts = urlsplit(url)
    given = parse_qsl(parts.query, keep_blank_values=True)
    named = {name for name, _ in given}
    ours = {"sample_rate": str(sample_rate), "channels": str(channels), **extra}
    query = given + [(name, value) for name, value in ours.items() if name not in named]
    return urlunsplit(parts._replace(query=urlencode(query)))


@asynccontextmanager
async def connect(
    url: str,
    *,
    sample_rate: int = 16000,
    channels: int = 1,
    key: str | None = None,
    auto_pong: bool = True,
    auto_resume: bool = True,
    open_timeout_s: float = 10.0,
    **params: str,
) -> AsyncIterator[Session]:
    """Open a session and wait for its `ready` status; SessionRefused if the server says no.

    With `auto_resume`, a broken connection (or a drain's 1012) is resumed as Session describes; without it,
    the iteration ends there, as the session's end would.

    `key` travels as a `key.<KEY>` subprotocol beside `presales.v1`, as a browser must send it, so this
    client exercises the same handshake as the extension (the server selects `presales.v1` only).
    """
    connector = Connector(session_url(url, sample_rate=sample_rate, channels=channels, **params), key, open_timeout_s)
    ws, ready = await connector.open()
    session = Session(ws, ready, connector, auto_pong=auto_pong, auto_resume=auto_resume)
    try:
        yield session
    finally:
        await session.aclose()
