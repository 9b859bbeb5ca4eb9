"""From the customer's question to a suggestion on the consultant's screen, beside the transcript, never in its way.

Every suggester call may be an LLM's work, paid for whether or not its answer is shown, so a question costs one
call at the moment it is most likely complete: the engine's eager interim (its words are the final's if the
silence lasts), or the final itself. Plain interims never start a call; a reading with other words cancels it.
A final that confirms the words answers from that call; only confirmed questions reach the wire. A question
that stops where a sentence cannot ("Could you tell me how") is held, not asked: if its speaker goes on within
CONTINUATION_S, the two parts are one question. Lookups run in the session's task group; transcripts never
wait for them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from presales_ws.audio import ArrivalClock
from presales_ws.config import Settings
from presales_ws.lookups import STREAM_MAX_S, Lookup, Question, Tally, words_of
from presales_ws.protocol import Suggestion, Transcript
from presales_ws.questions import OPEN_ENDINGS, PREPOSITIONS, is_question, is_unfinished
from presales_ws.speakers import Role
from presales_ws.suggesters.base import Answer, ContextLine, Suggester

SPECULATE_MIN_WORDS = 4  # "Does your platform support" is worth a lookup; "Does" is not
CONTEXT_LINES = 8  # final utterances before the question that a suggester sees
# A pause longer than this ends a question; a shorter one, after words that cannot end one, is a breath.
CONTINUATION_S = 1.5
# How long an engine may take to report speech that has started: the embedded engine's first interim comes
# after 1 s of it, plus a decode. A held question waits this long past CONTINUATION_S.
SPEECH_REPORT_S = 1.2


class Utterance:
    """What one channel's current speaker has said since their last utterance ended."""

    def __init__(self, speaker_id: int | None) -> None:
        self.speaker_id = speaker_id
        self.start: float | None = None
        self.finals: list[str] = []
        self.lines: list[ContextLine] = []  # this utterance's own lines in the context: not context for it
        self.last_final: Transcript | None = None
        self.lookup: Lookup | None = None
        self.hold: anyio.CancelScope | None = None  # waiting to see whether an unfinished question goes on

    @property
    def text(self) -> str:
        return join_finals(self.finals)

    def reading(self, piece: Transcript) -> str:
        return join_finals([*self.finals, piece.text.strip()])


def join_finals(pieces: list[str]) -> str:
    """One utterance from its finals. A piece that was a held question's end loses its "?", and the next one
    its capital when that was only the recogniser starting a new sentence: "Could you tell me how your ..."."""
    text = ""
    for piece in filter(None, pieces):
        if text and is_unfinished(text):
            text = text.rstrip("?.!,")
            first, _, rest = piece.partition(" ")
            if first[:1].isupper() and first.lower() in OPEN_ENDINGS | PREPOSITIONS | _COMMON_OPENERS:
                piece = f"{first.lower()} {rest}".rstrip()
        text = f"{text} {piece}" if text else piece
    return text


_COMMON_OPENERS = frozenset({"it", "this", "that", "these", "those", "you", "we", "they", "there", "much", "many"})


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
        self.tally = Tally()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the task group lookups run in, for as long as the session lasts."""
        async with anyio.create_task_group() as tg:
            self.task_group = tg
            task_status.started()
            await anyio.sleep_forever()

    def asks(self, role: Role) -> bool:
        return role == "customer" or (role == "unknown" and self.settings.suggest_for_unknown_role)

    def on_transcript(self, piece: Transcript, *, eager: bool = False) -> None:
        """Every transcript the client gets, in order; `eager` marks the engine's end-of-turn interim."""
        text = piece.text.strip()
        utterance = self.utterances.get(piece.channel)
        if utterance is not None and text and utterance.speaker_id != piece.speaker_id:
            if not piece.is_final:
                return  # interims' speaker labels waver: only a final from someone else ends the utterance
            self._close(piece.channel, utterance, force=True)  # another speaker: the last one's utterance is over
            utterance = None
        if utterance is None:
            utterance = self.utterances[piece.channel] = Utterance(piece.speaker_id)
        if text and utterance.hold is not None:
            self._resume(utterance)  # the speaker went on: the held question and this are one
        if utterance.start is None and text:
            utterance.start = piece.start
        reading = utterance.reading(piece)
        # An empty final only marks the end of the utterance (Deepgram's UtteranceEnd): the role is the speaker's.
        speaker = piece.speaker if text or utterance.last_final is None else utterance.last_final.speaker
        worth_asking = self.asks(speaker) and is_question(reading)
        if not piece.is_final:
            if eager:
                self._speculate(utterance, reading, worth_asking)
            elif text and utterance.lookup is not None and utterance.lookup.words != words_of(reading):
                self._drop(utterance)  # the speaker went on: the final will have other words
            return
        if text:
            utterance.finals.append(text)
            utterance.last_final = piece
        # A punctuated question is complete; otherwise the engine's end of utterance says when it is.
        if piece.utterance_end or reading.endswith("?"):
            self._close(piece.channel, utterance)
        else:
            self._speculate(utterance, utterance.text, worth_asking)
        if text:
            line = ContextLine(piece.speaker, text)
            self.context.append(line)
            utterance.lines.append(line)

    async def finish(self) -> None:
        """At the end of the session: answer the questions already asked, held ones included."""
        for channel, utterance in list(self.utterances.items()):
            self._close(channel, utterance, force=True)
        with anyio.move_on_after(STREAM_MAX_S + 1.0):
            for lookup in list(self.pending):
                await lookup.done.wait()

    def ask_again(self, question: Question) -> None:
        """A question another instance had not answered when it went away (a resumed session): answer it here."""
        lookup = self._start(question.text, list(self.context), speculative=False)
        lookup.confirm(question)
        self.pending.add(lookup)

    # --- when to ask ---------------------------------------------------------------------------------------

    def _speculate(self, utterance: Utterance, reading: str, worth_asking: bool) -> None:
        """A reading that is probably the whole question: ask now, so the answer is ready when the final comes."""
        words = words_of(reading)
        if utterance.lookup is not None and utterance.lookup.words == words:
            return
        self._drop(utterance)
        if worth_asking and len(words) >= SPECULATE_MIN_WORDS and not is_unfinished(reading):
            utterance.lookup = self._start(reading, self._context_for(utterance), speculative=True)

    def _drop(self, utterance: Utterance) -> None:
        lookup, utterance.lookup = utterance.lookup, None
        if lookup is None:
            return
        lookup.cancel()
        if lookup.asked:
            self.tally.superseded += 1

    def _close(self, channel: int, utterance: Utterance, *, force: bool = False) -> None:
        """The utterance is over: answer it if it asks a question, otherwise drop any speculation.

        An unfinished question is held instead, unless `force` (another speaker, the end of the session)."""
        last = utterance.last_final
        text = utterance.text
        asked = last is not None and self.asks(last.speaker) and is_question(text)
        if asked and not force and is_unfinished(text):
            self._hold(channel, utterance)
            return
        if self.utterances.get(channel) is utterance:
            del self.utterances[channel]
        if utterance.hold is not None:
            utterance.hold.cancel()
            utterance.hold = None
        if last is None or not asked:
            self._drop(utterance)
            return
        if utterance.lookup is None or utterance.lookup.words != words_of(text):
            self._drop(utterance)
            utterance.lookup = self._start(text, self._context_for(utterance), speculative=False)
        lookup = utterance.lookup
        start = utterance.start if utterance.start is not None else last.start
        lookup.confirm(Question(text, last.speaker, last.channel, start, last.end))
        self.pending.add(lookup)
        if lookup.done.is_set():
            self._answer(lookup)

    def _hold(self, channel: int, utterance: Utterance) -> None:
        """Wait for the speaker's next CONTINUATION_S (and the engine's word on it) before asking."""
        if utterance.hold is not None:
            utterance.hold.cancel()
        else:
            self.tally.held += 1
            self.log.info("suggestion.held", words=len(words_of(utterance.text)))
        if utterance.lookup is not None and utterance.lookup.words != words_of(utterance.text):
            self._drop(utterance)
        last = utterance.last_final
        ended = (self.arrivals.arrival(last.end) if last is not None else None) or time.monotonic()
        utterance.hold = scope = anyio.CancelScope()
        delay_s = ended + CONTINUATION_S + SPEECH_REPORT_S - time.monotonic()
        self.task_group.start_soon(self._release, channel, utterance, scope, delay_s)

    async def _release(self, channel: int, utterance: Utterance, scope: anyio.CancelScope, delay_s: float) -> None:
        with scope:
            await anyio.sleep(max(0.0, delay_s))
        if not scope.cancel_called and self.utterances.get(channel) is utterance:
            self._close(channel, utterance, force=True)  # nobody went on: the question stands as it was asked

    def _resume(self, utterance: Utterance) -> None:
        assert utterance.hold is not None
        utterance.hold.cancel()
        utterance.hold = None
        self.tally.merged += 1
        self.log.info("suggestion.merged", words=len(words_of(utterance.text)))

    def _context_for(self, utterance: Utterance) -> list[ContextLine]:
        own = {id(line) for line in utterance.lines}
        return [line for line in self.context if id(line) not in own]

    # --- the call and its answer ---------------------------------------------------------------------------

    def _start(self, text: str, context: list[ContextLine], *, speculative: bool) -> Lookup:
        lookup = Lookup(text, speculative=speculative)
        self.task_group.start_soon(self._look_up, lookup, context)
        return lookup

    async def _look_up(self, lookup: Lookup, context: list[ContextLine]) -> None:
        if lookup.scope.cancel_called:  # superseded before it started: it cost nothing
            lookup.done.set()
            return
        self.tally.asked += 1
        self.tally.speculative += lookup.speculative
        self.log.info(
            "suggestion.asked", suggester=self.suggester.name, speculative=lookup.speculative, words=len(lookup.words)
        )
        timeout_s = self.settings.suggester_timeout_s
        await lookup.run(self.suggester, context, self.session_id, timeout_s, self._show_partial, self.log)
        if not lookup.scope.cancel_called and lookup.question is not None:
            self._answer(lookup)

    def _show_partial(self, lookup: Lookup, answer: Answer) -> None:
        self.tally.partials += 1
        self._send(lookup, answer, partial=True)

    def _answer(self, lookup: Lookup) -> None:
        self.pending.discard(lookup)
        answer = lookup.answer
        if lookup.question is None:
            return
        if answer is None:
            if lookup.partials_sent and lookup.partial is not None:
                # The stream broke after the consultant saw part of it: an empty response withdraws it.
                self.tally.withdrawn += 1
                self.log.warning("suggestion.withdrawn", partials=lookup.partials_sent)
                self._send(lookup, Answer("", 0.0, lookup.partial.source), partial=False)
            else:
                self.log.info("suggestion.none", words=len(lookup.words))
            return
        self.tally.sent += 1
        latency_ms = self._send(lookup, answer, partial=False)
        self.log.info("suggestion.sent", source=answer.source, confidence=answer.confidence, latency_ms=latency_ms)

    def _send(self, lookup: Lookup, answer: Answer, *, partial: bool) -> int | None:
        question = lookup.question
        assert question is not None
        arrived = self.arrivals.arrival(question.end)
        latency_ms = None if arrived is None else max(0, round((time.monotonic() - arrived) * 1000))
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
                partial=partial,
            )
        )
        return latency_ms
