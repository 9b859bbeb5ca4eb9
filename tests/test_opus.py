"""WebM/Opus and Ogg/Opus, as a browser's MediaRecorder sends them, through both engines over real sockets."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Literal

import anyio
import pytest

from presales_ws.client import connect
from presales_ws.protocol import Error, ServerMessage, Status
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, MANIFEST, final_text, finals, reference_text, word_error_rate

pytestmark = pytest.mark.anyio

CHUNK_BYTES = 1000  # ~250 ms of 32 kbit/s Opus: a MediaRecorder timeslice
ENCODINGS = {"webm": "webm-opus", "ogg": "ogg-opus"}
CALL = "call_two_channel"
DEEPGRAM_KEY = "test-key-0123456789"


def container(stem: str, suffix: str) -> bytes:
    return (FIXTURES / "opus" / f"{stem}.{suffix}").read_bytes()


async def stream_container(
    url: str,
    chunks: list[bytes],
    encoding: str,
    *,
    channels: int = 1,
    mode: Literal["binary", "base64"] = "binary",
    speed: float | None = 8.0,
    before_audio: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[ServerMessage], int | None]:
    """Send a recording's pieces (each CHUNK_BYTES of ~250 ms, paced at `speed` x), `stop`, read to the close."""
    messages: list[ServerMessage] = []
    with anyio.fail_after(90):
        async with connect(url, channels=channels, encoding=encoding) as session:
            messages.append(session.ready)

            async def sender() -> None:
                if before_audio is not None:
                    await before_audio()
                for chunk in chunks:
                    if speed:
                        await anyio.sleep(0.25 / speed)
                    await (session.send_pcm(chunk) if mode == "binary" else session.send_chunk(chunk))
                await session.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                async for message in session:
                    messages.append(message)
            return messages, session.close_code


def pieces(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]


def errors(messages: list[ServerMessage]) -> list[Error]:
    return [m for m in messages if isinstance(m, Error)]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings()).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("suffix", "mode"), [("webm", "binary"), ("ogg", "base64")])
async def test_a_recorders_opus_question_is_transcribed_as_well_as_pcm(
    server: LiveServer, suffix: str, mode: Literal["binary", "base64"]
) -> None:
    file = "sso_question_gb.wav"
    messages, close_code = await stream_container(
        server.ws_url, pieces(container("sso_question_gb", suffix)), ENCODINGS[suffix], mode=mode
    )
    assert close_code == 1000 and errors(messages) == []
    ready = messages[0]
    assert isinstance(ready, Status) and ready.sample_rate == 16000  # the PCM rate transcripts are timed in
    assert word_error_rate(reference_text(file), final_text(messages)) < 0.25, final_text(messages)
    utterance = MANIFEST[file]["utterances"][0]
    (final,) = finals(messages)
    assert abs(final.start - utterance["start_s"]) < 0.35 and abs(final.end - utterance["end_s"]) < 0.35


@pytest.mark.parametrize("suffix", ["webm", "ogg"])
async def test_a_two_channel_recording_keeps_its_channels_and_roles(server: LiveServer, suffix: str) -> None:
    messages, close_code = await stream_container(
        server.ws_url, pieces(container(CALL, suffix)), ENCODINGS[suffix], channels=2
    )
    assert close_code == 1000 and errors(messages) == []
    for channel in (0, 1):
        reference = reference_text(f"{CALL}.wav", channel)
        assert word_error_rate(reference, final_text(messages, channel)) < 0.25, (channel, final_text(messages))
    assert {f.speaker for f in finals(messages, 1)} == {"customer"}


@pytest.mark.parametrize("suffix", ["webm", "ogg"])
async def test_a_corrupt_piece_mid_stream_is_invalid_audio_and_the_rest_is_transcribed(
    server: LiveServer, suffix: str
) -> None:
    chunks = pieces(container(CALL, suffix))
    middle = len(chunks) // 2
    chunks[middle] = random.Random(19).randbytes(len(chunks[middle]))
    messages, close_code = await stream_container(server.ws_url, chunks, ENCODINGS[suffix], channels=2)
    assert close_code == 1000
    codes = {e.code for e in errors(messages)}
    assert codes == {"invalid_audio"}, errors(messages)
    for channel in (0, 1):  # the damage costs the ~250 ms in that piece at most: every other word is there
        reference = reference_text(f"{CALL}.wav", channel)
        assert word_error_rate(reference, final_text(messages, channel)) < 0.35, (channel, final_text(messages))
    assert isinstance(messages[-1], Status) and messages[-1].state == "closed"


async def test_the_rate_limit_counts_seconds_of_audio_not_compressed_bytes() -> None:
    # 2x real time with a 1 s burst: 2 s of audio at once. The call's 16 s of Opus are 54 KB, which as 16 kHz
    # PCM bytes would be 1.7 s: a limit that counted bytes would let the whole call through in one go.
    limited = LiveServer(make_settings(rate_limit_factor=2.0, rate_limit_burst_s=1.0, max_frame_bytes=4096)).start()
    try:
        messages, _ = await stream_container(
            limited.ws_url, pieces(container(CALL, "webm")), "webm-opus", channels=2, speed=None
        )
    finally:
        limited.stop()
    assert "rate_limited" in {e.code for e in errors(messages)}
