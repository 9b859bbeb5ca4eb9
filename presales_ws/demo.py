"""The browser demo: `GET /demo` and the files under `/static` (plain HTML and JavaScript modules, no build).

The page talks to /ws/session like any other client, so it is also the quickest way to hear the service
working; `static/capture.js` and its worklet are the part an extension reuses (docs/CLIENTS.md).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


async def demo_page(request: Request) -> Response:
    """The page itself; its scripts and styles come from /static, nothing from outside the server."""
    return FileResponse(STATIC_DIR / "demo.html", media_type="text/html")


def demo_routes() -> list[Route | Mount]:
    return [
        Route("/demo", demo_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
