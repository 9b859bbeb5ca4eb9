"""How long and how large a client may keep a connection half-finished, in one place for both protocols."""

from __future__ import annotations

from typing import Any

import msgspec
import uvicorn

from presales_ws.config import Settings

MAX_HEAD_BYTES = 16 * 1024  # request line + headers (h11's own default, declared here); websockets: 8 KiB a line
CLOSE_TIMEOUT_S = 3.0  # a closing connection whose peer does not finish closing is reset after this


class TransportLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_head_bytes: int
    header_timeout_s: float  # a request head must be complete this long after its connection (or last response)
    close_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> TransportLimits:
        return cls(
            max_head_bytes=MAX_HEAD_BYTES, header_timeout_s=settings.header_timeout_s, close_timeout_s=CLOSE_TIMEOUT_S
        )


class LimitedConfig(uvicorn.Config):
    """uvicorn's Config carrying the limits our protocol classes read (uvicorn hands each protocol its config)."""

    def __init__(self, app: Any, *, limits: TransportLimits, **kwargs: Any) -> None:
        super().__init__(app, h11_max_incomplete_event_size=limits.max_head_bytes, **kwargs)
        self.limits = limits


def limits_of(config: uvicorn.Config) -> TransportLimits:
    return config.limits if isinstance(config, LimitedConfig) else TransportLimits.from_settings(Settings())
