"""The peer: the seed's own design, written the idiomatic FastAPI + pydantic way, "transcribing" by echo.

    .venv/bin/python -m bench.peers.fastapi_peer --port 8011     (needs the `bench` extra)

A client sends `{"type":"audio_chunk","data":"<base64 PCM>"}`; pydantic models declare the messages; a
ConnectionManager keeps one asyncio.Queue per connection; a consumer task per connection takes chunks off
the queue and sends one transcript each (the frame id from the chunk's first 8 bytes), encoded with
`model_dump_json`. Nothing is slowed down on purpose: it is what a careful FastAPI version costs, so the
comparison with presales-ws on the same JSON/base64 path is fair.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, TypeAdapter

from bench.peers import serve

SAMPLE_RATE_HZ = 16000
BYTES_PER_S = 2 * SAMPLE_RATE_HZ


class AudioChunk(BaseModel):
    type: Literal["audio_chunk"]
    data: str
    sequence: int | None = None


class StopMessage(BaseModel):
    type: Literal["stop"]


ClientMessage = Annotated[AudioChunk | StopMessage, Field(discriminator="type")]
client_message = TypeAdapter(ClientMessage)


class StatusMessage(BaseModel):
    type: Literal["status"] = "status"
    state: Literal["ready", "closed"]
    session_id: str | None = None
    transcriber: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


class TranscriptMessage(BaseModel):
    type: Literal["transcript"] = "transcript"
    text: str
    speaker: Literal["customer", "consultant", "unknown"] = "unknown"
    is_final: bool
    speaker_id: int | None = None
    channel: int = 0
    start: float
    end: float
    confidence: float | None = None
    utterance_end: bool = False
    role_confidence: float = 0.0


@dataclass
class Connection:
    websocket: WebSocket
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    position: int = 0  # bytes of audio transcribed so far


class ConnectionManager:
    """The live connections, each with its queue of audio waiting to be transcribed."""

    def __init__(self) -> None:
        self.active: dict[str, Connection] = {}

    async def connect(self, websocket: WebSocket) -> Connection:
        await websocket.accept()
        connection = Connection(websocket)
        self.active[connection.id] = connection
        ready = StatusMessage(
            state="ready", session_id=connection.id, transcriber="echo", sample_rate=SAMPLE_RATE_HZ, channels=1
        )
        await websocket.send_text(ready.model_dump_json(exclude_none=True))
        return connection

    def disconnect(self, connection: Connection) -> None:
        self.active.pop(connection.id, None)


manager = ConnectionManager()
app = FastAPI(title="presales peer")


@app.get("/health")
async def health() -> dict[str, int | str]:
    return {"status": "ok", "sessions": len(manager.active)}


@app.websocket("/ws/session")
async def session(websocket: WebSocket) -> None:
    connection = await manager.connect(websocket)
    consumer = asyncio.create_task(transcribe(connection))
    try:
        while True:
            message = client_message.validate_json(await websocket.receive_text())
            if isinstance(message, AudioChunk):
                await connection.queue.put(base64.b64decode(message.data))
            else:
                await connection.queue.put(None)
                await consumer
                await websocket.close()
                return
    except WebSocketDisconnect:
        pass
    finally:
        consumer.cancel()
        manager.disconnect(connection)


async def transcribe(connection: Connection) -> None:
    """The consumer: one transcript per chunk (an echo of its frame id), in order."""
    while (pcm := await connection.queue.get()) is not None:
        start = connection.position / BYTES_PER_S
        connection.position += len(pcm)
        transcript = TranscriptMessage(
            text=str(int.from_bytes(pcm[:8], "little")),
            is_final=True,
            start=start,
            end=connection.position / BYTES_PER_S,
            confidence=1.0,
            speaker_id=0,
            utterance_end=True,
        )
        await connection.websocket.send_text(transcript.model_dump_json())
    await connection.websocket.send_text(StatusMessage(state="closed").model_dump_json(exclude_none=True))


if __name__ == "__main__":
    serve(app, __doc__.splitlines()[0])
