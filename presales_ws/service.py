"""What the whole process shares: settings, the transcription engine, the registry of live sessions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from presales_ws.access import AccessGate
from presales_ws.config import Settings
from presales_ws.registry import SessionRegistry
from presales_ws.resume.memory import LocalSessions
from presales_ws.resume.redis import SharedState
from presales_ws.suggesters.base import Suggester
from presales_ws.transcribers.base import Transcriber


@dataclass
class Service:
    settings: Settings
    transcriber: Transcriber
    gate: AccessGate
    suggester: Suggester | None = None
    registry: SessionRegistry = field(default_factory=SessionRegistry)
    local_sessions: LocalSessions[Any] = field(default_factory=LocalSessions)  # by resume token digest
    shared: SharedState | None = None  # REDIS_URL: resume across instances, per-key leases
    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False

    async def drain(self) -> int:
        """Refuse new sessions, let every live one flush its finals and close (1012); bounded by DRAIN_TIMEOUT_S.

        Returns how many sessions were still open when the time ran out.
        """
        self.draining = True
        for info in self.registry:
            info.drain.set()
        with anyio.move_on_after(self.settings.drain_timeout_s):
            await self.registry.wait_empty()
        return len(self.registry)
