"""A connection that breaks without `stop` resumes the same session: no word lost, no final twice.

A loopback proxy resets the client's connection mid-stream; the real client resumes by itself.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from bench.echo_server import EchoTranscriber
from presales_ws.app import create_app
from presales_ws.client import Session, connect
from presales_ws.client.wavfile import read_wav
from presales_ws.config import Settings
from presales_ws.protocol import ServerMessage, Status, Transcript
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, final_text, finals, reference_text, word_error_rate, words
from tests.tcp_proxy import CuttingProxy

pytestmark = pytest.mark.anyio

FRAME_MS = 20
MAX_WER = 0.25


def echo_live(settings: Settings) -> LiveServer:
    """The service with the benchmarks' echo engine: one final per frame received, covering exactly its audio."""
    return LiveServer(settings, create_app(settings, transcriber=EchoTranscriber())).start()


@pytest.fixture(scope="module")
def echo_server() -> Iterator[LiveServer]:
    server = echo_live(make_settings(resume_window_s=30.0))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedded_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings(resume_window_s=30.0)).start()
    yield server
    server.stop()


@pytest.fixture
async def proxy_to(request: pytest.FixtureRequest) -> AsyncIterator[CuttingProxy]:
    proxy = await CuttingProxy(0).start()
    yield proxy
    await proxy.stop()


async def stream_with_cuts(
    proxy: CuttingProxy,
    pcm: bytes,
    channels: int,
    cut_at_frames: set[int],
    *,
    frame_pause_s: float,
    reroute: dict[int, int] | None = None,
) -> tuple[list[ServerMessage], Session]:
    """Send `pcm` in 20 ms frames through the proxy, cutting the connection before each frame in `cut_at_frames`
    (and first sending the connections that follow to the port `reroute` names for that frame, as a router may);
    then `stop`, and collect every message until the session closes."""
    frame_bytes = 16000 * FRAME_MS // 1000 * 2 * channels
    messages: list[ServerMessage] = []
    with anyio.fail_after(120):
        async with connect(proxy.ws_url, channels=channels) as session:
            messages.append(session.ready)

            async def sender() -> None:
                for index, offset in enumerate(range(0, len(pcm), frame_bytes)):
                    if index in cut_at_frames:
                        if reroute and index in reroute:
                            proxy.retarget(reroute[index])
                        proxy.cut()
                    await session.send_pcm(pcm[offset : offset + frame_bytes])
                    await anyio.sleep(frame_pause_s)
                await session.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                async for message in session:
                    messages.append(message)
    return messages, session


def readies(messages: list[ServerMessage]) -> list[Status]:
    return [m for m in messages if isinstance(m, Status) and m.state == "ready"]


def assert_no_final_twice(messages: list[ServerMessage]) -> None:
    """Finals on one channel follow each other in session time: a final delivered twice would overlap."""
    by_channel: dict[int, list[Transcript]] = {}
    for final in finals(messages):
        by_channel.setdefault(final.channel, []).append(final)
    for channel_finals in by_channel.values():
        for before, after in itertools.pairwise(channel_finals):
            assert after.start >= before.end - 1e-6, (before, after)


async def test_three_cuts_lose_no_audio_and_repeat_no_final(echo_server: LiveServer, proxy_to: CuttingProxy) -> None:
    # The echo engine answers each frame it receives with a final covering exactly that audio: the finals tile the
    # session's audio once, without a gap or an overlap, only if every frame arrived once.
    proxy_to.retarget(echo_server.port)
    frames = 300
    pcm = b"\x01\x00" * (16000 * FRAME_MS // 1000) * frames
    messages, session = await stream_with_cuts(proxy_to, pcm, 1, {60, 140, 220}, frame_pause_s=0.004)

    ready = readies(messages)
    assert len(ready) == 4 and session.resumes == 3
    assert [r.resumed for r in ready] == [False, True, True, True]
    assert len({r.session_id for r in ready}) == 1
    assert all(r.resume_token == ready[0].resume_token for r in ready)
    got = finals(messages)
    assert got[0].start == 0.0
    for before, after in itertools.pairwise(got):
        assert abs(after.start - before.end) < 1e-3, (before, after)  # no gap, no overlap
    assert abs(got[-1].end - frames * FRAME_MS / 1000) < 1e-3
    assert isinstance(messages[-1], Status) and messages[-1].state == "closed"
    assert session.close_code == 1000


async def test_embedded_engine_speech_cut_three_times_mid_utterance(
    embedded_server: LiveServer, proxy_to: CuttingProxy
) -> None:
    proxy_to.retarget(embedded_server.port)
    file = "two_sentences_us.wav"
    audio = read_wav(FIXTURES / file)
    # Cuts 1.0 s, 2.0 s and 4.0 s into the audio: inside the first sentence and the second.
    messages, session = await stream_with_cuts(proxy_to, audio.pcm, 1, {50, 100, 200}, frame_pause_s=0.01)

    assert session.resumes == 3 and len({r.session_id for r in readies(messages)}) == 1
    reference = reference_text(file)
    assert word_error_rate(reference, final_text(messages)) < MAX_WER, final_text(messages)
    assert_no_final_twice(messages)
    heard, said = words(final_text(messages)), words(reference)
    assert all(heard.count(w) <= said.count(w) for w in said), final_text(messages)  # no word twice
    assert isinstance(messages[-1], Status) and messages[-1].state == "closed"


async def test_unknown_or_malformed_token_starts_a_new_session(echo_server: LiveServer) -> None:
    for token in ("x" * 43, "../../etc", "", "a" * 5000, "%00"):
        async with connect(echo_server.ws_url, resume=token) as session:
            assert session.ready.resumed is False and session.ready.resume_token
            assert session.ready.resume_token != token


async def test_a_token_in_use_supersedes_the_older_connection(echo_server: LiveServer) -> None:
    async with connect(echo_server.ws_url) as first:
        token = first.ready.resume_token
        assert token is not None
        await first.send_pcm(b"\x00\x00" * 3200)
        while not isinstance(await first.recv(), Transcript):
            pass
        async with connect(echo_server.ws_url, resume=token, finals_end="0.2") as second:
            assert second.ready.resumed is True and second.ready.session_id == first.session_id
            assert second.ready.received_s == pytest.approx(0.2)
            with pytest.raises(Exception):  # noqa: B017 - the older connection is closed, whatever its last message
                while True:
                    await first.ws.recv()
            assert first.ws.close_code == 4409 and first.ws.close_reason == "superseded"
            await second.stop()
            closing = [m async for m in second]
            assert isinstance(closing[-1], Status) and closing[-1].state == "closed"


async def test_a_parked_session_ends_once_the_window_passes() -> None:
    server = echo_live(make_settings(resume_window_s=1.0))
    try:
        proxy = await CuttingProxy(server.port).start()
        async with connect(proxy.ws_url) as session:
            token = session.ready.resume_token
            await session.send_pcm(b"\x00\x00" * 3200)
            assert await anyio.to_thread.run_sync(server.wait_until, lambda: len(server.service.registry) == 1)
            proxy.cut()
            # Parked, then ended: the registry and the token's entry are gone, the transcriber stream closed.
            service = server.service
            assert await anyio.to_thread.run_sync(
                server.wait_until, lambda: len(service.registry) == 0 and service.transcriber.open_streams == 0
            )
            await proxy.stop()
        assert token is not None
        async with connect(server.ws_url, resume=token) as late:
            assert late.ready.resumed is False and late.ready.session_id != session.session_id
    finally:
        server.stop()


async def test_another_keys_connection_cannot_take_a_session() -> None:
    key, other = "resume-owner-key-0123456", "resume-other-key-6543210"
    server = echo_live(make_settings(resume_window_s=30.0, api_keys=(key, other)))
    try:
        async with connect(server.ws_url, key=key) as owner:
            token = owner.ready.resume_token
            assert token is not None
            async with connect(server.ws_url, key=other, resume=token) as stranger:
                assert stranger.ready.resumed is False and stranger.ready.session_id != owner.session_id
            await owner.send_pcm(b"\x00\x00" * 320)  # the owner's connection goes on, not superseded
            with anyio.fail_after(10):
                while not isinstance(await owner.recv(), Transcript):
                    pass
            assert owner.close_code is None
    finally:
        server.stop()


async def test_a_cut_right_after_stop_still_delivers_every_final(echo_server: LiveServer) -> None:
    proxy = await CuttingProxy(echo_server.port).start()
    try:
        with anyio.fail_after(30):
            async with connect(proxy.ws_url) as session:
                for _ in range(100):
                    await session.send_pcm(b"\x01\x00" * 320)
                await session.stop()
                proxy.cut()  # the stop may or may not have arrived: the client sends it again after the resume
                messages = [m async for m in session]
        got = finals(messages)
        assert session.resumes == 1
        assert abs(got[-1].end - 2.0) < 1e-3 and sum(f.end - f.start for f in got) == pytest.approx(2.0)
        assert isinstance(messages[-1], Status) and messages[-1].state == "closed"
        assert session.close_code == 1000
    finally:
        await proxy.stop()


async def test_a_drain_ends_a_parked_session_without_waiting_for_its_window() -> None:
    server = echo_live(make_settings(resume_window_s=600.0))
    try:
        proxy = await CuttingProxy(server.port).start()
        async with connect(proxy.ws_url, auto_resume=False) as session:
            await session.send_pcm(b"\x00\x00" * 3200)
            assert await anyio.to_thread.run_sync(server.wait_until, lambda: len(server.service.registry) == 1)
            proxy.cut()
            await proxy.stop()
            sessions = server.service.local_sessions
            assert await anyio.to_thread.run_sync(server.wait_until, lambda: any(s.links.parked for s in sessions))
        left = await anyio.to_thread.run_sync(lambda: server.call(server.service.drain).result(timeout=30))
        assert left == 0 and len(server.service.registry) == 0  # not kept for its 600 s window
    finally:
        server.stop()
