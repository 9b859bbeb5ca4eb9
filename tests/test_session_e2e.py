"""End to end over a real uvicorn on 127.0.0.1 with the embedded transcriber: what a client receives."""

from __future__ import annotations

import anyio
import pytest

from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Status, Transcript
from tests.conftest import LiveServer
from tests.support import (
    FIXTURES,
    MANIFEST,
    final_text,
    finals,
    reference_text,
    send_file,
    transcribe_file,
    word_error_rate,
)

pytestmark = pytest.mark.anyio

MAX_WER = 0.25


@pytest.mark.parametrize("file", ["sso_question_us.wav", "pricing_question_gb.wav", "integrations_answer_us.wav"])
async def test_binary_frames_come_back_as_the_spoken_sentence(live_server: LiveServer, file: str) -> None:
    messages, close_code = await transcribe_file(live_server.ws_url, file)
    assert close_code == 1000
    assert word_error_rate(reference_text(file), final_text(messages)) < MAX_WER, final_text(messages)
    assert isinstance(messages[-1], Status) and messages[-1].state == "closed"


async def test_base64_audio_chunks_are_transcribed_like_binary(live_server: LiveServer) -> None:
    file = "pricing_question_us.wav"
    messages, close_code = await transcribe_file(live_server.ws_url, file, mode="base64")
    assert close_code == 1000
    assert word_error_rate(reference_text(file), final_text(messages)) < MAX_WER, final_text(messages)
    assert not [m for m in messages if getattr(m, "type", None) == "error"]


async def test_interims_precede_the_final_of_an_utterance(live_server: LiveServer) -> None:
    # Real time: faster, a loaded machine may supersede every pending interim decode with the final (by design).
    messages, _ = await transcribe_file(live_server.ws_url, "sso_question_us.wav", speed=1.0)
    transcripts = [m for m in messages if isinstance(m, Transcript)]
    interims = [m for m in transcripts if not m.is_final]
    assert interims, "no interim transcript while the sentence was being spoken"
    first_final = next(i for i, m in enumerate(transcripts) if m.is_final)
    assert transcripts.index(interims[0]) < first_final
    final = transcripts[first_final]
    assert final.utterance_end and final.start <= 0.6 and 3.5 < final.end < 4.6


async def test_two_sentences_come_back_as_two_finals_with_session_times(live_server: LiveServer) -> None:
    file = "two_sentences_us.wav"
    messages, _ = await transcribe_file(live_server.ws_url, file)
    got = finals(messages)
    utterances = MANIFEST[file]["utterances"]
    assert len(got) == len(utterances)
    for final, utterance in zip(got, utterances, strict=True):
        assert word_error_rate(utterance["text"], final.text) < MAX_WER, final.text
        assert abs(final.start - utterance["start_s"]) < 0.4 and abs(final.end - utterance["end_s"]) < 0.4


async def test_stop_returns_the_words_of_an_unfinished_utterance(live_server: LiveServer) -> None:
    """Cut the audio mid-sentence (no silence after it): `stop` must still bring back its words."""
    file = "integrations_answer_us.wav"
    async with connect(live_server.ws_url) as session:
        pcm = read_wav(FIXTURES / file).pcm
        cut = len(pcm) * 3 // 4 // 2 * 2
        for offset in range(0, cut, 640):
            await session.send_pcm(pcm[offset : min(offset + 640, cut)])
        await session.stop()
        messages = [m async for m in session]
    text = final_text(messages)
    assert len(text.split()) >= 5, text
    assert "salesforce" in text.lower()
    assert session.close_code == 1000


async def test_two_concurrent_sessions_each_get_their_own_transcript(live_server: LiveServer) -> None:
    results: dict[str, str] = {}

    async def one(file: str) -> None:
        messages, _ = await transcribe_file(live_server.ws_url, file, speed=4.0)
        results[file] = final_text(messages)

    files = ["sso_question_gb.wav", "onboarding_answer_us.wav"]
    async with anyio.create_task_group() as tg:
        for file in files:
            tg.start_soon(one, file)
    for file in files:
        assert word_error_rate(reference_text(file), results[file]) < MAX_WER, (file, results[file])


async def test_two_channel_call_comes_back_with_roles_by_channel(live_server: LiveServer) -> None:
    file = "call_two_channel.wav"
    messages, close_code = await transcribe_file(live_server.ws_url, file, speed=4.0)
    assert close_code == 1000
    ready = messages[0]
    assert isinstance(ready, Status) and ready.channels == 2 and ready.channel_roles == ["consultant", "customer"]
    for channel, role in ((0, "consultant"), (1, "customer")):
        got = finals(messages, channel)
        assert got and all(m.speaker == role and m.role_confidence == 1.0 for m in got)
        assert word_error_rate(reference_text(file, channel), final_text(messages, channel)) < MAX_WER


async def test_channel_roles_parameter_swaps_the_roles(live_server: LiveServer) -> None:
    messages, _ = await transcribe_file(
        live_server.ws_url, "call_two_channel.wav", speed=4.0, channel_roles="customer,consultant"
    )
    assert {m.speaker for m in finals(messages, 0)} == {"customer"}
    assert {m.speaker for m in finals(messages, 1)} == {"consultant"}


async def test_single_channel_without_speaker_ids_is_unknown(live_server: LiveServer) -> None:
    messages, _ = await transcribe_file(live_server.ws_url, "pricing_question_gb.wav")
    got = finals(messages)
    assert got and all(m.speaker == "unknown" and m.speaker_id is None and m.channel == 0 for m in got)


async def test_disconnect_mid_utterance_releases_everything(live_server: LiveServer) -> None:
    service = live_server.service
    async with connect(live_server.ws_url) as session:
        await send_file(session, "sso_question_us.wav", speed=None)
        assert live_server.wait_until(lambda: len(service.registry) >= 1)
        # leave without `stop`, in the middle of the sentence's decode
    assert await anyio.to_thread.run_sync(
        live_server.wait_until, lambda: len(service.registry) == 0 and service.transcriber.open_streams == 0
    ), (len(service.registry), service.transcriber.open_streams)


async def test_a_whole_file_sent_at_once_is_split_into_frames_and_transcribed(live_server: LiveServer) -> None:
    """The README's client example: one send_pcm of a whole file."""
    file = "pricing_question_us.wav"
    async with connect(live_server.ws_url) as session:
        await session.send_pcm(read_wav(FIXTURES / file).pcm)
        await session.stop()
        messages = [m async for m in session]
    assert not [m for m in messages if getattr(m, "code", None)]
    assert word_error_rate(reference_text(file), final_text(messages)) < MAX_WER
