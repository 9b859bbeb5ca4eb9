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
from tests.support import FIXTURES, MANIFEST, finals, transcribe_file, word_error_rate, words

pytestmark = pytest.mark.anyio

REAL = json.loads((FIXTURES / "real.json").read_text())
PAUSED = {entry["file"]: entry for entry in json.loads((FIXTURES / "paused.json").read_text())}
# Through the service (VAD-cut, decode-ahead, pauses decided by their words) on the real recordings; measured
# 4-5% (docs/BENCHMARKS.md); today's tiny.en-only engine made ~7%. A regressed model or segmenter fails this.
MAX_REAL_WER = 0.07
FRAME_BYTES = 640
MAX_PAUSED_SPLITS = 1  # of 12 ("He was not. / An ill-disposed young man"); fixed 500 ms endpointing splits all
SHORT_COMPLETE = {  # file: the sentence (fixtures.json, real.json), each read as complete by its words
    "pricing_question_gb.wav": "What is the pricing for the enterprise tier?",
    "data_residency_question_us.wav": "Is our data stored in Europe or in the United States?",
    "real/go_forward.wav": "Go forward ten meters.",
}


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
    of which end a sentence grammatically ("He was not ... an ill-disposed young man"): a bound, not zero.
    "And you always ... want to see it" (a real speaker) was read as "And you always." and split until the
    words' cue knew a subject and an adverb without a verb, and the model's unsure full stop, for what they are."""
    split = {}
    for file, entry in PAUSED.items():
        messages, close_code = await transcribe_file(engine_server.ws_url, file, timeout_s=60)
        assert close_code == 1000
        got = finals(messages)
        if len(got) != 1:
            split[file] = [m.text for m in got]
        reference = entry["utterances"][0]["text"]
        assert word_error_rate(reference, " ".join(m.text for m in got)) <= 0.25, got
    assert "paused/arctic_awb_a0007.wav" not in split, split
    assert len(split) <= MAX_PAUSED_SPLITS, split


@pytest.mark.parametrize("file", SHORT_COMPLETE)
async def test_a_complete_sentence_is_final_after_a_short_pause_with_no_more_audio(
    engine_server: LiveServer, file: str
) -> None:
    """The sentence, then 300 ms of silence, then nothing: no silence timeout (800 ms, 1.5 s) can have ended it,
    so a final that arrives before the client sends anything else was decided by its words (and the model's
    full stop was sure enough: TURN_FULL_STOP_THRESHOLD)."""
    audio = read_wav(FIXTURES / file)
    entry = next(e for e in [*MANIFEST.values(), *REAL] if e["file"] == file)
    speech_end = round(entry["utterances"][0]["end_s"] * 16000) * 2
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
    assert final.text.endswith(("?", "."))
    assert word_error_rate(SHORT_COMPLETE[file], final.text) <= 0.25


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
