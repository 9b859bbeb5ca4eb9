"""Who may open a session: API keys (hashed, compared in constant time) and browser origins.

Browsers cannot set headers on a WebSocket, so the key travels as a `Sec-WebSocket-Protocol` entry
(`presales.v1, key.<KEY>`; the server selects `presales.v1`, never echoing the key). Other clients may send
`Authorization: Bearer <KEY>`; `?key=` only when ALLOW_QUERY_KEY is set, since URLs end up in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import msgspec
from starlette.websockets import WebSocket

from presales_ws.config import Settings
from presales_ws.protocol import KEY_PREFIX, SUBPROTOCOL, CloseCode, ErrorCode

# Any Chrome extension (development only): an id is 32 letters a-p, a SHA-256 prefix written in hex shifted to a-p.
DEV_EXTENSION_ORIGIN_PATTERN = r"chrome-extension://[a-p]{32}"
DEV_EXTENSION_ORIGIN = re.compile(DEV_EXTENSION_ORIGIN_PATTERN)


class Refused(Exception):
    """The handshake is refused: close with `close_code` after an `error` with `code`, before any audio."""

    def __init__(self, code: ErrorCode, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.close_code = close_code


class Admission(msgspec.Struct, frozen=True):
    """What the gate learned: which key (by a non-secret id) and which subprotocol to select."""

    key_id: str | None
    subprotocol: str | None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """A stable, non-reversible name for a key, for logs and per-key limits."""
    return "k_" + hashlib.sha256(b"presales-ws key id:" + key.encode()).hexdigest()[:10]


def offered_subprotocols(websocket: WebSocket) -> list[str]:
    return [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def offered_subprotocol(websocket: WebSocket) -> str | None:
    """`presales.v1` if the client offered it. Every accept must select it then, refusals included: Chrome
    fails a handshake whose offered subprotocols get no answer (1006), and the page would never see why."""
    return SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(websocket) else None


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's `Origin` is this server's own (`http[s]://` + the `Host` it was reached at)."""
    scheme, _, netloc = origin.partition("://")
    return scheme in ("http", "https") and netloc.lower() == host.strip().lower()


class AccessGate:
    """Checks one handshake against API_KEYS and ALLOWED_ORIGINS."""

    def __init__(self, settings: Settings) -> None:
        self._digests = [_digest(k) for k in settings.api_keys]
        self._allowed_origins = frozenset(settings.allowed_origins)
        self._any_extension = settings.environment == "development" and not settings.allowed_origins
        self._allow_query_key = settings.allow_query_key

    @property
    def open(self) -> bool:
        """No API_KEYS: anyone may connect (development only; said at start-up)."""
        return not self._digests

    def admit(self, websocket: WebSocket) -> Admission:
        offered = offered_subprotocols(websocket)
        subprotocol = offered_subprotocol(websocket)
        origin = websocket.headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, websocket.headers.get("host")):
            raise Refused("forbidden_origin", "this origin may not open sessions", CloseCode.FORBIDDEN)

        candidate = self._candidate_key(websocket, offered)
        if self.open:
            return Admission(key_id=None, subprotocol=subprotocol)
        if candidate is None:
            raise Refused("unauthorized", "an API key is required", CloseCode.UNAUTHORIZED)
        if not self._valid(candidate):
            raise Refused("unauthorized", "the API key is not valid", CloseCode.UNAUTHORIZED)
        if any(p.startswith(KEY_PREFIX) for p in offered) and subprotocol is None:
            raise Refused(
                "unauthorized", f"a key sent as a subprotocol needs {SUBPROTOCOL!r} offered too", CloseCode.UNAUTHORIZED
            )
        return Admission(key_id=key_id(candidate), subprotocol=subprotocol)

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        if origin in self._allowed_origins:
            return True
        if host is not None and same_origin(origin, host):
            return True  # a page this server served itself (GET /demo): still needs a key when keys are set
        return self._any_extension and DEV_EXTENSION_ORIGIN.fullmatch(origin) is not None

    def _candidate_key(self, websocket: WebSocket, offered: list[str]) -> str | None:
        for protocol in offered:
            if protocol.startswith(KEY_PREFIX):
                return protocol[len(KEY_PREFIX) :]
        authorization = websocket.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            return authorization[7:].strip()
        if self._allow_query_key:
            return websocket.query_params.get("key")
        return None

    def _valid(self, candidate: str) -> bool:
        digest = _digest(candidate)
        matched = False
        for known in self._digests:  # no early exit: the time does not say which key, or how close
            matched |= hmac.compare_digest(digest, known)
        return matched
