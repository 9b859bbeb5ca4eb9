"""At connect, what Redis decides (REDIS_URL): which copy of a session a resume token goes on with (the one held
here, or one taken over from another instance), and whether the key may open one more session across every
instance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from presales_ws.access import Admission, Refused
from presales_ws.protocol import CloseCode, SessionParams
from presales_ws.resume.ownership import new_owner
from presales_ws.resume.replay import parse_finals_end
from presales_ws.resume.state import Takeover
from presales_ws.resume.tokens import same_key, token_digest
from presales_ws.service import Service

if TYPE_CHECKING:
    from presales_ws.session.sharing import Sharing


def resume_token(service: Service, params: SessionParams) -> str | None:
    """The token a connection may take a session up with: one was given, resumes are on, the server is not
    draining, and the audio is PCM (a compressed stream cannot be taken up mid-stream: a new session)."""
    if service.draining or not service.settings.resume_window_s or params.encoding != "linear16":
        return None
    return params.resume


async def claim_session(
    service: Service, params: SessionParams, admission: Admission, *, here: Sharing | None
) -> Takeover | Literal["here", "contended"] | None:
    """What Redis says of a resume token (REDIS_URL), in one claim: "here" when the copy held on this instance
    (`here`) still owns the session; a Takeover (its last shared state, claimed for a new holder here: the copy
    that held it, wherever it is, ends) when another holder had it or held it; "contended" when another resume
    of it is under way (this one gets a new session). None when Redis cannot say or has no such session for this
    key and format: a copy held here goes on from its own memory, otherwise a new session."""
    shared, token = service.shared, resume_token(service, params)
    if shared is None or token is None:
        return None
    digest = token_digest(token)
    if digest is None:
        return None
    owner = new_owner()
    claimed = await shared.take(
        digest, owner, admission.key_id, params.sample_rate, params.channels, here=here.owner if here else None
    )
    if not isinstance(claimed, tuple):
        return claimed
    generation, state = claimed
    if not same_key(state.key_id, admission.key_id):  # checked in Redis too: never another key's session
        return None
    finals_end = parse_finals_end(params.finals_end, params.channels)
    return Takeover(state, token, finals_end, owner=owner, generation=generation)


async def hand_back(service: Service, takeover: Takeover) -> None:
    """A takeover claimed here that this instance cannot take up (a refusal after the claim, its engine at
    capacity, a failure before `ready`): the copy that held the session has ended already, so the state goes back
    to Redis as it was taken, under this claim's owner, which ends the claim. The session is not lost: the
    client's next resume, on any instance, takes it over."""
    digest = token_digest(takeover.token)
    if service.shared is not None and digest is not None:
        await service.shared.save_now(digest, takeover.owner, takeover.state, generation=takeover.generation)


async def check_shared_capacity(service: Service, admission: Admission, session_id: str) -> None:
    """MAX_SESSIONS_PER_KEY across every instance sharing REDIS_URL; Redis down: this instance's count only."""
    if service.shared is None or admission.key_id is None:
        return
    taken = await service.shared.take_lease(admission.key_id, session_id, service.settings.max_sessions_per_key)
    if taken is False:
        raise Refused("too_many_sessions", "this API key has too many open sessions", CloseCode.RATE_LIMITED)
    if taken is None:
        service.shared.hold_lease(admission.key_id, session_id)  # counted once Redis is back
