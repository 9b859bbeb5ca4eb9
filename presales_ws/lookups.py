"""One suggester call for one reading of a question, and the count of what a session's calls cost.

A lookup starts speculatively (the question is probably complete, its final is not in yet) or on the final
itself; a final with the same words confirms it, and only a confirmed lookup is ever delivered. A streaming
suggester writes its answer piece by piece: once confirmed, the answer so far is shown at once and then at
most every PARTIAL_INTERVAL_S. The call has SUGGESTER_TIMEOUT_S to answer, or to write its next piece.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec

from presales_ws.speakers import Role
from presales_ws.suggesters.base import Answer, ContextLine, Suggester

PARTIAL_INTERVAL_S = 0.1  # at most one partial suggestion per lookup this often
STREAM_MAX_S = 20.0  # a streaming answer is cut after this long, however steadily it is written

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

    def __init__(self, text: str, *, speculative: bool) -> None:
        self.text = text
        self.words = words_of(text)
        self.speculative = speculative  # started before a final said the question was complete
        self.scope = anyio.CancelScope()
        self.confirmed = anyio.Event()
        self.done = anyio.Event()
        self.asked = False  # the suggester was called: the call is paid for, whatever happens next
        self.answer: Answer | None = None
        self.question: Question | None = None  # set once a final confirms it: then it is delivered
        self.partial: Answer | None = None  # the answer so far, from a streaming suggester
        self.fresh = anyio.Event()  # `partial` changed since it was last forwarded
        self.partials_sent = 0

    def confirm(self, question: Question) -> None:
        self.question = question
        self.confirmed.set()

    def cancel(self) -> None:
        self.scope.cancel()

    async def run(
        self,
        suggester: Suggester,
        context: Sequence[ContextLine],
        session_id: str,
        timeout_s: float,
        show_partial: Callable[[Lookup, Answer], None],
        log: Any,
    ) -> None:
        """Ask once; `answer` holds the result when `done` is set (None: nothing, an error, or too slow)."""
        with self.scope:
            self.asked = True
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._forward_partials, show_partial)
                ceiling = anyio.current_time() + STREAM_MAX_S
                with anyio.move_on_after(timeout_s) as deadline:

                    def written(answer: Answer) -> None:  # the answer moved on: time for its next piece
                        deadline.deadline = min(ceiling, anyio.current_time() + timeout_s)
                        self.partial = answer
                        self.fresh.set()

                    try:
                        self.answer = await suggester.suggest(self.text, context, session_id, written)
                    except Exception:
                        log.exception("suggestion.failed", suggester=suggester.name)
                if deadline.cancelled_caught:
                    log.warning("suggestion.timeout", suggester=suggester.name, partial=self.partial is not None)
                tg.cancel_scope.cancel()
        self.done.set()

    async def _forward_partials(self, show_partial: Callable[[Lookup, Answer], None]) -> None:
        await self.confirmed.wait()
        while True:
            await self.fresh.wait()
            self.fresh = anyio.Event()
            if self.partial is not None:
                self.partials_sent += 1
                show_partial(self, self.partial)
            await anyio.sleep(PARTIAL_INTERVAL_S)


class Tally(msgspec.Struct):
    """What a session's suggestions cost, for its closing log line: every call counts, superseded or not."""

    asked: int = 0  # suggester calls
    speculative: int = 0  # of those, started before the question's final
    superseded: int = 0  # calls whose reading the final did not confirm: paid for, never shown
    sent: int = 0  # complete suggestions sent (one per answered question)
    partials: int = 0  # partial suggestions sent (streaming answers)
    withdrawn: int = 0  # streams that broke after partials were shown
    held: int = 0  # questions that read as unfinished and waited for the speaker to go on
    merged: int = 0  # of those, continued by the same speaker and asked as one question

    def fields(self) -> dict[str, int]:
        return {f"suggestions_{name}": getattr(self, name) for name in self.__struct_fields__}
