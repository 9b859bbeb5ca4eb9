"""Limits that keep one client from hurting the others: audio rate, sessions per server, session length."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from presales_ws.client import SessionRefused, connect
from presales_ws.client.wavfile import read_wav
from presales_ws.limits import Flood, TokenBucket
from presales_ws.protocol import Error, Pong, ServerMessage, Status
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, final_text, reference_text, send_file, word_error_rate

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def limited_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(rate_limit_factor=2.0, rate_limit_burst_s=5.0, max_sessions=2)).start()
    yield server
    server.stop()


async def test_a_burst_within_the_bucket_is_accepted_whole(limited_server: LiveServer) -> None:
    file = "pricing_question_us.wav"  # 3.5 s sent at once: within a 5 s burst at 2x
    async with connect(limited_server.ws_url) as session:
        await send_file(session, file)
        await session.stop()
        messages = [m async for m in session]
    assert not [m for m in messages if isinstance(m, Error)]
    assert word_error_rate(reference_text(file), final_text(messages)) < 0.25


async def test_a_flood_gets_rate_limited_then_closed_4429_with_its_accepted_audio_transcribed(
    limited_server: LiveServer,
) -> None:
    pcm = read_wav(FIXTURES / "two_sentences_us.wav").pcm * 4  # 36 s of audio, as fast as possible
    messages: list[ServerMessage] = []
    with anyio.fail_after(60):
        async with connect(limited_server.ws_url) as session:

            async def flood() -> None:
                for offset in range(0, len(pcm), 640):
                    try:
                        await session.send_pcm(pcm[offset : offset + 640])
                    except ConnectionClosed:
                        return  # closed under us

            async with anyio.create_task_group() as tg:  # reading meanwhile, as a real client does
                tg.start_soon(flood)
                messages.extend([m async for m in session])
                tg.cancel_scope.cancel()
    codes = [m.code for m in messages if isinstance(m, Error)]
    assert codes[0] == "rate_limited" and set(codes) <= {"rate_limited", "session_stopping"}
    assert session.close_code == 4429
    assert "Thanks for joining today" in final_text(messages)  # what was within the limit is not lost


async def test_sessions_beyond_max_sessions_are_refused_with_1013(limited_server: LiveServer) -> None:
    async with connect(limited_server.ws_url), connect(limited_server.ws_url):
        with pytest.raises(SessionRefused) as refused:
            async with connect(limited_server.ws_url):
                pass
        assert refused.value.code == "server_full" and refused.value.close_code == 1013


async def test_max_session_length_flushes_finals_then_closes_4410() -> None:
    file = "sso_question_us.wav"
    server = LiveServer(make_settings(max_session_s=3.0)).start()
    try:
        async with connect(server.ws_url) as session:
            await send_file(session, file, speed=2.0)  # still speaking when the 3 s limit strikes
            with anyio.fail_after(20):
                messages = [m async for m in session]
    finally:
        server.stop()
    states = [(m.state, m.reason) for m in messages if isinstance(m, Status)]
    assert ("closing", "max session length") in states and states[-1][0] == "closed"
    assert session.close_code == 4410
    assert "platform" in final_text(messages).lower()


async def test_drain_flushes_every_session_and_closes_1012() -> None:
    server = LiveServer(make_settings()).start()
    try:
        file = "integrations_answer_us.wav"
        results: list[tuple[list[object], int | None]] = []

        pcm = read_wav(FIXTURES / file).pcm
        cut = len(pcm) * 3 // 4 // 640 * 640  # mid-sentence: "... Salesforce and HubSpot" not yet ended

        received = anyio.Semaphore(0)

        async def one() -> None:
            async with connect(server.ws_url) as session:
                await session.send_pcm(pcm[:cut])
                await session.ping(ts=1.0)  # its pong: the server has taken every frame sent before it
                messages: list[object] = []
                async for message in session:
                    messages.append(message)
                    if isinstance(message, Pong):
                        received.release()
                results.append((messages, session.close_code))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
            for _ in range(3):
                await received.acquire()  # every session's audio is in; its final is not out yet
            future = server.call(server.service.drain)
            assert await anyio.to_thread.run_sync(future.result, 30) == 0
        for messages, close_code in results:
            assert close_code == 1012
            states = [m.state for m in messages if isinstance(m, Status)]
            assert "closing" in states and states[-1] == "closed"
            text = final_text(messages)  # type: ignore[arg-type]
            assert "Salesforce" in text and len(text.split()) >= 6, text  # every word received before the drain
    finally:
        server.stop()


def test_a_sustained_3x_sender_is_a_flood_although_some_frames_fit() -> None:
    rate = 32000.0  # 16 kHz mono s16, at 1x
    clock = [0.0]
    bucket = TokenBucket(2 * rate, 2 * rate * 5.0, clock=lambda: clock[0])
    flood = Flood(bucket.capacity, 5.0)
    closed_at = None
    for frame in range(3 * 50 * 60):  # 3x real time for a minute of wall time: 150 frames of 20 ms a second
        clock[0] = frame / 150
        if not bucket.take(640) and flood.refused(640, clock[0]):
            closed_at = clock[0]
            break
    assert closed_at is not None and 10.0 < closed_at < 16.0  # burst spent after ~10 s, then 5 s of flooding


def test_refusals_further_apart_than_the_gap_are_separate_episodes() -> None:
    flood = Flood(max_bytes=10_000, max_s=5.0, gap_s=1.0)
    for second in range(60):  # one refused frame every 2 s: a client slightly over, now and then
        assert not flood.refused(640, float(2 * second))
