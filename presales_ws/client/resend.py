"""Client side of a resume: the audio sent but not yet covered by a final, to send again from `received_s`.

Pure bookkeeping on the session's audio clock (frames), no I/O.
"""

from __future__ import annotations

MAX_RESEND_S = 30.0  # audio kept for a resume; older audio not yet final is given up (a very long outage)


class ResendBuffer:
    """Interleaved s16 PCM from frame `start` on; trimmed as finals cover it, and to MAX_RESEND_S."""

    def __init__(self, sample_rate: int, channels: int, max_s: float = MAX_RESEND_S) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_bytes = 2 * channels
        self.max_frames = int(max_s * sample_rate)
        self.start = 0  # session frame of the first buffered byte
        self._data = bytearray()
        self._covered: dict[int, float] = {}  # channel -> end (s) of its last final

    @property
    def end(self) -> int:
        """Session frame just past the last audio sent."""
        return self.start + len(self._data) // self.frame_bytes

    def sent(self, pcm: bytes) -> None:
        self._data += pcm
        excess = len(self._data) // self.frame_bytes - self.max_frames
        if excess > 0:
            self._drop(excess)

    def covered(self, channel: int, end_s: float) -> None:
        """A final on `channel` ends at `end_s`: audio before every channel's last final is no longer needed."""
        self._covered[channel] = max(end_s, self._covered.get(channel, 0.0))
        if len(self._covered) == self.channels:
            self._drop(int(min(self._covered.values()) * self.sample_rate) - self.start)

    def since(self, received_s: float) -> bytes:
        """The audio to send again for a server that holds `received_s` seconds of it."""
        frame = max(self.start, round(received_s * self.sample_rate))
        return bytes(self._data[(frame - self.start) * self.frame_bytes :])

    def restart(self) -> None:
        """A new session (the old one could not be resumed): what is buffered becomes its audio from 0."""
        self.start = 0
        self._covered.clear()

    def _drop(self, frames: int) -> None:
        frames = min(frames, len(self._data) // self.frame_bytes)
        if frames > 0:
            del self._data[: frames * self.frame_bytes]
            self.start += frames
