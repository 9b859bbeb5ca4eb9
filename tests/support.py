"""Helpers the tests share: the fixture manifest, word error rate, streaming a WAV through the real client."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Literal

import anyio

from presales_ws.client import Session, connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import ServerMessage, Transcript

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = {entry["file"]: entry for entry in json.loads((FIXTURES / "fixtures.json").read_text())}
FRAME_MS = 20


# Spellings that are the same word, as standard WER normalisers treat them (Whisper's English normaliser does):
# an engine writing "Mr." or "metres" heard the reference's "mister" / "meters".
SAME_WORD = {"mr": "mister", "mrs": "missus", "dr": "doctor", "metres": "meters", "metre": "meter"}


def words(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    return [SAME_WORD.get(w, w) for w in re.sub(r"[^a-z0-9' ]+", " ", text).split()]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def reference_text(file: str, channel: int | None = None) -> str:
    return " ".join(u["text"] for u in MANIFEST[file]["utterances"] if channel is None or u["channel"] == channel)


def finals(messages: list[ServerMessage], channel: int | None = None) -> list[Transcript]:
    return [
        m
        for m in messages
        if isinstance(m, Transcript) and m.is_final and m.text and (channel is None or m.channel == channel)
    ]


def final_text(messages: list[ServerMessage], channel: int | None = None) -> str:
    return " ".join(m.text for m in finals(messages, channel))


async def send_file(
    session: Session, file: str, *, mode: Literal["binary", "base64"] = "binary", speed: float | None = None
) -> None:
    """Send a fixture in 20 ms frames; `speed` 1.0 is real time, None is as fast as the socket takes it."""
    audio = read_wav(FIXTURES / file)
    frame_bytes = audio.sample_rate * FRAME_MS // 1000 * 2 * audio.channels
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(audio.pcm), frame_bytes)):
        if speed:
            await anyio.sleep(max(0.0, started + index * FRAME_MS / 1000 / speed - time.monotonic()))
        frame = audio.pcm[offset : offset + frame_bytes]
        if mode == "binary":
            await session.send_pcm(frame)
        else:
            await session.send_chunk(frame, sequence=index)


async def transcribe_file(
    url: str,
    file: str,
    *,
    mode: Literal["binary", "base64"] = "binary",
    speed: float | None = None,
    timeout_s: float = 60.0,
    **params: str,
) -> tuple[list[ServerMessage], int | None]:
    """Stream a fixture, send `stop`, collect every message until the server closes."""
    audio = read_wav(FIXTURES / file)
    messages: list[ServerMessage] = []
    with anyio.fail_after(timeout_s):
        async with connect(url, channels=audio.channels, **params) as session:  # type: ignore[arg-type]
            messages.append(session.ready)
            async with anyio.create_task_group() as tg:

                async def sender() -> None:
                    await send_file(session, file, mode=mode, speed=speed)
                    await session.stop()

                tg.start_soon(sender)
                async for message in session:
                    messages.append(message)
            return messages, session.close_code
