"""Random and mutated frames through live sessions: every one gets a documented answer, nothing crashes."""

from __future__ import annotations

import random
import typing

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from presales_ws.client import connect
from presales_ws.protocol import Error, ErrorCode, Pong, ServerMessage
from tests.conftest import LiveServer
from tests.fuzzing import mutate
from tests.support import final_text, reference_text, send_file, word_error_rate

DOCUMENTED = set(typing.get_args(ErrorCode))
frames = st.lists(
    st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=300),
        st.randoms(use_true_random=False).map(mutate),
    ),
    min_size=1,
    max_size=25,
)


async def through_session(url: str, batch: list[str | bytes]) -> tuple[list[ServerMessage], int | None]:
    """Send the frames, then a ping: everything until its pong is what the frames caused.

    A frame may happen to be a genuine `stop`: then the session may end normally (1000) before the pong.
    """
    replies: list[ServerMessage] = []
    with anyio.fail_after(20):
        async with connect(url) as session:
            try:
                for frame in batch:
                    await session.ws.send(frame)
                await session.ping(ts=424242.0)
                while True:
                    message = await session.recv()
                    if isinstance(message, Pong) and message.ts == 424242.0:
                        return replies, None
                    replies.append(message)
            except ConnectionClosed:
                return replies, session.close_code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=frames)
@example(batch=[b"", b"\x1aE\xdf\xa3", b""])  # a WebM magic number as the first audio (once flaky here)
def test_any_frames_get_documented_errors_and_the_session_survives(
    live_server: LiveServer, batch: list[str | bytes]
) -> None:
    replies, close_code = anyio.run(through_session, live_server.ws_url, batch)
    errors = [m for m in replies if isinstance(m, Error)]
    # A session ends early only for a reason it said: a genuine `stop` (1000), or audio plainly not the declared
    # format (a WebM/Ogg magic number as the first bytes) or a contradicting `start` (an error, then 4400).
    said_format = any(e.code in {"undeclared_encoding", "undeclared_sample_rate", "invalid_params"} for e in errors)
    assert (
        close_code is None
        or (close_code == 1000 and any("stop" in str(frame) for frame in batch))
        or (close_code == 4400 and said_format)
    )
    assert {e.code for e in errors} <= DOCUMENTED - {"internal"}
    # At most one error per frame, besides the sequence report an audio_chunk may add.
    assert len([e for e in errors if not e.code.startswith("sequence_")]) <= len(batch)


@pytest.mark.anyio
async def test_a_good_session_is_unaffected_by_a_fuzzing_neighbour(live_server: LiveServer) -> None:
    file = "pricing_question_gb.wav"
    good: list[ServerMessage] = []

    async def fuzz() -> None:
        rng = random.Random(7)
        async with connect(live_server.ws_url) as session:
            for _ in range(2000):
                await session.ws.send(mutate(rng))
            await session.ping(ts=1.0)
            while not isinstance(await session.recv(), Pong):
                pass

    async def speak() -> None:
        async with connect(live_server.ws_url) as session:
            await send_file(session, file, speed=4.0)
            await session.stop()
            good.extend([m async for m in session])

    async with anyio.create_task_group() as tg:
        tg.start_soon(fuzz)
        tg.start_soon(speak)
    assert not [m for m in good if isinstance(m, Error)]
    assert word_error_rate(reference_text(file), final_text(good)) < 0.25
    assert live_server.wait_until(lambda: len(live_server.service.registry) == 0)
