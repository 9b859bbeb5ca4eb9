"""The Deepgram path at the speed of the turn: end of speech -> final, with and without the service's own turn
detection, and on Flux, against the Deepgram-compatible test server (tests/deepgram_server.py) through the real SDK.

The test server behaves like Nova-3's endpointing: a final only after DEEPGRAM_ENDPOINTING_MS of silence
(1,000 ms, the service's default), or at once in answer to Finalize. Its Flux (tests/flux_server.py) ends a turn
on a model of Flux's end-of-turn confidence (the silence after the words, faster after a finished sentence).
Fixtures are streamed at real time in 20 ms frames, one session at a time, to `presales-ws serve` in its own
process:

- **end of speech -> final** on every one-channel fixture (p50 / p95);
- **split rate**: the espeak sentences with a 700 ms pause inserted mid-sentence, as more than one final;
- **end of a question -> suggestion** with the sample knowledge base (an instant suggester);
- **VAD cost**: CPU of the per-channel Silero VAD the turn detection adds, per second of audio;
- **Flux's eager end of turn**: EagerEndOfTurn per question (each one can start a suggestion lookup), how many
  Flux took back (TurnResumed), and how far ahead of the final the eager interim came.

    .venv/bin/python -m bench.deepgram_turns           # writes docs/BENCHMARKS.md
    .venv/bin/python -m bench.deepgram_turns --quick   # two fixtures, writes nothing
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import wave
from pathlib import Path

import anyio
import numpy as np

from bench.embedded import Fixture, Result, load_fixtures, ms, pct, stream
from bench.perf import Target, running
from bench.report import write_section
from presales_ws.client.wavfile import read_wav
from presales_ws.questions import is_question
from presales_ws.transcribers.vad import PauseTracker
from tests.deepgram_server import ConnectionRecord, FakeDeepgram, Script, ScriptedUtterance

KEY = "bench-key-0123456789"
PAUSE_S = 0.7
SAMPLE_KB = Path(__file__).resolve().parent.parent / "examples" / "knowledge_base.md"
FLUX = "Flux (eager 0.5, end of turn 0.7)"
CONFIGS: dict[str, dict[str, str]] = {
    "Deepgram endpointing alone (1,000 ms)": {"TURN_DETECTION": "off"},
    "service turn detection (Finalize)": {"TURN_DETECTION": "text"},
    FLUX: {"DEEPGRAM_MODEL": "flux-general-en"},  # Flux decides the turn; TURN_DETECTION does not apply
}


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm)


def with_pause(fixture: Fixture, into: Path) -> tuple[Fixture, list[bytes]]:
    """The sentence with PAUSE_S of silence at its quietest 20 ms near the middle; the two halves' audio."""
    pcm = np.frombuffer(read_wav(fixture.path).pcm, dtype="<i2")
    nonzero = np.flatnonzero(pcm)
    first, last = int(nonzero[0]), int(nonzero[-1])
    frames = np.arange(first + (last - first) // 3, first + 2 * (last - first) // 3, 320)
    cut = int(frames[int(np.argmin([np.abs(pcm[f : f + 320].astype(np.int32)).sum() for f in frames]))])
    gap = np.zeros(int(PAUSE_S * 16000), dtype="<i2")
    path = into / f"paused_{fixture.path.name}"
    write_wav(path, np.concatenate((pcm[:cut], gap, pcm[cut:])).tobytes())
    end = fixture.speech_end_s + PAUSE_S
    return Fixture("paused (espeak)", path, fixture.text, end, paused=True), [pcm[:cut].tobytes(), pcm[cut:].tobytes()]


def script_for(fixtures: list[Fixture], halves: dict[Path, list[bytes]]) -> Script:
    """Every fixture's speech regions, so the test server "recognises" each one; a paused sentence's halves
    split its words where the pause fell, in proportion to their audio."""
    utterances: list[ScriptedUtterance] = []
    for fixture in fixtures:
        pcm = read_wav(fixture.path).pcm
        if fixture.path in halves:
            a, b = (np.frombuffer(h, dtype="<i2") for h in halves[fixture.path])
            words = fixture.text.split()
            share = len(np.flatnonzero(a)) / max(1, len(np.flatnonzero(a)) + len(np.flatnonzero(b)))
            k = min(len(words) - 1, max(1, round(len(words) * share)))
            texts = [" ".join(words[:k]), " ".join(words[k:])]
        else:
            texts = [fixture.text]
        try:
            utterances += Script.from_regions(pcm, texts).utterances
        except ValueError:
            continue  # internal silences the region scan cannot map to text: not recognisable by the test server
    return Script(tuple(utterances))


def vad_cost_ms_per_s(seconds: float = 30.0) -> float:
    """CPU of one channel's PauseTracker per second of 16 kHz audio (speech fixture, looped)."""
    pcm = read_wav(load_fixtures()[0].path).pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * np.float32(1 / 32768)
    tracker = PauseTracker(16000)
    frames = [samples[i : i + 320] for i in range(0, len(samples) - 320, 320)]
    fed, started = 0.0, time.process_time()
    while fed < seconds:
        for frame in frames:
            tracker.feed(frame)
        fed += len(frames) * 0.02
    return (time.process_time() - started) * 1000 / fed


async def measure(quick: bool) -> str:
    base = [f for f in load_fixtures() if not f.paused]
    if quick:
        base = base[:2]
    with tempfile.TemporaryDirectory(prefix="presales-dgturn-") as tmp:
        paused: list[Fixture] = []
        halves: dict[Path, list[bytes]] = {}
        for fixture in [f for f in base if f.set == "espeak"][: 2 if quick else None]:
            made, parts = with_pause(fixture, Path(tmp))
            paused.append(made)
            halves[made.path] = parts
        fixtures = base + paused
        script = script_for(fixtures, halves)
        results: dict[str, list[Result]] = {}
        suggestions: dict[str, list[float]] = {}
        with FakeDeepgram(script, api_key=KEY, record_audio=False) as fake:
            for name, config in CONFIGS.items():
                env = {
                    "DEEPGRAM_API_KEY": KEY,
                    "DEEPGRAM_URL": fake.url,
                    "TRANSCRIBER": "deepgram",
                    **config,
                    "DEEPGRAM_ENDPOINTING_MS": "1000",
                    "KNOWLEDGE_BASE": str(SAMPLE_KB),
                    "LOG_LEVEL": "warning",
                    "LOG_FORMAT": "json",
                }
                print(f"-- {name}", flush=True)
                with running(Target("presales-ws", ["presales_ws", "serve"], "binary", env), None, Path(tmp)) as srv:
                    results[name] = [await stream(srv.url, f) for f in fixtures]
                suggestions[name] = [r.suggestion_s for r in results[name] if r.suggestion_s is not None]
            flux_connections = [c for c in fake.connections if c.path == "/v2/listen"]
    lines = [
        "| end of turn | set | files | end of speech -> final p50 ms | p95 ms | split by a 700 ms pause | "
        "question -> suggestion p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rs in results.items():
        by_set: dict[str, list[Result]] = {}
        for r in rs:
            by_set.setdefault(r.fixture.set, []).append(r)
        for set_name, group in sorted(by_set.items()):
            lat = [r.latency_s for r in group if r.latency_s is not None]
            split = sum(r.finals > 1 for r in group if r.fixture.paused)
            n_paused = sum(r.fixture.paused for r in group)
            sug = [r.suggestion_s for r in group if r.suggestion_s is not None]
            lines.append(
                f"| {name} | {set_name} | {len(group)} | {ms(statistics.median(lat)) if lat else '-'} | "
                f"{ms(pct(lat, 0.95)) if lat else '-'} | {f'{split}/{n_paused}' if n_paused else '-'} | "
                f"{ms(statistics.median(sug)) if sug else '-'} |"
            )
    lines += ["", f"Turn detection's VAD: {vad_cost_ms_per_s():.2f} ms of CPU per second of audio per channel."]
    return "\n".join([*lines, "", eager_table(flux_connections)])


def eager_table(connections: list[ConnectionRecord]) -> str:
    """Flux's EagerEndOfTurn as the test server sent it: per question turn, taken back, and its lead on the final."""
    eager = resumed = questions = question_eager = 0
    leads_s: list[float] = []
    for record in connections:
        last_eager_at: float | None = None
        turn_eager = 0
        for turn in record.turns:
            if turn.event == "EagerEndOfTurn":
                eager, turn_eager, last_eager_at = eager + 1, turn_eager + 1, turn.sent_at
            elif turn.event == "TurnResumed":
                resumed += 1
            elif turn.event == "EndOfTurn":
                if turn.transcript and is_question(turn.transcript):
                    questions, question_eager = questions + 1, question_eager + turn_eager
                if last_eager_at is not None:
                    leads_s.append(turn.sent_at - last_eager_at)
                turn_eager, last_eager_at = 0, None
    turns = sum(1 for r in connections for t in r.turns if t.event == "EndOfTurn" and t.transcript)
    return "\n".join(
        [
            "| Flux | turns | questions | EagerEndOfTurn per question | taken back (TurnResumed) | "
            "eager ahead of EndOfTurn p50 ms |",
            "|---|---|---|---|---|---|",
            f"| {FLUX} | {turns} | {questions} | {question_eager / max(1, questions):.2f} | {resumed}/{eager} | "
            f"{ms(statistics.median(leads_s)) if leads_s else '-'} |",
        ]
    )


NOTE = """\
The test server's Flux ends a turn on a model of Flux's end-of-turn confidence, the silence after the last word:
at 0.7, 280 ms after a finished sentence, 840 ms after words with no sign either way, 2.1 s after words that go
on (Deepgram quotes ~260 ms for the real Flux). So the Flux rows show what the service adds to Flux's decision
(80 ms audio chunks, the event path), not how well Flux decides, and EagerEndOfTurn per question (each can start a
suggestion lookup; Flux took back the share shown) is the model's too: real Flux needs its own run. The test
server cannot hear the pauses of recorded speech (the `real` set has no digital silence): with endpointing alone
and on Flux, those finals come from `stop`, so those rows measure the files' trailing silence."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two fixtures; writes nothing")
    args = parser.parse_args()
    table = anyio.run(measure, args.quick)
    print(table)
    if not args.quick:
        write_section(
            "BENCHMARKS.md",
            "deepgram-turns",
            "## The Deepgram path: end of speech -> final, with and without the service's turn detection, "
            f"and on Flux\n\n`.venv/bin/python -m bench.deepgram_turns`\n\n{table}\n\n{NOTE}",
            "Benchmarks",
        )


if __name__ == "__main__":
    main()
