"""One WebSocket session on /ws/session: audio in, transcripts out.

A session is one anyio task group: the receive loop, the transcript forwarder, the heartbeat and the single
writer run side by side. Whatever ends first (a disconnect, `stop`, an idle client, a client that stopped
reading, a failure) cancels the others, and the `finally` blocks release what the session held: its
transcriber stream, its registry entry.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
import anyio.abc
import msgspec
from starlette.endpoints import WebSocketEndpoint
from starlette.websockets import WebSocket, WebSocketState

from presales_ws import protocol
from presales_ws.access import Admission, Refused, offered_subprotocol
from presales_ws.audio import ArrivalClock, decode_base64
from presales_ws.declaration import FORMAT_FIELDS, Declaration, UndeclaredFormat
from presales_ws.limits import Flood, TokenBucket
from presales_ws.logs import get_logger
from presales_ws.outbox import Close, Outbox, OutboxOverflow
from presales_ws.prompter import Prompter
from presales_ws.protocol import (
    CONTAINER_ENCODINGS,
    AudioChunk,
    CloseCode,
    Error,
    ErrorCode,
    Ping,
    Pong,
    ProtocolError,
    SessionParams,
    Start,
    Status,
    Stop,
    Suggestion,
    Transcript,
)
from presales_ws.registry import new_session_id
from presales_ws.resume.admission import check_shared_capacity, take_over
from presales_ws.resume.replay import Replay, parse_finals_end
from presales_ws.resume.state import RESEND_HORIZON_S, SessionState, Takeover, commit_point
from presales_ws.resume.tokens import new_token, token_digest
from presales_ws.service import Service
from presales_ws.speakers import Role, SpeakerTracker, parse_channel_roles
from presales_ws.suggesters.base import ContextLine
from presales_ws.transcribers.base import (
    ContainerReader,
    TranscriberBusy,
    TranscriberEvent,
    TranscriberFailure,
    TranscriberStatus,
    TranscriberStream,
    TranscriptEvent,
)
from presales_ws.transport.websocket import abort_connection

STOP_FLUSH_TIMEOUT_S = 30.0  # after `stop`, the transcriber has this long to return the last finals
RESEND_MARGIN_S = 2.0  # audio in flight when a connection broke, resent with what was recorded while away
CLOSE_TIMEOUT_S = 5.0  # a close that cannot even be written (the client stopped reading) gives up after this

log = get_logger("presales_ws.session")

_params_type: Any = SessionParams


class SessionEndpoint(WebSocketEndpoint):
    """`/ws/session`. Frames are decoded here with msgspec, not by `encoding`: a bad frame gets an `error`
    and the session goes on, where Starlette's json encoding would close the socket."""

    encoding = None

    async def dispatch(self) -> None:
        websocket = WebSocket(self.scope, receive=self.receive, send=self.send)
        service: Service = self.scope["app"].state.service
        subprotocol = offered_subprotocol(websocket)
        try:
            admission = service.gate.admit(websocket)
            params, channel_roles = self.parse_params(websocket, service)
            if await self.resume(websocket, service, params, admission):
                return
            takeover = await take_over(service, params, admission)
            if takeover is not None:
                channel_roles = takeover.state.channel_roles
            self.check_capacity(service, admission)
            session_id = takeover.state.session_id if takeover else new_session_id()
            await check_shared_capacity(service, admission, session_id)
        except Refused as refusal:
            await self.refuse(websocket, subprotocol, refusal)
            return
        declared = frozenset(field for field in FORMAT_FIELDS if field in websocket.query_params)
        session = Session(
            websocket,
            service,
            Declaration(params, declared),
            channel_roles,
            admission,
            session_id=session_id,
            takeover=takeover,
        )
        await session.run()

    async def resume(self, websocket: WebSocket, service: Service, params: SessionParams, admission: Admission) -> bool:
        """Hand this socket to the session its token names, if it is here, same key, same format; True once the
        session is done with the socket. Any other token starts a new session (`resumed: false`), never an error."""
        if params.resume is None or service.draining or not service.settings.resume_window_s:
            return False
        if params.encoding != "linear16":  # a compressed stream cannot be taken up mid-stream: a new session
            return False
        session = service.local_sessions.find(params.resume, admission.key_id)
        if session is None:
            return False
        if (session.format.sample_rate, session.format.channels) != (params.sample_rate, params.channels):
            return False
        finals_end = parse_finals_end(params.finals_end, params.channels)
        taken: bool = await session.attach(Link(websocket, admission.subprotocol, finals_end))
        return taken

    async def refuse(self, websocket: WebSocket, subprotocol: str | None, refusal: Refused) -> None:
        """Say why, then close, before reading a single frame: the client learns the reason and the code."""
        log.info("session.refused", reason=refusal.code, close_code=int(refusal.close_code))
        with anyio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
            await websocket.accept(subprotocol=subprotocol)
            await websocket.send_text(protocol.encode(Error(refusal.code, refusal.message)).decode())
            await websocket.close(refusal.close_code, refusal.code)

    def check_capacity(self, service: Service, admission: Admission) -> None:
        settings = service.settings
        if service.draining:
            raise Refused("shutting_down", "the server is restarting; reconnect", CloseCode.TRY_AGAIN_LATER)
        if len(service.registry) >= settings.max_sessions:
            raise Refused("server_full", "the server is at its session limit; retry later", CloseCode.TRY_AGAIN_LATER)
        if admission.key_id and service.registry.count_for_key(admission.key_id) >= settings.max_sessions_per_key:
            raise Refused("too_many_sessions", "this API key has too many open sessions", CloseCode.RATE_LIMITED)

    def parse_params(self, websocket: WebSocket, service: Service) -> tuple[SessionParams, tuple[Role, Role]]:
        query = dict(websocket.query_params)
        query.pop("key", None)  # never echoed in an error message
        try:
            params: SessionParams = msgspec.convert(query, _params_type, strict=False)
        except msgspec.ValidationError as exc:
            raise Refused("invalid_params", f"invalid query parameters: {exc}", CloseCode.BAD_PARAMETERS) from None
        roles = service.settings.channel_roles
        if params.channel_roles is not None:
            try:
                roles = parse_channel_roles(params.channel_roles)
            except ValueError as exc:
                raise Refused("invalid_params", f"channel_roles: {exc}", CloseCode.BAD_PARAMETERS) from None
        return params, roles


class Link(msgspec.Struct):
    """One connection serving a session: the first, or one that resumed it. `done` is set once the session no
    longer uses the socket, so the handler that brought it may return."""

    websocket: WebSocket
    subprotocol: str | None
    finals_end: dict[int, float] = msgspec.field(default_factory=dict)
    resumed: bool = True
    taken: bool = False
    done: anyio.Event = msgspec.field(default_factory=anyio.Event)


class Session:
    """The state of one live session and the four tasks that serve it."""

    log: Any
    task_group: anyio.abc.TaskGroup

    def __init__(
        self,
        websocket: WebSocket,
        service: Service,
        declaration: Declaration,
        channel_roles: tuple[Role, Role],
        admission: Admission,
        *,
        session_id: str | None = None,
        takeover: Takeover | None = None,
    ) -> None:
        self.websocket = websocket
        self.admission = admission
        self.service = service
        self.settings = service.settings
        self.declaration = declaration
        self.format = declaration.stream  # the PCM the transcriber takes, whatever the client sends
        threshold = self.settings.role_confidence_threshold
        self.tracker = SpeakerTracker(self.format.channels, channel_roles, threshold=threshold)
        self.channel_roles = channel_roles
        self.outbox = Outbox(self.settings.outbox_max_messages)
        self.stopping = False
        self.last_heard = time.monotonic()
        self.last_sequence: int | None = None
        self.close_code: int | None = None
        self.bytes_in = 0  # as the client sent them (compressed or not)
        self.audio_s = 0.0  # seconds of audio taken, decoded
        self.first_audio_at: float | None = None
        self.finals_sent = 0
        self.interims_sent = 0
        self.errors_sent = 0
        self.end_code, self.end_reason = int(CloseCode.NORMAL), "stopped"
        rate = self.settings.rate_limit_factor  # seconds of audio per second
        self.bucket = TokenBucket(rate, rate * self.settings.rate_limit_burst_s)
        self.flood = Flood(self.bucket.capacity, max(1.0, self.settings.rate_limit_burst_s))
        self.late_audio_reported = False
        self.rate_error_at = -1e9
        self.arrivals = ArrivalClock()
        self.prompter: Prompter | None = None
        # Resume (presales_ws/resume/): the session outlives a socket that breaks without `stop`.
        self.resume_token = new_token() if self.settings.resume_window_s else None
        self.replay = Replay()
        self.link = Link(websocket, admission.subprotocol, resumed=False)
        self.link_lost = False  # the connection broke (or went silent) without `stop`: keep the session
        self.link_close: tuple[int, str] | None = None  # a close to send once the connection's tasks are gone
        self.parked = False
        self.parked_at: float | None = None
        self.ended = anyio.Event()  # the session is over: no link can attach any more
        self.finished = anyio.Event()  # the transcriber's events ended: every final is queued
        self.next_links, self._links = anyio.create_memory_object_stream[Link](1)
        self.given_session_id = session_id
        self.takeover = takeover
        self.audio_origin_s = 0.0  # session audio before this instance's first byte (a takeover's commit point)
        self.finals_floor: dict[int, float] = {}  # finals ending by here were delivered by another instance
        if takeover is not None:
            self.resume_token = takeover.token
            self.audio_origin_s = commit_point(takeover.state, takeover.finals_end)
            self.finals_floor = takeover.finals_end or dict(enumerate(takeover.state.finals_end))
            self.tracker.restore(takeover.state.questions)
            self.bucket.grant(RESEND_HORIZON_S + RESEND_MARGIN_S)  # the resend, in seconds of audio
        self.successor_scope = anyio.CancelScope()

    async def run(self) -> None:
        started = time.monotonic()
        client = self.websocket.client
        info = self.service.registry.add(
            f"{client.host}:{client.port}" if client else "?",
            self.format.channels,
            self.admission.key_id,
            session_id=self.given_session_id,
        )
        self.log = log.bind(session_id=info.session_id)
        self.session_id = info.session_id
        self.drain = info.drain
        digest = self.digest = token_digest(self.resume_token) if self.resume_token else None
        if digest:
            self.service.local_sessions.add(digest, self, self.admission.key_id)
        if self.service.suggester is not None:
            self.prompter = Prompter(
                self.service.suggester, self.settings, info.session_id, self.arrivals, self._put_suggestion, self.log
            )
            if self.takeover is not None:
                self.prompter.context.extend(ContextLine(role, text) for role, text in self.takeover.state.context)
        await self.websocket.accept(subprotocol=self.admission.subprotocol)
        self.log.info(
            "session.connected",
            client=info.client,
            key_id=self.admission.key_id,
            sample_rate=self.format.sample_rate,
            channels=self.format.channels,
            encoding=self.declaration.encoding,
        )
        try:
            async with self.service.transcriber.stream(self.format, info.session_id) as stream:
                self._queue(self._encode(self._ready(resumed=self.takeover is not None)))
                async with anyio.create_task_group() as tg:
                    self.task_group = tg
                    if self.prompter is not None:
                        await tg.start(self.prompter.run)  # before any transcript can reach it
                        for question in self.takeover.state.unanswered if self.takeover else ():
                            self.prompter.ask_again(question)
                    tg.start_soon(self.forward_transcripts, stream)
                    tg.start_soon(self.watch_limits, stream, info.drain)
                    tg.start_soon(self.serve_links, stream)
        except TranscriberBusy as exc:
            await self._refuse("transcriber_busy", str(exc), CloseCode.TRY_AGAIN_LATER)
        except Exception:
            self.log.exception("session.failed")
            await self._refuse("internal", "internal error; the session is closed", CloseCode.INTERNAL_ERROR)
        finally:
            self.ended.set()
            if digest:
                self.service.local_sessions.remove(digest)
            self._unshare()
            self.link.done.set()
            self._release_waiting_links()
            self.service.registry.remove(info.session_id)
            self.log.info(
                "session.disconnected",
                duration_s=round(time.monotonic() - started, 3),
                bytes_in=self.bytes_in,
                finals_sent=self.finals_sent,
                interims_sent=self.interims_sent,
                interims_dropped=self.outbox.dropped,
                errors_sent=self.errors_sent,
                **(self.prompter.tally.fields() if self.prompter else {}),
                close_code=self.close_code,
            )

    # --- links: the connections that serve the session, one at a time ----------------------------------------

    async def attach(self, link: Link) -> bool:
        """From another connection's handler: take over the session with `link`, and wait until the session no
        longer needs its socket. False if the session ended first (the caller opens a new session instead)."""
        if self.ended.is_set():
            return False
        try:
            self.next_links.send_nowait(link)
        except anyio.WouldBlock:  # another resume is already waiting to take over: that one goes on
            return False
        await link.done.wait()
        return link.taken

    async def serve_links(self, stream: TranscriberStream) -> None:
        """Serve the first connection, then each resume; a connection that breaks without `stop` parks the session
        for RESUME_WINDOW_S. Whatever ends the session cancels the whole task group."""
        while True:
            successor = await self.serve_link(stream)
            if successor is None and self.link_lost:
                successor = await self.park(stream)
            if successor is None:
                break
            self.link = successor
        self.task_group.cancel_scope.cancel()

    async def serve_link(self, stream: TranscriberStream) -> Link | None:
        """Run the writer, reader and heartbeat on the current link until it ends; the link that superseded it,
        if one did."""
        link = self.link
        link.taken = True
        self.link_lost, self.link_close, successor = False, None, None
        if link.resumed and not await self._greet(link):
            self.link_lost = True
            link.done.set()
            return None
        self.websocket = link.websocket
        self.last_heard = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.send_loop)
            tg.start_soon(self.receive_loop, stream)
            tg.start_soon(self.heartbeat)
            successor = await self._await_successor()
            tg.cancel_scope.cancel()
        if self.link_close is not None:
            code, reason = self.link_close
            if code == CloseCode.SUPERSEDED:
                with anyio.move_on_after(CLOSE_TIMEOUT_S), contextlib.suppress(Exception):
                    await self.websocket.send_text(
                        protocol.encode(Error("superseded", "another connection resumed this session")).decode()
                    )
            await self._close(code, reason)
        link.done.set()
        return successor

    async def _await_successor(self) -> Link | None:
        """Until the link's tasks end it (None), or another connection resumes the session (that link)."""
        with anyio.CancelScope() as scope:
            self.successor_scope = scope
            link = await self._links.receive()
            self.log.info("session.superseded")
            self.link_lost, self.link_close = True, (int(CloseCode.SUPERSEDED), "superseded")
            return link
        return None

    async def park(self, stream: TranscriberStream) -> Link | None:
        """The client vanished without `stop`: keep the session (its transcriber stream too) for a resume. On a
        drain, or once the window passes, end it the lossless way."""
        self.parked = True
        self.parked_at = time.monotonic()
        self.log.info("session.parked", window_s=self.settings.resume_window_s, received_s=self.received_s)
        self._share()
        link: Link | None = None
        with anyio.move_on_after(self.settings.resume_window_s):
            async with anyio.create_task_group() as race:

                async def take() -> None:
                    nonlocal link
                    link = await self._links.receive()
                    race.cancel_scope.cancel()

                async def drained() -> None:  # a drain ends a parked session once its finals are out
                    await self.drain.wait()
                    await self.finished.wait()
                    await self._share_now()
                    race.cancel_scope.cancel()

                race.start_soon(take)
                race.start_soon(drained)
        self.parked = False
        if link is not None:
            self.log.info("session.resumed", received_s=self.received_s)
            return link
        self.log.info("session.resume_expired", window_s=self.settings.resume_window_s)
        await self.wind_down(stream, CloseCode.NORMAL, "resume window expired")
        with anyio.move_on_after(STOP_FLUSH_TIMEOUT_S):
            await self.finished.wait()
        return None

    def _ready(self, *, resumed: bool) -> Status:
        """The `ready` a connection gets first, whether it opened the session or resumed it."""
        return Status(
            "ready",
            session_id=self.session_id,
            transcriber=self.service.transcriber.name,
            sample_rate=self.format.sample_rate,
            channels=self.format.channels,
            channel_roles=list(self.channel_roles) if self.format.channels == 2 else None,
            roles=self.tracker.roles or None,
            resume_token=self.resume_token,
            resumed=resumed,
            received_s=self.received_s,
        )

    async def _greet(self, link: Link) -> bool:
        """Accept a resuming connection and say `ready` first, then put back the finals it may have missed."""
        ready = self._ready(resumed=True)
        with anyio.move_on_after(CLOSE_TIMEOUT_S):
            try:
                await link.websocket.accept(subprotocol=link.subprotocol)
                await link.websocket.send_text(protocol.encode(ready).decode())
            except Exception:
                return False
            self.outbox.requeue(self.replay.unreceived(link.finals_end))
            # The client resends what it recorded while away, at once: that is not a flood.
            away_s = min(time.monotonic() - self.parked_at, RESEND_HORIZON_S) if self.parked_at else 0.0
            self.bucket.grant(away_s + RESEND_MARGIN_S)  # the bucket counts seconds of audio
            return True
        return False

    @property
    def received_s(self) -> float:
        """Seconds of session audio (per channel) the server has: a resuming client resends from here."""
        return self.audio_origin_s + self.audio_s

    # --- shared state (REDIS_URL): what another instance needs to go on with this session -------------------

    def shared_state(self) -> SessionState:
        channels = range(self.format.channels)
        prompter = self.prompter
        return SessionState(
            session_id=self.session_id,
            key_id=self.admission.key_id,
            sample_rate=self.format.sample_rate,
            channels=self.format.channels,
            channel_roles=self.channel_roles,
            questions=self.tracker.evidence,
            context=[(line.speaker, line.text) for line in prompter.context] if prompter else [],
            unanswered=[lookup.question for lookup in prompter.pending if lookup.question] if prompter else [],
            finals_end=[max(self.replay.delivered_end(c), self.finals_floor.get(c, 0.0)) for c in channels],
            received_s=self.received_s,
        )

    def _share(self) -> None:
        """Queue this session's state for Redis; never waits (the write happens off the hot path)."""
        if self.service.shared is not None and self.digest:
            self.service.shared.save(self.digest, self.shared_state())

    async def _share_now(self) -> None:
        """Before a drain's 1012: the state another instance takes the session up from, written first."""
        if self.service.shared is not None and self.digest:
            await self.service.shared.save_now(self.digest, self.shared_state())

    def _unshare(self) -> None:
        """The session is over here: its lease goes; unless a drain handed it on, nobody may resume it."""
        shared = self.service.shared
        if shared is None:
            return
        if self.admission.key_id:
            shared.release_lease(self.admission.key_id, self.session_id)
        if self.digest and self.end_code != CloseCode.SERVICE_RESTART:
            shared.forget(self.digest)

    def _lose_link(self, close: tuple[int, str] | None = None) -> None:
        """The connection broke or went silent without `stop`: end it, keep the session (resume off: end it)."""
        if not self.resume_token:
            self.task_group.cancel_scope.cancel()
            return
        self.link_lost, self.link_close = True, close
        self.successor_scope.cancel()

    def _release_waiting_links(self) -> None:
        """The session is over: connections waiting to resume it open new sessions instead."""
        while True:
            try:
                self._links.receive_nowait().done.set()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return

    # --- the four tasks --------------------------------------------------------------------------------------

    async def send_loop(self) -> None:
        """The only writer of the socket, each write bounded by SEND_TIMEOUT_S.

        A client that stops reading fills the socket's buffers, and then a write waits for it forever: the
        session would stay open (and a drain wait) until the client left. A write that cannot go out in time
        ends the session as `client_too_slow` (4499) and resets the connection: a close frame could not be
        written either.
        """
        while True:
            item = await self.outbox.get()
            if isinstance(item, Close):
                if item.code == CloseCode.SERVICE_RESTART:
                    await self._share_now()  # another instance takes the session up from here
                await self._close(item.code, item.reason)
                self.task_group.cancel_scope.cancel()
                return
            with anyio.move_on_after(self.settings.send_timeout_s) as write:
                try:
                    await self.websocket.send({"type": "websocket.send", "text": item.decode()})
                except Exception:  # the client went away mid-send: the receive loop sees the disconnect too
                    self.close_code = self.close_code or int(CloseCode.GOING_AWAY)
                    self._lose_link()
                    return
            self.replay.written(item)
            if write.cancelled_caught:
                self.log.warning(
                    "session.client_too_slow", detail="writes stalled", stalled_s=self.settings.send_timeout_s
                )
                self.close_code = int(CloseCode.CLIENT_TOO_SLOW)
                abort_connection(self.websocket.scope)
                self.task_group.cancel_scope.cancel()
                return

    async def receive_loop(self, stream: TranscriberStream) -> None:
        while True:
            message = await self.websocket.receive()
            self.last_heard = time.monotonic()  # cheaper than anyio.current_time() on 3.11 (no getpid)
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or CloseCode.NORMAL)
                self.close_code = self.close_code or code
                if code == CloseCode.NORMAL:  # the client chose to leave
                    self.task_group.cancel_scope.cancel()
                else:  # the connection broke: keep the session for a resume
                    self._lose_link()
                return
            try:
                data = message.get("bytes")
                if data is not None:
                    if len(data) > self.settings.max_frame_bytes:
                        self.send_error(
                            "frame_too_large",
                            f"binary frame of {len(data)} bytes exceeds {self.settings.max_frame_bytes}; "
                            "dropped, and the session ends once the audio before it is transcribed",
                        )
                        await self.wind_down(stream, CloseCode.MESSAGE_TOO_BIG, "frame too large")
                        continue
                    await self.on_audio(stream, data)
                elif (text := message.get("text")) is not None:
                    await self.on_text(stream, text)
            except ProtocolError as exc:
                self.send_error(exc.code, exc.message)

    async def forward_transcripts(self, stream: TranscriberStream) -> None:
        """Engine events -> roles -> wire messages."""
        async for event in stream.events():
            self.on_transcriber_event(event)
        # The engine's events end only after `finish()`: every final for the audio received is out.
        self.finished.set()
        if self.stopping:
            if self.prompter is not None:
                await self.prompter.finish()  # and the answers to questions already asked
            self._queue(self._encode(Status("closed", reason=self.end_reason)))
            self.outbox.close(self.end_code, self.end_reason)
        else:
            self.send_error("transcriber_failed", "the transcriber stream ended unexpectedly")
            self.outbox.close(CloseCode.INTERNAL_ERROR, "transcriber ended")

    async def heartbeat(self) -> None:
        """Ping every HEARTBEAT_INTERVAL_S; close a client silent for HEARTBEAT_TIMEOUT_S."""
        interval = self.settings.heartbeat_interval_s
        timeout = self.settings.heartbeat_timeout_s
        next_ping = time.monotonic() + interval
        while True:
            now = time.monotonic()
            deadline = self.last_heard + timeout
            if now >= deadline:
                self.log.info("session.idle_timeout", silent_s=round(now - self.last_heard, 1))
                if self.resume_token:  # a silent client may be on a dead network: it can still resume
                    self._lose_link((int(CloseCode.IDLE_TIMEOUT), "idle timeout"))
                else:
                    self.outbox.close(CloseCode.IDLE_TIMEOUT, "idle timeout")
                return
            if now >= next_ping:
                self._queue(self._encode(Ping(ts=round(time.time(), 3))))
                self._share()  # keeps the shared state from expiring through a long silence
                next_ping = now + interval
            await anyio.sleep(max(0.0, min(next_ping, deadline) - now))

    # --- frames ----------------------------------------------------------------------------------------------

    async def on_text(self, stream: TranscriberStream, text: str) -> None:
        if len(text) > self.settings.max_text_frame_bytes:
            raise ProtocolError(
                "frame_too_large",
                f"text frame of {len(text)} characters exceeds {self.settings.max_text_frame_bytes}; dropped",
            )
        message = protocol.decode_client_message(text)
        if isinstance(message, AudioChunk):
            self.check_sequence(message.sequence)
            await self.on_audio(stream, decode_base64(message.data))
        elif isinstance(message, Start):
            await self.on_start(stream, message)
        elif isinstance(message, Ping):
            self._queue(self._encode(Pong(ts=message.ts)))
        elif isinstance(message, Stop):
            await self.on_stop(stream)
        # Pong: its arrival already counted as a sign of life.

    async def on_start(self, stream: TranscriberStream, start: Start) -> None:
        """The format said in the protocol: before any audio, and not against the URL (then 4400)."""
        if self.first_audio_at is not None:
            raise ProtocolError("invalid_message", "`start` must come before any audio; ignored")
        conflict = self.declaration.apply(start)
        if conflict is not None:
            self.send_error("invalid_params", f"{conflict}; the session ends")
            await self.wind_down(stream, CloseCode.BAD_PARAMETERS, "invalid start")
            return
        d = self.declaration
        self.log.info("session.start", encoding=d.encoding, sample_rate=d.sample_rate, channels=d.channels)

    async def on_audio(self, stream: TranscriberStream, data: bytes) -> None:
        if self.stopping:
            if not self.late_audio_reported:  # once: a client still streaming would get one per frame
                self.late_audio_reported = True
                raise ProtocolError("session_stopping", "the session is ending; audio from here on is ignored")
            return
        if not data:
            return
        now = time.monotonic()
        try:
            if self.first_audio_at is None:
                self.first_audio_at = now
                self.declaration.check_first(data)
            decoded = self.declaration.input.feed(data, self.bucket.available())
            seconds = len(decoded.pcm) / self.format.bytes_per_second
            self.declaration.check_rate(self.audio_s + seconds, now - self.first_audio_at, self.bucket.rate)
        except UndeclaredFormat as exc:
            self.log.info("session.undeclared_format", code=exc.code)
            self.send_error(exc.code, f"{exc.message}; the session ends")
            await self.wind_down(stream, CloseCode.BAD_PARAMETERS, "undeclared audio format")
            return
        if decoded.over_budget_s:
            await self.on_flood(stream, decoded.over_budget_s)
            if self.stopping:
                return
        # A WebM/Ogg session on Deepgram: its bytes go up as they came, when they parsed whole (transcribers/base.py).
        containers = self.declaration.encoding in CONTAINER_ENCODINGS
        reader = stream if containers and isinstance(stream, ContainerReader) else None
        if decoded.pcm and not self.bucket.take(seconds):
            await self.on_flood(stream, seconds)
            if reader is not None and not self.stopping:
                await reader.send_container(b"", None)
            return
        if decoded.pcm:
            self.audio_s += seconds
            self.arrivals.received(self.received_s, now)
        if reader is not None:
            whole = not decoded.problem and not decoded.over_budget_s
            await reader.send_container(decoded.pcm, data if whole else None)
        elif decoded.pcm:
            await stream.send(decoded.pcm)
        self.bytes_in += len(data)
        if decoded.problem:
            raise ProtocolError("invalid_audio", f"{decoded.problem}; the stream goes on from the next whole piece")

    async def on_flood(self, stream: TranscriberStream, dropped_s: float) -> None:
        """Audio beyond the rate limit is dropped and reported; a client that keeps at it is closed (4429)."""
        now = time.monotonic()
        if self.flood.refused(dropped_s, now):
            self.log.warning("session.flooding", dropped_s=round(self.flood.bytes, 2))
            self.send_error("rate_limited", "audio far faster than real time; the session is closed")
            await self.wind_down(stream, CloseCode.RATE_LIMITED, "rate limited")
            return
        if now - self.rate_error_at >= 1.0:  # one error a second, not one per frame
            self.rate_error_at = now
            self.send_error(
                "rate_limited",
                f"audio faster than {self.settings.rate_limit_factor:g}x real time is dropped",
            )

    async def on_stop(self, stream: TranscriberStream) -> None:
        await self.wind_down(stream, CloseCode.NORMAL, "stopped")

    async def wind_down(self, stream: TranscriberStream, code: int, reason: str, *, announce: bool = False) -> None:
        """End the session the lossless way: no more audio, every final out, `status: closed`, then `code`."""
        if self.stopping:
            return
        self.stopping = True
        self.end_code, self.end_reason = int(code), reason
        if announce:
            self._queue(self._encode(Status("closing", reason=reason)))
        self.log.info("session.ending", reason=reason, audio_s=round(self.audio_s, 2))
        await stream.finish()
        self.task_group.start_soon(self._stop_deadline)

    async def watch_limits(self, stream: TranscriberStream, drain: anyio.Event) -> None:
        """A server drain or MAX_SESSION_S ends the session the same lossless way as `stop`."""
        with anyio.move_on_after(self.settings.max_session_s) as scope:
            await drain.wait()
        if scope.cancelled_caught:
            await self.wind_down(stream, CloseCode.SESSION_TOO_LONG, "max session length", announce=True)
        else:
            await self.wind_down(stream, CloseCode.SERVICE_RESTART, "server restart", announce=True)

    async def _stop_deadline(self) -> None:
        await anyio.sleep(STOP_FLUSH_TIMEOUT_S)
        self.log.error("session.stop_timeout", timeout_s=STOP_FLUSH_TIMEOUT_S)
        self.send_error("transcriber_failed", "the transcriber did not finish in time; some words may be missing")
        self.outbox.close(CloseCode.INTERNAL_ERROR, "flush timeout")

    def check_sequence(self, sequence: int | None) -> None:
        if sequence is None:
            return
        last, self.last_sequence = self.last_sequence, sequence
        if last is None or sequence == last + 1:
            return
        if sequence > last + 1:
            self.send_error("sequence_gap", f"audio_chunk sequence jumped from {last} to {sequence}")
        else:
            self.send_error("sequence_repeat", f"audio_chunk sequence {sequence} after {last}")

    # --- transcripts -----------------------------------------------------------------------------------------

    def on_transcriber_event(self, event: TranscriberEvent) -> None:
        if isinstance(event, TranscriptEvent) and self.audio_origin_s:
            origin = self.audio_origin_s  # a takeover: this instance's stream started at the commit point
            event = msgspec.structs.replace(event, start=event.start + origin, end=event.end + origin)
            if event.end <= self.finals_floor.get(event.channel, 0.0):
                return  # audio resent from before the last final the client has: already delivered
        if isinstance(event, TranscriptEvent):
            roles_changed = event.is_final and self.tracker.observe_final(event.channel, event.speaker_id, event.text)
            role, role_confidence = self.tracker.attribute(event.channel, event.speaker_id)
            message = Transcript(
                text=event.text,
                speaker=role,
                is_final=event.is_final,
                speaker_id=event.speaker_id,
                channel=event.channel,
                start=event.start,
                end=event.end,
                confidence=event.confidence,
                utterance_end=event.utterance_end,
                role_confidence=round(role_confidence, 3),
            )
            self._put_transcript(message)
            if message.is_final and message.text and self.settings.log_transcripts:
                self._log_final(message)
            if self.prompter is not None:
                self.prompter.on_transcript(message, eager=event.eager)
            if roles_changed:
                self._queue(self._encode(Status("roles", roles=self.tracker.roles)))
            if event.is_final:
                self._share()
        elif isinstance(event, TranscriberStatus):
            self.log.info("transcriber.status", state=event.state, reason=event.reason)
            self._queue(self._encode(Status(event.state, reason=event.reason)))
        elif isinstance(event, TranscriberFailure):
            self.log.warning("transcriber.failure", code=event.code, detail=event.message, fatal=event.fatal)
            self.send_error(event.code, event.message)
            if event.fatal:
                self.outbox.close(CloseCode.INTERNAL_ERROR, event.code)

    def _put_transcript(self, message: Transcript) -> None:
        payload = self._encode(message)
        if not self._queue(payload, droppable=not message.is_final):
            return
        if message.is_final:
            self.replay.expect(payload, message.channel, message.end)
            self.finals_sent += 1
        else:
            self.interims_sent += 1

    def _log_final(self, message: Transcript) -> None:
        """LOG_TRANSCRIPTS: what was said, for accuracy analysis (personal data: off by default)."""
        self.log.info(
            "transcript.final",
            text=message.text,
            speaker=message.speaker,
            channel=message.channel,
            start=message.start,
            end=message.end,
            confidence=message.confidence,
        )

    def _put_suggestion(self, message: Suggestion) -> None:
        self._queue(self._encode(message))  # kept like a final: it is what the consultant is waiting for

    def _queue(self, payload: bytes, *, droppable: bool = False) -> bool:
        """Queue a message for the writer; when even messages that are never dropped back up (finals, pongs,
        statuses), the client is not reading: close with 4499 at once, without what is queued."""
        try:
            self.outbox.put(payload, droppable=droppable)
        except OutboxOverflow as exc:
            self.log.warning("session.client_too_slow", detail=str(exc))
            if self.parked:  # nobody to read them: end the session
                self.task_group.cancel_scope.cancel()
                return False
            self.outbox.close_now(CloseCode.CLIENT_TOO_SLOW, "client not reading")
            return False
        return True

    # --- plumbing --------------------------------------------------------------------------------------------

    def send_error(self, code: ErrorCode, message: str) -> None:
        self.errors_sent += 1
        # Droppable like interims: a client flooding bad frames without reading loses error reports, not finals.
        self.outbox.put(self._encode(Error(code, message)), droppable=True)

    @staticmethod
    def _encode(message: protocol.ServerMessage) -> bytes:
        return protocol.encode(message)

    async def _close(self, code: int, reason: str) -> None:
        self.close_code = int(code)
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with anyio.move_on_after(CLOSE_TIMEOUT_S) as scope, contextlib.suppress(Exception):  # the client may be gone
            await self.websocket.close(code, reason)
        if scope.cancelled_caught:  # not even the close frame could be written: the client stopped reading
            abort_connection(self.websocket.scope)

    async def _refuse(self, code: ErrorCode, message: str, close_code: int) -> None:
        """Say why and close, outside the task group (which is already gone)."""
        self.errors_sent += 1
        self.close_code = int(close_code)
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with anyio.move_on_after(CLOSE_TIMEOUT_S), anyio.CancelScope(shield=True):
            try:
                await self.websocket.send_text(protocol.encode(Error(code, message)).decode())
                await self.websocket.close(close_code, code)
            except Exception:
                pass
