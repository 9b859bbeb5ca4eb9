"""Garbage from a client gets its documented error; the session goes on and still transcribes."""

from __future__ import annotations

import base64
import contextlib

import msgspec
import pytest
from websockets.asyncio.client import connect as ws_connect

from presales_ws.client import connect, server_decoder
from presales_ws.protocol import Error, Pong, ServerMessage, Status
from tests.conftest import LiveServer
from tests.support import final_text, reference_text, send_file, word_error_rate

pytestmark = pytest.mark.anyio


async def next_error(session: object) -> Error:
    while True:
        message = await session.recv()  # type: ignore[attr-defined]
        if isinstance(message, Error):
            return message


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("{not json", "invalid_json"),
    ("[1, 2, 3]", "invalid_json"),
    ('"just a string"', "invalid_json"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"no_type": 1}', "unknown_type"),
    ('{"type": ["stop"]}', "unknown_type"),  # found by the fuzzer: crashed the session once
    ('{"type": {"a": 1}}', "unknown_type"),
    ('{"type": "audio_chunk"}', "invalid_message"),
    ('{"type": "audio_chunk", "data": 12}', "invalid_message"),
    ('{"type": "ping", "ts": "yesterday"}', "invalid_message"),
    ('{"type": "audio_chunk", "data": "%%%not base64%%%"}', "invalid_audio"),
    ('{"type": "audio_chunk", "data": "' + base64.b64encode(b"\x01\x02\x03").decode() + '"}', "invalid_audio"),
    (b"\x01\x02\x03", "invalid_audio"),
    ("\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "invalid_json"),
    # Deep nesting raised RecursionError inside msgspec: `internal`, close 1011, words in flight lost.
    ('{"type":"audio_chunk","data":{"x":' + "[" * 1500 + "]" * 1500 + "}}", "invalid_json"),
    ('{"type":"audio_chunk","data":"","x":' + "[" * 1500 + "]" * 1500 + "}", "invalid_json"),
    ('{"type":' + "[" * 1500 + "]" * 1500 + "}", "invalid_json"),
    ('{"type":"stop","x":' + '{"a":' * 1200 + "1" + "}" * 1201, "invalid_json"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES, ids=[c + str(i) for i, (_, c) in enumerate(BAD_FRAMES)])
async def test_bad_frame_gets_its_error_code_and_session_survives(
    live_server: LiveServer, frame: str | bytes, code: str
) -> None:
    async with connect(live_server.ws_url) as session:
        await session.ws.send(frame)
        error = await next_error(session)
        assert error.code == code, error.message
        await session.ping(ts=42.0)
        reply = await session.recv()
        assert isinstance(reply, Pong) and reply.ts == 42.0


async def test_garbage_between_audio_loses_no_words(live_server: LiveServer) -> None:
    """Bad frames in the middle of a sentence: every error is reported and the sentence still comes back."""
    file = "sso_question_us.wav"
    messages: list[ServerMessage] = []
    async with connect(live_server.ws_url) as session:
        await session.ws.send("{oops")
        await send_file(session, file)
        await session.ws.send(b"\x01")
        await session.ws.send('{"type":"unknown"}')
        await session.stop()
        messages = [m async for m in session]
    codes = [m.code for m in messages if isinstance(m, Error)]
    assert codes == ["invalid_json", "invalid_audio", "unknown_type"]
    assert word_error_rate(reference_text(file), final_text(messages)) < 0.25
    assert session.close_code == 1000


async def test_oversized_frame_gets_error_then_finals_of_earlier_audio_then_1009(live_server: LiveServer) -> None:
    file = "pricing_question_us.wav"
    async with connect(live_server.ws_url) as session:
        await send_file(session, file)
        await session.ws.send(b"\x00" * (64 * 1024 + 2))
        messages = [m async for m in session]
    codes = [m.code for m in messages if isinstance(m, Error)]
    assert codes == ["frame_too_large"]
    assert word_error_rate(reference_text(file), final_text(messages)) < 0.25  # nothing received is lost
    assert session.close_code == 1009


async def test_sequence_gap_and_repeat_are_reported_not_fatal(live_server: LiveServer) -> None:
    silence = b"\x00\x00" * 320
    async with connect(live_server.ws_url) as session:
        await session.send_chunk(silence, sequence=1)
        await session.send_chunk(silence, sequence=2)
        await session.send_chunk(silence, sequence=5)
        assert (await next_error(session)).code == "sequence_gap"
        await session.send_chunk(silence, sequence=5)
        assert (await next_error(session)).code == "sequence_repeat"
        await session.stop()
        rest = [m async for m in session]
    assert isinstance(rest[-1], Status) and rest[-1].state == "closed"


async def test_odd_frames_for_two_channels_are_invalid_audio(live_server: LiveServer) -> None:
    async with connect(live_server.ws_url, channels=2) as session:
        await session.send_pcm(b"\x00\x00" * 3)  # 3 samples: not whole stereo frames
        error = await next_error(session)
        assert error.code == "invalid_audio" and "2-channel" in error.message


async def test_audio_after_stop_is_refused_politely(live_server: LiveServer) -> None:
    async with connect(live_server.ws_url) as session:
        await session.stop()
        await session.send_pcm(b"\x00\x00" * 320)
        messages = [m async for m in session]
    assert session.close_code == 1000
    assert isinstance(messages[-1], Status) and messages[-1].state == "closed"


@pytest.mark.parametrize(
    "query",
    [
        "sample_rate=12345",
        "sample_rate=abc",
        "channels=3",
        "encoding=mulaw",
        "language=fr",
        "channel_roles=customer,customer",
    ],
)
async def test_bad_query_parameters_are_refused_with_4400(live_server: LiveServer, query: str) -> None:
    async with ws_connect(f"{live_server.ws_url}?{query}") as ws:
        error = msgspec.json.decode(await ws.recv(), type=ServerMessage, dec_hook=None)
        assert isinstance(error, Error) and error.code == "invalid_params", error
        with contextlib.suppress(Exception):
            await ws.recv()
        assert ws.close_code == 4400


async def test_server_decoder_is_strict_about_server_messages() -> None:
    with pytest.raises(msgspec.ValidationError):
        server_decoder.decode(b'{"type":"transcript","text":1}')


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_nesting_of_any_depth_up_to_the_text_frame_limit_is_invalid_json_or_decodes(opener: str) -> None:
    """Every depth a 256 KiB text frame can hold: a clean decode or a ProtocolError, never RecursionError."""
    from presales_ws.protocol import ProtocolError, decode_client_message

    closer = "]" if opener == "[" else "}"
    inner = "1" if opener != "[" else ""
    for depth in (1, 100, 500, 1000, 5000, 50_000):
        for frame in (
            '{"type":"audio_chunk","data":' + opener * depth + inner + closer * depth + "}",
            '{"type":"ping","extra":' + opener * depth + inner + closer * depth + "}",
        ):
            try:
                decode_client_message(frame)  # a ping's unknown field is skipped, however deep
            except ProtocolError as exc:
                assert exc.code in ("invalid_json", "invalid_message")
