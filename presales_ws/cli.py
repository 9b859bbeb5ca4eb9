"""`presales-ws serve` runs the server; `presales-ws stream FILE` streams a WAV, or a WebM/Ogg Opus recording,
as the extension would."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple, TextIO

import anyio

from presales_ws.audio import ArrivalClock
from presales_ws.client import SessionRefused, connect, session_url
from presales_ws.protocol import Encoding
from presales_ws.terminal import TerminalView
from presales_ws.wavfile import read_wav

FRAME_MS = 20  # what the extension sends: 50 frames a second
FAST_SPEED = 1.9  # without --realtime: just under the server's default rate limit (2x real time)
KEY_VARIABLE = "PRESALES_WS_KEY"  # the key from the environment keeps it out of shell history and `ps`
RECORDING_ENCODINGS: dict[str, Encoding] = {".webm": "webm-opus", ".ogg": "ogg-opus", ".opus": "ogg-opus"}
RECORDER_TIMESLICE_MS = 250  # a recording goes out in pieces of this much audio, as MediaRecorder's timeslice


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
    """A WebM/Ogg Opus file in pieces of RECORDER_TIMESLICE_MS, sent as they are (the server decodes them)."""
    from presales_ws.audio import AudioFormat
    from presales_ws.audio_input import OpusInput
    from presales_ws.containers import OggDemuxer, OpusHead, WebmDemuxer

    data = Path(path).read_bytes()
    demuxer = WebmDemuxer() if encoding == "webm-opus" else OggDemuxer()
    head = next((item for item in demuxer.feed(data) if isinstance(item, OpusHead)), None)
    if head is None:
        raise ValueError(f"{path}: not a {encoding} recording (no Opus header)")
    rate = 16000
    duration_s = len(OpusInput(encoding, AudioFormat(rate, head.channels)).feed(data).pcm) / (rate * 2 * head.channels)
    piece = max(1, round(len(data) / max(duration_s, 0.001) * RECORDER_TIMESLICE_MS / 1000))
    frames = [
        (data[offset : offset + piece], duration_s * min(len(data), offset + piece) / len(data))
        for offset in range(0, len(data), piece)
    ]
    return Upload(frames, rate, head.channels, duration_s, {"encoding": encoding})


def serve(args: argparse.Namespace) -> int:
    """uvicorn with the settings from the environment, draining sessions on SIGTERM (see server.py)."""
    from presales_ws.app import create_app
    from presales_ws.config import ConfigError, load_settings
    from presales_ws.server import DrainingServer, uvicorn_config

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"presales-ws: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    config = uvicorn_config(
        app, settings, host=args.host or settings.host, port=settings.port if args.port is None else args.port
    )
    DrainingServer(config, app.state.service).run()
    return 0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="presales-ws", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server (settings from the environment and .env)")
    serve_cmd.add_argument("--host", help="default: HOST or 127.0.0.1")
    serve_cmd.add_argument("--port", type=int, help="default: PORT or 8000")
    stream_cmd = commands.add_parser("stream", help="stream a WAV or Opus file to a server and print transcripts")
    stream_cmd.add_argument(
        "file",
        help="a PCM WAV file (any rate), or a WebM/Ogg Opus recording (.webm, .ogg, .opus: sent as it is, "
        "as a MediaRecorder stream)",
    )
    stream_cmd.add_argument("--url", default="ws://127.0.0.1:8000/ws/session")
    stream_cmd.add_argument(
        "--realtime", action="store_true", help=f"pace the audio as a live call would (default: {FAST_SPEED}x)"
    )
    stream_cmd.add_argument(
        "--key", default=os.environ.get(KEY_VARIABLE), help=f"API key, if the server has API_KEYS (or {KEY_VARIABLE})"
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    try:
        return anyio.run(stream_file, args.file, args.url, args.realtime, sys.stdout, args.key or None)
    except (ValueError, FileNotFoundError) as exc:
        print(f"presales-ws: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
