"""Flux (/v2/listen) for the Deepgram-compatible test server: turns instead of results, in Flux's wire format.

Recognition is /v1's (tests/deepgram_server.py): speech regions are identified by their first samples and their
scripted words spread evenly over them. What comes back is Flux's: `Connected`, then `TurnInfo` messages whose
`event` follows Flux's state machine (StartOfTurn -> Update... -> [EagerEndOfTurn -> TurnResumed...] -> EndOfTurn),
each carrying the turn's transcript and words so far, on the connection's own clock. One connection is one mono
stream: Flux has no channels and no diarization.

The end of a turn is modelled, not learned: the end-of-turn confidence grows with the silence after the last word,
fast after a finished sentence and slowly after words that clearly go on (Flux weighs both), so
`EndOfTurn` comes when it reaches `eot_threshold` (or after `eot_timeout_ms` of silence), an `EagerEndOfTurn`
first when it passes `eager_eot_threshold`, and speech in between is `TurnResumed`. Audio time, not wall time:
with no audio coming in, a turn never ends on its own (as on Flux). `ForceEndTurn` ends the open turn at once;
`CloseStream` sends an `Update` for what was heard and closes without a close code, finalizing nothing (Flux's
documented behaviour). Flux takes no `KeepAlive` message (one closes the stream): WebSocket pings keep an idle
connection open, and the fake closes one that sends neither audio nor pings for `Plan.idle_timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed

from tests.deepgram_server import ConnectionRecord, FakeDeepgram, TurnRecord, _Channel, _Connection, _word_count

UPDATE_EVERY_S = 0.25  # an Update for about every 0.25 s of audio (Flux's documented pace)
# Silence (ms) after which the end-of-turn confidence reaches 1.0, by what the words so far say.
CONFIDENCE_RISE_MS = {"complete": 400, "unsure": 1200, "incomplete": 3000}
_CONNECTIVES = "and or but because if with to of for from in on at by about the a an your our my their how what which"
_GOES_ON = frozenset(f"{_CONNECTIVES} that is are was were can could would should will do does".split())
_WORD = re.compile(r"[a-z']+")


def ending(transcript: str) -> str:
    """How a transcript ends: a finished sentence, words that clearly go on, or no sign either way."""
    text = transcript.strip()
    words = _WORD.findall(text.lower())
    if not words:
        return "unsure"
    if text.endswith((",", ";", ":", "-")) or words[-1] in _GOES_ON:
        return "incomplete"
    return "complete" if text.endswith((".", "?", "!")) else "unsure"


class FluxSession:
    """One /v2/listen connection: mono audio in, TurnInfo out."""

    def __init__(self, fake: FakeDeepgram, ws: _Connection, record: ConnectionRecord) -> None:
        self.fake, self.ws, self.record = fake, ws, record
        q = record.query
        self.rate = int(q.get("sample_rate", "16000"))
        self.eot_threshold = float(q.get("eot_threshold", "0.7"))
        self.eager_threshold = float(q["eager_eot_threshold"]) if "eager_eot_threshold" in q else None
        self.eot_timeout = int(q.get("eot_timeout_ms", "5000")) * self.rate // 1000  # samples
        self.track = _Channel()
        self.request_id = str(uuid.uuid4())
        self.sequence = 0
        self.turn_index = 0
        self.state = "idle"  # "ongoing" | "awaiting" (after an EagerEndOfTurn)
        self.started = False  # StartOfTurn sent for the open turn
        self.turn_start = 0
        self.last_update = 0
        self.last_activity = time.monotonic()

    # --- outgoing ---------------------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        if self.fake.plan.delay_s:
            await asyncio.sleep(self.fake.plan.delay_s)
        message["sequence_id"] = self.sequence
        self.sequence += 1
        await self.ws.send(json.dumps(message))

    def words(self) -> list[dict[str, Any]]:
        """The open turn's words heard so far (a word counts once its proportional end has been received)."""
        out: list[dict[str, Any]] = []
        for pending in self.track.pending:
            utterance = pending.utterance
            texts = utterance.text.split() if utterance else ["unknown", "speech"]
            length = utterance.n_samples if utterance else self.rate
            n = len(texts)
            for i in range(pending.words_sent, n):
                start = pending.start + length * i / n
                end = pending.start + length * (i + (1.0 if i == n - 1 else 0.8)) / n
                if end > self.track.position:
                    break
                out.append(
                    {
                        "word": texts[i],
                        "confidence": 0.98,
                        "start": round(start / self.rate, 4),
                        "end": round(end / self.rate, 4),
                    }
                )
        return out

    def confidence(self, words: list[dict[str, Any]]) -> float:
        silence_ms = (self.track.position - 1 - self.track.last_nonzero) * 1000 / self.rate
        if not words or silence_ms <= 0:
            return 0.0
        return min(1.0, silence_ms / CONFIDENCE_RISE_MS[ending(" ".join(w["word"] for w in words))])

    async def turn_info(
        self, event: str, words: list[dict[str, Any]], confidence: float, trigger: str | None = None
    ) -> None:
        transcript = " ".join(w["word"] for w in words)
        message: dict[str, Any] = {
            "type": "TurnInfo",
            "request_id": self.request_id,
            "event": event,
            "turn_index": self.turn_index,
            "audio_window_start": round(
                (self.turn_start if self.state != "idle" else self.track.position) / self.rate, 4
            ),
            "audio_window_end": round(self.track.position / self.rate, 4),
            "transcript": transcript,
            "words": words,
            "end_of_turn_confidence": round(confidence, 3),
        }
        if trigger is not None:
            message["trigger"] = trigger
        await self.send(message)
        self.last_update = self.track.position
        if event != "Update":
            self.record.turns.append(TurnRecord(event, transcript, self.turn_index, trigger, time.monotonic()))

    async def end_turn(self, words: list[dict[str, Any]], confidence: float, trigger: str) -> None:
        await self.turn_info("EndOfTurn", words, confidence, trigger)
        remaining = len(words)
        for pending in self.track.pending:  # the words in the final are spoken for
            taken = min(remaining, _word_count(pending) - pending.words_sent)
            pending.words_sent += taken
            remaining -= taken
        self.track.pending = [p for p in self.track.pending if p.words_sent < _word_count(p)]
        self.turn_index += 1
        self.state, self.started = "idle", False

    # --- incoming ---------------------------------------------------------------------------------------------

    async def audio(self, data: bytes) -> None:
        before = self.track.position
        self.track.hear(np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2"), self.rate, self.fake.script)
        spoke = self.track.last_nonzero >= before
        if spoke and self.state == "idle":
            self.state = "ongoing"
            self.turn_start = min((p.start for p in self.track.pending), default=before)
        elif spoke and self.state == "awaiting":
            await self.turn_info("TurnResumed", self.words(), 0.0)
            self.state = "ongoing"
        words = self.words() if self.state != "idle" else []
        confidence = self.confidence(words)
        if self.state != "idle" and words and not self.started:
            self.started = True
            await self.turn_info("StartOfTurn", words, confidence)
        if self.state != "idle" and words:
            eager = self.eager_threshold
            ending_now = (
                confidence >= self.eot_threshold or self.track.position - self.track.last_nonzero > self.eot_timeout
            )
            if self.state == "ongoing" and eager is not None and (confidence >= eager or ending_now):
                await self.turn_info("EagerEndOfTurn", words, confidence)
                self.state = "awaiting"
            if ending_now:
                await self.end_turn(words, confidence, "model" if confidence >= self.eot_threshold else "timeout")
                return
        if self.track.position - self.last_update >= UPDATE_EVERY_S * self.rate:
            await self.turn_info("Update", words, confidence)

    async def control(self, kind: str | None) -> bool:
        """A JSON message from the client; False when the connection is over."""
        self.record.control.append(str(kind))
        if kind == "ForceEndTurn":
            if self.state != "idle":  # no turn in progress: ignored, as on Flux
                words = self.words()
                await self.end_turn(words, self.confidence(words), "manual")
            return True
        if kind == "CloseStream":
            await self.turn_info("Update", self.words() if self.state != "idle" else [], 0.0)
            await self.ws.close(None)  # type: ignore[arg-type]  # no close code, as Flux does
            return False
        if kind == "Configure":
            return True
        await self.send({"type": "Error", "code": "UNPARSABLE_CLIENT_MESSAGE", "description": f"unknown type {kind}"})
        await self.ws.close(1011, "unparsable client message")
        return False

    async def serve(self) -> None:
        plan, attempt = self.fake.plan, self.record.index
        await self.send({"type": "Connected", "request_id": self.request_id})
        watcher = asyncio.create_task(self.idle_watch())
        try:
            async for message in self.ws:
                self.last_activity = time.monotonic()
                if isinstance(message, bytes):
                    self.record.audio_bytes += len(message)
                    if self.fake.record_audio:
                        self.record.audio += message
                    await self.audio(message)
                    received = self.record.audio_bytes
                    if attempt in plan.drop_after_bytes and received >= plan.drop_after_bytes[attempt]:
                        self.ws.transport.abort()  # no close frame: a network drop
                        return
                    if attempt in plan.close_1011_after_bytes and received >= plan.close_1011_after_bytes[attempt]:
                        await self.send({"type": "Error", "code": "INTERNAL_SERVER_ERROR", "description": "internal"})
                        await self.ws.close(1011, "internal error")
                        return
                    continue
                if not await self.control(json.loads(message).get("type")):
                    return
        except ConnectionClosed:
            pass
        finally:
            watcher.cancel()

    async def idle_watch(self) -> None:
        timeout = self.fake.plan.idle_timeout_s
        while True:
            await asyncio.sleep(0.1)
            if time.monotonic() - max(self.last_activity, self.record.last_ping_at) >= timeout:
                await self.send({"type": "Error", "code": "TIMEOUT", "description": "no audio and no ping received"})
                await self.ws.close(1011, "idle")
                return
