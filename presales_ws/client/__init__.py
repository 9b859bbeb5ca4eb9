"""The client side of /ws/session: a session (`connect`), WAV reading, and the `presales-ws stream` command.

It imports nothing of the server: only the wire format (`presales_ws.protocol`) and the audio format
(`presales_ws.audio`) it shares with it, so a client pays for neither Starlette, uvicorn nor the settings.
"""

from __future__ import annotations

from presales_ws import protocol
from presales_ws.client.connection import Session, SessionRefused, connect, server_decoder, session_url
from presales_ws.client.wavfile import WavAudio, read_wav

__all__ = ["Session", "SessionRefused", "WavAudio", "connect", "protocol", "read_wav", "server_decoder", "session_url"]
