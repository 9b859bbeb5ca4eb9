"""What a session knows of its audio's format: the URL's parameters, then an optional `start` message.

A client written from the seed's examples says nothing about its audio. Such a session keeps the 16 kHz mono
PCM default, and when what arrives is plainly something else (a WebM/Ogg header; PCM far faster than 16 kHz
real time, as 48 kHz is) it says which declaration is missing, once, instead of transcribing noise or
rate-limiting the client until it is closed.
"""

from __future__ import annotations

from presales_ws.audio import AudioFormat
from presales_ws.audio_input import AudioInput, audio_input
from presales_ws.containers import OGG_MAGIC, WEBM_MAGIC
from presales_ws.protocol import CONTAINER_ENCODINGS, SAMPLE_RATES_HZ, Encoding, ErrorCode, SessionParams, Start

FORMAT_FIELDS = ("sample_rate", "channels", "encoding")
RATE_FIELDS = frozenset({"sample_rate", "encoding"})  # either one, declared, says what rate the audio has
# The rate of undeclared audio is taken from 1 s to 3 s after its first frame: a client's start-up burst (a
# backlog kept while it connected) falls before the window and cannot pass for a higher sample rate.
RATE_WINDOW_S = (1.0, 3.0)
UNDECLARED_RATE_FACTOR = 2.5  # 44.1 kHz is 2.76x 16 kHz; a file sent fast from a 16 kHz client, ~1.9x
STREAM_RATE_FOR_CONTAINERS_HZ = 16000  # what Opus is decoded to, unless the URL asked for another PCM rate


class UndeclaredFormat(Exception):
    """The audio is plainly not what the session expects; `code` names what to declare."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class Declaration:
    """The session's declared audio format, and the input stage that turns client bytes into stream PCM."""

    def __init__(self, params: SessionParams, declared: frozenset[str]) -> None:
        self.declared = declared  # which of FORMAT_FIELDS the client said (URL or `start`)
        self.encoding: Encoding = params.encoding
        self.sample_rate = params.sample_rate
        self.channels: int = params.channels
        rate = self.sample_rate
        if self.encoding in CONTAINER_ENCODINGS and "sample_rate" not in declared:
            rate = STREAM_RATE_FOR_CONTAINERS_HZ
        self.stream = AudioFormat(rate, self.channels)  # what the transcriber is opened at, for the whole session
        self.input: AudioInput = self._input()
        self._rate_mark: tuple[float, float] | None = None  # (elapsed, audio seconds) when the window opened
        # No rate left to check: it was declared, or measured once. Read per frame, so a flag, not a set test.
        self.rate_settled = bool(declared & RATE_FIELDS)

    def _input(self) -> AudioInput:
        return audio_input(self.encoding, AudioFormat(self.sample_rate, self.channels), self.stream)

    def apply(self, start: Start) -> str | None:
        """Take a `start` message (before any audio); a message saying why if it contradicts what is known."""
        said = {f: getattr(start, f) for f in FORMAT_FIELDS if getattr(start, f) is not None}
        for field, value in said.items():
            current = getattr(self, field)
            if value != current and field in self.declared:
                return f"start.{field}={value} contradicts {field}={current} given before"
        if said.get("channels", self.channels) != self.channels:
            return (
                f"start.channels={said['channels']}: the channel count is fixed when the session opens; "
                f"connect with ?channels={said['channels']}"
            )
        self.encoding = said.get("encoding", self.encoding)
        self.sample_rate = said.get("sample_rate", self.sample_rate)
        self.declared = self.declared | said.keys()
        self.rate_settled = self.rate_settled or bool(self.declared & RATE_FIELDS)
        self.input = self._input()
        return None

    def check_first(self, data: bytes) -> None:
        """The first audio bytes: a recorder's container sent as PCM says itself in its first four bytes."""
        if self.encoding != "linear16":
            return
        for magic, encoding, what in ((WEBM_MAGIC, "webm-opus", "WebM"), (OGG_MAGIC, "ogg-opus", "Ogg")):
            if data.startswith(magic):
                raise UndeclaredFormat(
                    "undeclared_encoding",
                    f"this audio is {what} (a MediaRecorder stream) but the session expects PCM: connect with "
                    f'?encoding={encoding}, or send {{"type": "start", "encoding": "{encoding}"}} before the audio',
                )

    def check_rate(self, audio_s: float, elapsed_s: float, rate_limit_factor: float) -> None:
        """Undeclared PCM, `audio_s` of it `elapsed_s` after its first frame: is it another rate than 16 kHz?"""
        if self.rate_settled or elapsed_s < RATE_WINDOW_S[0]:
            return
        if self._rate_mark is None:
            self._rate_mark = (elapsed_s, audio_s)
            return
        window_s = elapsed_s - self._rate_mark[0]
        if window_s < RATE_WINDOW_S[1] - RATE_WINDOW_S[0]:
            return
        self.rate_settled = True
        speed = (audio_s - self._rate_mark[1]) / window_s
        if speed <= max(UNDECLARED_RATE_FACTOR, rate_limit_factor):
            return
        mono = min(SAMPLE_RATES_HZ, key=lambda rate: abs(rate - speed * self.stream.sample_rate))
        stereo = min(SAMPLE_RATES_HZ, key=lambda rate: abs(rate - speed * self.stream.sample_rate / 2))
        raise UndeclaredFormat(
            "undeclared_sample_rate",
            f"audio arrives at {speed:.1f}x real time for {self.stream.sample_rate} Hz mono, the default when no "
            f"format is declared: if it is {mono} Hz (or {stereo} Hz stereo), say so with ?sample_rate={mono} "
            f'or {{"type": "start", "sample_rate": {mono}}} before the audio; if it is a file, send it at real time',
        )
