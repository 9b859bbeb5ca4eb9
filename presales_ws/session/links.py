"""The connections that serve one session, one at a time: the first, then each that resumes it.

A connection that breaks without `stop` parks the session for RESUME_WINDOW_S (its transcriber stream too); a
connection with its resume token takes it up where it was, and one that resumes a session still served
supersedes the old connection (closed with 4409). When another instance takes the session over (REDIS_URL), this
copy ends at once: a live connection is closed with 4409 there too, a parked copy ends."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import msgspec
from starlette.types import Receive
from starlette.websockets import WebSocket

from presales_ws import protocol
from presales_ws.protocol import CloseCode, Error
from presales_ws.resume.state import RESEND_HORIZON_S
from presales_ws.session.closing import CLOSE_TIMEOUT_S, close
from presales_ws.transcribers.base import TranscriberStream

if TYPE_CHECKING:
    from presales_ws.session.lifecycle import Session

RESEND_MARGIN_S = 2.0  # audio in flight when a connection broke, resent with what was recorded while away


class Link(msgspec.Struct):
    """One connection serving a session: the first, or one that resumed it. `receive` is the ASGI one, read
    without Starlette's per-message checks (the session's receive loop is the hot path). `done` is set once the
    session no longer uses the socket, so the handler that brought it may return."""

    websocket: WebSocket
    receive: Receive
    subprotocol: str | None
    finals_end: dict[int, float] = msgspec.field(default_factory=dict)
    resumed: bool = True
    taken: bool = False
    done: anyio.Event = msgspec.field(default_factory=anyio.Event)


class Links:
    """Which connection serves the session now, and the hand-over from one to the next."""

    def __init__(self, session: Session, first: Link) -> None:
        self.session = session
        self.link = first
        self.websocket = first.websocket  # the socket the session writes to: a resuming one once it is greeted
        self.lost = False  # the connection broke (or went silent) without `stop`: keep the session
        self.pending_close: tuple[int, str] | None = None  # a close to send once the connection's tasks are gone
        self.parked = False
        self.parked_at: float | None = None
        self.next_links, self._waiting = anyio.create_memory_object_stream[Link](1)
        self.successor_scope = anyio.CancelScope()
        self.park_scope = anyio.CancelScope()
        self.elsewhere = False  # another instance took the session over: this copy ends

    async def attach(self, link: Link) -> bool:
        """From another connection's handler: take over the session with `link`, and wait until the session no
        longer needs its socket. False if the session ended first (the caller opens a new session instead)."""
        if self.session.ended.is_set():
            return False
        try:
            self.next_links.send_nowait(link)
        except anyio.WouldBlock:  # another resume is already waiting to take over: that one goes on
            return False
        await link.done.wait()
        return link.taken

    async def serve(self, stream: TranscriberStream) -> None:
        """Serve the first connection, then each resume; a connection that breaks without `stop` parks the session
        for RESUME_WINDOW_S. Whatever ends the session cancels the whole task group."""
        while True:  # taken over elsewhere (even before the first link ran): serve_link closes it with 4409
            successor = await self.serve_link(stream)
            if successor is None and self.lost and not self.elsewhere:
                successor = await self.park(stream)
            if successor is None:
                break
            if self.elsewhere:  # a resume here that came too late: it opens a session of its own
                successor.done.set()
                break
            self.link = successor
        self.session.task_group.cancel_scope.cancel()

    async def serve_link(self, stream: TranscriberStream) -> Link | None:
        """Run the writer, the reader and the heartbeat on the current link until it ends; the link that
        superseded it, if one did."""
        link, session = self.link, self.session
        link.taken = True
        self.lost, self.pending_close, successor = False, None, None
        if link.resumed and not await self.greet(link):
            self.lost = True
            link.done.set()
            return None
        self.websocket = link.websocket
        session.intake.last_heard = time.monotonic()
        session.sharing.share()  # from the first moment: a connection cut before any final is taken up elsewhere
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.outbound.send_loop, link.websocket)
            tg.start_soon(session.intake.receive_loop, link, stream)
            tg.start_soon(session.heartbeat)
            successor = await self._await_successor()
            tg.cancel_scope.cancel()
        if self.elsewhere:
            self.pending_close = (int(CloseCode.SUPERSEDED), "superseded")
        if self.pending_close is not None:
            code, reason = self.pending_close
            superseded = Error("superseded", "another connection resumed this session")
            await self.close_socket(code, reason, error=superseded if code == CloseCode.SUPERSEDED else None)
        link.done.set()
        return successor

    async def _await_successor(self) -> Link | None:
        """Until the link's tasks end it (None), or another connection resumes the session (that link)."""
        with anyio.CancelScope() as scope:
            self.successor_scope = scope
            if self.elsewhere:
                scope.cancel()
            link = await self._waiting.receive()
            self.session.log.info("session.superseded")
            self.lost, self.pending_close = True, (int(CloseCode.SUPERSEDED), "superseded")
            return link
        return None

    async def park(self, stream: TranscriberStream) -> Link | None:
        """The client vanished without `stop`: keep the session (its transcriber stream too) for a resume. On a
        drain, or once the window passes, end it the lossless way."""
        session = self.session
        window_s = session.settings.resume_window_s
        self.parked = True
        self.parked_at = time.monotonic()
        session.log.info("session.parked", window_s=window_s, received_s=session.intake.received_s)
        session.sharing.share()
        link: Link | None = None
        with anyio.CancelScope() as self.park_scope, anyio.move_on_after(window_s):
            if self.elsewhere:
                self.park_scope.cancel()
            async with anyio.create_task_group() as race:

                async def take() -> None:
                    nonlocal link
                    link = await self._waiting.receive()
                    race.cancel_scope.cancel()

                async def drained() -> None:  # a drain ends a parked session once its finals are out
                    await session.drain.wait()
                    await session.finished.wait()
                    await session.sharing.share_now()
                    race.cancel_scope.cancel()

                race.start_soon(take)
                race.start_soon(drained)
        self.parked = False
        if self.elsewhere:
            session.log.info("session.taken_elsewhere")
            return None
        if link is not None:
            session.log.info("session.resumed", received_s=session.intake.received_s)
            return link
        session.log.info("session.resume_expired", window_s=window_s)
        await session.wind_down(stream, CloseCode.NORMAL, "resume window expired")
        await session.flushed()
        return None

    async def greet(self, link: Link) -> bool:
        """Accept a resuming connection and say `ready` first, then put back the finals it may have missed."""
        session = self.session
        with anyio.move_on_after(CLOSE_TIMEOUT_S):
            await session.sharing.settle()  # before `ready`: a resume after it is a later one, not a race
            ready = session.ready(resumed=True)
            try:
                await link.websocket.accept(subprotocol=link.subprotocol)
                await link.websocket.send_text(protocol.encode(ready).decode())
            except Exception:
                return False
            session.outbound.outbox.requeue(session.outbound.replay.unreceived(link.finals_end))
            # The client resends what it recorded while away, at once: that is not a flood.
            away_s = min(time.monotonic() - self.parked_at, RESEND_HORIZON_S) if self.parked_at else 0.0
            session.intake.bucket.grant(away_s + RESEND_MARGIN_S)  # the bucket counts seconds of audio
            return True
        return False

    def superseded_elsewhere(self) -> None:
        """Another instance took the session over: end this copy at once (its audio not yet final is the new
        holder's to transcribe again); a live client gets `superseded` and 4409, as on one instance."""
        self.session.log.info("session.superseded", elsewhere=True)
        self.elsewhere = True
        self.park_scope.cancel()
        self.successor_scope.cancel()

    def disconnected(self, code: int) -> None:
        """The client's side of the connection ended: by choice (1000) the session ends, else it is kept."""
        session = self.session
        session.close_code = session.close_code or code
        if code == CloseCode.NORMAL:
            session.task_group.cancel_scope.cancel()
        else:
            self.lose()

    def lose(self, then_close: tuple[int, str] | None = None) -> None:
        """The connection broke or went silent without `stop`: end it (with `then_close`, if it can still take a
        close), keep the session (resume off: end it)."""
        if not self.session.resume_token:
            self.session.task_group.cancel_scope.cancel()
            return
        self.lost, self.pending_close = True, then_close
        self.successor_scope.cancel()

    async def close_socket(self, code: int, reason: str, *, error: Error | None = None) -> None:
        """Close the current connection (`error` first, if given) and remember the code for the session's log."""
        self.session.close_code = int(code)
        await close(self.websocket, code, reason, error=error)

    def release_waiting(self) -> None:
        """The session is over: connections waiting to resume it open new sessions instead."""
        while True:
            try:
                self._waiting.receive_nowait().done.set()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
