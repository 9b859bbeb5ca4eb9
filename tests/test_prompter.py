"""The prompter's timing rules: speculation on interims, one lookup per question, supersession, timeouts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest
import structlog

from presales_ws.audio import ArrivalClock
from presales_ws.prompter import Prompter
from presales_ws.protocol import Suggestion, Transcript
from presales_ws.speakers import Role
from presales_ws.suggesters.base import Answer, ContextLine
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

QUESTION = "Does your platform support single sign-on with Okta?"


class SlowSuggester:
    """Answers every question after `delay_s`, like an LLM service; records what it was asked."""

    name = "slow"

    def __init__(self, delay_s: float = 0.2, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.asked: list[str] = []
        self.finished: list[str] = []
        self.contexts: list[list[ContextLine]] = []

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def suggest(self, question: str, context: Sequence[ContextLine], session_id: str) -> Answer | None:
        self.asked.append(question)
        self.contexts.append(list(context))
        await anyio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("suggester broke")
        self.finished.append(question)
        return Answer(f"answer to: {question}", 0.9, "http")


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


async def test_an_interim_question_is_looked_up_before_its_final_which_reuses_the_answer() -> None:
    suggester = SlowSuggester(delay_s=0.3)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece(QUESTION, final=False))
        await anyio.sleep(0.45)  # endpointing: the final comes later; the wording held, the lookup started
        prompter.on_transcript(piece(QUESTION, final=True))
        assert not sent  # only a final question is answered on the wire
        await anyio.sleep(0.2)
        assert [s.question for s in sent] == [QUESTION]  # sooner than a lookup started by the final (0.3 s)
    assert suggester.asked == [QUESTION]


async def test_a_newer_reading_supersedes_the_older_lookup_and_only_the_final_one_is_answered() -> None:
    suggester = SlowSuggester(delay_s=0.2)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Does your platform support single", final=False))
        await anyio.sleep(0.05)
        prompter.on_transcript(piece("Does your platform support single sign-on", final=False))
        await anyio.sleep(0.05)
        prompter.on_transcript(piece(QUESTION, final=True))
        await anyio.sleep(0.4)
    # The superseded readings were cancelled before they cost the suggester anything.
    assert suggester.asked == suggester.finished == [QUESTION]
    assert [s.question for s in sent] == [QUESTION]


async def test_a_question_that_turns_into_a_statement_is_not_answered() -> None:
    suggester = SlowSuggester(delay_s=0.1)
    async with prompter_for(suggester) as (prompter, sent):
        prompter.on_transcript(piece("Do you support single sign", final=False))  # a recogniser's early guess
        await anyio.sleep(0.3)  # the wording held long enough for the suggester to be asked
        prompter.on_transcript(piece("Due to support costs we picked Okta.", final=True))
        await anyio.sleep(0.3)
    assert suggester.asked and not suggester.finished and not sent


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
