"""From the customer's question to a suggestion on the consultant's screen, beside the transcript, never in its way.

The prompter watches a session's transcripts. An interim that already reads as a customer's question starts a
lookup at once (speculatively), so a slow suggester (an LLM) has its answer ready when the final arrives; the
final then confirms the lookup (same words) or replaces it, and only a final question is answered on the wire.
Each utterance has at most one lookup in flight: a newer reading of it cancels the older one, whose result is
dropped. Lookups run in the session's task group under SUGGESTER_TIMEOUT_S; transcripts never wait for them.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import msgspec

from presales_ws.audio import ArrivalClock
from presales_ws.config import Settings
from presales_ws.protocol import Suggestion, Transcript
from presales_ws.questions import is_question
from presales_ws.speakers import Role
from presales_ws.suggesters.base import Answer, ContextLine, Suggester

SPECULATE_MIN_WORDS = 4  # "Does your platform..." is worth a lookup; "Does" is not
# A speculative lookup asks the suggester only once its wording has held this long (or a final confirms it):
# interims change every second, and each superseded HTTP call would cost a connection and an LLM's work.
SPECULATE_SETTLE_S = 0.25
CONTEXT_LINES = 8  # final utterances before the question that a suggester sees

_WORD = re.compile(r"[\w']+")


def words_of(text: str) -> tuple[str, ...]:
    """What two readings of an utterance must share to be the same question: words, not case or punctuation."""
    return tuple(_WORD.findall(text.lower()))


class Question(msgspec.Struct, frozen=True):
    """A final question: what a suggestion quotes and where it sits in the session's audio."""

    text: str
    speaker: Role
    channel: int
    start: float
    end: float


class Lookup:
    """One suggester call for one reading of a question."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.words = words_of(text)
        self.scope = anyio.CancelScope()
        self.confirmed = anyio.Event()
        self.done = anyio.Event()
        self.answer: Answer | None = None
        self.question: Question | None = None  # set once a final confirms it: then it is delivered

    def cancel(self) -> None:
        self.scope.cancel()


class Utterance:
    """What one channel's current speaker has said since their last utterance ended."""

    def __init__(self, speaker_id: int | None) -> None:
        self.speaker_id = speaker_id
        self.start: float | None = None
        self.finals: list[str] = []
        self.last_final: Transcript | None = None
        self.lookup: Lookup | None = None

    def reading(self, piece: Transcript) -> str:
        return " ".join([*self.finals, piece.text.strip()]).strip()


class Prompter:
    """One session's questions and their suggestions."""

    task_group: anyio.abc.TaskGroup

    def __init__(
        self,
        suggester: Suggester,
        settings: Settings,
        session_id: str,
        arrivals: ArrivalClock,
        deliver: Callable[[Suggestion], None],
        log: Any,
    ) -> None:
        self.suggester = suggester
        self.settings = settings
        self.session_id = session_id
        self.arrivals = arrivals
        self.deliver = deliver
        self.log = log
        self.context: deque[ContextLine] = deque(maxlen=CONTEXT_LINES)
        self.utterances: dict[int, Utterance] = {}
        self.pending: set[Lookup] = set()  # final questions whose answer is not out yet
        self.sent = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the task group lookups run in, for as long as the session lasts."""
        async with anyio.create_task_group() as tg:
            self.task_group = tg
            task_status.started()
            await anyio.sleep_forever()

    def asks(self, role: Role) -> bool:
        return role == "customer" or (role == "unknown" and self.settings.suggest_for_unknown_role)

    def on_transcript(self, piece: Transcript) -> None:
        """Every transcript the client gets, in order; returns at once."""
        text = piece.text.strip()
        utterance = self.utterances.get(piece.channel)
        if utterance is not None and text and utterance.speaker_id != piece.speaker_id:
            if not piece.is_final:
                return  # interims' speaker labels waver: only a final from someone else ends the utterance
            self._close(piece.channel, utterance)  # another speaker: the last one's utterance is over
            utterance = None
        if utterance is None:
            utterance = self.utterances[piece.channel] = Utterance(piece.speaker_id)
        if utterance.start is None and text:
            utterance.start = piece.start
        reading = utterance.reading(piece)
        # An empty final only marks the end of the utterance (Deepgram's UtteranceEnd): the role is the speaker's.
        speaker = piece.speaker if text or utterance.last_final is None else utterance.last_final.speaker
        asking = self.asks(speaker) and is_question(reading)
        if not piece.is_final:
            if asking and len(words_of(reading)) >= SPECULATE_MIN_WORDS:
                self._speculate(utterance, reading)
            return
        if text:
            utterance.finals.append(text)
            utterance.last_final = piece
        # A punctuated question is complete; otherwise the engine's end of utterance says when it is.
        if piece.utterance_end or reading.endswith("?"):
            self._close(piece.channel, utterance)
        elif asking:
            self._speculate(utterance, reading)
        if text:  # after the lookup took its copy: the context is what came before the question
            self.context.append(ContextLine(piece.speaker, text))

    async def finish(self) -> None:
        """At the end of the session: answer the questions already asked, within the suggester's timeout."""
        for channel, utterance in list(self.utterances.items()):
            self._close(channel, utterance)
        with anyio.move_on_after(self.settings.suggester_timeout_s + 1.0):
            for lookup in list(self.pending):
                await lookup.done.wait()

    # --- lookups -------------------------------------------------------------------------------------------

    def _speculate(self, utterance: Utterance, reading: str) -> None:
        if utterance.lookup is not None and utterance.lookup.words == words_of(reading):
            return
        if utterance.lookup is not None:
            utterance.lookup.cancel()  # superseded by a newer reading: its result is dropped
        utterance.lookup = self._start(reading)

    def _close(self, channel: int, utterance: Utterance) -> None:
        """The utterance is over: answer it if its finals ask a question, otherwise drop any speculation."""
        self.utterances.pop(channel, None)
        last, lookup = utterance.last_final, utterance.lookup
        text = " ".join(utterance.finals)
        if last is None or not (self.asks(last.speaker) and is_question(text)):
            if lookup is not None:
                lookup.cancel()
            return
        if lookup is None or lookup.words != words_of(text):
            if lookup is not None:
                lookup.cancel()
            lookup = self._start(text)
        start = utterance.start if utterance.start is not None else last.start
        lookup.question = Question(text, last.speaker, last.channel, start, last.end)
        self.pending.add(lookup)
        lookup.confirmed.set()
        if lookup.done.is_set():
            self._answer(lookup)

    def _start(self, text: str) -> Lookup:
        lookup = Lookup(text)
        self.task_group.start_soon(self._look_up, lookup, list(self.context))
        return lookup

    async def _look_up(self, lookup: Lookup, context: list[ContextLine]) -> None:
        with lookup.scope:
            if lookup.question is None:
                with anyio.move_on_after(SPECULATE_SETTLE_S):
                    await lookup.confirmed.wait()
            with anyio.move_on_after(self.settings.suggester_timeout_s) as timeout:
                try:
                    lookup.answer = await self.suggester.suggest(lookup.text, context, self.session_id)
                except Exception:
                    self.log.exception("suggestion.failed", suggester=self.suggester.name)
            if timeout.cancelled_caught:
                self.log.warning("suggestion.timeout", suggester=self.suggester.name)
        lookup.done.set()
        if not lookup.scope.cancel_called and lookup.question is not None:
            self._answer(lookup)

    def _answer(self, lookup: Lookup) -> None:
        self.pending.discard(lookup)
        question, answer = lookup.question, lookup.answer
        if question is None or answer is None:
            if question is not None:
                self.log.info("suggestion.none", words=len(lookup.words))
            return
        arrived = self.arrivals.arrival(question.end)
        latency_ms = None if arrived is None else max(0, round((time.monotonic() - arrived) * 1000))
        self.sent += 1
        self.log.info("suggestion.sent", source=answer.source, confidence=answer.confidence, latency_ms=latency_ms)
        self.deliver(
            Suggestion(
                question=question.text,
                response=answer.response,
                confidence=answer.confidence,
                source=answer.source,
                speaker=question.speaker,
                channel=question.channel,
                start=question.start,
                end=question.end,
                latency_ms=latency_ms,
            )
        )
