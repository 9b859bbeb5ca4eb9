"""Binary WebSocket frames as a client writes them (RFC 6455 5.2, 5.3), for audio written straight onto the
SDK's socket without a task hop (deepgram_stream.py `DirectWrite`).

websockets' `Frame.serialize` draws each frame's 4-byte masking key with `secrets.token_bytes(4)`: one getrandom
call per frame, ~7% of the server's CPU on the Deepgram path at 100 sessions (py-spy), plus a Frame, an Opcode
and a BytesIO per frame. Here the keys come from the same source (os.urandom, the OS's CSPRNG) in draws of
MASKS_PER_DRAW, and the frame is one header pack, one C mask (websockets' own `apply_mask`) and one join.
Only for connections that negotiated no extension (permessage-deflate would have to compress the payload).
"""

from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets without its C extension
    from websockets.utils import apply_mask

MASK_BYTES = 4
MASKS_PER_DRAW = 1024
FIN_BINARY = 0x82  # FIN set, opcode 2 (binary)
MASKED = 0x80

_HEAD_SHORT = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class MaskingKeys:
    """Fresh masking keys, drawn from os.urandom MASKS_PER_DRAW at a time."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(MASK_BYTES * MASKS_PER_DRAW), 0
        self._at = at + MASK_BYTES
        return self._pool[at : at + MASK_BYTES]


_keys = MaskingKeys()


def binary_frame(payload: bytes) -> bytes:
    """One final, masked, binary frame carrying `payload`, byte for byte what websockets writes but the key."""
    length = len(payload)
    if length < 126:
        head = _HEAD_SHORT.pack(FIN_BINARY, MASKED | length)
    elif length < 65536:
        head = _HEAD_16.pack(FIN_BINARY, MASKED | 126, length)
    else:
        head = _HEAD_64.pack(FIN_BINARY, MASKED | 127, length)
    key = _keys.next()
    return b"".join((head, key, apply_mask(payload, key)))
