"""`presales-ws serve` runs the server; `presales-ws stream FILE.wav` streams a file as the extension would."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TextIO

import anyio

from presales_ws.audio import ArrivalClock
from presales_ws.client import SessionRefused, connect
from presales_ws.terminal import TerminalView
from presales_ws.wavfile import read_wav

FRAME_MS = 20  # what the extension sends: 50 frames a second
FAST_SPEED = 1.9  # without --realtime: just under the server's default rate limit (2x real time)
KEY_VARIABLE = "PRESALES_WS_KEY"  # the key from the environment keeps it out of shell history and `ps`


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="presales-ws", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server (settings from the environment and .env)")
    serve_cmd.add_argument("--host", help="default: HOST or 127.0.0.1")
    serve_cmd.add_argument("--port", type=int, help="default: PORT or 8000")
    stream_cmd = commands.add_parser("stream", help="stream a WAV file to a server and print transcripts")
    stream_cmd.add_argument("file", help="a PCM WAV file (any rate; converted to 16 kHz s16 here)")
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
