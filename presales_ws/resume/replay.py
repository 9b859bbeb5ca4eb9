"""Finals written to a socket that may never have reached the client.

A write that succeeds only means the bytes left for the kernel: a connection cut a moment later loses them.
Without acknowledgements, the resuming client says how far its finals go (`finals_end`, per channel), and the
finals written past that go out again, so every final arrives once.
"""

from __future__ import annotations

from collections import deque

MAX_REPLAY_FINALS = 256  # far more than the finals a connection can have in flight when it breaks


class Replay:
    def __init__(self, max_finals: int = MAX_REPLAY_FINALS) -> None:
        self._pending: dict[int, tuple[int, float]] = {}  # id(payload) -> (channel, end), queued, not written
        self._written: deque[tuple[int, float, bytes]] = deque(maxlen=max_finals)

    def expect(self, payload: bytes, channel: int, end: float) -> None:
        """A final was queued for the socket."""
        self._pending[id(payload)] = (channel, end)

    def written(self, payload: bytes) -> None:
        """Something was written; if it is a final, keep it until a resume says whether it arrived."""
        mark = self._pending.pop(id(payload), None)
        if mark is not None:
            self._written.append((mark[0], mark[1], payload))

    def delivered_end(self, channel: int) -> float:
        """The end of the last final written on `channel` (0.0 before any)."""
        return max((end for ch, end, _ in self._written if ch == channel), default=0.0)

    def unreceived(self, finals_end: dict[int, float]) -> list[bytes]:
        """Finals written past what the client says it has, oldest first; they are written again."""
        return [p for ch, end, p in self._written if ch in finals_end and end > finals_end[ch]]


def parse_finals_end(raw: str | None, channels: int) -> dict[int, float]:
    """`finals_end=12.3` or `12.3,11.8` (per channel) -> {channel: end}; anything malformed -> {} (nothing again)."""
    if not raw or len(raw) > 64:
        return {}
    try:
        values = [float(part) for part in raw.split(",")]
    except ValueError:
        return {}
    if len(values) != channels or not all(0.0 <= v < 1e7 for v in values):
        return {}
    return dict(enumerate(values))
