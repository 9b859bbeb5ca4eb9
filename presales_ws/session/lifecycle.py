"""One session's life: it opens its transcriber stream, runs as one anyio task group, and ends the lossless
way (no more audio, every final out, `status: closed`, then the close code) or, on failure, with an `error`.

The task group holds the transcript forwarder, the limits watcher, the link server (and, with a suggester,
the prompter) for the whole session; for each connection the link server runs the writer, the reader and the
heartbeat in a task group of their own; `wind_down` adds a deadline for the last finals. Whatever ends the
session cancels the group, and the `finally` releases what the session held: its transcriber stream, its
registry entry, its resume token and shared state."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.abc

from presales_ws.access import Admission
from presales_ws.declaration import Declaration
from presales_ws.logs import get_logger
from presales_ws.prompter import Prompter
from presales_ws.protocol import CloseCode, Error, ErrorCode, Ping, Status
from presales_ws.registry import SessionInfo
from presales_ws.resume.state import RESEND_HORIZON_S, Takeover, commit_point
from presales_ws.resume.tokens import new_token, token_digest
from presales_ws.service import Service
from presales_ws.session.closing import close
from presales_ws.session.intake import Intake
from presales_ws.session.links import RESEND_MARGIN_S, Link, Links
from presales_ws.session.outbound import Outbound
from presales_ws.session.sharing import Sharing
from presales_ws.speakers import Role, SpeakerTracker
from presales_ws.suggesters.base import ContextLine
from presales_ws.transcribers.base import TranscriberBusy, TranscriberStream

STOP_FLUSH_TIMEOUT_S = 30.0  # after `stop`, the transcriber has this long to return the last finals

log = get_logger("presales_ws.session")


class Session:
    """One live session: its parts (intake, outbound, links), and how it starts and ends."""

    log: Any
    task_group: anyio.abc.TaskGroup
    session_id: str
    drain: anyio.Event

    def __init__(
        self,
        link: Link,
        service: Service,
        declaration: Declaration,
        channel_roles: tuple[Role, Role],
        admission: Admission,
        *,
        session_id: str | None = None,
        takeover: Takeover | None = None,
    ) -> None:
        self.service = service
        self.settings = settings = service.settings
        self.admission = admission
        self.declaration = declaration
        self.format = declaration.stream  # the PCM the transcriber takes, whatever the client sends
        self.channel_roles = channel_roles
        self.tracker = SpeakerTracker(self.format.channels, channel_roles, threshold=settings.role_confidence_threshold)
        self.given_session_id = session_id
        self.takeover = takeover
        self.close_code: int | None = None
        self.end_code, self.end_reason = int(CloseCode.NORMAL), "stopped"
        self.ended = anyio.Event()  # the session is over: no link can attach any more
        self.finished = anyio.Event()  # the transcriber's events ended: every final is queued
        # Resume (presales_ws/resume/): the session outlives a socket that breaks without `stop`.
        self.resume_token = new_token() if settings.resume_window_s else None
        self.prompter: Prompter | None = None
        self.links = Links(self, link)
        self.outbound = Outbound(self, settings, self.tracker)
        self.intake = Intake(self, settings, declaration)
        self.sharing = Sharing(self)
        if takeover is not None:  # this instance's stream starts at the commit point of the session's audio
            self.resume_token = takeover.token
            self.intake.audio_origin_s = self.outbound.audio_origin_s = commit_point(
                takeover.state, takeover.finals_end
            )
            self.outbound.finals_floor = takeover.finals_end or dict(enumerate(takeover.state.finals_end))
            self.tracker.restore(takeover.state.questions)
            self.intake.bucket.grant(RESEND_HORIZON_S + RESEND_MARGIN_S)  # the resend, in seconds of audio
        self.digest = token_digest(self.resume_token) if self.resume_token else None

    async def run(self) -> None:
        started = time.monotonic()
        info = self._register()
        try:  # from here on, whatever happens, the `finally` lets go of what `_register` took
            if not await self._accept(info):
                return
            async with self.service.transcriber.stream(self.format, info.session_id) as stream:
                if self.takeover is not None:
                    await self.sharing.settle()  # before `ready`: a resume after it is a later one, not a race
                self.outbound.send(self.ready(resumed=self.takeover is not None))
                self.sharing.taken_up = True
                async with anyio.create_task_group() as tg:
                    self.task_group = tg
                    await self._start_prompter(tg)
                    tg.start_soon(self.forward_transcripts, stream)
                    tg.start_soon(self.watch_limits, stream, info.drain)
                    tg.start_soon(self.links.serve, stream)
        except TranscriberBusy as exc:
            await self.sharing.hand_back()
            await self.refuse("transcriber_busy", str(exc), CloseCode.TRY_AGAIN_LATER)
        except Exception:
            self.log.exception("session.failed")
            await self.sharing.hand_back()
            await self.refuse("internal", "internal error; the session is closed", CloseCode.INTERNAL_ERROR)
        finally:
            self._release(info, started)

    async def _accept(self, info: SessionInfo) -> bool:
        """Complete the WebSocket handshake; False when the client left during it (nothing to say to it)."""
        try:
            await self.links.websocket.accept(subprotocol=self.admission.subprotocol)
        except Exception as exc:  # uvicorn's ClientDisconnected, or a socket error
            self.log.info("session.gone_before_accept", client=info.client, error=type(exc).__name__)
            await self.sharing.hand_back()
            return False
        self.log.info(
            "session.connected",
            client=info.client,
            key_id=self.admission.key_id,
            sample_rate=self.format.sample_rate,
            channels=self.format.channels,
            encoding=self.declaration.encoding,
        )
        return True

    def _register(self) -> SessionInfo:
        """Take a place in the registry (and, with a resume token, in the sessions a token reaches)."""
        client = self.links.websocket.client
        info = self.service.registry.add(
            f"{client.host}:{client.port}" if client else "?",
            self.format.channels,
            self.admission.key_id,
            session_id=self.given_session_id,
        )
        self.log = log.bind(session_id=info.session_id)
        self.session_id = info.session_id
        self.drain = info.drain
        if self.digest:
            self.service.local_sessions.add(self.digest, self, self.admission.key_id)
            self.sharing.hold()
        if self.service.suggester is not None:
            self.outbound.prompter = self.prompter = Prompter(
                self.service.suggester,
                self.settings,
                info.session_id,
                self.intake.arrivals,
                self.outbound.put_suggestion,
                self.log,
            )
            if self.takeover is not None:
                self.prompter.context.extend(ContextLine(role, text) for role, text in self.takeover.state.context)
        return info

    async def _start_prompter(self, tg: anyio.abc.TaskGroup) -> None:
        if self.prompter is not None:
            await tg.start(self.prompter.run)  # before any transcript can reach it
            for question in self.takeover.state.unanswered if self.takeover else ():
                self.prompter.ask_again(question)

    def _release(self, info: SessionInfo, started: float) -> None:
        """Whatever ended the session: let go of everything it held, and log what it did."""
        self.ended.set()
        if self.digest:
            self.service.local_sessions.remove(self.digest, self)
        self.sharing.unshare()
        self.links.link.done.set()
        self.links.release_waiting()
        self.service.registry.remove(info.session_id)
        outbound = self.outbound
        self.log.info(
            "session.disconnected",
            duration_s=round(time.monotonic() - started, 3),
            bytes_in=self.intake.bytes_in,
            finals_sent=outbound.finals_sent,
            interims_sent=outbound.interims_sent,
            interims_dropped=outbound.outbox.dropped,
            errors_sent=outbound.errors_sent,
            **(self.prompter.tally.fields() if self.prompter else {}),
            close_code=self.close_code,
        )

    async def refuse(self, code: ErrorCode, message: str, close_code: int) -> None:
        """The session cannot go on: say why and close, outside the task group (which is already gone)."""
        self.outbound.errors_sent += 1
        self.close_code = int(close_code)
        await close(self.links.websocket, close_code, code, error=Error(code, message))

    def ready(self, *, resumed: bool) -> Status:
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
            received_s=self.intake.received_s,
        )

    # --- how it ends -----------------------------------------------------------------------------------------

    async def forward_transcripts(self, stream: TranscriberStream) -> None:
        """Engine events -> wire messages, until the engine's events end: after `finish()`, every final for the
        audio received is out, and the session closes as it was asked to; before it, the engine failed."""
        async for event in stream.events():
            self.outbound.on_event(event)
        self.finished.set()
        if self.intake.stopping:
            if self.prompter is not None:
                await self.prompter.finish()  # and the answers to questions already asked
            self.outbound.send(Status("closed", reason=self.end_reason))
            self.outbound.outbox.close(self.end_code, self.end_reason)
        else:
            self.outbound.send_error("transcriber_failed", "the transcriber stream ended unexpectedly")
            self.outbound.outbox.close(CloseCode.INTERNAL_ERROR, "transcriber ended")

    async def wind_down(self, stream: TranscriberStream, code: int, reason: str, *, announce: bool = False) -> None:
        """End the session the lossless way: no more audio, every final out, `status: closed`, then `code`."""
        if self.intake.stopping:
            return
        self.intake.stopping = True
        self.end_code, self.end_reason = int(code), reason
        if announce:
            self.outbound.send(Status("closing", reason=reason))
        self.log.info("session.ending", reason=reason, audio_s=round(self.intake.audio_s, 2))
        await stream.finish()
        self.task_group.start_soon(self._stop_deadline)

    async def flushed(self) -> None:
        """Until every final is queued, or STOP_FLUSH_TIMEOUT_S."""
        with anyio.move_on_after(STOP_FLUSH_TIMEOUT_S):
            await self.finished.wait()

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
        self.outbound.send_error(
            "transcriber_failed", "the transcriber did not finish in time; some words may be missing"
        )
        self.outbound.outbox.close(CloseCode.INTERNAL_ERROR, "flush timeout")

    async def heartbeat(self) -> None:
        """Ping every HEARTBEAT_INTERVAL_S; a client silent for HEARTBEAT_TIMEOUT_S loses its connection (and,
        without resume, its session)."""
        interval = self.settings.heartbeat_interval_s
        timeout = self.settings.heartbeat_timeout_s
        intake = self.intake
        next_ping = time.monotonic() + interval
        while True:
            now = time.monotonic()
            deadline = intake.last_heard + timeout
            if now >= deadline:
                self.log.info("session.idle_timeout", silent_s=round(now - intake.last_heard, 1))
                if self.resume_token:  # a silent client may be on a dead network: it can still resume
                    self.links.lose((int(CloseCode.IDLE_TIMEOUT), "idle timeout"))
                else:
                    self.outbound.outbox.close(CloseCode.IDLE_TIMEOUT, "idle timeout")
                return
            if now >= next_ping:
                self.outbound.send(Ping(ts=round(time.time(), 3)))
                self.sharing.share()  # keeps the shared state from expiring through a long silence
                next_ping = now + interval
            await anyio.sleep(max(0.0, min(next_ping, deadline) - now))
