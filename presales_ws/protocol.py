"""The wire protocol of /ws/session, declared once: msgspec structs tagged on `type`.

Encoding, validation and the published JSON Schema (`GET /protocol.json`) all come from these declarations.
docs/PROTOCOL.md explains each message, error code and close code.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec

Role = Literal["customer", "consultant", "unknown"]  # who spoke, as the wire says it (speakers.py decides)

# The handshake: a client offers SUBPROTOCOL, and a browser (which cannot set headers) its key as KEY_PREFIX + key.
SUBPROTOCOL = "presales.v1"
KEY_PREFIX = "key."


# --- close codes -------------------------------------------------------------------------------------------


class CloseCode(enum.IntEnum):
    """WebSocket close codes this service uses (4xxx are ours, modelled on the HTTP status they resemble)."""

    NORMAL = 1000  # after `stop`: every final was sent
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009  # a frame over the hard transport limit (uvicorn closes)
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # the server is draining for a restart: reconnect
    TRY_AGAIN_LATER = 1013  # transcriber at capacity or server full: reconnect later
    BAD_PARAMETERS = 4400  # invalid query parameters or `start`; undeclared audio plainly not 16 kHz PCM
    UNAUTHORIZED = 4401  # no API key, or not a valid one (nothing was read)
    FORBIDDEN = 4403  # a browser origin not on ALLOWED_ORIGINS (nothing was read)
    IDLE_TIMEOUT = 4408  # nothing from the client (audio, pong, anything) for HEARTBEAT_TIMEOUT_S
    SUPERSEDED = 4409  # another connection resumed this session with its token: it goes on there
    SESSION_TOO_LONG = 4410  # MAX_SESSION_S reached: finals flushed; reconnect to go on
    RATE_LIMITED = 4429  # kept flooding audio faster than real time, or too many sessions for this key
    CLIENT_TOO_SLOW = 4499  # the client stopped reading and even final transcripts backed up


# --- error codes -------------------------------------------------------------------------------------------

ErrorCode = Literal[
    "invalid_json",  # a text frame that is not a JSON object
    "unknown_type",  # a JSON object whose `type` is missing or not a client message type
    "invalid_message",  # a known `type` with missing or mistyped fields
    "invalid_audio",  # bad base64, odd byte count, not whole frames, or a WebM/Ogg piece that cannot be decoded
    "undeclared_encoding",  # WebM/Ogg audio on a session that expects PCM: declare `encoding` (then close 4400)
    "undeclared_sample_rate",  # undeclared audio arriving far faster than 16 kHz: declare `sample_rate` (then 4400)
    "frame_too_large",  # a frame over MAX_FRAME_BYTES (text: MAX_TEXT_FRAME_BYTES); dropped
    "sequence_gap",  # `audio_chunk.sequence` skipped numbers (audio is still used)
    "sequence_repeat",  # `audio_chunk.sequence` did not increase (audio is still used)
    "session_stopping",  # audio after `stop`; ignored
    "invalid_params",  # bad query parameters at connect, or a `start` that contradicts them (then close 4400)
    "unauthorized",  # missing or invalid API key (then close 4401)
    "forbidden_origin",  # a browser origin not allowed (then close 4403)
    "rate_limited",  # audio faster than RATE_LIMIT_FACTOR x real time: dropped (flooding on: close 4429)
    "too_many_sessions",  # MAX_SESSIONS_PER_KEY reached (then close 4429)
    "server_full",  # MAX_SESSIONS reached (then close 1013)
    "shutting_down",  # the server is draining for a restart (then close 1013 at connect, 1012 for live sessions)
    "transcriber_busy",  # the transcriber cannot take this session in real time (then close 1013)
    "transcriber_auth",  # the transcription provider refused our credentials (then close 1011)
    "transcriber_failed",  # the transcriber could not transcribe some audio
    "internal",  # a bug on our side (then close 1011)
    "superseded",  # another connection resumed this session (then close 4409)
]

# --- client -> server ----------------------------------------------------------------------------------------


SAMPLE_RATES_HZ = (8000, 16000, 24000, 32000, 44100, 48000)
Encoding = Literal["linear16", "webm-opus", "ogg-opus"]
CONTAINER_ENCODINGS: frozenset[str] = frozenset({"webm-opus", "ogg-opus"})


class Start(msgspec.Struct, tag="start", tag_field="type", forbid_unknown_fields=False, frozen=True):
    """The audio's format, said in the protocol rather than the URL: optional, before any audio. A field left
    out keeps the URL's value (or its default); one that contradicts the URL is `invalid_params`."""

    sample_rate: int | None = None
    channels: Literal[1, 2] | None = None
    encoding: Encoding | None = None

    def __post_init__(self) -> None:
        if self.sample_rate is not None and self.sample_rate not in SAMPLE_RATES_HZ:
            raise ValueError(f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES_HZ))}")


class AudioChunk(msgspec.Struct, tag="audio_chunk", tag_field="type"):
    """Audio as base64 (the seed's JSON form); binary frames carry the same bytes without the 33% overhead."""

    data: str
    sequence: int | None = None


class Stop(msgspec.Struct, tag="stop", tag_field="type"):
    """Flush: every word already sent comes back final, then `status: closed` and close 1000."""


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    """Liveness probe, either way; the other side answers with a `pong` carrying the same `ts`."""

    ts: float | None = None


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    ts: float | None = None


ClientMessage = Start | AudioChunk | Stop | Ping | Pong

# --- server -> client ----------------------------------------------------------------------------------------


class Transcript(msgspec.Struct, tag="transcript", tag_field="type"):
    """One piece of transcript; `start`/`end` are seconds of session audio (per channel)."""

    text: str
    speaker: Role
    is_final: bool
    speaker_id: int | None
    channel: int
    start: float
    end: float
    confidence: float | None
    utterance_end: bool
    role_confidence: float


SuggestionSource = Literal["knowledge_base", "http"]


class Suggestion(msgspec.Struct, tag="suggestion", tag_field="type"):
    """An answer for a question the customer asked, once the question's final transcript is in.

    `speaker` is "unknown" when roles are not known yet (a mono call's first questions); `start`/`end` place
    the question in session audio; `latency_ms` runs from the end of the question's speech to this message.
    A streaming suggester's answer comes as `partial` messages (the response so far, each replacing the last),
    then one with `partial` false: the complete answer, or an empty `response` if the stream broke (withdrawn).
    """

    question: str
    response: str
    confidence: float
    source: SuggestionSource
    speaker: Role
    channel: int
    start: float
    end: float
    latency_ms: int | None
    partial: bool = False


class Error(msgspec.Struct, tag="error", tag_field="type"):
    code: ErrorCode
    message: str


StatusState = Literal["ready", "roles", "reconnecting", "recovered", "closing", "closed"]


class Status(msgspec.Struct, tag="status", tag_field="type", omit_defaults=True):
    """Lifecycle of the session; only the fields that matter for `state` are present."""

    state: StatusState
    session_id: str | None = None
    transcriber: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    channel_roles: list[Role] | None = None
    roles: dict[str, Role] | None = None
    reason: str | None = None
    # `ready` only: the token that resumes this session after a broken connection, whether this connection
    # resumed one, and the seconds of session audio (per channel) the server has: resend from there.
    resume_token: str | None = None
    resumed: bool | None = None
    received_s: float | None = None


ServerMessage = Transcript | Suggestion | Error | Status | Ping | Pong

# --- session parameters (query string of /ws/session) -------------------------------------------------------


class SessionParams(msgspec.Struct, forbid_unknown_fields=False, frozen=True):
    sample_rate: int = 16000
    channels: Literal[1, 2] = 1
    encoding: Encoding = "linear16"
    language: Literal["en"] = "en"
    channel_roles: str | None = None
    resume: str | None = None  # a `ready`'s resume_token: go on with that session
    finals_end: str | None = None  # with `resume`: end of the last final received, per channel ("12.3,11.8")

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES_HZ:
            raise ValueError(f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES_HZ))}")


# --- codecs, built once -------------------------------------------------------------------------------------

client_decoder = msgspec.json.Decoder(ClientMessage)
encoder = msgspec.json.Encoder()


class _Envelope(msgspec.Struct):
    type: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


class ProtocolError(Exception):
    """A client frame we cannot use; `code` is the stable error code sent back."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Decode one text frame, classifying failures by the stable error codes.

    msgspec guards its recursion with Python's limit: JSON nested ~1,000 deep (a 2 KB frame) raises
    RecursionError from either decoder, even inside a field it would skip. That is a bad frame, not a bug.
    """
    try:
        message: ClientMessage = client_decoder.decode(data)
        return message
    except RecursionError:
        raise ProtocolError("invalid_json", "JSON nested too deeply") from None
    except msgspec.DecodeError as exc:
        # Distinguish "not JSON" / "not an object" from "a message we do not know" / "bad fields".
        try:
            envelope = _envelope_decoder.decode(data)
        except RecursionError:
            raise ProtocolError("invalid_json", "JSON nested too deeply") from None
        except msgspec.ValidationError:
            raise ProtocolError("invalid_json", "frame is not a JSON object") from None
        except msgspec.DecodeError:
            raise ProtocolError("invalid_json", f"malformed JSON: {exc}") from None
        if not isinstance(envelope.type, str) or envelope.type not in _CLIENT_TYPES:
            raise ProtocolError(
                "unknown_type",
                f"unknown message type {envelope.type!r}; expected one of {', '.join(sorted(_CLIENT_TYPES))}",
            ) from None
        raise ProtocolError("invalid_message", f"invalid {envelope.type!r} message: {exc}") from None


_CLIENT_TYPES = frozenset({"start", "audio_chunk", "stop", "ping", "pong"})


def encode(message: ServerMessage) -> bytes:
    return encoder.encode(message)


def json_schema() -> dict[str, Any]:
    """JSON Schema of both directions, generated from the structs above."""
    (client, server), components = msgspec.json.schema_components(
        [ClientMessage, ServerMessage], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "presales-ws /ws/session protocol",
        "$defs": components,
        "properties": {"client_to_server": client, "server_to_client": server},
    }
