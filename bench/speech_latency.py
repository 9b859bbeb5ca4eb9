"""Latency on real speech, embedded transcriber: end of speech -> final, -> first interim, question -> suggestion.

Streams the fixtures at real time in 20 ms frames, as the extension does, against `presales-ws serve` in its own
process (with the sample knowledge base). The end of each utterance in the audio is known from the fixture
manifest, so "end of speech" is the wall time the frame holding it was sent. Then the same with N sessions at
once, to find how many real-time sessions the embedded transcriber carries before that latency doubles.

    .venv/bin/python -m bench.speech_latency            # prints the tables, writes docs/BENCHMARKS.md
    .venv/bin/python -m bench.speech_latency --quick    # one fixture, no capacity steps (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from bench.load import percentile
from bench.perf import Target, running
from bench.report import write_section
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Error, Suggestion, Transcript

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MANIFEST = {entry["file"]: entry for entry in json.loads((FIXTURES / "fixtures.json").read_text())}
SAMPLE_KB = ROOT / "examples" / "knowledge_base.md"
FRAME_S = 0.02
SENTENCES = [name for name, entry in MANIFEST.items() if entry["channels"] == 1]
CALLS = ["questions_call_two_channel.wav", "call_two_channel.wav"]
CAPACITY_FILE = "two_sentences_us.wav"
# A question the engine's final gets right: the en-us "Okta" comes out as a name the knowledge base does not
# know ("Harkter"), and a name an entry never mentions sinks its answer (suggesters/specifics.py).
QUICK_FILE = "sso_question_gb.wav"
CAPACITY_STEPS = (1, 2, 4, 6, 8, 12, 16, 24)


@dataclass
class Utterance:
    channel: int
    start_s: float
    end_s: float
    text: str
    ended_at: float = 0.0  # wall time the frame holding end_s was sent
    started_at: float = 0.0
    final_at: float | None = None
    first_interim_at: float | None = None
    suggestion_at: float | None = None

    @property
    def final_latency_s(self) -> float | None:
        return None if self.final_at is None else self.final_at - self.ended_at

    @property
    def interim_latency_s(self) -> float | None:
        return None if self.first_interim_at is None else self.first_interim_at - self.started_at


@dataclass
class Run:
    utterances: list[Utterance] = field(default_factory=list)
    busy: int = 0  # sessions refused or told transcriber_busy


@contextmanager
def server(**env_overrides: str) -> Iterator[str]:
    """`presales-ws serve` on the embedded engine and the sample knowledge base, as bench/perf.py runs servers
    (its own process, a free port, no .env, stopped on the way out); not pinned: decodes use both cores."""
    env = {"LOG_LEVEL": "warning", "LOG_FORMAT": "json", "KNOWLEDGE_BASE": str(SAMPLE_KB), "SUGGESTER_URL": ""}
    target = Target("presales-ws", ["presales_ws", "serve"], "binary", {**env, **env_overrides})
    with (
        tempfile.TemporaryDirectory(prefix="presales-speech-") as log_dir,
        running(target, None, Path(log_dir)) as live,
    ):
        yield live.url


def closest(utterances: list[Utterance], channel: int, end_s: float) -> Utterance | None:
    """The fixture utterance a transcript's `end` belongs to (engines place it within a few hundred ms)."""
    candidates = [u for u in utterances if u.channel == channel and u.start_s - 0.5 <= end_s <= u.end_s + 1.5]
    return min(candidates, key=lambda u: abs(u.end_s - end_s), default=None)


async def stream(url: str, file: str, run: Run) -> None:
    """One session: the file at real time, 20 ms frames; every message timed on arrival."""
    audio = read_wav(FIXTURES / file)
    entry = MANIFEST[file]
    utterances = [Utterance(u["channel"], u["start_s"], u["end_s"], u["text"]) for u in entry["utterances"]]
    frame = int(FRAME_S * audio.sample_rate) * 2 * audio.channels
    async with connect(url, channels=audio.channels) as session:

        async def send() -> None:
            started = time.monotonic()
            for index, offset in enumerate(range(0, len(audio.pcm), frame)):
                await anyio.sleep(max(0.0, started + index * FRAME_S - time.monotonic()))
                await session.send_pcm(audio.pcm[offset : offset + frame])
                sent_to_s = (index + 1) * FRAME_S
                now = time.monotonic()
                for u in utterances:
                    if not u.started_at and sent_to_s >= u.start_s:
                        u.started_at = now
                    if not u.ended_at and sent_to_s >= u.end_s:
                        u.ended_at = now
            await session.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            async for message in session:
                now = time.monotonic()
                if isinstance(message, Transcript) and message.text:
                    u = closest(utterances, message.channel, message.end)
                    if u is None:
                        continue
                    if message.is_final and u.final_at is None and u.ended_at:
                        u.final_at = now
                    elif not message.is_final and u.first_interim_at is None:
                        u.first_interim_at = now
                elif isinstance(message, Suggestion):
                    u = closest(utterances, message.channel, message.end)
                    if u is not None and u.suggestion_at is None:
                        u.suggestion_at = now
                elif isinstance(message, Error) and message.code == "transcriber_busy":
                    run.busy += 1
    run.utterances.extend(utterances)


def pct(values: list[float], q: float) -> float:
    return percentile(sorted(values), q * 100)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


async def measure(quick: bool, env: dict[str, str] | None = None, capacity_only: bool = False) -> str:
    lines: list[str] = []
    files = [QUICK_FILE] if quick else SENTENCES
    single = Run()
    env = env or {}
    if capacity_only:
        files = [QUICK_FILE]
    with server(**env) as url:
        for file in files:
            await stream(url, file, single)
        calls = Run()
        for file in [] if quick or capacity_only else CALLS:
            await stream(url, file, calls)
    finals = [u.final_latency_s for u in single.utterances + calls.utterances if u.final_latency_s is not None]
    interims = [u.interim_latency_s for u in single.utterances + calls.utterances if u.interim_latency_s is not None]
    missed = sum(u.final_at is None for u in single.utterances + calls.utterances)
    lines += [
        "| measure (one session at a time, real time) | n | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        f"| end of speech -> final transcript | {len(finals)} | {ms(statistics.median(finals))} | "
        f"{ms(pct(finals, 0.95))} | {ms(max(finals))} |",
        f"| start of speech -> first interim | {len(interims)} | {ms(statistics.median(interims))} | "
        f"{ms(pct(interims, 0.95))} | {ms(max(interims))} |",
    ]
    asked = [u for u in single.utterances + calls.utterances if u.suggestion_at is not None]
    suggestion = [u.suggestion_at - u.ended_at for u in asked if u.suggestion_at is not None]
    if suggestion:
        lines.append(
            f"| end of a question -> suggestion | {len(suggestion)} | "
            f"{ms(statistics.median(suggestion))} | {ms(pct(suggestion, 0.95))} | {ms(max(suggestion))} |"
        )
    lines.append("")
    lines.append(
        f"Utterances with no final: {missed}. Fixtures: {len(files)} sentence files"
        + ("." if quick else f" and {len(CALLS)} two-channel calls ({', '.join(CALLS)}).")
    )
    baseline = statistics.median(finals)
    if not quick:
        lines += [
            "",
            f"Capacity: N sessions at once, each streaming `{CAPACITY_FILE}` (two sentences) at real time:",
            "",
            "| sessions | finals | p50 ms | p95 ms | refused busy | p50 / one session |",
            "|---|---|---|---|---|---|",
        ]
        with server(**{"MAX_SESSIONS": "100", **env}) as url:
            for n in CAPACITY_STEPS:
                run = Run()
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(stream_staggered, url, run, i * 0.13)
                got = [u.final_latency_s for u in run.utterances if u.final_latency_s is not None]
                p50 = statistics.median(got) if got else float("nan")
                row = (
                    f"| {n} | {len(got)}/{len(run.utterances)} | {ms(p50)} | {ms(pct(got, 0.95)) if got else '-'} | "
                    f"{run.busy} | {p50 / baseline:.2f} |"
                )
                lines.append(row)
                print(row, flush=True)
                if run.busy or not got or p50 > 2 * baseline:
                    break
    return "\n".join(lines)


async def stream_staggered(url: str, run: Run, delay_s: float) -> None:
    await anyio.sleep(delay_s)
    try:
        await stream(url, CAPACITY_FILE, run)
    except Exception:  # refused at connect (transcriber_busy, 1013): counted, the step goes on
        run.busy += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one fixture, no capacity steps; writes nothing")
    parser.add_argument("--capacity-only", action="store_true", help="one fixture, then capacity; writes nothing")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the servers (e.g. to compare)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    table = anyio.run(measure, args.quick, env, args.capacity_only)
    print(table)
    if not (args.quick or args.capacity_only or env):
        command = ".venv/bin/python -m bench.speech_latency"
        write_section(
            "BENCHMARKS.md",
            "embedded",
            f"## Latency on real speech (embedded transcriber) and question -> suggestion\n\n`{command}`\n\n{table}",
            "Benchmarks",
        )


if __name__ == "__main__":
    main()
