"""A Deepgram-compatible upstream answering at Deepgram's cadence, in a process of its own (bench/relay.py).

    .venv/bin/python -m bench.peers.deepgram_cadence --port 8770 --key KEY

Recognises nothing and costs little: per connection it counts the audio received and, on the audio's own
clock, sends an interim every INTERIM_EVERY_S and a final every FINAL_EVERY_S, Deepgram's listen.v1
`Results` shape, with one word per INTERIM_EVERY_S of audio whose end is exactly where the audio received
so far ends. A client can therefore tell which 20 ms frame completed each message: the one whose end is the
message's end. Finalize and CloseStream are answered as Deepgram does (a final for everything not yet
final; CloseStream then Metadata and a close), KeepAlive is read and ignored.

tests/deepgram_server.py is the recognising test server, a thread inside the test process; this one runs
beside the load generator so that the service's core measures the service alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

INTERIM_EVERY_S = 0.25
FINAL_EVERY_S = 1.0
BYTES_PER_SAMPLE = 2


class Cadence:
    """One connection's audio clock and what it has answered so far, in samples."""

    def __init__(self, rate: int, channels: int) -> None:
        self.rate = rate
        self.frame_bytes = BYTES_PER_SAMPLE * channels
        self.channels = channels
        self.position = 0  # samples received
        self.final_at = 0  # samples covered by finals
        self.interim_step = int(INTERIM_EVERY_S * rate)
        self.final_step = int(FINAL_EVERY_S * rate)
        self.next_interim = self.interim_step
        self.next_final = self.final_step

    def audio(self, n_bytes: int) -> list[str]:
        """The messages this audio completes: at most one, the final if a final boundary was crossed."""
        self.position += n_bytes // self.frame_bytes
        if self.position >= self.next_final:
            self.next_final = (self.position // self.final_step + 1) * self.final_step
            self.next_interim = (self.position // self.interim_step + 1) * self.interim_step
            return [self.final(speech_final=False, from_finalize=False)]
        if self.position >= self.next_interim:
            self.next_interim = (self.position // self.interim_step + 1) * self.interim_step
            return [self.results(self.final_at, self.position, is_final=False)]
        return []

    def final(self, *, speech_final: bool, from_finalize: bool) -> str:
        start, self.final_at = self.final_at, self.position
        return self.results(start, self.position, is_final=True, speech_final=speech_final, from_finalize=from_finalize)

    def results(
        self, start: int, end: int, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> str:
        rate = self.rate
        words = []
        at = end
        while at > start:  # words of INTERIM_EVERY_S backwards from the end, so the last ends exactly at `end`
            begin = max(start, at - self.interim_step)
            words.append(
                f'{{"word":"word","punctuated_word":"word","start":{begin / rate:.4f},"end":{at / rate:.4f},'
                f'"confidence":0.98,"speaker":0}}'
            )
            at = begin
        words.reverse()
        transcript = " ".join("word" for _ in words)
        return (
            f'{{"type":"Results","channel_index":[0,1],"duration":{(end - start) / rate:.4f},'
            f'"start":{start / rate:.4f},"is_final":{"true" if is_final else "false"},'
            f'"speech_final":{"true" if speech_final else "false"},'
            f'"from_finalize":{"true" if from_finalize else "false"},'
            f'"channel":{{"alternatives":[{{"transcript":"{transcript}","confidence":0.98,'
            f'"words":[{",".join(words)}]}}]}},'
            f'"metadata":{{"request_id":"r","model_info":{{"name":"nova-3","version":"v","arch":"a"}},'
            f'"model_uuid":"u"}}}}'
        )


async def session(ws: ServerConnection) -> None:
    query = dict(parse_qsl(urlsplit(ws.request.path if ws.request else "/").query))
    cadence = Cadence(int(query.get("sample_rate", "16000")), int(query.get("channels", "1")))
    try:
        async for message in ws:
            if isinstance(message, bytes):
                for answer in cadence.audio(len(message)):
                    await ws.send(answer)
                continue
            kind = json.loads(message).get("type")
            if kind in ("Finalize", "CloseStream"):
                await ws.send(cadence.final(speech_final=False, from_finalize=kind == "Finalize"))
            if kind == "CloseStream":
                duration = cadence.position / cadence.rate
                await ws.send(
                    json.dumps(
                        {
                            "type": "Metadata",
                            "transaction_key": "x",
                            "request_id": "r",
                            "sha256": "s",
                            "created": "c",
                            "channels": cadence.channels,
                            "duration": round(duration, 4),
                        }
                    )
                )
                await ws.close(1000)
                return
    except ConnectionClosed:
        pass


async def main_async(port: int, key: str) -> None:
    def handshake(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Token {key}":
            return connection.respond(401, "bad key\n")
        return None

    async with serve(session, "127.0.0.1", port, process_request=handshake, compression=None, max_queue=64) as server:
        print(f"READY {port}", flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8770)
    parser.add_argument("--key", default="test-key")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args.port, args.key))


if __name__ == "__main__":
    main()
