"""Open and close 1,000 sessions (Deepgram path, loopback test server); RSS and task count must come back.

    .venv/bin/python -m bench.leak [--sessions 1000] [--concurrency 50]

Each session streams 1 s of speech and stops. Prints RSS and the server loop's task count before, after a
warm-up, and after all sessions closed. Writes docs/RELIABILITY.md (section "leak").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time
from pathlib import Path

import anyio

from bench.report import write_section
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from tests.conftest import LiveServer, make_settings
from tests.deepgram_server import FakeDeepgram, Script

KEY = "leak-test-key-0123456789"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
FILE = "pricing_question_us.wav"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def task_count() -> int:
    return len(asyncio.all_tasks())


async def run_sessions(url: str, pcm: bytes, count: int, concurrency: int) -> int:
    limiter = anyio.Semaphore(concurrency)
    finals = 0

    async def one() -> None:
        nonlocal finals
        async with limiter, connect(url) as session:
            await session.send_pcm(pcm)
            await session.stop()
            messages = [m async for m in session]  # read first: `finals +=` across an await loses updates
            finals += sum(1 for m in messages if getattr(m, "is_final", False))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return finals


async def main(sessions: int, concurrency: int) -> None:
    pcm = read_wav(FIXTURES / FILE).pcm
    with FakeDeepgram(Script.from_manifest(FILE), api_key=KEY, record_audio=False) as fake:
        server = LiveServer(
            make_settings(deepgram_api_key=KEY, deepgram_url=fake.url, log_level="error", max_sessions_per_key=10_000)
        ).start()
        try:
            gc.collect()
            rss_start, tasks_start = rss_kib(), server.call(task_count).result(5)
            await run_sessions(server.ws_url, pcm, 100, concurrency)  # warm-up: imports, pools, caches
            await anyio.sleep(0.5)
            gc.collect()
            rss_warm, tasks_warm = rss_kib(), server.call(task_count).result(5)
            started = time.monotonic()
            finals, series = 0, []
            batch = max(1, sessions // 4)
            for done in range(0, sessions, batch):
                finals += await run_sessions(server.ws_url, pcm, min(batch, sessions - done), concurrency)
                gc.collect()
                series.append(f"{min(done + batch, sessions)}: {rss_kib()}")
            elapsed = time.monotonic() - started
            await anyio.sleep(0.5)
            gc.collect()
            rss_end, tasks_end = rss_kib(), server.call(task_count).result(5)
            left = len(server.service.registry), server.service.transcriber.open_streams
        finally:
            server.stop()
    growth = (rss_end - rss_warm) / rss_warm * 100
    body = f"""## Leaks: {sessions:,} sessions opened and closed

`.venv/bin/python -m bench.leak --sessions {sessions} --concurrency {concurrency}` ({elapsed:.0f} s; Deepgram path
against the loopback test server; each session streams {FILE} and stops; {finals} finals received)

| | RSS (KiB, whole process: server + clients + test Deepgram) | server loop tasks |
|---|---|---|
| start | {rss_start} | {tasks_start} |
| after 100 warm-up sessions | {rss_warm} | {tasks_warm} |
| after {sessions:,} more sessions closed | {rss_end} | {tasks_end} |

RSS (KiB) after each quarter of the sessions: {", ".join(series)} (a leak grows with every batch;
an allocator's high-water mark levels off).

RSS after vs. after warm-up: **{growth:+.1f}%**; tasks after vs. warm-up: **{tasks_end - tasks_warm:+d}**;
sessions / transcriber streams left: {left[0]} / {left[1]}.
"""
    print(body)
    write_section("RELIABILITY.md", "leak", body, "Reliability")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    anyio.run(main, args.sessions, args.concurrency)
