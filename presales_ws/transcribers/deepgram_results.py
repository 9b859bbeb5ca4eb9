"""Nova-3's results on the session's time: transcript events for the client, and what no longer needs a replay.

Each provider connection starts at the commit point (`origin`): the end of the audio every channel has a final
for. Its timestamps are rebased onto session time by adding `origin`, and words the client already has as
finals are dropped, so a replay after a reconnect loses no word and repeats none. A diarized final is split at
speaker changes; without our own end of turn (TURN_DETECTION=off) Deepgram's `speech_final` and UtteranceEnd
close utterances, with it the turn detector does (deepgram_turns.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from presales_ws.audio import AudioFormat
from presales_ws.transcribers import deepgram_messages as messages
from presales_ws.transcribers.base import TranscriberEvent, TranscriptEvent
from presales_ws.transcribers.deepgram_turns import TurnDetector
from presales_ws.transcribers.deepgram_watchdog import FinalWatchdog
from presales_ws.transcribers.replay import ReplayBuffer

DUPLICATE_TOLERANCE_S = 0.005  # timestamps are rounded to ms upstream


class ResultMapper:
    """One session's results, per channel: what the client has as finals, and where the replay may start."""

    def __init__(
        self,
        fmt: AudioFormat,
        buffer: ReplayBuffer,
        watchdog: FinalWatchdog,
        turns: TurnDetector | None,
        emit: Callable[[TranscriberEvent], Awaitable[None]],
        log: Any,
    ) -> None:
        self._channels = fmt.channels
        self._sample_rate = fmt.sample_rate
        self._frame_bytes = fmt.frame_bytes
        self._bytes_per_s = fmt.bytes_per_second
        self._buffer = buffer
        self._watchdog = watchdog
        self._turns = turns
        self._emit = emit
        self._log = log
        self.latencies_s: list[float] = []  # speech end to its final, for the stream's summary
        self._origin_s = 0.0  # session time of the current connection's time 0
        self._committed_s = [0.0] * fmt.channels  # per channel: session seconds the client has finals for
        self._delivered_s = [0.0] * fmt.channels  # per channel: end of the last word sent in a final
        self._utterance_open = [False] * fmt.channels  # a final went out without utterance_end

    def connected(self, origin: int) -> None:
        """A connection that starts at session byte position `origin`."""
        self._origin_s = origin / self._bytes_per_s

    async def on_message(self, message: messages.Message | None, sent: int) -> None:
        """One message from Deepgram; `sent`: session byte position sent so far (a final's latency ends there)."""
        if isinstance(message, messages.Results):
            await self.on_results(message, sent)
        elif isinstance(message, messages.UtteranceEnd):
            await self.on_utterance_end(message)
        elif isinstance(message, messages.ProviderError):
            self._log.warning("deepgram.error", variant=message.variant, description=message.description)

    async def on_results(self, result: messages.Results, sent: int) -> None:
        channel = result.channel_index[0] if result.channel_index else 0
        if not 0 <= channel < self._channels:
            return
        origin_s = self._origin_s
        alternative = result.channel.alternatives[0] if result.channel.alternatives else None
        delivered = self._delivered_s[channel] + DUPLICATE_TOLERANCE_S
        # A replayed connection may hear again words the client already has as finals: those end by `delivered`.
        words = [w for w in (alternative.words if alternative else []) if origin_s + w.end > delivered]
        if not result.is_final:
            if words:
                self._watchdog.interim(origin_s + words[-1].end)
                interim = _piece(words, channel, origin_s, is_final=False, utterance_end=False)
                await self._emit(self._turns.on_interim(channel, interim) if self._turns else interim)
            return

        from_finalize = bool(result.from_finalize)
        self._watchdog.final(channel, from_finalize=from_finalize)
        pieces = split_by_speaker(words)
        if self._turns:
            finals = [_piece(p, channel, origin_s, is_final=True, utterance_end=False) for p in pieces]
            await self._turns.on_final(channel, finals, from_finalize=from_finalize)
        else:
            await self._close_utterances(channel, pieces, result, sent)
        self._commit(channel, pieces, result)

    async def _close_utterances(
        self, channel: int, pieces: list[list[messages.Word]], result: messages.Results, sent: int
    ) -> None:
        """Deepgram's own end of turn: `speech_final` closes the utterance with its last piece."""
        origin_s = self._origin_s
        speech_final = bool(result.speech_final)
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            await self._emit(_piece(piece, channel, origin_s, is_final=True, utterance_end=last and speech_final))
        if pieces:
            self._utterance_open[channel] = not speech_final
            if speech_final:
                self.latencies_s.append(sent / self._bytes_per_s - (origin_s + pieces[-1][-1].end))
        elif speech_final and self._utterance_open[channel]:
            await self._emit(self._marker(channel, origin_s + result.start))

    def _commit(self, channel: int, pieces: list[list[messages.Word]], result: messages.Results) -> None:
        """A final's words are the client's (a replay drops them) and its audio need not be replayed."""
        origin_s = self._origin_s
        if pieces:
            self._delivered_s[channel] = origin_s + pieces[-1][-1].end
        self._committed_s[channel] = max(self._committed_s[channel], origin_s + result.start + result.duration)
        self._buffer.commit(int(min(self._committed_s) * self._sample_rate) * self._frame_bytes)

    async def on_utterance_end(self, message: messages.UtteranceEnd) -> None:
        """UtteranceEnd after a final that did not close the utterance: an empty final carries the flag."""
        if self._turns:
            return  # the turn detector closes every utterance itself
        channels = getattr(message, "channel", None) or [0]
        channel = channels[0]
        if 0 <= channel < self._channels and self._utterance_open[channel]:
            end = self._origin_s + float(getattr(message, "last_word_end", 0.0) or 0.0)
            await self._emit(self._marker(channel, max(end, 0.0)))

    def _marker(self, channel: int, at_s: float) -> TranscriptEvent:
        self._utterance_open[channel] = False
        return TranscriptEvent(
            text="", is_final=True, channel=channel, start=round(at_s, 3), end=round(at_s, 3), utterance_end=True
        )


def _piece(
    words: list[messages.Word], channel: int, origin_s: float, *, is_final: bool, utterance_end: bool
) -> TranscriptEvent:
    text = " ".join((w.punctuated_word or w.word) for w in words)
    speakers = [w.speaker for w in words if w.speaker is not None]
    return TranscriptEvent(
        text=text,
        is_final=is_final,
        channel=channel,
        start=round(origin_s + words[0].start, 3),
        end=round(origin_s + words[-1].end, 3),
        confidence=round(sum(w.confidence for w in words) / len(words), 3),
        speaker_id=speakers[-1] if speakers else None,
        utterance_end=utterance_end,
    )


def split_by_speaker(words: list[messages.Word]) -> list[list[messages.Word]]:
    """A final spoken by several people becomes one piece per speaker turn, each with its own speaker id."""
    pieces: list[list[messages.Word]] = []
    for word in words:
        if pieces and pieces[-1][-1].speaker == word.speaker:
            pieces[-1].append(word)
        else:
            pieces.append([word])
    return pieces
