"""Logging: structlog for our events and for uvicorn's, JSON lines in production, readable in a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote_plus

import structlog

from presales_ws.config import Settings

_SECRET_KEYS = frozenset({"api_key", "deepgram_api_key", "suggester_api_key", "authorization", "key", "token"})


# Keys in text: handshake headers logged by uvicorn/websockets at debug.
_SECRET_PATTERNS = (
    (re.compile(r"(?i)(authorization:?\s*(?:bearer|token|basic)?\s*)[^\s'\",]+"), r"\1***"),
    (re.compile(r"(?i)(\bkey\.)[^\s'\",]+"), r"\1***"),
)

# A query string in a log line (uvicorn logs every path with its raw query). Matching secret names misses
# encodings (`?k%65y=` is `key` to the server), so only the session parameters keep their values and every
# other parameter, name included, is hidden.
_QUERY = re.compile(r"\?([^\s'\"#]+)")
_LOGGABLE_QUERY_PARAMS = frozenset({"sample_rate", "channels", "encoding", "language", "channel_roles"})


def _decoded_name(name: str) -> str:
    for _ in range(3):  # double encoding (%256B) decodes again somewhere down the line: undo it here too
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower()


def _scrub_query(match: re.Match[str]) -> str:
    kept = []
    for part in re.split(r"[&;]", match.group(1)):
        name, _, _ = part.partition("=")
        kept.append(part if _decoded_name(name) in _LOGGABLE_QUERY_PARAMS else "***")
    return "?" + "&".join(kept)


def scrub(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if "?" in text:
        text = _QUERY.sub(_scrub_query, text)
    return text


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A last line of defence: a field named like a secret, or a key inside any text, never leaves in clear."""
    for name in _SECRET_KEYS.intersection(event):
        event[name] = "***"
    for name, value in event.items():
        if isinstance(value, str):
            event[name] = scrub(value)
    return event


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library (uvicorn) through one renderer."""
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and (settings.environment == "production" or not sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if use_json else _identity,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # faster-whisper logs every decode at info (per-utterance noise in the hot path); bm25s sets its own logger
    # to debug and says "Building index" at every start.
    for chatty in ("faster_whisper", "bm25s"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _identity(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
