"""`presales-ws serve` runs the server; `presales-ws stream FILE` streams a WAV, or a WebM/Ogg Opus recording,
as the extension would."""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from presales_ws.client.stream import FAST_SPEED, stream_file

KEY_VARIABLE = "PRESALES_WS_KEY"  # the key from the environment keeps it out of shell history and `ps`


def serve(args: argparse.Namespace) -> int:
    """uvicorn with the settings from the environment, draining sessions on SIGTERM (see server.py)."""
    from presales_ws.app import create_app
    from presales_ws.config import ConfigError, load_settings
    from presales_ws.server import run_server

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"presales-ws: {exc}", file=sys.stderr)
        return 2
    run_server(create_app(settings), settings, host=args.host, port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="presales-ws", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server (settings from the environment and .env)")
    serve_cmd.add_argument("--host", help="default: HOST or 127.0.0.1")
    serve_cmd.add_argument("--port", type=int, help="default: PORT or 8000")
    stream_cmd = commands.add_parser("stream", help="stream a WAV or Opus file to a server and print transcripts")
    stream_cmd.add_argument(
        "file",
        help="a PCM WAV file (any rate; converted to 16 kHz s16 here), or a WebM/Ogg Opus recording (.webm, .ogg, "
        ".opus: sent as it is, as a MediaRecorder stream)",
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
