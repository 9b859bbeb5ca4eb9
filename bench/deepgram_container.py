"""Bytes from the service to Deepgram per second of audio: PCM sessions against WebM/Ogg pass-through.

Each fixture is streamed through `presales-ws` against the Deepgram-compatible loopback server
(tests/deepgram_server.py), once as 16 kHz linear16 in 20 ms frames and once per container (the committed
MediaRecorder-like recordings, tests/fixtures/opus/, in 250 ms pieces), in one run. What the fake received on
every connection is counted, and divided by the recording's length. Nothing here depends on timing.

    .venv/bin/python -m bench.deepgram_container   # writes its section of docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import anyio

from bench.report import write_section
from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from tests.conftest import LiveServer, make_settings
from tests.deepgram_server import FakeDeepgram, Script
from tests.support import FIXTURES

KEY = "bench-key-0123456789"
STEMS = ("sso_question_gb", "pricing_question_us", "two_sentences_us", "call_two_channel")
PCM_FRAME_S = 0.02
PIECE_BYTES = 1000  # ~250 ms of 32 kbit/s Opus: a MediaRecorder timeslice
ENCODINGS = {"pcm": "linear16", "webm": "webm-opus", "ogg": "ogg-opus"}


@dataclass
class Row:
    stem: str
    form: str
    audio_s: float
    client_bytes: int
    deepgram_bytes: int
    connections: int
    container_query: bool  # the connection with the audio was opened without `encoding`


async def send(url: str, encoding: str, channels: int, pieces: list[bytes]) -> None:
    with anyio.fail_after(120):
        async with connect(url, channels=channels, encoding=encoding) as session:

            async def sender() -> None:
                for piece in pieces:
                    await session.send_pcm(piece)
                    await anyio.sleep(0.01)
                await session.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                async for _ in session:
                    pass


def measure(stem: str, form: str) -> Row:
    wav = read_wav(FIXTURES / f"{stem}.wav")
    audio_s = len(wav.pcm) / (wav.sample_rate * 2 * wav.channels)
    if form == "pcm":
        frame = int(wav.sample_rate * PCM_FRAME_S) * 2 * wav.channels
        data = wav.pcm
        pieces = [data[i : i + frame] for i in range(0, len(data), frame)]
    else:
        data = (FIXTURES / "opus" / f"{stem}.{form}").read_bytes()
        pieces = [data[i : i + PIECE_BYTES] for i in range(0, len(data), PIECE_BYTES)]
    with FakeDeepgram(Script(()), api_key=KEY) as fake:
        server = LiveServer(make_settings(deepgram_api_key=KEY, deepgram_url=fake.url)).start()
        try:
            anyio.run(send, server.ws_url, ENCODINGS[form], wav.channels, pieces)
        finally:
            server.stop()
        heard = [c for c in fake.connections if c.audio_bytes]
        return Row(
            stem,
            form,
            audio_s,
            len(data),
            sum(c.audio_bytes for c in heard),
            len(fake.connections),
            all("encoding" not in c.query for c in heard),
        )


def report(rows: list[Row]) -> str:
    lines = [
        "Measured with `.venv/bin/python -m bench.deepgram_container` (the fake Deepgram on 127.0.0.1 counts the "
        "audio bytes it receives on every connection; one run, every fixture in each form).",
        "",
        "| recording | audio s | sent as | client to service, B/s | service to Deepgram, B/s | to Deepgram vs PCM | "
        "Deepgram reads |",
        "|---|---|---|---|---|---|---|",
    ]
    pcm = {r.stem: r.deepgram_bytes / r.audio_s for r in rows if r.form == "pcm"}
    for r in rows:
        rate = r.deepgram_bytes / r.audio_s
        reads = "the container (no `encoding`)" if r.container_query else "linear16"
        lines.append(
            f"| {r.stem} | {r.audio_s:.1f} | {r.form} | {r.client_bytes / r.audio_s:,.0f} | {rate:,.0f} | "
            f"{rate / pcm[r.stem]:.3f} | {reads} |"
        )
    lines += [
        "",
        "A WebM/Ogg session's bytes go to Deepgram as the client sent them: the leg to Deepgram shrinks by the "
        "same factor as the client's (about 8x mono; about 19x for the stereo call, whose ~27 kbit/s carry both "
        "channels). The service still decodes every piece (the "
        "rate limit, the VAD that sends Finalize, the replay a reconnect needs): the decode cost above is "
        "unchanged. After a reconnect, or a piece that did not parse whole, the session's Deepgram audio is "
        "16 kHz PCM again (docs/PROTOCOL.md).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    rows = [measure(stem, form) for stem in STEMS for form in ("pcm", "webm", "ogg")]
    body = "## Deepgram pass-through: bytes to Deepgram, PCM against WebM/Ogg (issue 19)\n\n" + report(rows)
    print(body)
    if not args.no_write:
        write_section("BENCHMARKS.md", "deepgram-container", body, "Benchmarks")


if __name__ == "__main__":
    main()
