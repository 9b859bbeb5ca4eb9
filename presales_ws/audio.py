"""Session audio: its format, and checking that a client frame is whole PCM before it goes further."""

from __future__ import annotations

import base64
import binascii
from collections import deque

import msgspec

from presales_ws.protocol import ProtocolError

SAMPLE_WIDTH_BYTES = 2  # linear16


class AudioFormat(msgspec.Struct, frozen=True):
    """What the client sends: little-endian signed 16-bit PCM, channels interleaved."""

    sample_rate: int = 16000
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (one sample of every channel)."""
        return SAMPLE_WIDTH_BYTES * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.frame_bytes * self.sample_rate

    def seconds(self, n_bytes: int) -> float:
        return n_bytes / self.bytes_per_second


def check_pcm(data: bytes, fmt: AudioFormat) -> bytes:
    """Refuse a frame that would shift every later sample (odd bytes, partial channel frames)."""
    if len(data) % SAMPLE_WIDTH_BYTES:
        raise ProtocolError("invalid_audio", f"odd byte count {len(data)}: linear16 samples are 2 bytes")
    if len(data) % fmt.frame_bytes:
        raise ProtocolError(
            "invalid_audio",
            f"{len(data)} bytes is not a whole number of {fmt.channels}-channel frames ({fmt.frame_bytes} bytes each)",
        )
    return data


def decode_base64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_audio", "audio_chunk.data is not valid base64") from None


class ArrivalClock:
    """When session audio went through (arrived at the server, or left a client): a latency can then start
    where the speaker stopped, not where a final did.

    A checkpoint every CHECKPOINT_S of audio over the last HORIZON_S, plus the latest frame, interpolated
    between: a few KiB a session, nothing per frame beyond a comparison and two stores.
    """

    CHECKPOINT_S = 0.1
    HORIZON_S = 30.0

    def __init__(self) -> None:
        self._points: deque[tuple[float, float]] = deque(maxlen=int(self.HORIZON_S / self.CHECKPOINT_S))
        self._next_s = 0.0
        self._latest: tuple[float, float] | None = None

    @property
    def audio_s(self) -> float:
        """Seconds of audio through so far."""
        return self._latest[0] if self._latest else 0.0

    def received(self, audio_s: float, now: float) -> None:
        """Audio up to `audio_s` (seconds of session audio) had arrived at `now`."""
        self._latest = (audio_s, now)
        if audio_s >= self._next_s:
            self._points.append(self._latest)
            self._next_s = audio_s + self.CHECKPOINT_S

    def arrival(self, audio_s: float) -> float | None:
        """When the audio at `audio_s` arrived; None if it is older than the horizon or not here yet."""
        if self._latest is None or audio_s > self._latest[0]:
            return None
        later = self._latest  # audio past the last checkpoint: between it and the latest frame
        for point in reversed(self._points):
            if point[0] < audio_s:
                (a0, w0), (a1, w1) = point, later
                return w0 + (audio_s - a0) / (a1 - a0) * (w1 - w0)
            later = point
        return None
