"""Question -> suggestion on the embedded engine, and what each question costs the AI team's service.

Streams the question fixtures, a question cut by a pause, two statements and the two fixture calls at real
time in 20 ms frames against `presales-ws serve` (its own process, embedded engine, no knowledge base), whose
SUGGESTER_URL is a stand-in on loopback (`bench/peers/suggester.py`, its own process) of one of three kinds:
instant, 1.0 s, or streaming (first delta 300 ms after the call). The stand-in records every call. Per
question: end of its speech (the wall time the frame holding its last sample was sent) -> the suggester's
call (the moment the prompter judged it complete: the engine's eager interim, or the final), -> first
suggestion message (a partial one, when streamed), -> the complete one; per run: calls per answered question.

    .venv/bin/python -m bench.suggestions --before 85b253f    # and the prompter of that commit, side by side
    .venv/bin/python -m bench.suggestions --quick             # one file, one kind (the smoke test); writes nothing
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.load import percentile
from bench.perf import Target, running
from bench.report import write_section
from bench.speech_latency import FIXTURES, FRAME_S, MANIFEST, ROOT, server
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.lookups import words_of
from presales_ws.protocol import Suggestion

KINDS = {"instant": "instant", "1.0 s": "slow", "streaming, first delta at 300 ms": "stream"}
QUESTIONS = [
    "sso_question_us.wav",
    "sso_question_gb.wav",
    "pricing_question_us.wav",
    "pricing_question_gb.wav",
    "data_residency_question_us.wav",
    "rate_limits_question_gb.wav",
    "paused_question_gb.wav",
]
STATEMENTS = ["integrations_answer_us.wav", "onboarding_answer_us.wav"]
CALLS = ["questions_call_two_channel.wav", "call_two_channel.wav"]
# The embedded engine as main runs it (a pause ends a turn as soon as its words read complete), and with
# its fixed rule (every pause of 500 ms ends an utterance), under which the prompter's own hold does the work.
CONFIGS = {
    "end of turn from the words (TURN_DETECTION=text, the default)": {"TURN_DETECTION": "text"},
    "fixed 500 ms endpointing (TURN_DETECTION=off)": {"TURN_DETECTION": "off"},
}


@dataclass
class Asked:
    """One question of a fixture, as the customer (or an unknown speaker) asks it."""

    channel: int
    end_s: float
    ended_at: float = 0.0
    question: str = ""  # as the complete suggestion quotes it
    first_at: float | None = None
    complete_at: float | None = None
    called_at: float | None = None  # the call that answered it reached the suggester


@dataclass
class Run:
    questions: list[Asked] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # the question of every complete suggestion
    statement_calls: int = 0

    @property
    def superseded(self) -> int:
        confirmed = {words_of(q) for q in self.answered}
        return sum(words_of(call) not in confirmed for call in self.calls)


def questions_of(file: str) -> list[Asked]:
    entry = MANIFEST[file]
    return [
        Asked(u["channel"], u["end_s"])
        for u in entry["utterances"]
        if u["text"].endswith("?") and (entry["channels"] == 1 or u["channel"] == 1)  # channel 1: the customer
    ]


async def stream(url: str, file: str) -> tuple[list[Asked], list[Suggestion]]:
    """One session: the file at real time; every suggestion timed on arrival against its question."""
    audio = read_wav(FIXTURES / file)
    asked = questions_of(file)
    suggestions: list[Suggestion] = []
    frame = int(FRAME_S * audio.sample_rate) * 2 * audio.channels
    async with connect(url, channels=audio.channels) as session:

        async def send() -> None:
            started = time.monotonic()
            for index, offset in enumerate(range(0, len(audio.pcm), frame)):
                await anyio.sleep(max(0.0, started + index * FRAME_S - time.monotonic()))
                await session.send_pcm(audio.pcm[offset : offset + frame])
                sent_to_s = (index + 1) * FRAME_S
                for question in asked:
                    if not question.ended_at and sent_to_s >= question.end_s:
                        question.ended_at = time.monotonic()
            await session.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            async for message in session:
                if not isinstance(message, Suggestion):
                    continue
                now = time.monotonic()
                suggestions.append(message)
                question = min(asked, key=lambda q: abs(q.end_s - message.end) + 99 * (q.channel != message.channel))
                if abs(question.end_s - message.end) > 1.5:
                    continue  # not one of the fixture's questions (a recogniser's invention)
                question.first_at = question.first_at or now
                if not message.partial and message.response and question.complete_at is None:
                    question.complete_at, question.question = now, message.question
    return asked, suggestions


async def measure(stand_in: str, kind: str, env: dict[str, str], files: list[str]) -> Run:
    run = Run()
    async with httpx.AsyncClient(base_url=stand_in) as calls:
        with server(KNOWLEDGE_BASE="", SUGGESTER_URL=f"{stand_in}/{kind}", **env) as url:
            for file in files:
                await calls.post("/reset")
                asked, suggestions = await stream(url, file)
                made: list[dict[str, Any]] = (await calls.get("/calls")).json()
                for question in asked:  # the last call with its words before its answer came
                    times = [c["at"] for c in made if words_of(c["question"]) == words_of(question.question)]
                    question.called_at = max((t for t in times if t <= (question.complete_at or 0)), default=None)
                made_questions = [c["question"] for c in made]
                run.calls += made_questions
                run.answered += [s.question for s in suggestions if not s.partial and s.response]
                if file in STATEMENTS:
                    run.statement_calls += len(made_questions)
                run.questions += asked
    return run


@contextmanager
def tree_at(revision: str) -> Iterator[Path]:
    """`presales_ws` as it was at `revision`, in a temporary directory to put first on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "presales_ws"], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="presales-before-") as directory:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        yield Path(directory)


def ms(values: list[float], q: float) -> str:
    return f"{percentile(sorted(values), q) * 1000:,.0f}" if values else "-"


def row(label: str, kind: str, run: Run) -> str:
    called = [q.called_at - q.ended_at for q in run.questions if q.called_at is not None]
    first = [q.first_at - q.ended_at for q in run.questions if q.first_at is not None]
    complete = [q.complete_at - q.ended_at for q in run.questions if q.complete_at is not None]
    answered = len(run.answered)
    per_question = f"{len(run.calls) / answered:.2f}" if answered else "-"
    return (
        f"| {label} | {kind} | {len(run.questions)} | {answered} | {len(run.calls)} ({run.superseded} superseded, "
        f"{run.statement_calls} on statements) | **{per_question}** | {ms(called, 50)} / {ms(called, 95)} | "
        f"{ms(first, 50)} / {ms(first, 95)} | {ms(complete, 50)} / {ms(complete, 95)} |"
    )


async def main_async(quick: bool, before: str | None) -> str:
    files = QUESTIONS[:1] if quick else [*QUESTIONS, *STATEMENTS, *CALLS]
    kinds = dict(list(KINDS.items())[:1]) if quick else KINDS
    configs = dict(list(CONFIGS.items())[:1]) if quick else CONFIGS
    lines = [
        "| prompter | suggester | questions | answered | suggester calls | calls per answered question | "
        "end of question -> its call p50 / p95 ms | -> first suggestion p50 / p95 ms | "
        "-> complete suggestion p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    stand_in_target = Target("stand-in suggester", ["bench.peers.suggester"], "-")
    with (
        tempfile.TemporaryDirectory(prefix="presales-suggest-") as logs,
        running(stand_in_target, None, Path(logs)) as stand_in,
    ):
        base = f"http://127.0.0.1:{stand_in.port}"
        for number, (config, env) in enumerate(configs.items()):
            lines.append(f"| *{config}* | | | | | | | | |")
            if before and number == 0:
                with tree_at(before) as tree:
                    for label, kind in list(KINDS.items())[:2]:  # it could not read a stream
                        run = await measure(base, kind, {**env, "PYTHONPATH": str(tree)}, files)
                        lines.append(row(f"before ({before})", label, run))
                        print(lines[-1], flush=True)
            for label, kind in kinds.items():
                run = await measure(base, kind, env, files)
                lines.append(row("this branch", label, run))
                print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one file, one kind; writes nothing")
    parser.add_argument("--before", help="also measure the prompter of this git revision (e.g. main's commit)")
    args = parser.parse_args()
    started, load_before = time.monotonic(), os.getloadavg()[0]
    table = anyio.run(main_async, args.quick, args.before)
    print(table)
    if args.quick:
        return
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    command = ".venv/bin/python -m bench.suggestions" + (f" --before {args.before}" if args.before else "")
    write_section(
        "BENCHMARKS.md",
        "suggestions",
        f"## Question -> suggestion, and suggester calls per question\n\n`{command}` (at {head.stdout.strip()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - started:.0f} s; load average "
        f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)\n\n{table}",
        "Benchmarks",
    )


if __name__ == "__main__":
    main()
