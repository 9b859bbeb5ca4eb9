"""Finals Deepgram owes on one Nova-3 connection: the answers to Finalize, and the watchdog for finals that never come.

Users of similar services report finals that never arrive after speech ends. Here, when the interims stopped
growing (speech ended) or a second of audio went unanswered, and no final came for DEEPGRAM_FINAL_WATCHDOG_S,
the stream sends Finalize; if even that goes unanswered as long, the connection is stuck and replaced.
Times are time.monotonic() (the event loop's clock, without anyio's per-call backend lookup).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import anyio

from presales_ws.transcribers.reconnect import StuckStream


class FinalWatchdog:
    """What the current connection has been sent and answered, and when to ask for (or give up on) a final."""

    def __init__(self, channels: int, bytes_per_s: int, bound_s: float, log: Any) -> None:
        self._channels = channels
        self._bytes_per_s = bytes_per_s
        self._bound_s = bound_s
        self._log = log
        self.last_message_at = 0.0
        self._sent_at_last_message = 0  # session byte position sent when the last message came
        self._overdue_from: float | None = None  # a second of audio went out with nothing back since
        # While no final has come: when the interims last brought new words, and where those words end.
        self._unfinalized_since: float | None = None
        self._interim_end_s: float | None = None
        self._finalize_sent_at: float | None = None
        self._finalizes_sent = 0
        self._answers = [0] * channels  # from_finalize results, per channel
        self.answered = anyio.Event()  # every Finalize sent has been answered on every channel

    def connected(self, sent: int) -> None:
        """A new connection owes nothing yet."""
        self.last_message_at = time.monotonic()
        self._sent_at_last_message = sent
        self._overdue_from = None
        self._unfinalized_since = self._finalize_sent_at = self._interim_end_s = None
        self._finalizes_sent = 0
        self._answers = [0] * self._channels

    def heard(self, sent: int) -> None:
        """A message came: Deepgram is alive, whatever it said."""
        self.last_message_at = time.monotonic()
        self._sent_at_last_message = sent
        self._overdue_from = None

    def sent_audio(self, sent: int, now: float) -> None:
        """Audio went out at `now`: a second of it unanswered starts the silent clock."""
        if self._overdue_from is None and sent - self._sent_at_last_message >= self._bytes_per_s:
            self._overdue_from = now

    def interim(self, end_s: float) -> None:
        """An interim with words ending at `end_s` (session time): new words mean speech goes on."""
        if self._interim_end_s is None or end_s > self._interim_end_s:
            self._interim_end_s, self._unfinalized_since = end_s, time.monotonic()

    def final(self, channel: int, *, from_finalize: bool) -> None:
        self._unfinalized_since = self._finalize_sent_at = self._interim_end_s = None
        if from_finalize:
            self._answers[channel] += 1
            if min(self._answers) >= self._finalizes_sent:
                self.answered.set()

    def finalize_sent(self, *, watched: bool) -> None:
        """A Finalize went out; `watched`: the connection is replaced if it goes unanswered."""
        self._finalizes_sent += 1
        if watched:
            self._finalize_sent_at = time.monotonic()

    def expect_close(self) -> None:
        """The stream ends: `answered` waits for the Finalize about to go out."""
        self.answered = anyio.Event()

    def check(self) -> Literal["finalize"] | None:
        """Speech ended (the interims stopped growing) but no final came back: "finalize" asks for one; if even
        that goes unanswered, StuckStream. Timed from the last new word, not the first: while speech goes on,
        Deepgram may hold a final back for several seconds (its own cadence, `endpointing` after a pause), and
        a Finalize then would cut the sentence in two."""
        now = time.monotonic()
        bound = self._bound_s
        if self._finalize_sent_at is not None:
            if self.last_message_at < self._finalize_sent_at and now - self._finalize_sent_at >= bound:
                self._log.warning("deepgram.stuck", waited_s=round(now - self._finalize_sent_at, 1))
                raise StuckStream("no answer to Finalize")
            return None
        waiting = self._unfinalized_since is not None and now - self._unfinalized_since >= bound
        # A second or more of audio is outstanding, and has been for `bound`, with nothing at all coming back.
        silent = self._overdue_from is not None and now - self._overdue_from >= bound
        if waiting or silent:
            self._log.warning("deepgram.final_overdue", waited_s=bound, silent=silent)
            return "finalize"
        return None
