"""Other servers measured with the same load as presales-ws: the transport's limit and an idiomatic peer.

`serve` runs any ASGI app with the uvicorn configuration `presales-ws serve` uses (server.uvicorn_config:
the same protocols and limits), so a difference in the figures is the application's, not the server's.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from presales_ws.config import Settings
from presales_ws.server import uvicorn_config as service_uvicorn_config


def uvicorn_config(app: Any, port: int, host: str = "127.0.0.1") -> uvicorn.Config:
    """cli.serve's uvicorn.Config, with the default settings."""
    return service_uvicorn_config(app, Settings(), host=host, port=port)


def serve(app: Any, description: str) -> None:
    """`python -m bench.peers.X --port P`: serve the app on 127.0.0.1 until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.Server(uvicorn_config(app, args.port, args.host)).run()
