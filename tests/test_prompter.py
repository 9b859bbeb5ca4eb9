"""The prompter's rules: one call per question (speculation on eager interims only), held fragments, partial
answers, supersession, timeouts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest
import structlog

from presales_ws.audio import ArrivalClock
from presales_ws.lookups import Tally
from presales_ws.prompter import Prompter
from presales_ws.protocol import Suggestion, Transcript
from presales_ws.speakers import Role
from presales_ws.suggesters.base import Answer, ContextLine, PartialSink
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

QUESTION = "Does your platform support single sign-on with Okta?"


class SlowSuggester:
    """Answers every question after `delay_s`, like an LLM service; records what it was asked."""

    name = "slow"

    def __init__(self, delay_s: float = 0.2, fail: bool = False, pieces: int = 0, broken: bool = False) -> None:
        """`pieces` > 0: write the answer in that many pieces over `delay_s`, like a streaming LLM (`broken`:
        and then fail instead of finishing)."""
        self.delay_s = delay_s
        self.fail = fail
        self.pieces = pieces
        self.broken = broken
        self.asked: list[str] = []
        self.finished: list[str] = []
        self.contexts: list[list[ContextLine]] = []
        self.written = 0  # pieces written of the answer being written

    async def next_piece(self) -> None:
        """Wait until the next piece of the answer is due."""
        await anyio.sleep(self.delay_s / self.pieces)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def suggest(
        self,
        question: str,
        context: Sequence[ContextLine],
        session_id: str,
        on_partial: PartialSink | None = None,
    ) -> Answer | None:
        self.asked.append(question)
        self.contexts.append(list(context))
        response = f"answer to: {question}"
        for n in range(1, self.pieces + 1):
            await self.next_piece()
            if on_partial is not None:
                on_partial(Answer(f"{response} ({n} of {self.pieces})", 0.9, "http"))
            self.written = n
        if self.broken:
            return None
        if not self.pieces:
            await anyio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("suggester broke")
        self.finished.append(question)
        return Answer(response, 0.9, "http")


def piece(
    text: str,
    *,
    final: bool,
    end: float = 4.0,
    speaker: Role = "customer",
    channel: int = 1,
    utterance_end: bool | None = None,
    speaker_id: int | None = None,
) -> Transcript:
    return Transcript(
        text=text,
        speaker=speaker,
        is_final=final,
        speaker_id=speaker_id,
        channel=channel,
        start=0.5,
        end=end,
        confidence=None,
        utterance_end=final if utterance_end is None else utterance_end,
        role_confidence=1.0,
    )


@asynccontextmanager
async def prompter_for(
    suggester: SlowSuggester, timeout_s: float = 2.0
) -> AsyncIterator[tuple[Prompter, list[Suggestion]]]:
    sent: list[Suggestion] = []
    arrivals = ArrivalClock()
    now = time.monotonic()
    for tenth in range(1, 51):  # 5 s of audio that has just arrived, in real time
        arrivals.received(tenth / 10, now - 5.0 + tenth / 10)
    settings = make_settings(suggester_timeout_s=timeout_s)
    prompter = Prompter(suggester, settings, "s_test", arrivals, sent.append, structlog.get_logger())
    async with anyio.create_task_group() as tg:
        await tg.start(prompter.run)
        yield prompter, sent
        tg.cancel_scope.cancel()


async def test_an_eager_interim_starts_the_lookup_and_its_final_reuses_the_answer() -> None:
    suggester = SlowSuggester(delay_s=0.3)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece(QUESTION, final=False), eager=True)  # the engine: complete if silence lasts
        await anyio.sleep(0.2)  # endpointing: the final comes later
        prompter.on_transcript(piece(QUESTION, final=True))
        assert not sent  # only a final question is answered on the wire
        await anyio.sleep(0.2)
        assert [s.question for s in sent] == [QUESTION]  # sooner than a lookup started by the final (0.3 s)
    assert suggester.asked == [QUESTION]
    assert prompter.tally == Tally(asked=1, speculative=1, sent=1)


async def test_plain_interims_never_cost_a_call_however_much_they_read_like_a_question() -> None:
    suggester = SlowSuggester(delay_s=0.05)
    async with prompter_for(suggester) as (prompter, sent):
        for reading in ("Does your platform support single", "Does your platform support single sign-on", QUESTION):
            prompter.on_transcript(piece(reading, final=False))
            await anyio.sleep(0.3)  # every wording held longer than any settling time
        assert not suggester.asked
        prompter.on_transcript(piece(QUESTION, final=True))
        await anyio.sleep(0.2)
    assert suggester.asked == [QUESTION] and [s.question for s in sent] == [QUESTION]
    assert prompter.tally.speculative == 0


async def test_a_newer_eager_reading_supersedes_the_older_lookup_and_only_the_final_one_is_answered() -> None:
    suggester = SlowSuggester(delay_s=0.2)
    first = "Does your platform support single sign-on?"
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece(first, final=False), eager=True)  # a pause, then the speaker went on
        await anyio.sleep(0.05)
        prompter.on_transcript(piece(QUESTION, final=False), eager=True)
        await anyio.sleep(0.05)
        prompter.on_transcript(piece(QUESTION, final=True))
        await anyio.sleep(0.3)
    assert suggester.asked == [first, QUESTION] and suggester.finished == [QUESTION]  # the first was cancelled
    assert [s.question for s in sent] == [QUESTION]
    assert prompter.tally == Tally(asked=2, speculative=2, superseded=1, sent=1)


async def test_a_plain_interim_with_more_words_cancels_the_speculation_the_speaker_went_on() -> None:
    suggester = SlowSuggester(delay_s=0.3)
    first = "Do you support single sign-on?"
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece(first, final=False), eager=True)
        await anyio.sleep(0.05)
        prompter.on_transcript(piece(f"{first} And what about SCIM", final=False))
        await anyio.sleep(0.4)
        assert suggester.asked == [first] and not suggester.finished
    assert not sent and prompter.tally.superseded == 1


async def test_a_question_that_turns_into_a_statement_is_not_answered() -> None:
    suggester = SlowSuggester(delay_s=0.1)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Do you support single sign on", final=False), eager=True)  # an early guess
        await anyio.sleep(0.05)
        prompter.on_transcript(piece("Due to support costs we picked Okta.", final=True))
        await anyio.sleep(0.3)
    assert suggester.asked and not suggester.finished and not sent
    assert prompter.tally == Tally(asked=1, speculative=1, superseded=1)


async def test_an_unfinished_question_waits_for_its_speaker_and_is_asked_once_whole() -> None:
    suggester = SlowSuggester(delay_s=0.05)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Could you tell me how?", final=False, end=4.5), eager=True)
        prompter.on_transcript(piece("Could you tell me how?", final=True, end=4.5))  # cut by a pause
        await anyio.sleep(0.3)
        assert not suggester.asked  # not the fragment, not even speculatively
        prompter.on_transcript(piece("Your pricing works for large teams", final=False, end=5.0))
        prompter.on_transcript(piece("Your pricing works for large teams?", final=False, end=5.0), eager=True)
        prompter.on_transcript(piece("Your pricing works for large teams?", final=True, end=5.0))
        await anyio.sleep(0.2)
    whole = "Could you tell me how your pricing works for large teams?"
    assert suggester.asked == [whole]
    assert [(s.question, s.start, s.end) for s in sent] == [(whole, 0.5, 5.0)]
    assert prompter.tally == Tally(asked=1, speculative=1, sent=1, held=1, merged=1)


async def test_an_unfinished_question_nobody_continues_is_asked_as_it_was_after_the_pause() -> None:
    suggester = SlowSuggester(delay_s=0.01)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Do you integrate with", final=True, end=2.5))  # its audio came 2.5 s ago
        await anyio.sleep(0.05)
        assert not suggester.asked
        await anyio.sleep(0.6)  # the pause (1.5 s) and the engine's reporting time (1.2 s) ran out 0.2 s in
        assert [s.question for s in sent] == ["Do you integrate with"]
    assert suggester.asked == ["Do you integrate with"] and prompter.tally.held == 1 and not prompter.tally.merged


async def test_another_speakers_final_ends_the_wait_for_a_held_question() -> None:
    suggester = SlowSuggester(delay_s=0.01)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Can you tell me what the price is for", final=True, end=4.8, speaker_id=1))
        prompter.on_transcript(piece("Sure.", final=True, end=4.9, speaker="consultant", speaker_id=0))
        await anyio.sleep(0.1)
    assert suggester.asked == ["Can you tell me what the price is for"] and len(sent) == 1


async def test_a_streaming_answer_reaches_the_client_as_partials_then_once_complete() -> None:
    suggester = SlowSuggester(delay_s=0.3, pieces=30)  # a piece every 10 ms (later on a loaded machine)
    async with prompter_for(suggester) as (prompter, sent):
        started = time.monotonic()
        prompter.on_transcript(piece(QUESTION, final=True))
        await until(lambda: sent and not sent[-1].partial)
        elapsed_s = time.monotonic() - started
    *partials, complete = sent
    assert partials and all(s.partial for s in partials) and not complete.partial
    # 30 pieces, forwarded at most one per 100 ms of however long they took (a piece each would be 30).
    assert 1 <= len(partials) <= 2 + int(elapsed_s / 0.1), (len(partials), elapsed_s)
    written = [int(s.response.rsplit("(", 1)[1].split()[0]) for s in partials]  # "... (12 of 30)" -> 12
    assert written == sorted(written)  # each one further on
    assert complete.response == f"answer to: {QUESTION}"
    assert prompter.tally.partials == len(partials) and prompter.tally.sent == 1


class SteppedSuggester(SlowSuggester):
    """Writes its answer a piece at each `write()` of the test: what is written when is the test's, not a clock's."""

    def __init__(self, pieces: int) -> None:
        super().__init__(pieces=pieces)
        self._go = anyio.Semaphore(0)

    async def write(self, pieces: int) -> None:
        """Let `pieces` more pieces be written, and wait until they are."""
        target = self.written + pieces
        for _ in range(pieces):
            self._go.release()
        await until(lambda: self.written >= target)

    async def next_piece(self) -> None:
        await self._go.acquire()


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 (the conditions are lists the prompter appends to)
            await anyio.sleep(0.005)


async def test_a_speculative_streaming_answer_is_shown_only_once_its_question_is_confirmed() -> None:
    suggester = SteppedSuggester(pieces=4)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece(QUESTION, final=False), eager=True)
        await suggester.write(2)
        assert not sent  # speculative: nothing shown before the question is confirmed
        prompter.on_transcript(piece(QUESTION, final=True))
        await until(lambda: sent)
        assert [s.response for s in sent] == [f"answer to: {QUESTION} (2 of 4)"]  # the answer so far, at once
        await suggester.write(2)
        await until(lambda: not sent[-1].partial)
    assert sent[-1].response == f"answer to: {QUESTION}" and suggester.asked == [QUESTION]


async def test_a_stream_that_breaks_after_partials_withdraws_them() -> None:
    suggester = SlowSuggester(delay_s=0.1, pieces=2, broken=True)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece(QUESTION, final=True))
        await anyio.sleep(0.3)
    assert sent[0].partial and sent[-1].response == "" and not sent[-1].partial
    assert prompter.tally.withdrawn == 1 and prompter.tally.sent == 0


async def test_the_consultants_questions_are_never_looked_up() -> None:
    suggester = SlowSuggester(delay_s=0.01)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Which identity provider do you use today", final=False, speaker="consultant"))
        prompter.on_transcript(piece("Which identity provider do you use today?", final=True, speaker="consultant"))
        await anyio.sleep(0.1)
    assert not suggester.asked and not sent


async def test_a_suggester_past_its_timeout_is_dropped_and_a_failing_one_is_survived() -> None:
    for suggester in (SlowSuggester(delay_s=1.0), SlowSuggester(delay_s=0.01, fail=True)):
        async with prompter_for(suggester, timeout_s=0.2) as (prompter, sent):
            prompter.on_transcript(piece(QUESTION, final=True))
            await anyio.sleep(0.4)
            prompter.on_transcript(piece("Is our data stored in Europe?", final=True, end=4.9))
            await anyio.sleep(0.4)
        assert len(suggester.asked) == 2 and not sent


async def test_pieces_of_one_utterance_are_asked_as_one_question_when_it_ends() -> None:
    # Deepgram: is_final pieces, then an empty final that only marks the end of the utterance.
    suggester = SlowSuggester(delay_s=0.01)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Does your platform support", final=True, utterance_end=False, speaker_id=1))
        prompter.on_transcript(piece("single sign-on with Okta", final=True, utterance_end=False, speaker_id=1))
        await anyio.sleep(0.05)
        assert not sent
        prompter.on_transcript(piece("", final=True, utterance_end=True, speaker="unknown"))
        await anyio.sleep(0.05)
    assert [s.question for s in sent] == ["Does your platform support single sign-on with Okta"]
    assert sent[0].speaker == "customer"


async def test_an_interim_labelled_with_another_speaker_does_not_cut_the_question() -> None:
    # Deepgram's speaker labels on interims waver; only a final from someone else ends an utterance.
    suggester = SlowSuggester(delay_s=0.01)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Does your platform", final=True, utterance_end=False, speaker_id=1))
        prompter.on_transcript(piece("support single", final=False, speaker_id=0))
        prompter.on_transcript(piece("support single sign-on with Okta?", final=True, speaker_id=1))
        await anyio.sleep(0.05)
    assert [s.question for s in sent] == ["Does your platform support single sign-on with Okta?"]


async def test_the_suggester_sees_the_conversation_before_the_question_and_latency_runs_from_its_end() -> None:
    suggester = SlowSuggester(delay_s=0.01)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Thanks for joining today.", final=True, speaker="consultant", channel=0, end=1.0))
        prompter.on_transcript(piece(QUESTION, final=True, end=4.0))
        await anyio.sleep(0.05)
    assert suggester.contexts[-1] == [ContextLine("consultant", "Thanks for joining today.")]
    (suggestion,) = sent
    assert suggestion.latency_ms is not None and 1000 <= suggestion.latency_ms < 2000  # audio at 4.0 s came 1 s ago


async def test_finish_answers_a_question_still_open_when_the_session_ends() -> None:
    suggester = SlowSuggester(delay_s=0.1)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Does your platform support SSO", final=True, utterance_end=False))
        await prompter.finish()
        assert [s.question for s in sent] == ["Does your platform support SSO"]


def test_the_arrival_clock_interpolates_and_covers_audio_after_its_last_checkpoint() -> None:
    arrivals = ArrivalClock()
    for frame in range(1, 13):  # 12 frames of 20 ms, each arriving 20 ms after the last
        arrivals.received(frame * 0.02, 100.0 + frame * 0.02)
    assert arrivals.audio_s == pytest.approx(0.24)
    assert arrivals.arrival(0.15) == pytest.approx(100.15)  # between checkpoints
    assert arrivals.arrival(0.23) == pytest.approx(100.23)  # past the last checkpoint, before the latest frame
    assert arrivals.arrival(0.25) is None  # not here yet


async def test_a_reading_superseded_before_its_call_started_costs_nothing() -> None:
    suggester = SlowSuggester(delay_s=0.05)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Do you support single sign-on?", final=False), eager=True)
        prompter.on_transcript(piece(QUESTION, final=False), eager=True)  # before the first call could start
        prompter.on_transcript(piece(QUESTION, final=True))
        await anyio.sleep(0.2)
    assert suggester.asked == [QUESTION] and len(sent) == 1
    assert prompter.tally == Tally(asked=1, speculative=1, sent=1)
