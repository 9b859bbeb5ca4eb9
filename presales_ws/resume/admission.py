"""At connect, what Redis decides (REDIS_URL): whether a token names a session another instance held, and
whether the key may open one more session across every instance."""

from __future__ import annotations

from presales_ws.access import Admission, Refused
from presales_ws.protocol import CloseCode, SessionParams
from presales_ws.resume.replay import parse_finals_end
from presales_ws.resume.state import Takeover
from presales_ws.resume.tokens import same_key, token_digest
from presales_ws.service import Service


async def take_over(service: Service, params: SessionParams, admission: Admission) -> Takeover | None:
    """A token of a session another instance held (it drained, crashed, or the router moved the client): its
    last shared state, if Redis has it for the same key and format; None starts a new session."""
    shared = service.shared
    if params.resume is None or shared is None or service.draining or not service.settings.resume_window_s:
        return None
    if params.encoding != "linear16":  # a compressed stream cannot be taken up mid-stream
        return None
    digest = token_digest(params.resume)
    state = await shared.load(digest) if digest else None
    if state is None or not same_key(state.key_id, admission.key_id):
        return None
    if (state.sample_rate, state.channels) != (params.sample_rate, params.channels):
        return None
    if state.session_id in service.registry:  # held here, under another token: never two sessions in one
        return None
    return Takeover(state, params.resume, parse_finals_end(params.finals_end, params.channels))


async def check_shared_capacity(service: Service, admission: Admission, session_id: str) -> None:
    """MAX_SESSIONS_PER_KEY across every instance sharing REDIS_URL; Redis down: this instance's count only."""
    if service.shared is None or admission.key_id is None:
        return
    taken = await service.shared.take_lease(admission.key_id, session_id, service.settings.max_sessions_per_key)
    if taken is False:
        raise Refused("too_many_sessions", "this API key has too many open sessions", CloseCode.RATE_LIMITED)
    if taken is None:
        service.shared.hold_lease(admission.key_id, session_id)  # counted once Redis is back
