"""`presales-ws stream FILE`: send a WAV (or a WebM/Ogg Opus recording) as the extension would and show what
comes back."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NamedTuple, TextIO

import anyio

from presales_ws.audio import ArrivalClock
from presales_ws.client.connection import SessionRefused, connect, session_url
from presales_ws.client.terminal import TerminalView
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Encoding

FRAME_MS = 20  # what the extension sends: 50 frames a second
FAST_SPEED = 1.9  # without --realtime: just under the server's default rate limit (2x real time)
RECORDING_ENCODINGS: dict[str, Encoding] = {".webm": "webm-opus", ".ogg": "ogg-opus", ".opus": "ogg-opus"}
RECORDER_TIMESLICE_MS = 250  # a recording goes out in pieces of this much audio, as MediaRecorder's timeslice
RECORDING_RATE_HZ = 16000  # what the server decodes a recording to


class Upload(NamedTuple):
    """A file as the frames to send: each frame's bytes and the audio seconds sent once it is out."""

    frames: list[tuple[bytes, float]]
    sample_rate: int
    channels: int
    duration_s: float
    params: dict[str, str]


def wav_upload(path: str) -> Upload:
    audio = read_wav(path)
    frame_bytes = audio.sample_rate * FRAME_MS // 1000 * 2 * audio.channels
    bytes_per_s = audio.sample_rate * 2 * audio.channels
    frames = [
        (audio.pcm[offset : offset + frame_bytes], min(len(audio.pcm), offset + frame_bytes) / bytes_per_s)
        for offset in range(0, len(audio.pcm), frame_bytes)
    ]
    return Upload(frames, audio.sample_rate, audio.channels, audio.duration_s, {})


def recording_upload(path: str, encoding: Encoding) -> Upload:
    """A WebM/Ogg Opus file in pieces of RECORDER_TIMESLICE_MS, sent as they are (the server decodes them);
    its length is read from the packets' headers, with no decoder on the client side."""
    from presales_ws.containers import OggDemuxer, OpusHead, WebmDemuxer, opus_packet_s

    data = Path(path).read_bytes()
    items = list((WebmDemuxer() if encoding == "webm-opus" else OggDemuxer()).feed(data))
    head = next((item for item in items if isinstance(item, OpusHead)), None)
    if head is None:
        raise ValueError(f"{path}: not a {encoding} recording (no Opus header)")
    duration_s = sum(opus_packet_s(item) for item in items if isinstance(item, bytes))
    piece = max(1, round(len(data) / max(duration_s, 0.001) * RECORDER_TIMESLICE_MS / 1000))
    frames = [
        (data[offset : offset + piece], duration_s * min(len(data), offset + piece) / len(data))
        for offset in range(0, len(data), piece)
    ]
    return Upload(frames, RECORDING_RATE_HZ, head.channels, duration_s, {"encoding": encoding})


async def stream_file(path: str, url: str, realtime: bool, out: TextIO, key: str | None = None) -> int:
    """Send a WAV in 20 ms frames (a recording in 250 ms pieces) as the extension would, showing what comes
    back live, then a summary."""
    suffix = Path(path).suffix.lower()
    upload = recording_upload(path, RECORDING_ENCODINGS[suffix]) if suffix in RECORDING_ENCODINGS else wav_upload(path)
    speed = 1.0 if realtime else FAST_SPEED
    try:
        target = session_url(url, sample_rate=upload.sample_rate, channels=upload.channels, **upload.params)
        async with connect(target, sample_rate=upload.sample_rate, channels=upload.channels, key=key) as session:
            clock = ArrivalClock()
            view = TerminalView(out, clock, total_audio_s=upload.duration_s)
            view.show(session.ready)

            async def send_audio() -> None:
                sent_s = 0.0
                for frame, until_s in upload.frames:
                    await anyio.sleep(max(0.0, view.started + sent_s / speed - time.monotonic()))
                    await session.send_pcm(frame)
                    sent_s = until_s
                    clock.received(until_s, time.monotonic())
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
