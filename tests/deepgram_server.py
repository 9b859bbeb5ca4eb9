"""A Deepgram-compatible server for tests: /v1/listen (Nova) and /v2/listen (Flux, tests/flux_server.py) in
Deepgram's wire formats, with deterministic "recognition".

Fixture audio has digital silence around every utterance, so a speech region is a run of non-zero samples.
The first 800 samples of a region identify which scripted utterance it is (audio arrives losslessly), and its
words are spread evenly over the utterance's length. Timings are on each connection's own clock, as
Deepgram's are. Finals come when a pause reaches `endpointing` (timed on the audio), and in answer to
Finalize and CloseStream; unlike Deepgram, none every few seconds inside long speech. It can misbehave on
cue (`Plan`) the way real connections do.

Run standalone for manual checks: `python -m tests.deepgram_server --port 8766 --fixture call_two_channel.wav`.

With `echo_frames` (bench/perf.py) it recognises nothing: every 20 ms frame received is answered at once by
a final whose one word is the frame id a benchmark client wrote into the frame's first 8 bytes, and the
receive and send times are recorded, so the overhead the service adds on each side can be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event

from presales_ws.audio import AudioFormat
from presales_ws.audio_input import OpusInput
from presales_ws.containers import WEBM_MAGIC

FIXTURES = Path(__file__).parent / "fixtures"
FINGERPRINT_SAMPLES = 800
REGION_GAP_S = 0.3  # zeros that separate two speech regions
INTERIM_EVERY_S = 0.5
EMPTY_FINAL_EVERY_S = 1.0


@dataclass(frozen=True)
class ScriptedUtterance:
    text: str
    speaker: int
    fingerprint: bytes
    n_samples: int  # first to last non-zero sample


@dataclass(frozen=True)
class Script:
    utterances: tuple[ScriptedUtterance, ...]
    sample_rate: int = 16000

    @classmethod
    def from_regions(
        cls, pcm: bytes, texts: list[str], speaker: int = 0, rate: int = 16000, *, noise_floor: int = 0
    ) -> Script:
        """A mono recording whose speech regions (runs of non-zero samples) say `texts`, in order; samples
        within `noise_floor` of zero count as silence (as `Plan.noise_floor` makes the server hear them)."""
        track = squelch(np.frombuffer(pcm, dtype="<i2"), noise_floor)
        nonzero = np.flatnonzero(track)
        starts = [int(nonzero[0])]
        ends = []
        gaps = np.flatnonzero(np.diff(nonzero) >= int(REGION_GAP_S * rate))
        for gap in gaps.tolist():
            ends.append(int(nonzero[gap]))
            starts.append(int(nonzero[gap + 1]))
        ends.append(int(nonzero[-1]))
        if len(starts) != len(texts):
            raise ValueError(f"{len(starts)} speech regions for {len(texts)} texts")
        return cls(
            tuple(
                ScriptedUtterance(text, speaker, track[a : a + FINGERPRINT_SAMPLES].astype("<i2").tobytes(), b - a + 1)
                for text, a, b in zip(texts, starts, ends, strict=True)
            ),
            rate,
        )

    @classmethod
    def from_manifest(cls, file: str, speakers: dict[int, int] | None = None, *, mono_mix: bool = False) -> Script:
        """The fixture's utterances; speaker = channel unless `speakers` maps channel -> speaker id."""
        manifest = {e["file"]: e for e in json.loads((FIXTURES / "fixtures.json").read_text())}[file]
        import wave

        with wave.open(str(FIXTURES / file), "rb") as wav:
            rate, channels = wav.getframerate(), wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, channels)
        mixed = samples.astype(np.int32).sum(axis=1).clip(-32768, 32767).astype("<i2")
        utterances = []
        for u in manifest["utterances"]:
            track = mixed if mono_mix else samples[:, u["channel"]]
            a, b = round(u["start_s"] * rate), round(u["end_s"] * rate)
            nonzero = np.flatnonzero(track[a:b])
            first, last = a + int(nonzero[0]), a + int(nonzero[-1])
            utterances.append(
                ScriptedUtterance(
                    text=u["text"],
                    speaker=(speakers or {}).get(u["channel"], u["channel"]),
                    fingerprint=track[first : first + FINGERPRINT_SAMPLES].astype("<i2").tobytes(),
                    n_samples=last - first + 1,
                )
            )
        return cls(tuple(utterances), rate)

    def lookup(self, fingerprint: bytes) -> ScriptedUtterance | None:
        return next((u for u in self.utterances if u.fingerprint == fingerprint), None)


def squelch(samples: np.ndarray, noise_floor: int) -> np.ndarray:
    """Samples within `noise_floor` of zero made zero: decoded Opus has no digital silence between words."""
    return (
        np.where(np.abs(samples.astype(np.int32)) <= noise_floor, 0, samples).astype("<i2") if noise_floor else samples
    )


@dataclass
class Plan:
    """Misbehaviour by connection attempt (0, 1, 2, ... in arrival order, refused handshakes included)."""

    refuse: dict[int, int] = field(default_factory=dict)  # attempt -> HTTP status at the handshake
    drop_after_bytes: dict[int, int] = field(default_factory=dict)  # attempt -> abort TCP after N audio bytes
    close_1011_after_bytes: dict[int, int] = field(default_factory=dict)  # attempt -> Error + close 1011
    delay_s: float = 0.0  # every outgoing message waits this long
    never_final: bool = False  # finals only in answer to Finalize / CloseStream
    idle_timeout_s: float = 10.0  # Deepgram's NET-0001: no audio and no KeepAlive for this long
    noise_floor: int = 0  # samples within this of zero are heard as silence (Script.from_regions's)


@dataclass
class ConnectionRecord:
    index: int
    path: str = ""
    refused_status: int | None = None
    query: dict[str, str] = field(default_factory=dict)
    authorization_ok: bool = False
    audio: bytearray = field(default_factory=bytearray)  # everything received (unless record_audio is off)
    audio_bytes: int = 0
    control: list[str] = field(default_factory=list)
    close_code: int | None = None
    finals_sent: int = 0
    final_word_counts: list[int] = field(default_factory=list)  # words in each final sent, in order
    finals: list[tuple[str, bool, bool]] = field(default_factory=list)  # (transcript, from_finalize, speech_final)
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    echoes: list[tuple[int, float, float]] = field(default_factory=list)  # echo_frames: (id, received, final sent)
    pings: int = 0  # WebSocket ping frames received
    last_ping_at: float = 0.0
    turns: list[TurnRecord] = field(default_factory=list)  # Flux: every TurnInfo sent but Updates, in order


@dataclass(frozen=True)
class TurnRecord:
    """A Flux TurnInfo as sent: what a test asserts the order of."""

    event: str
    transcript: str
    turn_index: int
    trigger: str | None
    sent_at: float


@dataclass
class _Pending:
    utterance: ScriptedUtterance | None
    start: int  # sample index on the connection clock
    words_sent: int = 0  # words already finalized (by a Finalize mid-utterance)


def _word_count(pending: _Pending) -> int:
    return len(pending.utterance.text.split()) if pending.utterance else 2  # "unknown speech"


class _Channel:
    """Recognition state of one channel of one connection."""

    def __init__(self) -> None:
        self.position = 0  # samples received
        self.last_nonzero = -(10**9)
        self.region: _Pending | None = None  # the region whose fingerprint is being collected or matched
        self.fingerprint = bytearray()
        self.pending: list[_Pending] = []  # regions not finalized yet
        self.final_cursor = 0  # samples covered by finals
        self.last_interim = 0

    def hear(self, x: np.ndarray, rate: int, script: Script) -> list[int]:
        """Take in one chunk of this channel's samples; returns where new speech regions start (samples)."""
        gap = int(REGION_GAP_S * rate)
        nonzero = np.flatnonzero(x) + self.position
        starts: list[int] = []
        if len(nonzero):
            previous = np.concatenate(([self.last_nonzero], nonzero[:-1]))
            for at in nonzero[nonzero - previous >= gap].tolist():  # a new speech region starts at each
                region = _Pending(None, at)
                self.pending.append(region)
                fingerprint = x[at - self.position :][:FINGERPRINT_SAMPLES].astype("<i2").tobytes()
                self.region, self.fingerprint = region, bytearray(fingerprint)
                self.identify(script)
                starts.append(at)
            self.last_nonzero = int(nonzero[-1])
        partial = self.region is not None and len(self.fingerprint) < 2 * FINGERPRINT_SAMPLES
        if partial and self.region is not None and self.region.start < self.position:
            need = 2 * FINGERPRINT_SAMPLES - len(self.fingerprint)  # the rest of a fingerprint cut by a frame edge
            self.fingerprint += x.astype("<i2").tobytes()[:need]
            self.identify(script)
        self.position += len(x)
        return starts

    def identify(self, script: Script) -> None:
        if self.region is not None and len(self.fingerprint) == 2 * FINGERPRINT_SAMPLES:
            self.region.utterance = script.lookup(bytes(self.fingerprint))


class _Session:
    """One connection: reads audio, answers like Deepgram."""

    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, record: ConnectionRecord) -> None:
        self.fake, self.ws, self.record = fake, ws, record
        q = record.query
        self.rate = int(q.get("sample_rate", "16000"))
        self.multichannel = q.get("multichannel") == "true"
        # No `encoding`: containerized audio, as Deepgram reads it; decoded here to 16 kHz PCM (as the service
        # decodes it, so the fingerprints match). Its channel count is the container's: two when multichannel.
        self.container: OpusInput | None = None
        self.containerized = "encoding" not in q
        self.channels = int(q.get("channels", "2" if self.containerized and self.multichannel else "1"))
        self.tracks = [_Channel() for _ in range(self.channels if self.multichannel else 1)]
        self.diarize = q.get("diarize") == "true"
        endpointing = q.get("endpointing", "300")
        self.endpointing = None if endpointing == "false" else int(endpointing) * self.rate // 1000
        self.utterance_end = "utterance_end_ms" in q
        self.vad_events = q.get("vad_events") == "true"
        self.last_activity = time.monotonic()
        self.request_id = str(uuid.uuid4())

    # --- outgoing ---------------------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        if self.fake.plan.delay_s:
            await asyncio.sleep(self.fake.plan.delay_s)
        await self.ws.send(json.dumps(message))

    def words(self, pending: _Pending, upto: int | None) -> list[dict[str, Any]]:
        """The region's words not yet finalized whose (proportional) end is within `upto` samples."""
        if pending.utterance is None:
            texts, length, speaker = ["unknown", "speech"], self.rate, 99
        else:
            texts, length, speaker = (
                pending.utterance.text.split(),
                pending.utterance.n_samples,
                pending.utterance.speaker,
            )
        n = len(texts)
        out = []
        for i in range(pending.words_sent, n):
            start = pending.start + length * i / n
            end = pending.start + length * (i + (1.0 if i == n - 1 else 0.8)) / n
            if upto is not None and end > upto:
                break
            word: dict[str, Any] = {
                "word": texts[i].strip(",.?!").lower(),
                "punctuated_word": texts[i],
                "start": round(start / self.rate, 4),
                "end": round(end / self.rate, 4),
                "confidence": 0.98,
            }
            if self.diarize:
                word["speaker"] = speaker
            out.append(word)
        return out

    def results(
        self,
        channel: int,
        start: int,
        end: int,
        words: list[dict[str, Any]],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        return {
            "type": "Results",
            "channel_index": [channel, self.channels if self.multichannel else 1],
            "duration": round((end - start) / self.rate, 4),
            "start": round(start / self.rate, 4),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(w["punctuated_word"] for w in words),
                        "confidence": 0.98 if words else 0.0,
                        "words": words,
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "nova-3", "version": "fake", "arch": "a"},
                "model_uuid": "u",
            },
        }

    async def finalize(self, channel: int, track: _Channel, *, from_finalize: bool, speech_final: bool) -> None:
        words: list[dict[str, Any]] = []
        upto = None if speech_final else track.position
        for pending in track.pending:
            got = self.words(pending, upto)
            pending.words_sent += len(got)
            words += got
        track.pending = [p for p in track.pending if p.words_sent < _word_count(p)]
        await self.send(
            self.results(
                channel,
                track.final_cursor,
                track.position,
                words,
                is_final=True,
                speech_final=speech_final,
                from_finalize=from_finalize,
            )
        )
        self.record.finals_sent += 1
        self.record.final_word_counts.append(len(words))
        self.record.finals.append((" ".join(w["punctuated_word"] for w in words), from_finalize, speech_final))
        track.final_cursor = track.position
        if speech_final and words and self.utterance_end:
            await self.send(
                {"type": "UtteranceEnd", "channel": [channel, len(self.tracks)], "last_word_end": words[-1]["end"]}
            )

    # --- incoming ---------------------------------------------------------------------------------------------

    async def audio(self, data: bytes) -> None:
        if self.containerized:
            if self.container is None:
                encoding = "webm-opus" if data.startswith(WEBM_MAGIC) else "ogg-opus"
                self.container = OpusInput(encoding, AudioFormat(self.rate, self.channels))
            data = self.container.feed(data).pcm
        samples = squelch(np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2"), self.fake.plan.noise_floor)
        frames = samples.reshape(-1, self.channels)
        if self.multichannel:
            per_track = [frames[:, c] for c in range(self.channels)]
        else:
            per_track = [frames.astype(np.int32).sum(axis=1).clip(-32768, 32767).astype("<i2")]
        for channel, (track, x) in enumerate(zip(self.tracks, per_track, strict=True)):
            await self.track_audio(channel, track, np.ascontiguousarray(x))

    async def track_audio(self, channel: int, track: _Channel, x: np.ndarray) -> None:
        nonzero = np.flatnonzero(x)
        if len(nonzero):
            # A pause that reached `endpointing` inside this chunk, before the speech that follows in it, ends
            # the utterance too: pauses are timed on the audio, whatever the sizes of the messages carrying it.
            pause = int(nonzero[0]) + track.position - track.last_nonzero
            endpoint = self.endpointing is not None and pause >= self.endpointing
            if endpoint and track.pending and not self.fake.plan.never_final:
                await self.finalize(channel, track, from_finalize=False, speech_final=True)
        for at in track.hear(x, self.rate, self.fake.script):
            if self.vad_events:
                where = [channel, len(self.tracks)]
                await self.send({"type": "SpeechStarted", "channel": where, "timestamp": round(at / self.rate, 4)})
        if self.fake.plan.never_final:
            pass
        elif track.pending and self.endpointing is not None and track.position - track.last_nonzero >= self.endpointing:
            await self.finalize(channel, track, from_finalize=False, speech_final=True)
        elif not track.pending and track.position - track.final_cursor >= EMPTY_FINAL_EVERY_S * self.rate:
            await self.finalize(channel, track, from_finalize=False, speech_final=False)
        if track.pending and track.position - track.last_interim >= INTERIM_EVERY_S * self.rate:
            track.last_interim = track.position
            words = [w for p in track.pending for w in self.words(p, track.position)]
            if words:
                await self.send(self.results(channel, track.final_cursor, track.position, words, is_final=False))

    async def serve(self) -> None:
        plan, attempt = self.fake.plan, self.record.index
        watcher = asyncio.create_task(self.idle_watch())
        try:
            async for message in self.ws:
                self.last_activity = time.monotonic()
                if isinstance(message, bytes) and self.fake.echo_frames:
                    await self.echo(message)
                    continue
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
                        await self.send({"type": "Error", "variant": "INTERNAL", "description": "internal error"})
                        await self.ws.close(1011, "internal error")
                        return
                    continue
                kind = json.loads(message).get("type")
                self.record.control.append(kind)
                if kind in ("Finalize", "CloseStream"):
                    for channel, track in enumerate(self.tracks):
                        await self.finalize(channel, track, from_finalize=kind == "Finalize", speech_final=False)
                if kind == "CloseStream":
                    await self.send(
                        {
                            "type": "Metadata",
                            "transaction_key": "x",
                            "request_id": self.request_id,
                            "sha256": "s",
                            "created": "c",
                            "channels": self.channels,
                            "duration": round(self.tracks[0].position / self.rate, 4),
                        }
                    )
                    await self.ws.close(1000)
                    return
        except ConnectionClosed:
            pass
        finally:
            watcher.cancel()

    async def echo(self, data: bytes) -> None:
        """One final per 20 ms frame in the message (the service may coalesce several into one send)."""
        received = time.monotonic()
        self.record.audio_bytes += len(data)
        frame = self.rate * 2 * self.channels // 50
        track = self.tracks[0]
        for offset in range(0, len(data) - frame + 1, frame):
            frame_id = int.from_bytes(data[offset : offset + 8], "little")
            start, track.position = track.position, track.position + frame // (2 * self.channels)
            word = {
                "word": str(frame_id),
                "punctuated_word": str(frame_id),
                "start": round(start / self.rate, 4),
                "end": round(track.position / self.rate, 4),
                "confidence": 0.99,
            }
            if self.diarize:
                word["speaker"] = 0
            message = self.results(0, start, track.position, [word], is_final=True, speech_final=True)
            track.final_cursor = track.position
            sent = time.monotonic()
            await self.send(message)
            self.record.finals_sent += 1
            self.record.echoes.append((frame_id, received, sent))

    async def idle_watch(self) -> None:
        timeout = self.fake.plan.idle_timeout_s
        while True:
            await asyncio.sleep(0.1)
            if time.monotonic() - self.last_activity >= timeout:
                await self.send(
                    {
                        "type": "Error",
                        "variant": "NET-0001",
                        "description": "did not receive audio data or a text message within the timeout window",
                    }
                )
                await self.ws.close(1011, "NET-0001")
                return


class _Connection(ServerConnection):
    """A server connection that notes the client's pings: Flux takes them, not KeepAlive, through silence."""

    record: ConnectionRecord

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING and hasattr(self, "record"):
            self.record.pings += 1
            self.record.last_ping_at = time.monotonic()
        super().process_event(event)


class FakeDeepgram:
    """The server, in a thread with its own event loop; `connections` records every attempt."""

    def __init__(
        self,
        script: Script,
        api_key: str = "test-key",
        plan: Plan | None = None,
        port: int = 0,
        *,
        record_audio: bool = True,
        echo_frames: bool = False,
        compression: str | None = "deflate",
    ) -> None:
        self.script = script
        self.compression = compression  # websockets' default: the SDK's connection negotiates permessage-deflate
        self.echo_frames = echo_frames
        self.record_audio = record_audio
        self.api_key = api_key
        self.plan = plan or Plan()
        self._port = port
        self._records: list[ConnectionRecord] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._records)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def start(self) -> FakeDeepgram:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake Deepgram did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(10)

    def __enter__(self) -> FakeDeepgram:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        async with serve(
            self._handle,
            "127.0.0.1",
            self._port,
            process_request=self._handshake,
            create_connection=_Connection,
            compression=self.compression,
        ) as server:
            self._server = server
            self._started.set()
            await server.wait_closed()

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            record = ConnectionRecord(index=len(self._records))
            self._records.append(record)
        record.path = urlsplit(request.path).path
        record.query = dict(parse_qsl(urlsplit(request.path).query))
        record.authorization_ok = request.headers.get("Authorization") == f"Token {self.api_key}"
        assert isinstance(connection, _Connection)
        connection.record = record
        if record.path not in ("/v1/listen", "/v2/listen"):
            record.refused_status = 404
        elif not record.authorization_ok:
            record.refused_status = 401
        elif record.index in self.plan.refuse:
            record.refused_status = self.plan.refuse[record.index]
        if record.refused_status is not None:
            record.closed_at = time.monotonic()
            return connection.respond(record.refused_status, f"refused ({record.refused_status})\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _Connection)
        record = ws.record
        try:
            if record.path == "/v2/listen":
                from tests.flux_server import FluxSession

                await FluxSession(self, ws, record).serve()
            else:
                await _Session(self, ws, record).serve()
        finally:
            record.close_code = ws.close_code
            record.closed_at = time.monotonic()


def write_mono_mix(source: Path, target: Path) -> None:
    """The stereo call summed to one channel: exact, since only one party speaks at a time."""
    import wave

    with wave.open(str(source), "rb") as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, channels)
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype(np.int32).sum(axis=1).clip(-32768, 32767).astype("<i2").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--key", default="test-key")
    parser.add_argument("--fixture", default="call_two_channel.wav")
    parser.add_argument(
        "--mono-mix",
        action="store_true",
        help="recognise the fixture mixed to one channel "
        "(diarized: the customer on channel 1 is speaker 0, the consultant speaker 1)",
    )
    parser.add_argument("--write-mix", metavar="WAV", help="write the fixture mixed to mono to WAV and exit")
    parser.add_argument("--drops", type=int, default=0, help="abort the first N connections mid-stream")
    parser.add_argument("--drop-after-s", type=float, default=3.0, help="... after this much audio each")
    args = parser.parse_args()
    if args.write_mix:
        write_mono_mix(FIXTURES / args.fixture, Path(args.write_mix))
        return
    script = Script.from_manifest(args.fixture, {0: 1, 1: 0} if args.mono_mix else None, mono_mix=args.mono_mix)
    drop = int(args.drop_after_s * script.sample_rate * 2)
    plan = Plan(drop_after_bytes={attempt: drop for attempt in range(args.drops)})
    with FakeDeepgram(script, args.key, plan=plan, port=args.port) as fake:
        print(f"fake Deepgram on {fake.url} (key {args.key!r}); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
