"""Resume tokens: unguessable, bound to one session and (when keys are on) to its API key, never stored in clear.

The store keys a session by the token's SHA-256, so neither a log line nor a Redis dump can be turned back into
a token that resumes someone's call.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_BYTES = 32  # 256 bits: guessing one live token among all sessions is out of reach
MAX_TOKEN_CHARS = 128  # anything longer is malformed, refused before hashing
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str | None:
    """The name a token is stored under; None for a malformed token (wrong length or characters)."""
    if not 16 <= len(token) <= MAX_TOKEN_CHARS or _TOKEN_CHARS.fullmatch(token) is None:
        return None
    return hashlib.sha256(b"presales-ws resume:" + token.encode()).hexdigest()


def same_key(expected: str | None, offered: str | None) -> bool:
    """Whether a resume comes with the key the session was opened with (both None when keys are off)."""
    return hmac.compare_digest(expected or "", offered or "")
