"""Fuzz a live server with 100,000 hostile frames; print crashes (must be 0) and the count of each error code.

    .venv/bin/python -m bench.fuzz [--frames 100000] [--connections 20]

A "crash" is a session closed with anything but 1000 (a fuzzed frame may be a genuine `stop`), an
`internal` error, or a server that stops answering /health. Writes docs/RELIABILITY.md (section "fuzz").
"""

from __future__ import annotations

import argparse
import collections
import random
import time

import anyio
import httpx
from websockets.exceptions import ConnectionClosed

from bench.report import write_section
from presales_ws.client import connect
from presales_ws.protocol import Error, Pong
from tests.conftest import LiveServer, make_settings
from tests.fuzzing import mutate


async def fuzz_connection(url: str, seed: int, frames: int, codes: collections.Counter[str], crashes: list[str]) -> int:
    rng = random.Random(seed)
    sent = 0
    while sent < frames:
        async with connect(url) as session:
            try:
                while sent < frames:
                    for _ in range(min(200, frames - sent)):
                        await session.ws.send(mutate(rng))
                        sent += 1
                    await session.ping(ts=float(sent))
                    while True:
                        message = await session.recv()
                        if isinstance(message, Error):
                            codes[message.code] += 1
                        if isinstance(message, Pong) and message.ts == float(sent):
                            break
            except ConnectionClosed:
                codes[f"close {session.close_code}"] += 1
                if session.close_code != 1000:
                    crashes.append(f"seed {seed}: closed {session.close_code}")
    return sent


async def main(total: int, connections: int) -> None:
    server = LiveServer(make_settings(log_level="error", local_max_streams=4 * connections)).start()
    codes: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []
    started = time.monotonic()
    try:
        async with anyio.create_task_group() as tg:
            for seed in range(connections):
                tg.start_soon(fuzz_connection, server.ws_url, seed, total // connections, codes, crashes)
        async with httpx.AsyncClient() as http:
            healthy = (await http.get(f"{server.http_url}/health")).status_code == 200
        left = len(server.service.registry)
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    crashes += [f"{codes['internal']} internal errors"] if codes["internal"] else []
    crashes += [] if healthy else ["/health not 200 after the run"]
    rows = "\n".join(f"| `{code}` | {count} |" for code, count in sorted(codes.items()))
    body = f"""## Fuzz: {total:,} hostile frames

`.venv/bin/python -m bench.fuzz --frames {total} --connections {connections}` ({elapsed:.0f} s on this machine)

Frames from `tests/fuzzing.py`: random binary of odd sizes, truncated / mistyped / oversized / deeply
nested JSON, junk values, bad base64, unicode junk, sequences out of order; {connections} connections at once.

**Crashes: {len(crashes)}** {"(" + "; ".join(crashes[:5]) + ")" if crashes else ""};
sessions left open after the run: {left}; /health after the run: {"200" if healthy else "NOT 200"}.

| error code or close | count |
|---|---|
{rows}
"""
    print(body)
    write_section("RELIABILITY.md", "fuzz", body, "Reliability")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    anyio.run(main, args.frames, args.connections)
