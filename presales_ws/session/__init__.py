"""One WebSocket session on /ws/session: audio in, transcripts out.

In the order a frame travels: `endpoint.py` (may this connection open a session, or resume one) ->
`intake.py` (what a frame must pass to reach the transcriber) -> the transcriber -> `outbound.py` (its events
as wire messages, and the one writer of the socket). Around them: `lifecycle.py` (the session's task group and
how it ends), `links.py` (the connections that serve it, one at a time: resume, park, supersede) and
`closing.py` (every close and refusal, bounded).
"""

from presales_ws.session.endpoint import SessionEndpoint
from presales_ws.session.lifecycle import Session
from presales_ws.session.links import Link

__all__ = ["Link", "Session", "SessionEndpoint"]
