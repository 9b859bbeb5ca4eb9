"""The audio's format said in the protocol (`start`), and the helpful error for audio that was never declared.

The clients here are written as the seed's examples read: a bare `/ws/session` URL, JSON `audio_chunk`s with
base64 data and a sequence number, `stop` at the end.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from presales_ws.client import server_decoder
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Error, ServerMessage, Status, Suggestion
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, final_text, reference_text, word_error_rate

pytestmark = pytest.mark.anyio

SAMPLE_KB = Path(__file__).resolve().parent.parent / "examples" / "knowledge_base.md"
QUESTION = "sso_question_gb.wav"
CHUNK_MS = 20


@pytest.fixture(scope="module")
def seed_server() -> Iterator[LiveServer]:
    """Defaults a production server has: the rate limit at 2x real time, the sample knowledge base."""
    server = LiveServer(make_settings(rate_limit_factor=2.0, knowledge_base=str(SAMPLE_KB))).start()
    yield server
    server.stop()


def pcm_at(rate: int, file: str = QUESTION) -> bytes:
    audio = read_wav(FIXTURES / file)
    samples = np.frombuffer(audio.pcm, dtype="<i2")
    return bytes(soxr.resample(samples, audio.sample_rate, rate).astype("<i2").tobytes())


async def seed_client(
    url: str,
    pcm: bytes,
    rate: int,
    *,
    start: dict[str, Any] | None = None,
    speed: float = 1.0,
    backlog_s: float = 0.0,
) -> tuple[list[ServerMessage], int | None]:
    """Stream `pcm` as base64 `audio_chunk`s of 20 ms at `speed` x real time (the first `backlog_s` at once, as
    a client that kept audio while it connected), then `stop`; every message back."""
    messages: list[ServerMessage] = []
    step = rate * CHUNK_MS // 1000 * 2
    with anyio.fail_after(60):
        async with ws_connect(url) as ws:
            messages.append(server_decoder.decode(await ws.recv()))
            if start is not None:
                await ws.send(msgspec.json.encode({"type": "start", **start}).decode())

            async def sender() -> None:
                began = time.monotonic() - backlog_s / speed
                for sequence, offset in enumerate(range(0, len(pcm), step)):
                    await anyio.sleep(max(0.0, began + sequence * CHUNK_MS / 1000 / speed - time.monotonic()))
                    chunk = base64.b64encode(pcm[offset : offset + step]).decode()
                    message = {"type": "audio_chunk", "data": chunk, "sequence": sequence}
                    try:
                        await ws.send(msgspec.json.encode(message).decode())
                    except ConnectionClosed:
                        return
                with _closed_ok():
                    await ws.send('{"type": "stop"}')

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                try:
                    async for raw in ws:
                        messages.append(server_decoder.decode(raw))
                except ConnectionClosed:
                    pass
                tg.cancel_scope.cancel()
            return messages, ws.close_code


class _closed_ok:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return isinstance(value, ConnectionClosed)


def errors(messages: list[ServerMessage]) -> list[Error]:
    return [m for m in messages if isinstance(m, Error)]


async def test_48_khz_pcm_with_a_start_message_gets_its_final_and_its_suggestion(seed_server: LiveServer) -> None:
    messages, close_code = await seed_client(
        seed_server.ws_url, pcm_at(48000), 48000, start={"sample_rate": 48000, "channels": 1, "encoding": "linear16"}
    )
    assert close_code == 1000 and errors(messages) == []
    assert word_error_rate(reference_text(QUESTION), final_text(messages)) < 0.25, final_text(messages)
    assert any(isinstance(m, Suggestion) and not m.partial and m.response for m in messages)


async def test_undeclared_48_khz_pcm_gets_one_error_saying_what_to_declare_not_rate_limits(
    seed_server: LiveServer,
) -> None:
    messages, close_code = await seed_client(seed_server.ws_url, pcm_at(48000), 48000)
    codes = [e.code for e in errors(messages)]
    # Once, and no rate_limited before or after it (audio still in flight may get one session_stopping).
    assert codes[0] == "undeclared_sample_rate" and set(codes) <= {"undeclared_sample_rate", "session_stopping"}
    assert codes.count("undeclared_sample_rate") == 1, codes
    assert "sample_rate=48000" in errors(messages)[0].message
    assert close_code == 4400
    assert isinstance(messages[-1], Status) and messages[-1].state == "closed"


@pytest.mark.parametrize("backlog_s", [0.0, 2.0], ids=["steady", "with a 2 s backlog at once"])
async def test_undeclared_16_khz_pcm_at_real_time_is_the_default_and_just_works(
    seed_server: LiveServer, backlog_s: float
) -> None:
    pcm = pcm_at(16000, "integrations_answer_us.wav")  # 6 s: past the window where the rate is judged
    messages, close_code = await seed_client(seed_server.ws_url, pcm, 16000, speed=1.5, backlog_s=backlog_s)
    assert close_code == 1000 and errors(messages) == []
    assert word_error_rate(reference_text("integrations_answer_us.wav"), final_text(messages)) < 0.25


@pytest.mark.parametrize(("suffix", "encoding"), [("webm", "webm-opus"), ("ogg", "ogg-opus")])
async def test_undeclared_webm_or_ogg_gets_undeclared_encoding_naming_it(
    seed_server: LiveServer, suffix: str, encoding: str
) -> None:
    data = (FIXTURES / "opus" / f"sso_question_gb.{suffix}").read_bytes()
    async with ws_connect(seed_server.ws_url) as ws:
        assert isinstance(server_decoder.decode(await ws.recv()), Status)
        await ws.send(data[:1000])
        error = server_decoder.decode(await ws.recv())
        assert isinstance(error, Error) and error.code == "undeclared_encoding", error
        assert f"encoding={encoding}" in error.message
        closed = server_decoder.decode(await ws.recv())
        assert isinstance(closed, Status) and closed.state == "closed"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4400


@pytest.mark.parametrize(
    ("query", "start", "expect"),
    [
        ("?sample_rate=16000", {"sample_rate": 48000}, "sample_rate"),
        ("?encoding=linear16", {"encoding": "webm-opus"}, "encoding"),
        ("", {"channels": 2}, "channels"),
    ],
    ids=["rate", "encoding", "channels"],
)
async def test_a_start_that_contradicts_the_url_is_invalid_params_then_4400(
    seed_server: LiveServer, query: str, start: dict[str, Any], expect: str
) -> None:
    async with ws_connect(seed_server.ws_url + query) as ws:
        assert isinstance(server_decoder.decode(await ws.recv()), Status)
        await ws.send(msgspec.json.encode({"type": "start", **start}).decode())
        error = server_decoder.decode(await ws.recv())
        assert isinstance(error, Error) and error.code == "invalid_params" and expect in error.message, error
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code == 4400


async def test_a_start_that_agrees_with_the_url_and_a_start_after_audio(seed_server: LiveServer) -> None:
    async with ws_connect(seed_server.ws_url + "?sample_rate=16000&channels=1") as ws:
        assert isinstance(server_decoder.decode(await ws.recv()), Status)
        await ws.send('{"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "linear16"}')
        await ws.send(b"\0" * 640)
        await ws.send('{"type": "start", "sample_rate": 16000}')
        error = server_decoder.decode(await ws.recv())
        assert isinstance(error, Error) and error.code == "invalid_message" and "before any audio" in error.message
        await ws.send('{"type": "start", "sample_rate": 12345}')  # a bad value is a bad message, as in the URL
        error = server_decoder.decode(await ws.recv())
        assert isinstance(error, Error) and error.code == "invalid_message" and "sample_rate" in error.message
        await ws.send('{"type": "stop"}')
        closed = server_decoder.decode(await ws.recv())
        assert isinstance(closed, Status) and closed.state == "closed"
