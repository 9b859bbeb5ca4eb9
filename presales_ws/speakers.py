"""Speaker labels -> roles: who in the call is the customer, and how sure we are.

Two-channel sessions know: the microphone is the consultant, the tab audio the customer. One channel with
diarized speaker ids learns it from evidence: in a presales call the customer asks more of the questions.
"""

from __future__ import annotations

from typing import NamedTuple

from presales_ws.protocol import Role as Role
from presales_ws.questions import is_question

ROLES: tuple[Role, ...] = ("customer", "consultant", "unknown")
CALL_ROLES: dict[str, Role] = {"customer": "customer", "consultant": "consultant"}  # the roles a channel can have


class Attribution(NamedTuple):
    """The role of one utterance's speaker, and how sure we are of it."""

    role: Role
    confidence: float  # 0.0-1.0


def parse_channel_roles(value: str) -> tuple[Role, Role]:
    """Read "consultant,customer" (case and spaces ignored) as the roles of channel 0 and channel 1."""
    parts = [part.strip().lower() for part in value.split(",")]
    if len(parts) != 2 or sorted(parts) != sorted(CALL_ROLES):
        raise ValueError(
            f"channel roles must name customer and consultant once each, "
            f"as 'consultant,customer' or 'customer,consultant'; got {value!r}"
        )
    return CALL_ROLES[parts[0]], CALL_ROLES[parts[1]]


class SpeakerTracker:
    """Maps (channel, speaker id) to a role for one session.

    Diarized speakers are scored on their final utterances: the one with the most questions is the customer,
    with confidence 1 - 0.5**lead, where lead is how many more questions they asked than anyone else seen
    (1 -> 0.5, 2 -> 0.75, 3 -> 0.875). Below the threshold nobody is labelled; above it every other speaker
    seen is the consultant, with the same confidence.
    """

    def __init__(
        self, channels: int, channel_roles: tuple[Role, Role] = ("consultant", "customer"), threshold: float = 0.6
    ) -> None:
        self._channels = channels
        self._channel_roles = channel_roles
        self._threshold = threshold
        self._questions: dict[int, int] = {}  # diarized speaker id -> questions asked in finals
        self._customer: int | None = None  # the speaker leading on questions, if anyone leads
        self._confidence = 0.0

    @property
    def roles(self) -> dict[str, Role]:
        """Every diarized speaker seen so far, by str(speaker id); what the session announces."""
        return {str(sid): self._role(sid) for sid in self._questions}

    @property
    def evidence(self) -> dict[int, int]:
        """Questions asked by each diarized speaker: what another instance needs to go on labelling."""
        return dict(self._questions)

    def restore(self, evidence: dict[int, int]) -> None:
        """Take up another instance's evidence (a session resumed here after that instance went away)."""
        self._questions = dict(evidence)
        if self._questions:
            self._score()

    def attribute(self, channel: int, speaker_id: int | None) -> Attribution:
        """The role to put on an utterance (interim or final) from this channel and speaker."""
        if self._channels == 2:
            return Attribution(self._channel_roles[channel], 1.0)
        if speaker_id is None or speaker_id not in self._questions:
            return Attribution("unknown", 0.0)
        return Attribution(self._role(speaker_id), self._confidence)

    def observe_final(self, channel: int, speaker_id: int | None, text: str) -> bool:
        """Count one final utterance as evidence; True when someone's role changed, so the session announces it.

        A speaker who first appears while nobody is labelled joins `roles` as "unknown" without an announcement:
        nothing the client shows would change.
        """
        if self._channels == 2 or speaker_id is None:
            return False
        before = self._labelling()
        self._questions[speaker_id] = self._questions.get(speaker_id, 0) + int(is_question(text))
        self._score()
        return self._labelling() != before

    def _score(self) -> None:
        leader = max(self._questions, key=self._questions.__getitem__)  # ties don't matter: the lead is then 0
        runner_up = max((q for sid, q in self._questions.items() if sid != leader), default=0)
        lead = self._questions[leader] - runner_up
        self._confidence = 1.0 - 0.5**lead if lead > 0 else 0.0
        self._customer = leader if lead > 0 else None

    def _role(self, speaker_id: int) -> Role:
        if self._customer is None or self._confidence < self._threshold:
            return "unknown"
        return "customer" if speaker_id == self._customer else "consultant"

    def _labelling(self) -> tuple[int, int] | None:
        """What the labelled roles depend on (the customer, and the speakers seen, who only ever grow): cheaper
        to compare on every final than the roles themselves."""
        if self._customer is None or self._confidence < self._threshold:
            return None
        return (self._customer, len(self._questions))
