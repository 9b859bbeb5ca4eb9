"""What a client sends, made into what the transcriber takes: PCM in the session's format.

PCM passes through (resampled when a `start` message declared another rate than the stream was opened at);
WebM/Opus and Ogg/Opus (a browser's `MediaRecorder`) are demuxed and decoded here, with PyAV's Opus decoder
and resampler (FFmpeg, shipped in the `av` wheel), so every engine, the rate limit and the replay buffers see
audio seconds of PCM whatever came over the wire. Decoding costs ~0.4% of a core per session (docs/BENCHMARKS.md):
it runs inline, on the event loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np

from presales_ws.audio import AudioFormat, check_pcm
from presales_ws.containers import Corrupt, OggDemuxer, OpusHead, WebmDemuxer, opus_packet_s
from presales_ws.protocol import Encoding

if TYPE_CHECKING:
    import soxr

OPUS_RATE_HZ = 48_000


class Decoded(msgspec.Struct):
    """PCM for the transcriber, what could not be used of the bytes it came from, and the seconds of audio
    left undecoded because they were over the budget (the rate limit's allowance)."""

    pcm: bytes
    problem: str | None = None
    over_budget_s: float = 0.0


class AudioInput(Protocol):
    def feed(self, data: bytes, budget_s: float = math.inf) -> Decoded:
        """One client frame's bytes in; raises ProtocolError when the whole frame is unusable. Compressed
        audio past `budget_s` seconds is not decoded at all: a 64 KiB frame of tiny Opus packets holds
        minutes of audio, and decoding it just to drop it would cost the event loop seconds."""
        ...


class PcmInput:
    """linear16 at the declared rate: checked, and resampled to the stream's rate if they differ."""

    def __init__(self, declared: AudioFormat, stream: AudioFormat) -> None:
        self._declared = declared
        self._resampler: soxr.ResampleStream | None = None
        if declared.sample_rate != stream.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(
                declared.sample_rate, stream.sample_rate, declared.channels, dtype="int16"
            )

    def feed(self, data: bytes, budget_s: float = math.inf) -> Decoded:
        check_pcm(data, self._declared)  # the rate limit refuses a PCM frame whole: no budget needed
        if self._resampler is None:
            return Decoded(data)
        samples = np.frombuffer(data, dtype="<i2").reshape(-1, self._declared.channels)
        return Decoded(self._resampler.resample_chunk(samples).astype("<i2").tobytes())


class OpusInput:
    """A recorder's WebM or Ogg Opus stream, decoded to the stream's rate and channel count."""

    def __init__(self, encoding: Encoding, stream: AudioFormat) -> None:
        import av

        self._av = av
        self._demuxer = WebmDemuxer() if encoding == "webm-opus" else OggDemuxer()
        self._format = stream
        self._layout = "stereo" if stream.channels == 2 else "mono"
        self._decoder: Any = None
        self._resampler: Any = None
        self._skip_samples = 0

    def feed(self, data: bytes, budget_s: float = math.inf) -> Decoded:
        pieces: list[bytes] = []
        problems: list[str] = []
        over_budget_s = 0.0
        for item in self._demuxer.feed(data):
            if isinstance(item, OpusHead):
                self._start(item)
            elif isinstance(item, Corrupt):
                problems.append(f"{item.reason} ({item.skipped} bytes skipped)")
            elif self._decoder is None:
                problems.append("Opus audio before the stream's header; a recording must be sent from its start")
            elif over_budget_s or (budget_s := budget_s - opus_packet_s(item)) < 0:
                over_budget_s += opus_packet_s(item)
            else:
                try:
                    pieces.extend(self._decode(item))
                except (self._av.FFmpegError, ValueError) as exc:
                    problems.append(f"an Opus packet that does not decode ({type(exc).__name__})")
        return Decoded(b"".join(pieces), "; ".join(dict.fromkeys(problems)) or None, over_budget_s)

    def _start(self, head: OpusHead) -> None:
        self._decoder = self._av.CodecContext.create("opus", "r")
        self._decoder.extradata = head.data
        self._resampler = self._av.AudioResampler(format="s16", layout=self._layout, rate=self._format.sample_rate)
        self._skip_samples = round(head.pre_skip * self._format.sample_rate / OPUS_RATE_HZ)

    def _decode(self, packet: bytes) -> list[bytes]:
        out = []
        for frame in self._decoder.decode(self._av.Packet(packet)):
            for piece in self._resampler.resample(frame):
                pcm: np.ndarray = piece.to_ndarray().reshape(-1)  # s16 packed: one row, channels interleaved
                if self._skip_samples:
                    skip = min(self._skip_samples, len(pcm) // self._format.channels)
                    self._skip_samples -= skip
                    pcm = pcm[skip * self._format.channels :]
                out.append(pcm.astype("<i2").tobytes())
        return out


def audio_input(encoding: Encoding, declared: AudioFormat, stream: AudioFormat) -> AudioInput:
    """The input stage for a session's declared encoding; `stream` is the format its transcriber was opened at."""
    if encoding == "linear16":
        return PcmInput(declared, stream)
    return OpusInput(encoding, stream)
