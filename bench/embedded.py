"""The embedded engine through the service, engine against engine in one run: words, end of turn, capacity.

Each engine configuration gets its own `presales-ws serve` process (not pinned: decodes use both cores), all
started at once, and every fixture is streamed to each in turn (one session at a time, so the machine's other
load falls on every configuration alike) at real time in 20 ms frames, as a client would:

- **WER** of the finals against the reference, per fixture set (real recorded speech, espeak voices);
- **end of speech -> final** (the wall time the frame holding the fixture's last speech sample was sent, to
  the arrival of the final that covers it): p50 / p95;
- **split rate** on sentences with a 700 ms pause inside them: how many come back as more than one final;
- **CPU per audio second** (the server process's CPU time over the audio streamed) and **RSS** once started;
- **capacity, worst case**: N sessions start at the same instant and speak the same long sentence, so every
  final is asked for at once; p95 end of speech -> final against one session's.

    .venv/bin/python -m bench.embedded            # every configuration; writes docs/BENCHMARKS.md
    .venv/bin/python -m bench.embedded --quick    # one fixture per set, no capacity (the smoke test)
    .venv/bin/python -m bench.embedded --before main --variant TURN_UNSURE_MS=700 --steps 1,8
        # the default against main's engine and a variant, side by side in one run (writes nothing)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from bench.load import percentile
from bench.perf import Server, Target, running
from bench.report import write_section
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Error, Suggestion, Transcript
from tests.support import word_error_rate

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
FRAME_S = 0.02
CAPACITY_STEPS: tuple[int, ...] = (1, 2, 4, 6, 8, 10, 12, 16)

# name -> server environment. "today" is the engine before end-of-turn detection and the accurate model.
CONFIGS: dict[str, dict[str, str]] = {
    "today (tiny.en, fixed 500 ms)": {"TURN_DETECTION": "off", "LOCAL_FINAL_MODEL": "whisper"},
    "tiny.en + turn": {"TURN_DETECTION": "text", "LOCAL_FINAL_MODEL": "whisper"},
    "new (default)": {},
}


@dataclass(frozen=True)
class Fixture:
    """One mono file, its reference words, and where its speech ends (seconds into the file)."""

    set: str
    path: Path
    text: str
    speech_end_s: float
    paused: bool = False


def load_fixtures() -> list[Fixture]:
    """Every one-channel fixture with its set: `espeak` (fixtures.json) and each manifest under real/."""
    fixtures: list[Fixture] = []
    for manifest in sorted(FIXTURES.glob("**/*.json")):
        try:
            entries = json.loads(manifest.read_text())
        except ValueError:
            continue
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("channels") != 1 or "utterances" not in entry:
                continue
            utterances = entry["utterances"]
            path = manifest.parent / entry["file"]
            paused = any("pause_start_s" in u for u in utterances)  # paused.json: a 700 ms pause inside
            default_set = "espeak" if manifest.name == "fixtures.json" else manifest.stem
            fixtures.append(
                Fixture(
                    set=str(entry.get("set") or ("paused" if paused else default_set)),
                    path=path,
                    text=" ".join(u["text"] for u in utterances),
                    speech_end_s=max(float(u["end_s"]) for u in utterances),
                    paused=paused,
                )
            )
    return fixtures


@dataclass
class Result:
    fixture: Fixture
    hypothesis: str = ""
    finals: int = 0
    latency_s: float | None = None  # end of speech -> the final covering it
    suggestion_s: float | None = None  # end of speech -> the first suggestion
    busy: bool = False


@dataclass
class Figures:
    results: list[Result] = field(default_factory=list)
    cpu_s: float = 0.0
    audio_s: float = 0.0
    rss_mib: float = 0.0
    capacity: list[str] = field(default_factory=list)


async def stream(url: str, fixture: Fixture) -> Result:
    """One session: the file at real time; the finals' words and when the last one arrived."""
    audio = read_wav(fixture.path)
    frame = int(FRAME_S * audio.sample_rate) * 2
    result = Result(fixture)
    ended_at = 0.0
    texts: list[str] = []
    async with connect(url) as session:

        async def send() -> None:
            nonlocal ended_at
            started = time.monotonic()
            for index, offset in enumerate(range(0, len(audio.pcm), frame)):
                await anyio.sleep(max(0.0, started + index * FRAME_S - time.monotonic()))
                await session.send_pcm(audio.pcm[offset : offset + frame])
                if not ended_at and (index + 1) * FRAME_S >= fixture.speech_end_s:
                    ended_at = time.monotonic()
            await session.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            async for message in session:
                if isinstance(message, Transcript) and message.is_final and message.text:
                    texts.append(message.text)
                    if ended_at and message.end >= fixture.speech_end_s - 0.6 and result.latency_s is None:
                        result.latency_s = time.monotonic() - ended_at
                elif isinstance(message, Suggestion) and ended_at and result.suggestion_s is None:
                    result.suggestion_s = time.monotonic() - ended_at
                elif isinstance(message, Error) and message.code == "transcriber_busy":
                    result.busy = True
    result.hypothesis = " ".join(texts)
    result.finals = len(texts)
    return result


def pct(values: list[float], q: float) -> float:
    return percentile(sorted(values), q * 100)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


@contextlib.contextmanager
def serving(configs: dict[str, dict[str, str]], log_dir: Path) -> Iterator[dict[str, Server]]:
    """One started server per configuration, all at once, stopped on exit."""
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        for name, env in configs.items():
            settings = {"LOG_LEVEL": "warning", "LOG_FORMAT": "json", "MAX_SESSIONS": "100", **env}
            target = Target(f"presales-ws {len(servers)}", ["presales_ws", "serve"], "binary", settings)
            servers[name] = stack.enter_context(running(target, None, log_dir))
        yield servers


async def measure_configs(
    configs: dict[str, dict[str, str]], fixtures: list[Fixture], capacity_file: Fixture | None, verbose: bool
) -> dict[str, Figures]:
    """Every configuration's server runs at once and takes each fixture in turn, one session at a time: the
    machine's other load (it is shared) falls on all of them alike, which a run per configuration cannot say."""
    figures = {name: Figures() for name in configs}
    with (
        tempfile.TemporaryDirectory(prefix="presales-embedded-") as log_dir,
        serving(configs, Path(log_dir)) as servers,
    ):
        await anyio.sleep(1.0)
        cpu_before = {}
        for name, server in servers.items():
            figures[name].rss_mib = server.rss_kib() / 1024
            cpu_before[name] = server.cpu_s()
        for fixture in fixtures:
            for name, server in servers.items():
                figures[name].results.append(result := await stream(server.url, fixture))
                figures[name].audio_s += read_wav(fixture.path).duration_s
                if verbose:
                    latency = "-" if result.latency_s is None else ms(result.latency_s)
                    print(
                        f"   {name[:24]:24} {fixture.path.name:28} {latency:>5} ms  {result.finals} finals  "
                        f"{result.hypothesis}",
                        flush=True,
                    )
        for name, server in servers.items():
            figures[name].cpu_s = server.cpu_s() - cpu_before[name]
        if capacity_file is not None:
            await capacity(servers, capacity_file, figures)
    return figures


async def capacity(servers: dict[str, Server], fixture: Fixture, figures: dict[str, Figures]) -> None:
    """N sessions starting together on the same long sentence: every final is wanted at the same moment. Each
    step runs on every server in turn before the next step."""
    baseline: dict[str, float] = {}
    done: set[str] = set()
    for n in CAPACITY_STEPS:
        for name, server in servers.items():
            if name in done:
                continue
            outcomes: list[Result | None] = []  # None: refused at connect (transcriber_busy, 1013)

            async def one(into: list[Result | None], url: str) -> None:
                try:
                    into.append(await stream(url, fixture))
                except Exception:
                    into.append(None)

            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one, outcomes, server.url)
            results = [r for r in outcomes if r is not None]
            got = [r.latency_s for r in results if r.latency_s is not None]
            busy = outcomes.count(None) + sum(r.busy for r in results)
            rows = figures[name].capacity
            if not got:
                rows.append(f"| {n} | 0/{n} | - | - | {busy} | - |")
                done.add(name)
                continue
            p95 = pct(got, 0.95)
            baseline.setdefault(name, p95)
            rows.append(
                f"| {n} | {len(got)}/{n} | {ms(statistics.median(got))} | {ms(p95)} | {busy} | "
                f"{p95 / baseline[name]:.2f} |"
            )
            print(f"   {name[:24]:24} {rows[-1]}", flush=True)
            if busy:
                done.add(name)


def set_rows(name: str, figures: Figures) -> list[str]:
    rows = []
    by_set: dict[str, list[Result]] = {}
    for result in figures.results:
        by_set.setdefault(result.fixture.set, []).append(result)
    for set_name, results in sorted(by_set.items()):
        ref_words = sum(len(r.fixture.text.split()) for r in results)
        wer = sum(word_error_rate(r.fixture.text, r.hypothesis) * len(r.fixture.text.split()) for r in results)
        latencies = [r.latency_s for r in results if r.latency_s is not None]
        split = sum(r.finals > 1 for r in results if r.fixture.paused)
        paused = sum(r.fixture.paused for r in results)
        rows.append(
            f"| {name} | {set_name} | {len(results)} | {100 * wer / max(1, ref_words):.1f}% | "
            f"{ms(statistics.median(latencies)) if latencies else '-'} | "
            f"{ms(pct(latencies, 0.95)) if latencies else '-'} | {f'{split}/{paused}' if paused else '-'} |"
        )
    return rows


async def measure(
    quick: bool, only: list[str], verbose: bool = False, capacity_steps: bool = True, sets: tuple[str, ...] = ()
) -> str:
    fixtures = [f for f in load_fixtures() if not sets or f.set in sets]
    if quick:
        seen: set[str] = set()
        fixtures = [f for f in fixtures if not (f.set in seen or seen.add(f.set))]  # type: ignore[func-returns-value]
    long_sentences = [f for f in fixtures if not f.paused]
    capacity_file = None if quick or not capacity_steps else max(long_sentences, key=lambda f: f.speech_end_s)
    configs = {k: CONFIGS[k] for k in only} if only else dict(CONFIGS)
    results = await measure_configs(configs, fixtures, capacity_file, verbose)
    lines = [
        "| engine | set | files | WER | end of speech -> final p50 ms | p95 ms | split by a 700 ms pause |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        lines += set_rows(name, figures)
    lines += ["", "| engine | server CPU per audio second | RSS started, idle (MiB) |", "|---|---|---|"]
    for name, figures in results.items():
        lines.append(f"| {name} | {figures.cpu_s / max(figures.audio_s, 1e-9):.3f} | {figures.rss_mib:.0f} |")
    if capacity_file is not None:
        lines += [
            "",
            f"Capacity, worst case: N sessions start together on `{capacity_file.path.name}` "
            f"({capacity_file.speech_end_s:.1f} s), every final asked for at the same moment.",
        ]
        for name, figures in results.items():
            lines += [
                "",
                f"{name}:",
                "",
                "| sessions | finals | p50 ms | p95 ms | refused busy | p95 / one session |",
                "|---|---|---|---|---|---|",
                *figures.capacity,
            ]
    return "\n".join(lines)


@contextlib.contextmanager
def source_of(commit: str) -> Iterator[Path]:
    """The `presales_ws` package as it was at `commit`, in a temporary directory (put first on PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "presales_ws"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="presales-before-") as directory:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        yield Path(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one fixture per set, no capacity; writes nothing")
    parser.add_argument("--only", action="append", default=[], help="a configuration name (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="a line per fixture: latency, finals, words")
    parser.add_argument("--no-capacity", action="store_true", help="skip the capacity steps; writes nothing")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every server; writes nothing")
    parser.add_argument(
        "--before", action="append", default=[], help="also the engine at this commit (repeatable); writes nothing"
    )
    parser.add_argument(
        "--variant", action="append", default=[], help="KEY=VALUE[,KEY=VALUE]: the default with these; writes nothing"
    )
    parser.add_argument("--steps", help="capacity steps, e.g. 1,8 (default: 1,2,4,...,16); writes nothing")
    parser.add_argument("--sets", help="fixture sets only, e.g. real,paused (default: all); writes nothing")
    args = parser.parse_args()
    global CAPACITY_STEPS
    if args.steps:
        CAPACITY_STEPS = tuple(int(n) for n in args.steps.split(","))
    comparing = bool(args.before or args.variant)
    with contextlib.ExitStack() as stack:
        if comparing and not args.only:
            args.only = ["new (default)"]
        for commit in reversed(args.before):
            name = f"before ({commit})"
            CONFIGS[name] = {"PYTHONPATH": str(stack.enter_context(source_of(commit)))}
            args.only.insert(0, name)
        for variant in args.variant:
            CONFIGS[variant] = dict(item.split("=", 1) for item in variant.split(","))
            args.only.append(variant)
        for name in CONFIGS:
            CONFIGS[name] = {**CONFIGS[name], **dict(item.split("=", 1) for item in args.set)}
        sets = tuple(args.sets.split(",")) if args.sets else ()
        table = anyio.run(measure, args.quick, args.only, args.verbose, not args.no_capacity, sets)
    print(table)
    if not (args.quick or args.only or args.no_capacity or args.set or comparing or args.steps or args.sets):
        write_section(
            "BENCHMARKS.md",
            "embedded-engines",
            "## The embedded engine: accuracy, end of turn, capacity (engine against engine, one run)\n\n"
            f"`.venv/bin/python -m bench.embedded`\n\n{table}",
            "Benchmarks",
        )


if __name__ == "__main__":
    main()
