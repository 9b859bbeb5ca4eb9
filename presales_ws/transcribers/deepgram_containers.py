"""WebM/Ogg sessions on Deepgram: the client's container bytes go up as they came, and Deepgram decodes them.

Only a connection that gets the container from its first byte can read it, and it is opened without encoding,
rate or channels (a container says its own). Until the first audio says which, a session is PCM (its
connection is open before the first frame). The decoded PCM goes into the replay buffer as well: when a piece
did not parse whole (corrupt, or over the rate limit), when the replay bound dropped audio, or after a
reconnect (a later connection cannot start mid-container), the session's Deepgram audio is PCM from then on.
"""

from __future__ import annotations

from collections import deque

from presales_ws.transcribers.reconnect import ReconnectNow


class NewFormat(ReconnectNow):
    """The connection's audio format no longer fits: a WebM/Ogg session's first piece came to a connection
    opened for PCM (a container must be read from its first byte), or its bytes can no longer go up as they
    came (a piece did not parse whole). The stream goes on, on a new connection, in the other format."""


class ContainerPassthrough:
    """One session's container pieces on their way to Deepgram, and whether its connection reads them."""

    __slots__ = ("_pieces", "active", "connection", "sent_bytes")

    def __init__(self) -> None:
        self.active: bool | None = None  # None: no audio yet; True: container bytes; False: PCM only
        self.connection = False  # the current connection reads the container (opened without encoding)
        self.sent_bytes = 0  # container bytes sent to Deepgram
        self._pieces: deque[tuple[int, bytes]] = deque()  # (session byte position its PCM ends at, bytes)

    @property
    def in_use(self) -> bool:
        """Container bytes may go up: the session's PCM does not go straight to the socket."""
        return self.connection or bool(self.active)

    def take(self, pcm_end: int, original: bytes | None) -> None:
        """A container frame: its bytes as sent (None: they did not parse whole), its PCM ending at `pcm_end`."""
        if self.active is None:
            self.active = original is not None
        if original is None or not self.active:
            self.leave()
        else:
            self._pieces.append((pcm_end, original))

    def pcm(self) -> None:
        """PCM came first: the session is not a container session."""
        if self.active is None:
            self.active = False

    def leave(self) -> None:
        """From now on the session's Deepgram audio is PCM."""
        self.active = False
        self._pieces.clear()

    def open_connection(self) -> bool:
        """A connection is being opened: True if it takes the container (only ever the first one)."""
        self.connection = bool(self.active) and self.sent_bytes == 0
        if self.active and not self.connection:
            self.leave()
        return self.connection

    def next_piece(self, sent: int) -> tuple[int, bytes] | None:
        """The next whole piece for a container connection (None: none yet, or a PCM connection); NewFormat
        when the connection no longer fits the session. `sent`: PCM bytes sent on this connection."""
        if self.connection:
            if self._pieces:
                return self._pieces.popleft()  # whole: its PCM ends where a pause's Finalize may be due, never inside
            if not self.active:
                raise NewFormat
        elif self.active and self.sent_bytes == 0 and sent == 0:
            raise NewFormat  # a container's first piece, on a connection opened for PCM before it came
        return None
