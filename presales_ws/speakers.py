"""Speaker labels -> roles: who in the call is the customer, and how sure we are.

Two-channel sessions know: the microphone is the consultant, the tab audio the customer. One channel with
diarized speaker ids learns it from evidence: in a presales call the customer asks more of the questions.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from presales_ws.questions import is_question

Role = Literal["customer", "consultant", "unknown"]
ROLES: tuple[Role, ...] = ("customer", "consultant", "unknown")
CALL_ROLES = ("customer", "consultant")


class Attribution(NamedTuple):
    role: Role
    confidence: float


def parse_channel_roles(value: str) -> tuple[Role, Role]:
    """ "consultant,customer" -> the role of channel 0 and of channel 1."""
    parts = tuple(part.strip().lower() for part in value.split(","))
    if len(parts) != 2 or set(parts) != set(CALL_ROLES):
        raise ValueError(f"expected 'consultant,customer' or 'customer,consultant', got {value!r}")
    first: Role = "customer" if parts[0] == "customer" else "consultant"
    second: Role = "consultant" if first == "customer" else "customer"
    return first, second


class SpeakerTracker:
    """Maps (channel, speaker id) to a role for one session."""

    def __init__(
        self, channels: int, channel_roles: tuple[Role, Role] = ("consultant", "customer"), threshold: float = 0.6
    ) -> None:
        self._channels = channels
        self._channel_roles = channel_roles
        self._threshold = threshold
        self._questions: dict[int, int] = {}  # speaker id -> questions asked (finals only)
        self._roles: dict[str, Role] = {}
        self._confidence = 0.0

    @property
    def roles(self) -> dict[str, Role]:
        """Every diarized speaker seen so far, by str(speaker id)."""
        return dict(self._roles)

    def attribute(self, channel: int, speaker_id: int | None) -> Attribution:
        if self._channels == 2:
            return Attribution(self._channel_roles[channel], 1.0)
        if speaker_id is None:
            return Attribution("unknown", 0.0)
        role = self._roles.get(str(speaker_id), "unknown")
        if speaker_id not in self._questions:
            return Attribution("unknown", 0.0)
        return Attribution(role, round(self._confidence, 3))

    def observe_final(self, channel: int, speaker_id: int | None, text: str) -> bool:
        """Add one final utterance as evidence; True when the role map changed (announce it)."""
        if self._channels == 2 or speaker_id is None:
            return False
        self._questions[speaker_id] = self._questions.get(speaker_id, 0) + (1 if is_question(text) else 0)
        before = self._known()
        self._roles = self._assign()
        return self._known() != before

    def _known(self) -> dict[str, Role]:
        return {sid: role for sid, role in self._roles.items() if role != "unknown"}

    def _assign(self) -> dict[str, Role]:
        # The customer is the speaker with the most questions; certainty grows with the lead over the next one.
        ranked = sorted(self._questions.items(), key=lambda item: item[1], reverse=True)
        top_id, top_questions = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0
        margin = top_questions - runner_up
        self._confidence = 1.0 - 0.5**margin if margin > 0 else 0.0
        if self._confidence < self._threshold:
            return {str(sid): "unknown" for sid in self._questions}
        return {str(sid): ("customer" if sid == top_id else "consultant") for sid in self._questions}
