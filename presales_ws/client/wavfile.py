"""Reading any PCM WAV into what the service takes: 16 kHz, 16-bit, mono or stereo (client side)."""

from __future__ import annotations

import wave
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

TARGET_RATE_HZ = 16000


class WavAudio(msgspec.Struct, frozen=True):
    pcm: bytes  # little-endian s16, channels interleaved
    sample_rate: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


def _to_float(raw: bytes, width: int) -> npt.NDArray[np.float32]:
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
        return ints.astype(np.float32) / 8388608.0
    if width == 4:
        return np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    raise ValueError(f"unsupported sample width {width} bytes")


def read_wav(path: str | Path, *, sample_rate: int = TARGET_RATE_HZ) -> WavAudio:
    """Load a PCM WAV; more than two channels are mixed down to mono, other rates resampled (soxr)."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except wave.Error as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc}); convert it first, e.g. with sox") from None
    if width == 2 and rate == sample_rate and channels <= 2:
        return WavAudio(pcm=raw, sample_rate=sample_rate, channels=channels)  # already exact: no float round trip
    samples = _to_float(raw, width).reshape(-1, channels)
    if channels > 2:  # the service takes one or two channels: more are one mixed-down microphone
        samples = samples.mean(axis=1, keepdims=True)
        channels = 1
    if rate != sample_rate:
        import soxr

        samples = np.asarray(soxr.resample(samples, rate, sample_rate), dtype=np.float32).reshape(-1, channels)
    pcm = np.clip((samples * 32768.0).round(), -32768, 32767).astype("<i2").tobytes()  # s16 in, s16 out exactly
    return WavAudio(pcm=pcm, sample_rate=sample_rate, channels=channels)
