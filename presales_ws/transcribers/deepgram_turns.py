"""End of turn on Nova-3 (TURN_DETECTION=text): our VAD asks for each final, the words say when the turn is over.

Deepgram's own endpointing waits DEEPGRAM_ENDPOINTING_MS (1 s) after every utterance. Instead Silero VAD runs
on each channel's audio as it arrives (batched, behind an energy gate: vad_batch.py, vad_gate.py) and a
`Finalize` goes out as soon as a pause begins (TURN_COMPLETE_MS); Deepgram answers at once. The joiner then
holds that final until the words say the turn is over, so a pause inside a sentence does not cut it (joiner.py,
turns.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from presales_ws.audio import AudioFormat
from presales_ws.transcribers.base import TranscriberEvent, TranscriptEvent
from presales_ws.transcribers.joiner import UtteranceJoiner
from presales_ws.transcribers.turns import TurnPolicy
from presales_ws.transcribers.vad import SAMPLE_RATE_HZ, WINDOW_SAMPLES, PauseTracker

PCM_SCALE = 1.0 / 32768.0  # linear16 to float samples in [-1, 1)

Emit = Callable[[TranscriberEvent], Awaitable[None]]
EmitFinal = Callable[[TranscriptEvent], Awaitable[None]]


class TurnDetector:
    """One session's pauses (per channel), the Finalizes they ask for, and the finals held until the turn ends."""

    def __init__(
        self, policy: TurnPolicy, fmt: AudioFormat, vad_threshold: float, emit: Emit, emit_final: EmitFinal
    ) -> None:
        self._policy = policy
        self._channels = fmt.channels
        channels = range(fmt.channels)
        self._pauses = [PauseTracker(fmt.sample_rate, vad_threshold, batched=True, gated=True) for _ in channels]
        self._joiners = [UtteranceJoiner(policy) for _ in channels]
        self._emit = emit
        self._emit_final = emit_final
        self._words_pending = [False] * fmt.channels  # an interim with words since the channel's last final
        self._finalize_at: deque[int] = deque()  # session byte positions where a pause asked for a final
        self.finalizes = 0  # Finalizes a pause asked for
        self._last_audio_at = 0.0
        self._idle_flush_s = policy.incomplete_ms / 1000
        # Audio the VAD has not judged: at 16 kHz it is fed only once it completes a 32 ms window (a 20 ms frame
        # alone changes nothing: the tracker would only hold it), and other rates (resampled) at every frame.
        self._window_bytes = WINDOW_SAMPLES * fmt.frame_bytes if fmt.sample_rate == SAMPLE_RATE_HZ else 0
        self._unjudged: list[bytes] = []
        self._unjudged_bytes = 0  # and what the trackers hold of a window not yet complete

    def connected(self) -> None:
        """A new connection: the old connection's interims are void."""
        self._words_pending = [False] * self._channels

    # --- Finalize, where a pause asked for it -----------------------------------------------------------------

    def finalize_due(self, sent: int) -> bool:
        """The audio up to a pause has gone out (`sent`): its Finalize goes now (and is taken off the queue)."""
        if self._finalize_at and sent >= self._finalize_at[0]:
            self._finalize_at.popleft()
            self.finalizes += 1
            return True
        return False

    def finalize_within(self, end: int) -> bool:
        """A Finalize is due at or before session byte position `end`."""
        return bool(self._finalize_at) and self._finalize_at[0] <= end

    def send_limit(self, sent: int, max_bytes: int) -> int:
        """Up to the next pause's Finalize at most: a Finalize after later audio would cut its words."""
        return min(max_bytes, self._finalize_at[0] - sent) if self._finalize_at else max_bytes

    def take(self, pcm: bytes) -> bool:
        """The client's audio, as it arrives; True when it needs judging now (`judge`): it completes a VAD window,
        or a joiner holds words whose pause may have grown long enough."""
        self._last_audio_at = time.monotonic()  # per frame: cheaper than anyio.current_time() (a getpid on 3.11)
        self._unjudged.append(pcm)
        self._unjudged_bytes += len(pcm)
        return self._unjudged_bytes >= self._window_bytes or any(joiner.holding for joiner in self._joiners)

    async def judge(self, end: int) -> bool:
        """VAD on the audio taken (ending at session byte `end`); True when a pause after speech asked for a
        Finalize after this audio (the pump must wake to send it)."""
        if self._unjudged_bytes < self._window_bytes:  # no window completes: the pauses are as they were
            await self._judge_held(self._pauses)
            return False
        audio = self._unjudged[0] if len(self._unjudged) == 1 else b"".join(self._unjudged)
        self._unjudged.clear()
        self._unjudged_bytes = self._unjudged_bytes % self._window_bytes if self._window_bytes else 0
        samples = np.frombuffer(audio, dtype="<i2").astype(np.float32)
        samples *= PCM_SCALE
        asked = False
        for channel, pauses in enumerate(self._pauses):
            channel_samples = (
                samples if self._channels == 1 else np.ascontiguousarray(samples[channel :: self._channels])
            )
            resumed = await pauses.feed_batched(channel_samples)
            if pauses.spoke and pauses.silence_ms >= self._policy.complete_ms:
                pauses.mark()
                self._finalize_at.append(end)  # the pump sends Finalize right after this audio, before any after it
                asked = True
            if not resumed:
                await self._judge_held([pauses], first=channel)
        return asked

    async def _judge_held(self, pauses: list[PauseTracker], first: int = 0) -> None:
        """Held words whose pause goes on go out once it is long enough for their cue."""
        for channel, tracker in enumerate(pauses, start=first):
            joiner = self._joiners[channel]
            if joiner.holding:
                settled = not self._words_pending[channel] and not self._finalize_at
                for event in joiner.on_pause(tracker.silence_ms, settled=settled):
                    await self._emit_final(event)

    # --- finals, held until the turn is over ------------------------------------------------------------------

    def on_interim(self, channel: int, interim: TranscriptEvent) -> TranscriptEvent:
        """An interim with words: the provider owes their final; it reads on from any held words."""
        self._words_pending[channel] = True
        return self._joiners[channel].on_interim(interim)

    async def on_final(self, channel: int, pieces: list[TranscriptEvent], *, from_finalize: bool) -> None:
        """Finals through the joiner: it decides when the utterance is over.

        The answer to a pause's Finalize covers the audio up to that pause, so the pause its words are followed
        by is the one the Finalize was asked in, however far the VAD has gone since: the receive loop may have
        taken in the whole pause and the next words before the answer came (a fast client, a replay), and
        judged by the silence now, a finished sentence would wait for and merge with the next one."""
        self._words_pending[channel] = False
        pauses, joiner = self._pauses[channel], self._joiners[channel]
        silence_ms = max(pauses.silence_ms, pauses.marked_pause_ms) if from_finalize else pauses.silence_ms
        for piece in pieces:
            for out in joiner.on_final(piece, silence_ms):
                await (self._emit_final(out) if out.is_final else self._emit(out))
        if from_finalize and not pieces:  # the provider owes these words nothing more: judge them now
            settled = not self._words_pending[channel] and not self._finalize_at
            for out in joiner.on_pause(silence_ms, settled=settled):
                await self._emit_final(out)

    async def flush(self) -> None:
        """Held finals go out: the stream ends (or fails)."""
        for joiner in self._joiners:
            for event in joiner.flush():
                await self._emit_final(event)

    async def flush_idle(self) -> None:
        """Held finals go out when the client has sent no audio for as long as the longest wait."""
        if time.monotonic() - self._last_audio_at >= self._idle_flush_s:
            await self.flush()
