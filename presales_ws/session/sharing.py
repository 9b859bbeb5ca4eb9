"""What another instance needs to go on with a session (REDIS_URL): its state, written when it changes
(each final, each ping, parking, each resume), at once before a drain's 1012, and forgotten when the session
ends here. This copy writes only while it owns the session (resume/ownership.py): once another instance has
taken it over, this copy ends and leaves the state, and the lease, to the new holder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from presales_ws.protocol import CloseCode
from presales_ws.resume.admission import hand_back
from presales_ws.resume.ownership import new_owner
from presales_ws.resume.state import SessionState
from presales_ws.resume.takeovers import Holder

if TYPE_CHECKING:
    from presales_ws.session.lifecycle import Session


class Sharing:
    """One session's shared state; every method is a no-op without REDIS_URL or a resume token."""

    def __init__(self, session: Session) -> None:
        self.session = session
        takeover = session.takeover
        self.owner = takeover.owner if takeover is not None else new_owner()  # this copy, as Redis names it
        self.generation = takeover.generation if takeover is not None else 0
        self.disowned = False  # another holder has the session: this copy writes, deletes and releases nothing
        self.taken_up = False  # a takeover's client heard `ready`: from then on the session is this copy's to end
        self.handed_back = False  # a takeover this copy could not take up: its state stays in Redis

    def state(self) -> SessionState:
        """What another instance needs to go on with this session."""
        session = self.session
        channels = range(session.format.channels)
        prompter, replay, floor = session.prompter, session.outbound.replay, session.outbound.finals_floor
        return SessionState(
            session_id=session.session_id,
            key_id=session.admission.key_id,
            sample_rate=session.format.sample_rate,
            channels=session.format.channels,
            channel_roles=session.channel_roles,
            questions=session.tracker.evidence,
            context=[(line.speaker, line.text) for line in prompter.context] if prompter else [],
            unanswered=[lookup.question for lookup in prompter.pending if lookup.question] if prompter else [],
            finals_end=[max(replay.delivered_end(c), floor.get(c, 0.0)) for c in channels],
            received_s=session.intake.received_s,
        )

    def hold(self) -> None:
        """From the start: if another instance takes this session over, this copy is told, and ends."""
        session = self.session
        if session.service.shared is not None and session.digest:
            session.service.shared.hold(session.digest, Holder(self.owner, self.generation, self.superseded))

    def share(self) -> None:
        """Queue this session's state for Redis; never waits (the write happens off the hot path)."""
        session = self.session
        if session.service.shared is not None and session.digest and not self.disowned:
            session.service.shared.save(session.digest, self.owner, self.state(), generation=self.generation)

    async def share_now(self) -> None:
        """Before a drain's 1012: the state another instance takes the session up from, written first."""
        session = self.session
        if session.service.shared is not None and session.digest and not self.disowned:
            await session.service.shared.save_now(session.digest, self.owner, self.state(), generation=self.generation)

    async def settle(self) -> None:
        """A resume claimed the session for this copy: write its state now, which ends the claim, before the
        client hears `ready`. A resume that reaches Redis while a claim is still pending was opened before the
        client could know of this one (a retry racing it), and gets a new session; one after `ready` takes over."""
        await self.share_now()

    async def hand_back(self) -> None:
        """A takeover that failed before its client heard `ready` (its engine at capacity, the client gone during
        the handshake, any error): the copy it superseded has ended already, so the state goes back to Redis as it
        was taken over, which ends this claim, and stays there when this copy ends: the client's next resume, on
        any instance, takes the session over with nothing lost."""
        session = self.session
        if session.takeover is None or self.taken_up or self.disowned or session.service.shared is None:
            return
        self.handed_back = True
        await hand_back(session.service, session.takeover)

    def superseded(self) -> None:
        """Another holder has the session (a takeover elsewhere): end this copy at once, leaving everything
        shared to the new holder; a live client gets 4409."""
        session = self.session
        if self.disowned:
            return
        self.disowned = True
        if session.service.shared is not None:
            session.service.shared.let_go(session.digest, self.owner, session.session_id)
        session.links.superseded_elsewhere()

    def unshare(self) -> None:
        """The session is over here: its lease goes; unless a drain handed it on (or a takeover that failed handed
        it back), nobody may resume it. A copy another holder superseded leaves both."""
        session = self.session
        shared = session.service.shared
        if shared is None or self.disowned:
            return
        if session.digest:
            shared.unhold(session.digest, self.owner)
        if session.admission.key_id:
            shared.release_lease(session.admission.key_id, session.session_id, session.digest, self.owner)
        if session.digest and session.end_code != CloseCode.SERVICE_RESTART and not self.handed_back:
            shared.forget(session.digest, self.owner)
