"""Connections cut mid-stream and resumed: how many cuts sessions survive, and what is lost or repeated.

    .venv/bin/python -m bench.resume [--sessions 20] [--cuts 3]

Each session talks through its own loopback proxy, which resets the connection (no close frame, as a dropped
Wi-Fi does) `--cuts` times at seeded random moments; the real client resumes by itself. Two parts:
- echo engine: every frame comes back as a final covering exactly its audio, so audio lost or repeated is
  measured exactly (gaps and overlaps in the finals' session times); on one instance, then on two sharing a
  real redis-server, each reconnect sent to the other instance;
- embedded engine: speech fixtures streamed once uncut and once cut three times mid-utterance, side by side in one
  run; words lost = reference words the cut run misses beyond those the uncut run misses, repeated = words heard
  more often than the reference says them.
Writes docs/RELIABILITY.md (section "resume").
"""

from __future__ import annotations

import argparse
import itertools
import random
from collections import Counter
from dataclasses import dataclass

import anyio

from bench.echo_server import EchoTranscriber
from bench.report import write_section
from presales_ws.app import create_app
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import ServerMessage, Status, Transcript
from tests.conftest import LiveServer, make_settings
from tests.redis_server import RedisServer
from tests.support import FIXTURES, reference_text, words
from tests.tcp_proxy import CuttingProxy

FRAME_BYTES = 640  # 20 ms of 16 kHz mono
FRAME_S = 0.02
SPEECH = ("two_sentences_us.wav", "integrations_answer_us.wav", "onboarding_answer_us.wav")


async def stream(
    url_port: int, pcm: bytes, cut_frames: set[int], pause_s: float, *, ports: list[int] | None = None
) -> tuple[list[ServerMessage], int]:
    """One session through a proxy cut before each frame in `cut_frames`; its messages and its resumes. With
    `ports` (several instances), each cut sends the reconnect to the next instance in turn."""
    proxy = await CuttingProxy(url_port).start()
    rotation = itertools.cycle((ports or [url_port])[1:] + (ports or [url_port])[:1])
    messages: list[ServerMessage] = []
    try:
        with anyio.fail_after(180):
            async with connect(proxy.ws_url) as session:

                async def sender() -> None:
                    for index, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
                        if index in cut_frames:
                            proxy.retarget(next(rotation))
                            proxy.cut()
                        await session.send_pcm(pcm[offset : offset + FRAME_BYTES])
                        await anyio.sleep(pause_s)
                    await session.stop()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    async for message in session:
                        messages.append(message)
                resumes = session.resumes
    finally:
        await proxy.stop()
    return messages, resumes


@dataclass
class EchoTotals:
    sessions: int = 0
    cuts: int = 0
    resumed: int = 0
    closed: int = 0
    finals: int = 0
    audio_s: float = 0.0
    lost_s: float = 0.0
    repeated_s: float = 0.0


@dataclass
class SpeechRow:
    file: str
    words: int
    cuts_s: list[float]
    resumes: int
    missed_uncut: int
    missed_cut: int
    repeated: int


def finals_of(messages: list[ServerMessage]) -> list[Transcript]:
    return [m for m in messages if isinstance(m, Transcript) and m.is_final and m.text]


async def echo_part(
    sessions: int, cuts: int, frames: int, rng: random.Random, *, redis_url: str | None = None, instances: int = 1
) -> EchoTotals:
    settings = make_settings(resume_window_s=60.0, log_level="error", redis_url=redis_url)
    servers = [
        LiveServer(settings, create_app(settings, transcriber=EchoTranscriber())).start() for _ in range(instances)
    ]
    server, ports = servers[0], [s.port for s in servers]
    totals = EchoTotals()
    try:

        async def one() -> None:
            cut_frames = set(rng.sample(range(20, frames - 20), cuts))
            pcm = b"\x01\x00" * (FRAME_BYTES // 2) * frames
            messages, resumes = await stream(server.port, pcm, cut_frames, 0.004, ports=ports)
            got = finals_of(messages)
            audio_s = frames * FRAME_S
            covered, lost, repeated, position = 0.0, 0.0, 0.0, 0.0
            for final in got:
                lost += max(0.0, final.start - position)
                repeated += max(0.0, position - final.start)
                covered += final.end - final.start
                position = max(position, final.end)
            lost += max(0.0, audio_s - position)
            closed = isinstance(messages[-1], Status) and messages[-1].state == "closed"
            same = len({m.session_id for m in messages if isinstance(m, Status) and m.state == "ready"}) == 1
            totals.sessions += 1
            totals.cuts += cuts
            totals.resumed += resumes if same else 0
            totals.closed += int(closed)
            totals.finals += len(got)
            totals.audio_s += audio_s
            totals.lost_s += lost
            totals.repeated_s += repeated

        async with anyio.create_task_group() as tg:
            for _ in range(sessions):
                tg.start_soon(one)
    finally:
        for each in servers:
            each.stop()
    return totals


async def speech_part(cuts: int, rng: random.Random) -> list[SpeechRow]:
    server = LiveServer(make_settings(resume_window_s=60.0, log_level="error")).start()
    rows: list[SpeechRow] = []
    try:
        for file in SPEECH:
            pcm = read_wav(FIXTURES / file).pcm
            frames = len(pcm) // FRAME_BYTES
            reference = Counter(words(reference_text(file)))
            uncut, _ = await stream(server.port, pcm, set(), 0.01)
            cut_frames = set(rng.sample(range(25, frames - 25), cuts))
            cut, resumes = await stream(server.port, pcm, cut_frames, 0.01)
            heard_uncut = Counter(words(" ".join(m.text for m in finals_of(uncut))))
            heard_cut = Counter(words(" ".join(m.text for m in finals_of(cut))))
            missed_uncut = sum((reference - heard_uncut).values())
            missed_cut = sum((reference - heard_cut).values())
            rows.append(
                SpeechRow(
                    file=file,
                    words=sum(reference.values()),
                    cuts_s=sorted(round(f * FRAME_S, 2) for f in cut_frames),
                    resumes=resumes,
                    missed_uncut=missed_uncut,
                    missed_cut=missed_cut,
                    repeated=sum((heard_cut - reference).values()) - sum((heard_uncut - reference).values()),
                )
            )
    finally:
        server.stop()
    return rows


async def main(sessions: int, cuts: int, frames: int, seed: int) -> None:
    rng = random.Random(seed)
    echo = await echo_part(sessions, cuts, frames, rng)
    store = RedisServer().start()
    try:
        across = await echo_part(sessions, cuts, frames, random.Random(seed + 1), redis_url=store.url, instances=2)
    finally:
        store.stop()
    speech = await speech_part(cuts, rng)
    lines = [
        f"## Resume: connections cut mid-stream ({sessions} sessions x {cuts} cuts, then speech)",
        "",
        f"`.venv/bin/python -m bench.resume --sessions {sessions} --cuts {cuts} --frames {frames} --seed {seed}`: each "
        "session through its own loopback proxy that resets the connection (no close frame) at seeded random "
        "moments; `presales_ws.client` resumes by itself (RESUME_WINDOW_S=60).",
        "",
        "Echo engine (each frame's final covers exactly its audio, so gaps and overlaps are exact); the second row "
        "runs two instances sharing a real `redis-server` (REDIS_URL), each reconnect sent to the other instance "
        "while the first still holds the session (a router without sticky sessions):",
        "",
        "| instances | sessions | cuts | resumed, same session | closed normally | audio | audio lost "
        "| audio repeated | finals |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {label} | {row.sessions} | {row.cuts} | {row.resumed} | {row.closed} "
            f"| {row.audio_s:.0f} s | {row.lost_s:.2f} s | {row.repeated_s:.2f} s | {row.finals} |"
            for label, row in (("1, process memory", echo), ("2, Redis, each resume on the other", across))
        ),
        "",
        "Embedded engine, each fixture streamed uncut and cut, side by side in this run (words the cut run misses "
        "beyond the uncut run's misses are lost to the cuts):",
        "",
        "| fixture | words | cuts at (s) | resumed | missed uncut | missed cut | lost to cuts | repeated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in speech:
        lost = max(row.missed_cut - row.missed_uncut, 0)
        lines.append(
            f"| {row.file} | {row.words} | {', '.join(map(str, row.cuts_s))} | {row.resumes} "
            f"| {row.missed_uncut} | {row.missed_cut} | {lost} | {row.repeated} |"
        )
    body = "\n".join(lines)
    print(body)
    write_section("RELIABILITY.md", "resume", body, "Reliability")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    anyio.run(main, args.sessions, args.cuts, args.frames, args.seed)
