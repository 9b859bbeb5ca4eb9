"""Per-session audio rate limit: a token bucket allowing a burst over real time, not a sustained flood."""

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

    def take(self, amount: int) -> bool:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True
