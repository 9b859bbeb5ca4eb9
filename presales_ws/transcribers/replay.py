"""Audio not yet covered by a final transcript, kept so a new provider connection can hear it again."""

from __future__ import annotations


class ReplayBuffer:
    """Session audio from the last committed position to the newest byte, addressed by session byte position.

    A provider connection that drops loses whatever it had not finalized; replaying from the commit point on
    the next connection loses nothing, and words before the commit point are known to be delivered already.
    """

    def __init__(self, max_bytes: int, frame_bytes: int) -> None:
        self._data = bytearray()
        self._start = 0
        self._max = max_bytes - max_bytes % frame_bytes
        self._frame = frame_bytes
        self.dropped_bytes = 0  # audio pushed out by the bound before any final covered it

    @property
    def start(self) -> int:
        return self._start

    @property
    def end(self) -> int:
        return self._start + len(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def append(self, pcm: bytes) -> int:
        """Add audio; returns how many of the oldest bytes the bound pushed out (0 normally)."""
        self._data += pcm
        excess = len(self._data) - self._max
        if excess <= 0:
            return 0
        excess += -excess % self._frame
        del self._data[:excess]
        self._start += excess
        self.dropped_bytes += excess
        return excess

    def commit(self, position: int) -> None:
        """Forget audio before `position` (rounded down to a whole frame): a final covers it."""
        position -= position % self._frame
        if position <= self._start:
            return
        position = min(position, self.end)
        del self._data[: position - self._start]
        self._start = position

    def read(self, position: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` from `position` on (never before `start`)."""
        offset = max(0, position - self._start)
        return bytes(self._data[offset : offset + max_bytes])
