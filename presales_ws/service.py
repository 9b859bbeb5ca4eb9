"""What the whole process shares: settings, the transcription engine, the registry of live sessions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from presales_ws.config import Settings
from presales_ws.registry import SessionRegistry
from presales_ws.transcribers.base import Transcriber


@dataclass
class Service:
    settings: Settings
    transcriber: Transcriber
    registry: SessionRegistry = field(default_factory=SessionRegistry)
    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False
