"""Transcription engines behind one interface (`base.Transcriber`); `create_transcriber` picks one."""

from __future__ import annotations

from presales_ws.config import Settings
from presales_ws.transcribers.base import Transcriber


def create_transcriber(settings: Settings) -> Transcriber:
    """The engine the settings ask for; heavy loading waits for `start()` in the app's lifespan."""
    if settings.engine == "deepgram":
        from presales_ws.transcribers.deepgram import DeepgramTranscriber

        return DeepgramTranscriber(settings)
    from presales_ws.transcribers.local import LocalTranscriber

    return LocalTranscriber(settings)
