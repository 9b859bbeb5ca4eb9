"""What another instance needs to go on with a session: its identity, roles and their evidence, the suggester's
context, the questions not yet answered, and where its audio and its finals stand.

Written to Redis off the hot path on every final (and on park and drain); read once, by the instance a client
resumes on after the first one died.
"""

from __future__ import annotations

import msgspec

from presales_ws.lookups import Question
from presales_ws.speakers import Role

RESEND_HORIZON_S = 30.0  # a client keeps this much audio not yet final (presales_ws/client/resend.py)


class SessionState(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    key_id: str | None
    sample_rate: int
    channels: int
    channel_roles: tuple[Role, Role]
    questions: dict[int, int]  # speaker id -> questions asked: the speaker tracker's evidence
    context: list[tuple[Role, str]]  # the suggester's context lines, oldest first
    unanswered: list[Question]  # final questions whose suggestion had not gone out: asked again
    finals_end: list[float]  # per channel: end of the last final written to the client
    received_s: float  # seconds of session audio the instance had received


def commit_point(state: SessionState, client_finals_end: dict[int, float]) -> float:
    """Where a new instance takes the audio up: the end of the last final the client has on every channel (or,
    without its word, the last one written), never further back than the client keeps audio."""
    ends = [client_finals_end.get(c, end) for c, end in enumerate(state.finals_end)]
    return max(min(ends, default=0.0), state.received_s - RESEND_HORIZON_S, 0.0)


class Takeover(msgspec.Struct, frozen=True):
    """A session another instance held, resumed here: its last shared state, its token, what the client has,
    and the claim that made this instance its holder (resume/ownership.py)."""

    state: SessionState
    token: str
    finals_end: dict[int, float]
    owner: str
    generation: int


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(SessionState)
