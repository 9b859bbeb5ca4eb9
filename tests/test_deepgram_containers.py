"""WebM/Ogg sessions on Deepgram: the provider reads the client's container bytes as they came; a reconnect,
which cannot restart a container mid-stream, goes on as linear16 PCM with no word lost or repeated."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from presales_ws.audio import AudioFormat
from presales_ws.audio_input import OpusInput
from presales_ws.containers import OGG_MAGIC, WEBM_MAGIC
from presales_ws.protocol import ServerMessage, Status
from tests.conftest import LiveServer, make_settings
from tests.deepgram_server import ConnectionRecord, FakeDeepgram, Plan, Script
from tests.support import MANIFEST, finals
from tests.test_opus import CALL, DEEPGRAM_KEY, ENCODINGS, container, errors, pieces, stream_container

pytestmark = pytest.mark.anyio

MAGIC = {"webm": WEBM_MAGIC, "ogg": OGG_MAGIC}
RAW_AUDIO_OPTIONS = ("encoding", "sample_rate", "channels")  # Deepgram reads these from a container
TWO = "two_sentences_us"
TWO_TEXTS = [u["text"] for u in MANIFEST[f"{TWO}.wav"]["utterances"]]
NOISE_FLOOR = 8  # decoded Opus is not digital silence between sentences; within 8 of zero, the fake hears none


def decoded(data: bytes, suffix: str, channels: int) -> bytes:
    return OpusInput(ENCODINGS[suffix], AudioFormat(16000, channels)).feed(data).pcm  # type: ignore[arg-type]


@contextmanager
def deepgram(script: Script, plan: Plan | None = None) -> Iterator[tuple[FakeDeepgram, LiveServer]]:
    """A fake Deepgram and a presales-ws server pointed at it, both stopped on the way out."""
    with FakeDeepgram(script, api_key=DEEPGRAM_KEY, plan=plan or Plan()) as fake:
        settings = make_settings(deepgram_api_key=DEEPGRAM_KEY, deepgram_url=fake.url, deepgram_endpointing_ms=500)
        server = LiveServer(settings).start()
        try:
            yield fake, server
        finally:
            server.stop()


def two_sentences(suffix: str, plan: Plan | None = None) -> tuple[bytes, Script, Plan]:
    data = container(TWO, suffix)
    script = Script.from_regions(decoded(data, suffix, 1), TWO_TEXTS, noise_floor=NOISE_FLOOR)
    plan = plan or Plan()
    plan.noise_floor = NOISE_FLOOR
    return data, script, plan


def heard(fake: FakeDeepgram) -> list[ConnectionRecord]:
    """The connections after the one opened with the session, for PCM, before its first audio: a container's
    first piece closes that one, unused, for one that reads the container from its first byte."""
    opened_for_pcm, *rest = fake.connections
    assert opened_for_pcm.audio_bytes == 0 and opened_for_pcm.query["encoding"] == "linear16"
    return rest


async def stream_after_connect(fake: FakeDeepgram, *args: Any, **kwargs: Any) -> tuple[list[ServerMessage], int | None]:
    """stream_container, its first piece sent once the session's Deepgram connection is open (as it is when
    a recorder starts a moment after the page connected): the switch to a container connection is tested."""

    async def connected() -> None:
        with anyio.fail_after(10):
            while not fake.connections:  # noqa: ASYNC110 (the fake runs in its own thread: no anyio.Event)
                await anyio.sleep(0.01)

    return await stream_container(*args, before_audio=connected, **kwargs)


@pytest.mark.parametrize("suffix", ["webm", "ogg"])
@pytest.mark.parametrize("at_once", [False, True])
async def test_deepgram_receives_the_recorders_bytes_unchanged_with_no_encoding(suffix: str, at_once: bool) -> None:
    text = MANIFEST["sso_question_gb.wav"]["utterances"][0]["text"]
    data = container("sso_question_gb", suffix)
    with deepgram(Script.from_regions(decoded(data, suffix, 1), [text])) as (fake, server):
        if at_once:  # the first piece may come before the session's connection is open: then it is the container's
            messages, close_code = await stream_container(server.ws_url, pieces(data), ENCODINGS[suffix])
        else:
            messages, close_code = await stream_after_connect(fake, server.ws_url, pieces(data), ENCODINGS[suffix])
    assert close_code == 1000 and errors(messages) == []
    assert [f.text for f in finals(messages)] == [text]
    (connection,) = [c for c in fake.connections if c.audio_bytes] if at_once else heard(fake)
    assert not set(RAW_AUDIO_OPTIONS) & connection.query.keys(), connection.query
    assert bytes(connection.audio[:4]) == MAGIC[suffix]
    assert bytes(connection.audio) == data  # byte-identical, in order, once
    assert connection.control[-2:] == ["Finalize", "CloseStream"]


@pytest.mark.parametrize("suffix", ["webm", "ogg"])
async def test_a_two_channel_recording_is_one_multichannel_container_stream(suffix: str) -> None:
    """What goes up only: joint-stereo Opus leaks each party into the other channel, which the fake, which
    finds speech by silence, cannot tell apart (tests/test_opus.py transcribes this call on the embedded engine)."""
    data = container(CALL, suffix)
    with deepgram(Script(())) as (fake, server):
        _, close_code = await stream_after_connect(fake, server.ws_url, pieces(data), ENCODINGS[suffix], channels=2)
    assert close_code == 1000
    (connection,) = heard(fake)
    assert connection.query.get("multichannel") == "true" and not set(RAW_AUDIO_OPTIONS) & connection.query.keys()
    assert bytes(connection.audio) == data


@pytest.mark.parametrize("suffix", ["webm", "ogg"])
async def test_after_a_drop_the_new_connection_is_linear16_and_no_word_is_lost_or_repeated(suffix: str) -> None:
    # A network drop (no close frame) in the middle of the first sentence, its words not final yet.
    data, script, plan = two_sentences(suffix, Plan(drop_after_bytes={1: len(data_of(suffix)) // 4}))
    with deepgram(script, plan) as (fake, server):
        messages, close_code = await stream_after_connect(
            fake, server.ws_url, pieces(data), ENCODINGS[suffix], speed=4.0
        )
    assert close_code == 1000 and errors(messages) == []
    got = finals(messages)
    assert [f.text for f in got] == TWO_TEXTS  # each sentence once, in order
    assert all(a.end <= b.start for a, b in itertools.pairwise(got))
    for final, utterance in zip(got, MANIFEST[f"{TWO}.wav"]["utterances"], strict=True):
        assert abs(final.start - utterance["start_s"]) < 0.1  # on the session's audio clock
    first, second = heard(fake)
    assert "encoding" not in first.query and data.startswith(bytes(first.audio))
    assert second.query["encoding"] == "linear16" and second.query["sample_rate"] == "16000"
    assert second.query["channels"] == "1"
    assert bytes(second.audio) == decoded(data, suffix, 1)  # no final yet: the replay is the recording from 0
    states = [m.state for m in messages if isinstance(m, Status)]
    assert "reconnecting" in states and "recovered" in states


def data_of(suffix: str) -> bytes:
    return container(TWO, suffix)


def reported_piece(chunks: list[bytes], suffix: str) -> int:
    """The index of the first piece whose decoding reports a problem (the session's `invalid_audio`)."""
    decoder = OpusInput(ENCODINGS[suffix], AudioFormat(16000, 1))  # type: ignore[arg-type]
    return next(i for i, chunk in enumerate(chunks) if decoder.feed(chunk).problem)


@pytest.mark.parametrize("suffix", ["webm", "ogg"])
async def test_a_corrupt_piece_moves_deepgram_to_pcm_and_nothing_is_lost(suffix: str) -> None:
    data, script, plan = two_sentences(suffix)
    chunks = pieces(data)
    damaged = len(chunks) // 4  # inside the first sentence
    chunks[damaged] = random.Random(19).randbytes(len(chunks[damaged]))
    with deepgram(script, plan) as (fake, server):
        messages, close_code = await stream_after_connect(fake, server.ws_url, chunks, ENCODINGS[suffix])
    assert close_code == 1000
    assert {e.code for e in errors(messages)} == {"invalid_audio"}
    assert [f.text for f in finals(messages)] == TWO_TEXTS  # the piece's ~250 ms cost no sentence
    first, second = heard(fake)
    # Only pieces that parsed whole: the damaged one and those after it too until the damage shows (an Ogg page
    # of ~1 s spans four pieces: its checksum fails in its last), never the piece reported nor any after it
    # (docs/PROTOCOL.md). How many of those went up before the report is the event loop's timing.
    assert b"".join(chunks[: reported_piece(chunks, suffix)]).startswith(bytes(first.audio))
    assert bytes(first.audio[:4]) == MAGIC[suffix]
    assert second.query["encoding"] == "linear16"
    states = [m.state for m in messages if isinstance(m, Status)]
    assert "reconnecting" not in states  # a planned switch, not an outage
