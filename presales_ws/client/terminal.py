"""The live terminal view of `presales-ws stream`: what a person watching a call in a terminal sees.

On a terminal the bottom line is live (a progress bar, the current interims and any answer still being
written, rewritten in place with `\\r`); finals, statuses, errors and complete suggestions scroll above it.
Anywhere else (a pipe, a file, CI) every message is one plain line and nothing is rewritten, so the output
can be read and grepped.
"""

from __future__ import annotations

import shutil
import statistics
import time
from typing import TextIO

from presales_ws.audio import ArrivalClock
from presales_ws.protocol import Error, ServerMessage, Status, Suggestion, Transcript

PROGRESS_BAR_CHARS = 24
REDRAW_INTERVAL_S = 0.1  # progress redraws at most this often: 50 frames a second would flood a slow terminal
CLEAR_LINE = "\r\x1b[K"


class TerminalView:
    """Interims rewritten in place on a terminal (one line each elsewhere); finals printed with role and time."""

    def __init__(self, out: TextIO, clock: ArrivalClock, *, total_audio_s: float | None = None) -> None:
        """`clock` says when each stretch of audio was sent: the moment a live caller spoke those words."""
        self.out = out
        self.clock = clock
        self.total_audio_s = total_audio_s
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.finals = 0
        self.words = 0
        self.latencies_s: list[float] = []
        self._interims: dict[int, str] = {}
        self._writing: dict[tuple[int, float, float], str] = {}  # a streamed answer so far, per question
        self._live_drawn = False
        self._last_redraw = 0.0

    def show(self, message: ServerMessage) -> None:
        arrived = time.monotonic()
        if isinstance(message, Transcript):
            label = self._label(message)
            if not message.is_final:
                if self.tty:
                    self._interims[message.channel] = f"{label} … {message.text}"
                    self._redraw(force=True)
                else:
                    self._print(f"{label} … {message.text}")
                return
            self._interims.pop(message.channel, None)
            if not message.text:  # an empty final only clears the interim
                self._redraw(force=True)
                return
            self.finals += 1
            self.words += len(message.text.split())
            sent = self.clock.arrival(message.end)
            lag = ""
            if sent is not None:
                self.latencies_s.append(arrived - sent)
                lag = f"   (+{arrived - sent:.2f} s)"
            self._print(f"{label}   {message.text}{lag}")
        elif isinstance(message, Error):
            self._print(f"error {message.code}: {message.message}")
        elif isinstance(message, Status):
            details = {k: v for k, v in ((f, getattr(message, f)) for f in message.__struct_fields__) if v}
            details.pop("state", None)
            details.pop("resume_token", None)  # it reopens the session: not for a screen or a pasted log
            self._print(f"status {message.state} {details}" if details else f"status {message.state}")
        elif isinstance(message, Suggestion):
            self._suggestion(message)

    def _suggestion(self, message: Suggestion) -> None:
        """A streamed answer is rewritten on the live line as it grows (a line each in a pipe), then printed."""
        key = (message.channel, message.start, message.end)
        if message.partial:
            line = f"suggestion … {message.question} -> {message.response}"
            if self.tty:
                self._writing[key] = line
                self._redraw(force=True)
            else:
                self._print(line)
            return
        self._writing.pop(key, None)
        if not message.response:
            self._print(f"suggestion withdrawn (the answer broke off): {message.question}")
        else:
            self._print(f"suggestion ({message.confidence:.2f}) {message.question} -> {message.response}")

    def progress(self) -> None:
        """The audio sent so far moved on: redraw the progress bar (terminals only)."""
        self._redraw(force=False)

    def summary(self, close_code: int | None) -> str:
        """The last line: how much came back, and how long after the end of speech the finals arrived."""
        self._clear_live()
        elapsed_s = time.monotonic() - self.started
        parts = [
            f"{self.finals} finals, {self.words} words",
            f"{self.clock.audio_s:.1f} s of audio in {elapsed_s:.1f} s",
        ]
        if self.latencies_s:
            parts.append(
                f"end of speech to final: median {statistics.median(self.latencies_s):.2f} s, "
                f"max {max(self.latencies_s):.2f} s"
            )
        parts.append(f"closed {close_code}")
        line = "-- " + ", ".join(parts)
        self.out.write(line + "\n")
        self.out.flush()
        return line

    @staticmethod
    def _label(message: Transcript) -> str:
        who = message.speaker + (f"#{message.speaker_id}" if message.speaker_id is not None else "")
        return f"{who:<12} [{message.start:6.2f}-{message.end:6.2f}]"

    def _print(self, line: str) -> None:
        """A line that stays: above the live line on a terminal."""
        self._clear_live()
        self.out.write(line + "\n")
        self._redraw(force=True)
        self.out.flush()

    def _clear_live(self) -> None:
        if self._live_drawn:
            self.out.write(CLEAR_LINE)
            self._live_drawn = False

    def _redraw(self, *, force: bool) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last_redraw < REDRAW_INTERVAL_S:
            return
        self._last_redraw = now
        pieces = []
        if self.total_audio_s:
            done = min(1.0, self.clock.audio_s / self.total_audio_s)
            filled = round(done * PROGRESS_BAR_CHARS)
            bar = "█" * filled + "░" * (PROGRESS_BAR_CHARS - filled)
            pieces.append(f"{bar} {done:4.0%} {self.clock.audio_s:5.1f}/{self.total_audio_s:.1f} s")
        pieces.extend(self._interims[channel] for channel in sorted(self._interims))
        pieces.extend(self._writing.values())
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.out.write(CLEAR_LINE + "  │  ".join(pieces)[:width])
        self._live_drawn = True
        self.out.flush()
