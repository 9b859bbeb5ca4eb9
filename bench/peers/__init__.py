"""Other servers measured with the same load as presales-ws: the transport's limit and an idiomatic peer.

`serve` runs any ASGI app with the uvicorn settings `presales-ws serve` uses (cli.py), so a difference in
the figures is the application's, not the server's configuration.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from presales_ws.config import Settings

_DEFAULTS = Settings()
WS_MAX_SIZE = 4 * max(_DEFAULTS.max_frame_bytes, _DEFAULTS.max_text_frame_bytes)  # as cli.serve


def uvicorn_config(app: Any, port: int, host: str = "127.0.0.1") -> uvicorn.Config:
    """cli.serve's uvicorn.Config: ws, loop and http left on "auto" as there, the same frame limit, no deflate."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=False,
        log_config=None,
    )


def serve(app: Any, description: str) -> None:
    """`python -m bench.peers.X --port P`: serve the app on 127.0.0.1 until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.Server(uvicorn_config(app, args.port, args.host)).run()
