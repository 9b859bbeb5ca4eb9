"""`presales-ws stream FILE.wav`: send a WAV as the extension would and show what comes back."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import anyio

from presales_ws.audio import ArrivalClock
from presales_ws.client.connection import SessionRefused, connect
from presales_ws.client.terminal import TerminalView
from presales_ws.client.wavfile import read_wav

FRAME_MS = 20  # what the extension sends: 50 frames a second
FAST_SPEED = 1.9  # without --realtime: just under the server's default rate limit (2x real time)


async def stream_file(path: str, url: str, realtime: bool, out: TextIO, key: str | None = None) -> int:
    """Send a WAV in 20 ms frames as the extension would, showing what comes back live, then a summary."""
    audio = read_wav(path)
    frame_bytes = audio.sample_rate * FRAME_MS // 1000 * 2 * audio.channels
    bytes_per_s = audio.sample_rate * 2 * audio.channels
    speed = 1.0 if realtime else FAST_SPEED
    try:
        async with connect(url, sample_rate=audio.sample_rate, channels=audio.channels, key=key) as session:
            clock = ArrivalClock()
            view = TerminalView(out, clock, total_audio_s=audio.duration_s)
            view.show(session.ready)

            async def send_audio() -> None:
                for index, offset in enumerate(range(0, len(audio.pcm), frame_bytes)):
                    await anyio.sleep(max(0.0, view.started + index * FRAME_MS / 1000 / speed - time.monotonic()))
                    frame = audio.pcm[offset : offset + frame_bytes]
                    await session.send_pcm(frame)
                    clock.received((offset + len(frame)) / bytes_per_s, time.monotonic())
                    view.progress()
                await session.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_audio)
                async for message in session:
                    view.show(message)
                tg.cancel_scope.cancel()
            view.summary(session.close_code)
            return 0 if session.close_code == 1000 else 1
    except SessionRefused as exc:
        print(f"presales-ws: session refused: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"presales-ws: cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
