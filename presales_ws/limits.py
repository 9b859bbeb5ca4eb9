"""Per-session audio rate limit: a token bucket allowing a burst over real time, not a sustained flood.

The session counts in seconds of audio (decoded, for compressed audio), so the limit means the same for PCM
and Opus; the classes themselves count any amount."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` bytes a second, up to `capacity` saved up; a frame either fits whole or is refused."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._at = self._clock()

    def grant(self, amount: float) -> None:
        """Allow `amount` more at once, beyond the capacity (a resumed client resending what it recorded)."""
        self._tokens += amount

    def available(self) -> float:
        """What a frame may hold now; refilled up to this instant."""
        now = self._clock()
        self._tokens = min(max(self.capacity, self._tokens), self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def take(self, amount: float) -> bool:
        if amount > self.available():
            return False
        self._tokens -= amount
        return True

    def spend(self, amount: float) -> None:
        """Take `amount` that `available()` has just allowed: `take` without a second refill (and clock read)."""
        self._tokens -= amount


class Flood:
    """Audio refused by the rate limit, counted as episodes: refusals less than `gap_s` apart are one flood.

    A client that keeps flooding is one whose episode outgrows `max_bytes` (a burst's worth of refused audio)
    or lasts longer than `max_s`. Accepted frames in between do not end an episode: the bucket refills a little
    all the time, so a client sending at 3x real time has every third frame accepted and is still flooding.
    """

    def __init__(self, max_bytes: float, max_s: float, gap_s: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self.max_s = max_s
        self.gap_s = gap_s
        self.bytes = 0.0
        self._started = self._last = -1e9

    def refused(self, amount: float, now: float) -> bool:
        """Count refused audio; True once the episode is a flood to end the session for."""
        if now - self._last > self.gap_s:
            self._started, self.bytes = now, 0.0
        self._last = now
        self.bytes += amount
        return self.bytes > self.max_bytes or now - self._started > self.max_s
