"""Deepgram Flux (listen.v2) through the real SDK, against the Deepgram-compatible server's Flux endpoint.

The test server (tests/flux_server.py) speaks Flux's wire format: Connected, then TurnInfo events by Flux's state
machine, its end of turn modelled on the silence after the words. What reaches our client (or, for the eager
flag, which the wire format does not carry, what the transcriber hands the session) shows what survived the path.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import anyio
import numpy as np
import pytest

from presales_ws.audio import AudioFormat
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Error, Status, Transcript
from presales_ws.transcribers.base import TranscriptEvent
from presales_ws.transcribers.deepgram import DeepgramTranscriber
from tests.conftest import LiveServer, make_settings
from tests.deepgram_server import FakeDeepgram, Plan, Script
from tests.support import FIXTURES, MANIFEST, finals
from tests.test_deepgram import CALL, CALL_CHANNELS, CALL_TURNS, FRAME_BYTES, KEY, Start, call_mono_pcm, stream, texts
from tests.test_deepgram_turns import paused, zeros

pytestmark = pytest.mark.anyio

FLUX = "flux-general-en"
SECOND = 32000  # bytes of 16 kHz mono


@pytest.fixture
def start() -> Iterator[Start]:
    """A fake Deepgram (Flux at /v2/listen) and a presales-ws server on DEEPGRAM_MODEL=flux-general-en."""
    with ExitStack() as stack:

        def _start(
            script: Script, plan: Plan | None = None, key: str = KEY, **settings: object
        ) -> tuple[FakeDeepgram, LiveServer]:
            fake = stack.enter_context(FakeDeepgram(script, api_key=KEY, plan=plan))
            settings.setdefault("deepgram_model", FLUX)
            server = LiveServer(make_settings(deepgram_api_key=key, deepgram_url=fake.url, **settings)).start()
            stack.callback(server.stop)
            return fake, server

        yield _start


async def transcriber_events(fake: FakeDeepgram, pcm: bytes, **settings: object) -> list[TranscriptEvent]:
    """The transcriber's own events for `pcm` sent at real time: what the session (and its prompter) gets."""
    transcriber = DeepgramTranscriber(
        make_settings(deepgram_api_key=KEY, deepgram_url=fake.url, deepgram_model=FLUX, **settings)
    )
    await transcriber.start()
    got: list[TranscriptEvent] = []
    with anyio.fail_after(30):
        async with transcriber.stream(AudioFormat(16000, 1), "s_test") as flux:

            async def send() -> None:
                started = anyio.current_time()
                for index, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
                    await anyio.sleep(max(0.0, started + index * 0.02 - anyio.current_time()))
                    await flux.send(pcm[offset : offset + FRAME_BYTES])
                await flux.finish()

            async def events() -> AsyncIterator[TranscriptEvent]:
                async for event in flux.events():
                    if isinstance(event, TranscriptEvent):
                        yield event

            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                got = [event async for event in events()]
    return got


async def test_a_flux_session_gets_interims_then_one_final_per_turn_without_speaker_labels(start: Start) -> None:
    file = "two_sentences_us.wav"
    fake, server = start(Script.from_manifest(file))
    pcm = read_wav(FIXTURES / file).pcm + zeros(1.0)
    messages, close_code = await stream(server, pcm, speed=1.0)
    assert close_code == 1000
    transcripts = [m for m in messages if isinstance(m, Transcript)]
    assert not transcripts[0].is_final  # interims first
    got = finals(messages)
    assert [m.text for m in got] == [u["text"] for u in MANIFEST[file]["utterances"]]
    assert all(m.utterance_end and m.speaker_id is None and m.speaker == "unknown" for m in got)
    for final, utterance in zip(got, MANIFEST[file]["utterances"], strict=True):
        assert abs(final.start - utterance["start_s"]) < 0.05 and abs(final.end - utterance["end_s"]) < 0.05
    [record] = fake.connections
    assert record.path == "/v2/listen" and record.query["model"] == FLUX
    assert record.query["encoding"] == "linear16" and record.query["sample_rate"] == "16000"
    assert record.query["eot_threshold"] == "0.7" and record.query["eager_eot_threshold"] == "0.5"
    assert "channels" not in record.query and "diarize" not in record.query  # Flux has neither
    # Each turn was ended by Flux's own end of turn, eager first; `stop` closed the stream with CloseStream.
    ends = [t for t in record.turns if t.event in ("EagerEndOfTurn", "EndOfTurn")]
    assert [(t.event, t.trigger) for t in ends] == [("EagerEndOfTurn", None), ("EndOfTurn", "model")] * 2
    assert record.control == ["CloseStream"]


async def test_eager_interim_comes_before_the_final_and_turn_resumed_takes_it_back(start: Start) -> None:
    # A pause long enough for Flux's EagerEndOfTurn, too short for its EndOfTurn: the speaker goes on.
    pcm = paused("integrations_answer_us.wav")
    first, rest = "Yes, we integrate", "with Salesforce and HubSpot out of the box."
    fake = FakeDeepgram(Script.from_regions(pcm, [first, rest]), api_key=KEY).start()
    try:
        events = await transcriber_events(fake, pcm + zeros(1.0), deepgram_eager_eot_threshold=0.3)
    finally:
        fake.stop()
    assert [(e.text, e.utterance_end) for e in events if e.is_final] == [(f"{first} {rest}", True)]
    interims = [e for e in events if not e.is_final]
    eager = [e.text for e in interims if e.eager]
    # The first eager reading was the first half; then a newer, not eager reading; then the eager whole, the final.
    assert eager[0] == first and eager[-1] == f"{first} {rest}"
    first_eager = next(i for i, e in enumerate(interims) if e.eager)
    assert interims[first_eager + 1].eager is False  # TurnResumed: the speculative lookup's words are void
    assert events.index(interims[-1]) == len(events) - 2 and interims[-1].eager  # the eager interim, then the final
    turns = [t.event for t in fake.connections[0].turns]
    assert turns.index("EagerEndOfTurn") < turns.index("TurnResumed") < turns.index("EndOfTurn")


async def test_two_channel_flux_call_is_one_connection_per_channel_with_roles_by_channel(start: Start) -> None:
    fake, server = start(Script.from_manifest(CALL))
    pcm = read_wav(FIXTURES / CALL).pcm
    messages, close_code = await stream(server, pcm, channels=2, speed=4.0)
    assert close_code == 1000
    got = finals(messages)
    assert sorted(m.text for m in got) == sorted(CALL_TURNS)
    for channel in (0, 1):
        assert [m.text for m in got if m.channel == channel] == [
            t for t, c in zip(CALL_TURNS, CALL_CHANNELS, strict=True) if c == channel
        ]
    for final in got:
        assert final.speaker == ("consultant" if final.channel == 0 else "customer") and final.role_confidence == 1.0
    # Two mono connections, each given its own channel's audio.
    records = fake.connections
    assert len(records) == 2 and all(r.path == "/v2/listen" and "channels" not in r.query for r in records)
    tracks = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)
    heard = sorted(bytes(r.audio) for r in records)
    assert heard == sorted(tracks[:, c].tobytes() for c in (0, 1))


async def test_three_drops_mid_turn_lose_and_repeat_no_word(start: Start) -> None:
    pcm = call_mono_pcm()
    plan = Plan(drop_after_bytes={0: int(2.0 * SECOND), 1: int(3.0 * SECOND), 2: int(5.0 * SECOND)})
    fake, server = start(Script.from_manifest(CALL, mono_mix=True), plan)
    messages, close_code = await stream(server, pcm, speed=4.0)
    assert close_code == 1000
    got = finals(messages)
    assert [m.text for m in got] == CALL_TURNS  # every turn exactly once, in order
    assert all(a.end <= b.start for a, b in itertools.pairwise(got))
    for final, utterance in zip(got, MANIFEST[CALL]["utterances"], strict=True):
        assert abs(final.start - utterance["start_s"]) < 0.05  # rebased onto session time
    states = [m.state for m in messages if isinstance(m, Status)]
    assert states.count("reconnecting") == 3 and states.count("recovered") == 3
    # At least one drop cut a turn the client was reading as an interim: its words came back in its final.
    cut_turns = 0
    for index, message in enumerate(messages):
        if isinstance(message, Status) and message.state == "reconnecting":
            before = [m for m in messages[:index] if isinstance(m, Transcript)]
            after = [m for m in messages[index:] if isinstance(m, Transcript) and m.is_final]
            if before and not before[-1].is_final and after and after[0].text.startswith(before[-1].text):
                cut_turns += 1
    assert cut_turns >= 1
    connections = [c for c in fake.connections if c.refused_status is None]
    assert len(connections) == 4
    covered = 0  # every byte reached Flux: each connection resumes at or before the last one's end
    for record in connections:
        offset = pcm.find(record.audio) if record.audio else covered
        assert 0 <= offset <= covered, (offset, covered)
        covered = max(covered, offset + len(record.audio))
    assert covered == len(pcm)


async def test_close_1011_and_429_are_retried_without_loss(start: Start) -> None:
    plan = Plan(refuse={0: 429}, close_1011_after_bytes={1: 4 * SECOND})
    fake, server = start(Script.from_manifest(CALL, mono_mix=True), plan)
    messages, _ = await stream(server, call_mono_pcm(), speed=4.0)
    assert texts(messages) == CALL_TURNS
    assert [c.refused_status for c in fake.connections] == [429, None, None]
    assert fake.connections[1].close_code == 1011


async def test_wrong_key_is_one_auth_error_for_both_channels_no_retry_and_never_logged(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "dg-WRONG-flux-secret-4242"
    fake, server = start(Script.from_manifest(CALL), key=secret)
    messages, close_code = await stream(server, read_wav(FIXTURES / CALL).pcm, channels=2)
    errors = [m for m in messages if isinstance(m, Error)]
    assert [e.code for e in errors] == ["transcriber_auth"]
    assert secret not in errors[0].message
    assert close_code == 1011
    assert [c.refused_status for c in fake.connections] == [401, 401]  # one attempt per channel, no retry
    assert secret not in caplog.text and all(secret not in str(r.msg) for r in caplog.records)


async def test_twelve_seconds_without_audio_are_held_open_by_pings_not_keepalive(start: Start) -> None:
    file = "two_sentences_us.wav"
    fake, server = start(Script.from_manifest(file))
    pcm = read_wav(FIXTURES / file).pcm
    pause_at = int(MANIFEST[file]["utterances"][0]["end_s"] * 16000 + 16000) * 2 // FRAME_BYTES * FRAME_BYTES
    messages, close_code = await stream(server, pcm, pause_at=pause_at, pause_s=12.0)
    assert close_code == 1000
    assert texts(messages) == [u["text"] for u in MANIFEST[file]["utterances"]]
    [record] = fake.connections  # the test server's 10 s idle timeout never fired
    assert record.pings >= 2 and "KeepAlive" not in record.control  # a KeepAlive message would close a Flux stream


async def test_stop_mid_sentence_makes_the_last_update_the_final(start: Start) -> None:
    file = "integrations_answer_us.wav"
    fake, server = start(Script.from_manifest(file))
    pcm = read_wav(FIXTURES / file).pcm
    cut = len(pcm) * 3 // 4 // FRAME_BYTES * FRAME_BYTES  # no silence after it: Flux has not ended the turn
    messages, close_code = await stream(server, pcm[:cut], speed=2.0)
    assert close_code == 1000
    [final] = finals(messages)
    assert final.text.startswith("Yes, we integrate") and len(final.text.split()) >= 6 and final.utterance_end
    record = fake.connections[0]
    assert record.control == ["CloseStream"] and "EndOfTurn" not in [t.event for t in record.turns]


async def test_a_turn_whose_audio_stops_is_ended_with_force_end_turn(start: Start) -> None:
    file = "integrations_answer_us.wav"
    fake, server = start(Script.from_manifest(file), deepgram_eot_timeout_ms=500)
    pcm = read_wav(FIXTURES / file).pcm
    cut = len(pcm) * 3 // 4 // FRAME_BYTES * FRAME_BYTES
    # The client sends half a sentence and then nothing for 3 s (a muted tab), and only then `stop`.
    messages, _ = await stream(server, pcm[:cut] + zeros(0.02), speed=2.0, pause_at=cut, pause_s=3.0)
    [final] = finals(messages)
    assert final.text.startswith("Yes, we integrate")
    record = fake.connections[0]
    assert record.control[0] == "ForceEndTurn"
    assert [(t.event, t.trigger) for t in record.turns if t.event == "EndOfTurn"] == [("EndOfTurn", "manual")]
