"""The Deepgram engine through the real SDK, against a Deepgram-compatible server on 127.0.0.1.

The fake (tests/deepgram_server.py) speaks Deepgram's /v1/listen wire format and "recognises" the fixture
utterances from the audio it receives, so what reaches our client shows what survived the whole path.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import anyio
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Error, ServerMessage, Status, Transcript
from tests.conftest import LiveServer, make_settings
from tests.deepgram_server import FakeDeepgram, Plan, Script
from tests.support import FIXTURES, MANIFEST, finals

pytestmark = pytest.mark.anyio

KEY = "test-key-0123456789"
CALL = "call_two_channel.wav"
FRAME_BYTES = 640  # 20 ms of 16 kHz mono


def call_mono_pcm() -> bytes:
    """The two-channel call mixed to one channel (only one party speaks at a time, so it is exact)."""
    stereo = np.frombuffer(read_wav(FIXTURES / CALL).pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
    return stereo.sum(axis=1).clip(-32768, 32767).astype("<i2").tobytes()


CALL_TURNS = [u["text"] for u in MANIFEST[CALL]["utterances"]]
CALL_CHANNELS = [u["channel"] for u in MANIFEST[CALL]["utterances"]]


Start = Callable[..., tuple[FakeDeepgram, LiveServer]]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a fake Deepgram with a script and plan, and a presales-ws server pointed at it."""
    with ExitStack() as stack:

        def _start(
            script: Script, plan: Plan | None = None, key: str = KEY, **settings: object
        ) -> tuple[FakeDeepgram, LiveServer]:
            fake = stack.enter_context(FakeDeepgram(script, api_key=KEY, plan=plan))
            settings.setdefault("deepgram_endpointing_ms", 500)  # shorter than the fixtures' 1 s pauses
            server = LiveServer(make_settings(deepgram_api_key=key, deepgram_url=fake.url, **settings)).start()
            stack.callback(server.stop)
            return fake, server

        yield _start


async def stream(
    server: LiveServer,
    pcm: bytes,
    *,
    channels: int = 1,
    speed: float | None = None,
    pause_at: int | None = None,
    pause_s: float = 0.0,
    timeout_s: float = 60.0,
) -> tuple[list[ServerMessage], int | None]:
    """Send PCM in 20 ms frames (paced when `speed` is given), `stop`, and collect until the close."""
    frame = FRAME_BYTES * channels
    messages: list[ServerMessage] = []
    with anyio.fail_after(timeout_s):
        async with connect(server.ws_url, channels=channels) as session:

            async def send() -> None:
                started = anyio.current_time()
                try:
                    for index, offset in enumerate(range(0, len(pcm), frame)):
                        if pause_at is not None and offset == pause_at:
                            await anyio.sleep(pause_s)
                            started += pause_s
                        if speed:
                            await anyio.sleep(max(0.0, started + index * 0.02 / speed - anyio.current_time()))
                        await session.send_pcm(pcm[offset : offset + frame])
                    await session.stop()
                except ConnectionClosed:
                    pass  # the server ended the session first (a wrong key: 1011): what it said is in `messages`

            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                async for message in session:
                    messages.append(message)
        return messages, session.close_code


def texts(messages: list[ServerMessage]) -> list[str]:
    return [m.text for m in finals(messages)]


async def test_interims_then_diarized_finals_get_roles_from_questions(start: Start) -> None:
    fake, server = start(Script.from_manifest(CALL, speakers={0: 1, 1: 0}, mono_mix=True))
    messages, close_code = await stream(server, call_mono_pcm())
    assert close_code == 1000
    transcripts = [m for m in messages if isinstance(m, Transcript)]
    assert not transcripts[0].is_final  # interims come first
    got = finals(messages)
    assert [m.text for m in got] == CALL_TURNS
    assert [m.speaker_id for m in got] == [1 - ch for ch in CALL_CHANNELS]  # channel 1 (customer) = speaker 0
    # After the customer's second question the evidence (0.75) passes the threshold (0.6).
    assert [m.speaker for m in got] == ["unknown", "unknown", "customer", "consultant"]
    roles = [m for m in messages if isinstance(m, Status) and m.state == "roles"]
    assert roles and roles[-1].roles == {"0": "customer", "1": "consultant"}
    manifest = MANIFEST[CALL]["utterances"]
    for final, utterance in zip(got, manifest, strict=True):
        assert abs(final.start - utterance["start_s"]) < 0.05 and abs(final.end - utterance["end_s"]) < 0.05
    query = fake.connections[0].query
    assert query["model"] == "nova-3" and query["diarize"] == "true" and query["interim_results"] == "true"
    assert query["encoding"] == "linear16" and query["sample_rate"] == "16000" and "multichannel" not in query


async def test_a_final_spoken_by_two_people_is_split_at_the_speaker_change(start: Start) -> None:
    # Endpointing longer than the 1 s gaps between turns: Deepgram would merge turns into one final (with the
    # service's own turn detection off: on, it asks for a final at every pause, and turns never merge upstream).
    fake, server = start(
        Script.from_manifest(CALL, speakers={0: 1, 1: 0}, mono_mix=True),
        deepgram_endpointing_ms=2500,
        turn_detection="off",
    )
    messages, _ = await stream(server, call_mono_pcm())
    assert len([n for n in fake.connections[0].final_word_counts if n]) < len(CALL_TURNS)  # merged upstream
    got = finals(messages)
    assert [m.text for m in got] == CALL_TURNS  # ... and split again here, one speaker each
    assert [m.speaker_id for m in got] == [1 - ch for ch in CALL_CHANNELS]


async def test_two_channel_call_is_multichannel_with_roles_per_channel(start: Start) -> None:
    fake, server = start(Script.from_manifest(CALL))
    messages, close_code = await stream(server, read_wav(FIXTURES / CALL).pcm, channels=2)
    assert close_code == 1000
    got = finals(messages)
    assert sorted(m.text for m in got) == sorted(CALL_TURNS)
    for final in got:
        assert final.speaker == ("consultant" if final.channel == 0 else "customer") and final.role_confidence == 1.0
    assert fake.connections[0].query["multichannel"] == "true"


async def test_stop_returns_the_trailing_words_through_finalize(start: Start) -> None:
    file = "integrations_answer_us.wav"
    fake, server = start(Script.from_manifest(file))
    pcm = read_wav(FIXTURES / file).pcm
    cut = len(pcm) * 3 // 4 // FRAME_BYTES * FRAME_BYTES  # stop mid-sentence: no silence, no endpointing
    messages, close_code = await stream(server, pcm[:cut])
    assert close_code == 1000
    got = finals(messages)
    assert len(got) == 1 and got[0].text.startswith("Yes, we integrate") and len(got[0].text.split()) >= 6
    assert fake.connections[0].control[-2:] == ["Finalize", "CloseStream"]


async def test_three_drops_mid_utterance_lose_and_repeat_no_word(start: Start) -> None:
    pcm = call_mono_pcm()
    second = 32000
    plan = Plan(drop_after_bytes={0: int(2.0 * second), 1: int(3.0 * second), 2: int(5.0 * second)})
    fake, server = start(Script.from_manifest(CALL, speakers={0: 1, 1: 0}, mono_mix=True), plan)
    messages, close_code = await stream(server, pcm, speed=4.0)
    assert close_code == 1000
    got = finals(messages)
    assert [m.text for m in got] == CALL_TURNS  # every scripted final exactly once, in order
    assert all(a.end <= b.start for a, b in itertools.pairwise(got))  # monotonic session time
    for final, utterance in zip(got, MANIFEST[CALL]["utterances"], strict=True):
        assert abs(final.start - utterance["start_s"]) < 0.05  # rebased onto session time
    states = [m.state for m in messages if isinstance(m, Status)]
    assert states.count("reconnecting") == 3 and states.count("recovered") == 3
    # Every audio byte reached Deepgram at least once: each connection resumes at or before the last one's end.
    connections = [c for c in fake.connections if c.refused_status is None]
    assert len(connections) == 4
    covered = 0
    for record in connections:
        offset = pcm.find(record.audio) if record.audio else covered
        assert 0 <= offset <= covered, (offset, covered)
        covered = max(covered, offset + len(record.audio))
    assert covered == len(pcm)


async def test_audio_on_a_connection_without_extensions_arrives_byte_for_byte() -> None:
    # Deepgram's own cadence server takes no permessage-deflate: then the engine frames (and masks) the audio it
    # writes straight onto the SDK's socket itself (client_frames.py), and Deepgram must read exactly the audio.
    pcm = read_wav(FIXTURES / "pricing_question_us.wav").pcm
    with FakeDeepgram(Script.from_manifest("pricing_question_us.wav"), api_key=KEY, compression=None) as fake:
        server = LiveServer(make_settings(deepgram_api_key=KEY, deepgram_url=fake.url)).start()
        try:
            messages, close_code = await stream(server, pcm, speed=4.0)
        finally:
            server.stop()
    assert close_code == 1000
    assert texts(messages) == [u["text"] for u in MANIFEST["pricing_question_us.wav"]["utterances"]]
    assert [bytes(c.audio) for c in fake.connections] == [pcm]


async def test_close_1011_mid_stream_reconnects_without_loss(start: Start) -> None:
    plan = Plan(close_1011_after_bytes={0: 4 * 32000})
    fake, server = start(Script.from_manifest(CALL, speakers={0: 1, 1: 0}, mono_mix=True), plan)
    messages, _ = await stream(server, call_mono_pcm(), speed=4.0)
    assert texts(messages) == CALL_TURNS
    assert len(fake.connections) == 2


async def test_wrong_key_is_one_auth_error_no_retry_and_never_logged(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "dg-WRONG-secret-4242"
    fake, server = start(Script.from_manifest("pricing_question_us.wav"), key=secret)
    messages, close_code = await stream(server, read_wav(FIXTURES / "pricing_question_us.wav").pcm)
    errors = [m for m in messages if isinstance(m, Error)]
    assert [e.code for e in errors] == ["transcriber_auth"]
    assert secret not in errors[0].message
    assert close_code == 1011
    assert len(fake.connections) == 1 and fake.connections[0].refused_status == 401
    assert secret not in caplog.text and all(secret not in str(r.msg) for r in caplog.records)


async def test_429_at_handshake_is_retried_with_backoff_and_recovers(start: Start) -> None:
    fake, server = start(Script.from_manifest("pricing_question_us.wav"), Plan(refuse={0: 429, 1: 429}))
    messages, close_code = await stream(server, read_wav(FIXTURES / "pricing_question_us.wav").pcm)
    assert close_code == 1000
    assert texts(messages) == ["What is the pricing for the enterprise tier?"]
    assert [c.refused_status for c in fake.connections] == [429, 429, None]
    gap = fake.connections[2].opened_at - fake.connections[1].opened_at
    assert gap >= 0.25  # backed off (0.25 s doubling, jittered to half at least)
    states = [m.state for m in messages if isinstance(m, Status)]
    assert "reconnecting" in states and "recovered" in states


async def test_twelve_seconds_of_silence_keep_the_stream_open_with_keepalive(start: Start) -> None:
    file = "two_sentences_us.wav"
    fake, server = start(Script.from_manifest(file))
    pcm = read_wav(FIXTURES / file).pcm
    pause_at = int(MANIFEST[file]["utterances"][0]["end_s"] * 16000 + 16000) * 2 // FRAME_BYTES * FRAME_BYTES
    messages, close_code = await stream(server, pcm, pause_at=pause_at, pause_s=12.0)
    assert close_code == 1000
    assert texts(messages) == [u["text"] for u in MANIFEST[file]["utterances"]]
    assert len(fake.connections) == 1  # Deepgram's 10 s idle timeout never fired
    assert fake.connections[0].control.count("KeepAlive") >= 2


async def test_pauses_as_long_as_endpointing_end_each_turn_with_no_watchdog(start: Start) -> None:
    """The call's pauses are exactly the default `endpointing` (1 s). The test server once timed pauses only at
    the end of each message it received, so a pause that ended inside one went unseen: no turn got a final,
    and the watchdog's Finalize, every 5 s, was the only source of finals (2,370 in a 30-session soak)."""
    fake, server = start(
        Script.from_manifest(CALL, speakers={0: 1, 1: 0}, mono_mix=True),
        deepgram_endpointing_ms=1000,
        deepgram_final_watchdog_s=2.5,
        turn_detection="off",  # Deepgram's endpointing alone: the service sends no Finalize at pauses
    )
    messages, close_code = await stream(server, call_mono_pcm(), speed=2.0)
    assert close_code == 1000
    assert texts(messages) == CALL_TURNS
    # Each turn ended by the pause after it (the last one by `stop`: the call ends 0.5 s after its last word).
    assert [m.utterance_end for m in finals(messages)] == [True, True, True, False]
    assert fake.connections[0].control == ["Finalize", "CloseStream"]


async def test_watchdog_leaves_speech_whole_while_the_words_keep_coming(start: Start) -> None:
    """A final held back while speech goes on (here the test server's: pauses shorter than `endpointing`, and
    no periodic finals) is not overdue: the watchdog, timed from the last new word, sends no Finalize that
    would cut a sentence. Timed from the first interim, it did, every `deepgram_final_watchdog_s`."""
    fake, server = start(
        Script.from_manifest(CALL, speakers={0: 1, 1: 0}, mono_mix=True),
        deepgram_endpointing_ms=1500,  # longer than the call's 1 s pauses: one stretch of speech, 15 s long
        deepgram_final_watchdog_s=2.5,
        turn_detection="off",  # Deepgram's endpointing alone: the service sends no Finalize at pauses
    )
    messages, close_code = await stream(server, call_mono_pcm(), speed=2.0)
    assert close_code == 1000
    assert fake.connections[0].control == ["Finalize", "CloseStream"]  # only `stop`'s: the watchdog never fired
    assert " ".join(texts(messages)) == " ".join(CALL_TURNS)


async def test_watchdog_asks_for_a_final_that_never_comes(start: Start) -> None:
    file = "two_sentences_us.wav"
    fake, server = start(Script.from_manifest(file), Plan(never_final=True), deepgram_final_watchdog_s=1.0)
    pcm = read_wav(FIXTURES / file).pcm + bytes(3 * 16000 * 2)  # the speech, then 3 s (1.5 s here) of silence
    messages, _ = await stream(server, pcm, speed=2.0)
    # Finals come only from Finalize, so they may cut a sentence: every word arrives once, in order.
    assert " ".join(texts(messages)) == " ".join(u["text"] for u in MANIFEST[file]["utterances"])
    control = fake.connections[0].control
    assert control.index("Finalize") < len(control) - 2  # a Finalize before the one `stop` sends
