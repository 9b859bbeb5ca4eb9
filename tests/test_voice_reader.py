"""VoiceReader: the resampling and VAD half of segmenting, which the embedded engine runs off the event loop."""

from __future__ import annotations

import numpy as np

from presales_ws.client.wavfile import read_wav
from presales_ws.transcribers.vad import WINDOW_SAMPLES, SileroProbability, VoiceReader
from tests.support import FIXTURES


def test_every_whole_window_gets_its_probability_in_order_whatever_the_chunking() -> None:
    audio = read_wav(FIXTURES / "pricing_question_us.wav")
    samples = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768
    reader = VoiceReader(audio.sample_rate)
    heard, probabilities = [], []
    for offset in range(0, len(samples), 333):  # chunks that never line up with a window
        chunk, chunk_probabilities = reader(samples[offset : offset + 333])
        heard.append(chunk)
        probabilities += chunk_probabilities
    whole = np.concatenate(heard)
    assert len(probabilities) == len(whole) // WINDOW_SAMPLES
    silero = SileroProbability()  # the same windows, read in one piece by a fresh model
    expected = [
        silero(np.ascontiguousarray(whole[i : i + WINDOW_SAMPLES]))
        for i in range(0, len(probabilities) * WINDOW_SAMPLES, WINDOW_SAMPLES)
    ]
    assert probabilities == expected
    assert max(probabilities) > 0.9 and min(probabilities) < 0.1  # speech and the silence around it


def test_a_client_rate_is_resampled_to_16_khz_on_the_way() -> None:
    reader = VoiceReader(48000)
    audio, probabilities = reader(np.zeros(48000, dtype=np.float32))
    tail, more = reader(np.zeros(0, dtype=np.float32), last=True)
    assert abs(len(audio) + len(tail) - 16000) <= 1 and len(probabilities) + len(more) == 16000 // WINDOW_SAMPLES
