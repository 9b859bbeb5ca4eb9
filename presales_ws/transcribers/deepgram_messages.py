"""Deepgram listen.v1's server messages, declared once as msgspec structs and decoded by one decoder.

The SDK parses every message with pydantic (`construct_type`), which cost ~8% of the server's CPU on the
Deepgram path at 100 sessions (docs/BENCHMARKS.md); msgspec decodes the same JSON for a fraction of it. The
field names are the SDK's (`ListenV1Results` and its nested types), so the engine reads either. Fields the
engine does not read are not declared (msgspec skips them); a message of a type not declared here decodes
to None, as the SDK skips what it does not know.
"""

from __future__ import annotations

import msgspec


class Word(msgspec.Struct, frozen=True):
    word: str
    start: float
    end: float
    confidence: float
    punctuated_word: str | None = None
    speaker: int | None = None


class Alternative(msgspec.Struct, frozen=True):
    transcript: str = ""
    confidence: float = 0.0
    words: list[Word] = msgspec.field(default_factory=list)


class ResultsChannel(msgspec.Struct, frozen=True):
    alternatives: list[Alternative] = msgspec.field(default_factory=list)


class Results(msgspec.Struct, frozen=True, tag="Results", tag_field="type"):
    channel: ResultsChannel
    start: float = 0.0
    duration: float = 0.0
    channel_index: list[int] = msgspec.field(default_factory=list)
    is_final: bool | None = None
    speech_final: bool | None = None
    from_finalize: bool | None = None


class UtteranceEnd(msgspec.Struct, frozen=True, tag="UtteranceEnd", tag_field="type"):
    channel: list[int] = msgspec.field(default_factory=list)
    last_word_end: float = 0.0


class ProviderError(msgspec.Struct, frozen=True, tag="Error", tag_field="type"):
    variant: str | None = None
    description: str | None = None


class SpeechStarted(msgspec.Struct, frozen=True, tag="SpeechStarted", tag_field="type"):
    pass


class Metadata(msgspec.Struct, frozen=True, tag="Metadata", tag_field="type"):
    pass


Message = Results | UtteranceEnd | ProviderError | SpeechStarted | Metadata

_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)


def decode(raw: str | bytes) -> Message | None:
    """One server message, or None for one of a type (or shape) this engine does not read."""
    try:
        return _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
