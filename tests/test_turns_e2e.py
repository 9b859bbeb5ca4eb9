"""The embedded engine through the service: real recorded speech heard right, turns ended by their words.

Real uvicorn, real client, the default engine (Moonshine base-en finals, tiny.en interims, text end of turn).
Assertions are on what the client receives and in what order, never on wall-clock time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import pytest

from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import ServerMessage, Transcript
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, finals, transcribe_file, word_error_rate, words

pytestmark = pytest.mark.anyio

REAL = json.loads((FIXTURES / "real.json").read_text())
PAUSED = {entry["file"]: entry for entry in json.loads((FIXTURES / "paused.json").read_text())}
# Through the service (VAD-cut, decode-ahead, pauses decided by their words) on the real recordings; measured
# 4-5% (docs/BENCHMARKS.md); today's tiny.en-only engine made ~7%. A regressed model or segmenter fails this.
MAX_REAL_WER = 0.07
FRAME_BYTES = 640
MAX_PAUSED_SPLITS = 3  # of 12 (docs/BENCHMARKS.md: measured 2); fixed 500 ms endpointing splits every one


@pytest.fixture(scope="module")
def engine_server() -> Iterator[LiveServer]:
    server = LiveServer(make_settings()).start()
    yield server
    server.stop()


async def test_real_recorded_speech_comes_back_within_the_word_error_bound(engine_server: LiveServer) -> None:
    errors = reference_words = 0
    for entry in REAL:
        messages, close_code = await transcribe_file(engine_server.ws_url, f"{entry['file']}", timeout_s=120)
        assert close_code == 1000
        reference = " ".join(u["text"] for u in entry["utterances"])
        hypothesis = " ".join(m.text for m in finals(messages))
        errors += round(word_error_rate(reference, hypothesis) * len(words(reference)))
        reference_words += len(words(reference))
    assert errors / reference_words <= MAX_REAL_WER, f"{errors}/{reference_words} words wrong"


async def test_sentences_with_a_700_ms_pause_inside_mostly_come_back_as_one_final(engine_server: LiveServer) -> None:
    """ "Could you tell me how ... the pricing works for fifty users?" is one question, not two. The set mixes
    synthetic questions cut where the words clearly go on and real readings spliced at word boundaries, some
    of which end a sentence grammatically ("He was not ... an ill-disposed young man"): a bound, not zero."""
    split = []
    for file, entry in PAUSED.items():
        messages, close_code = await transcribe_file(engine_server.ws_url, file, timeout_s=60)
        assert close_code == 1000
        got = finals(messages)
        if len(got) != 1:
            split.append([m.text for m in got])
        reference = entry["utterances"][0]["text"]
        assert word_error_rate(reference, " ".join(m.text for m in got)) <= 0.25, got
    assert len(split) <= MAX_PAUSED_SPLITS, split


async def test_a_complete_question_is_final_after_a_short_pause_with_no_more_audio(engine_server: LiveServer) -> None:
    """The question, then 300 ms of silence, then nothing: no silence timeout (800 ms, 1.5 s) can have ended it,
    so a final that arrives before the client sends anything else was decided by its words."""
    audio = read_wav(FIXTURES / "pricing_question_gb.wav")
    speech_end = round(3.0 * 16000) * 2  # the sentence ends at ~3.0 s (fixtures.json)
    pcm = audio.pcm[:speech_end] + bytes(int(0.3 * 16000) * 2)
    messages: list[ServerMessage] = []
    async with connect(engine_server.ws_url) as session:
        for offset in range(0, len(pcm), FRAME_BYTES):
            await session.send_pcm(pcm[offset : offset + FRAME_BYTES])
        with anyio.fail_after(30):  # liveness only: the final comes, or the test fails
            async for message in session:
                messages.append(message)
                if isinstance(message, Transcript) and message.is_final and message.text:
                    break
        stop_sent_after = len(messages)
        await session.stop()
        async for message in session:
            messages.append(message)
    [final] = finals(messages)
    assert messages.index(final) < stop_sent_after  # before `stop`: not the flush of the end of the stream
    assert final.text.endswith("?")
    assert word_error_rate("What is the pricing for the enterprise tier?", final.text) <= 0.25


async def test_a_fragment_waits_for_more_than_a_short_pause(engine_server: LiveServer) -> None:
    """ "Could you tell me how" and 300 ms of silence: no final yet; the rest of the question joins it."""
    entry = PAUSED["paused/espeak_1_us.wav"]
    utterance = entry["utterances"][0]
    pcm = read_wav(FIXTURES / entry["file"]).pcm
    cut = round((utterance["pause_start_s"] + 0.3) * 16000) * 2
    messages: list[ServerMessage] = []
    async with connect(engine_server.ws_url) as session:
        for offset in range(0, cut, FRAME_BYTES):
            await session.send_pcm(pcm[offset : min(cut, offset + FRAME_BYTES)])
        # The words of the pause are read 160 ms into it: an interim says so, and it is not eager.
        with anyio.fail_after(30):
            async for message in session:
                messages.append(message)
                if isinstance(message, Transcript) and "how" in message.text.lower():
                    break
        for offset in range(cut, len(pcm), FRAME_BYTES):
            await session.send_pcm(pcm[offset : offset + FRAME_BYTES])
        await session.stop()
        async for message in session:
            messages.append(message)
    got = finals(messages)
    assert len(got) == 1, [m.text for m in got]
    assert word_error_rate(utterance["text"], got[0].text) <= 0.25, got[0].text
