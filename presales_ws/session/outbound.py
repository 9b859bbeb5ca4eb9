"""What a session says: the transcriber's events as wire messages (with roles), suggestions, statuses and
errors, all through one bounded outbox, written by one task so sends never interleave."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import msgspec
from starlette.websockets import WebSocket

from presales_ws import protocol
from presales_ws.config import Settings
from presales_ws.outbox import Close, Outbox, OutboxOverflow
from presales_ws.prompter import Prompter
from presales_ws.protocol import CloseCode, Error, ErrorCode, Status, Suggestion, Transcript
from presales_ws.resume.replay import Replay
from presales_ws.speakers import SpeakerTracker
from presales_ws.transcribers.base import TranscriberEvent, TranscriberFailure, TranscriberStatus, TranscriptEvent
from presales_ws.transport.websocket import abort_connection

if TYPE_CHECKING:
    from presales_ws.session.lifecycle import Session

LOGGED_FINAL_FIELDS = ("text", "speaker", "channel", "start", "end", "confidence")  # LOG_TRANSCRIPTS


class Outbound:
    """The session's messages to the client, in order; a slow reader loses interims and errors, never finals."""

    prompter: Prompter | None = None

    def __init__(self, session: Session, settings: Settings, tracker: SpeakerTracker) -> None:
        self.session = session
        self.settings = settings
        self.tracker = tracker
        self.outbox = Outbox(settings.outbox_max_messages)
        self.replay = Replay()  # finals written, kept until a resuming client says it has them
        self.audio_origin_s = 0.0  # a takeover: this instance's stream started at the commit point
        self.finals_floor: dict[int, float] = {}  # finals ending by here were delivered by another instance
        self.finals_sent = 0
        self.interims_sent = 0
        self.errors_sent = 0

    def on_event(self, event: TranscriberEvent) -> None:
        """Engine events -> roles -> wire messages."""
        if isinstance(event, TranscriptEvent):
            self.on_transcript(event)
        elif isinstance(event, TranscriberStatus):
            self.session.log.info("transcriber.status", state=event.state, reason=event.reason)
            self.send(Status(event.state, reason=event.reason))
        elif isinstance(event, TranscriberFailure):
            self.session.log.warning("transcriber.failure", code=event.code, detail=event.message, fatal=event.fatal)
            self.send_error(event.code, event.message)
            if event.fatal:
                self.outbox.close(CloseCode.INTERNAL_ERROR, event.code)

    def on_transcript(self, event: TranscriptEvent) -> None:
        if self.audio_origin_s:
            origin = self.audio_origin_s
            event = msgspec.structs.replace(event, start=event.start + origin, end=event.end + origin)
            if event.end <= self.finals_floor.get(event.channel, 0.0):
                return  # audio resent from before the last final the client has: already delivered
        tracker = self.tracker
        roles_changed = event.is_final and tracker.observe_final(event.channel, event.speaker_id, event.text)
        role, role_confidence = tracker.attribute(event.channel, event.speaker_id)
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
        self.put_transcript(message)
        if message.is_final and message.text and self.settings.log_transcripts:
            self.session.log.info("transcript.final", **{name: getattr(message, name) for name in LOGGED_FINAL_FIELDS})
        if self.prompter is not None:
            self.prompter.on_transcript(message, eager=event.eager)
        if roles_changed:
            self.send(Status("roles", roles=tracker.roles))
        if event.is_final:
            self.session.sharing.share()

    def put_transcript(self, message: Transcript) -> None:
        payload = protocol.encode(message)
        if not self.queue(payload, droppable=not message.is_final):
            return
        if message.is_final:
            self.replay.expect(payload, message.channel, message.end)
            self.finals_sent += 1
        else:
            self.interims_sent += 1

    def put_suggestion(self, message: Suggestion) -> None:
        self.send(message)  # kept like a final: it is what the consultant is waiting for

    def send(self, message: protocol.ServerMessage) -> bool:
        """Queue a message that is never dropped (a status, a pong, a suggestion); False if it ended the link."""
        return self.queue(protocol.encode(message))

    def send_error(self, code: ErrorCode, message: str) -> None:
        self.errors_sent += 1
        # Droppable like interims: a client flooding bad frames without reading loses error reports, not finals.
        self.outbox.put(protocol.encode(Error(code, message)), droppable=True)

    def queue(self, payload: bytes, *, droppable: bool = False) -> bool:
        """Queue a message for the writer; when even messages that are never dropped back up (finals, pongs,
        statuses), the client is not reading: close with 4499 at once, without what is queued."""
        try:
            self.outbox.put(payload, droppable=droppable)
        except OutboxOverflow as exc:
            self.session.log.warning("session.client_too_slow", detail=str(exc))
            if self.session.links.parked:  # nobody to read them: end the session
                self.session.task_group.cancel_scope.cancel()
                return False
            self.outbox.close_now(CloseCode.CLIENT_TOO_SLOW, "client not reading")
            return False
        return True

    async def send_loop(self, websocket: WebSocket) -> None:
        """The only writer of the socket, each write bounded by SEND_TIMEOUT_S.

        A client that stops reading fills the socket's buffers, and then a write waits for it forever: the
        session would stay open (and a drain wait) until the client left. A write that cannot go out in time
        ends the session as `client_too_slow` (4499) and resets the connection: a close frame could not be
        written either.
        """
        session, outbox, send_timeout_s = self.session, self.outbox, self.settings.send_timeout_s
        while True:
            item = await outbox.get()
            if isinstance(item, Close):
                if item.code == CloseCode.SERVICE_RESTART:
                    await session.sharing.share_now()  # another instance takes the session up from here
                await session.links.close_socket(item.code, item.reason)
                session.task_group.cancel_scope.cancel()
                return
            # From here a final may reach the client or not (a send that fails, or is cancelled when the link is
            # lost, takes it along): a resume's `finals_end` says which to write again.
            self.replay.written(item)
            with anyio.move_on_after(send_timeout_s) as write:
                try:
                    await websocket.send({"type": "websocket.send", "text": item.decode()})
                except Exception:  # the client went away mid-send: the receive loop sees the disconnect too
                    session.close_code = session.close_code or int(CloseCode.GOING_AWAY)
                    session.links.lose()
                    return
            if write.cancelled_caught:
                session.log.warning("session.client_too_slow", detail="writes stalled", stalled_s=send_timeout_s)
                session.close_code = int(CloseCode.CLIENT_TOO_SLOW)
                abort_connection(websocket.scope)
                session.task_group.cancel_scope.cancel()
                return
