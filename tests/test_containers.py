"""The WebM and Ogg demuxers and the Opus input stage, on the committed MediaRecorder-like fixtures."""

from __future__ import annotations

import random

import pytest

from presales_ws.audio import AudioFormat
from presales_ws.audio_input import OpusInput
from presales_ws.containers import Corrupt, OggDemuxer, OpusHead, WebmDemuxer, opus_packet_s
from tests.support import FIXTURES

DURATION_S = 4.0995625  # sso_question_gb.wav
SUFFIXES = {"webm": WebmDemuxer, "ogg": OggDemuxer}


def fixture(suffix: str) -> bytes:
    return (FIXTURES / "opus" / f"sso_question_gb.{suffix}").read_bytes()


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("piece", [1, 7, 1000, 10**6])
def test_the_same_packets_come_out_however_the_stream_is_cut(suffix: str, piece: int) -> None:
    data = fixture(suffix)
    whole = list(SUFFIXES[suffix]().feed(data))
    demuxer = SUFFIXES[suffix]()
    cut = [item for i in range(0, len(data), piece) for item in demuxer.feed(data[i : i + piece])]
    assert cut == whole
    assert isinstance(whole[0], OpusHead) and whole[0].channels == 1 and whole[0].pre_skip == 312
    packets = [p for p in whole if isinstance(p, bytes)]
    assert not [c for c in whole if isinstance(c, Corrupt)]
    assert sum(map(opus_packet_s, packets)) == pytest.approx(DURATION_S + 0.0065, abs=0.03)  # + pre-skip


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_garbage_mid_stream_is_reported_and_the_demuxer_finds_the_next_whole_piece(suffix: str) -> None:
    data = bytearray(fixture(suffix))
    middle = len(data) // 2
    data[middle : middle + 500] = random.Random(7).randbytes(500)
    items = list(SUFFIXES[suffix]().feed(bytes(data)))
    corrupt = [c for c in items if isinstance(c, Corrupt)]
    packets = [p for p in items if isinstance(p, bytes)]
    assert corrupt and sum(c.skipped for c in corrupt) < 6000  # a block or a page or so, not the rest
    assert sum(map(opus_packet_s, packets)) > DURATION_S - 1.5  # everything after the damage still comes out


def test_a_budget_bounds_what_is_decoded_and_says_how_much_was_left() -> None:
    decoded = OpusInput("webm-opus", AudioFormat(16000, 1)).feed(fixture("webm"), budget_s=1.0)
    assert len(decoded.pcm) / 32000 == pytest.approx(1.0, abs=0.05)  # less the pre-skip and the resampler's delay
    assert decoded.over_budget_s == pytest.approx(DURATION_S - 1.0, abs=0.05)


def test_a_recording_that_does_not_start_at_its_header_is_reported_not_guessed() -> None:
    data = fixture("webm")
    decoded = OpusInput("webm-opus", AudioFormat(16000, 1)).feed(data[len(data) // 2 :])
    assert decoded.pcm == b"" and decoded.problem


def test_the_decoded_recording_has_the_file_s_length_at_16_khz() -> None:
    for suffix, encoding in (("webm", "webm-opus"), ("ogg", "ogg-opus")):
        decoded = OpusInput(encoding, AudioFormat(16000, 1)).feed(fixture(suffix))  # type: ignore[arg-type]
        assert decoded.problem is None
        assert len(decoded.pcm) / 32000 == pytest.approx(DURATION_S, abs=0.03)
