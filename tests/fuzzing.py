"""Hostile frames for /ws/session, shared by the hypothesis test and the 100,000-frame fuzz script."""

from __future__ import annotations

import base64
import json
import random

VALID_MESSAGES: tuple[dict[str, object], ...] = (
    {"type": "audio_chunk", "data": base64.b64encode(b"\x00\x01" * 160).decode(), "sequence": 1},
    {"type": "ping", "ts": 1.5},
    {"type": "pong", "ts": 2},
    {"type": "audio_chunk", "data": ""},
)
JUNK_VALUES: tuple[object, ...] = (
    None,
    True,
    -1,
    0,
    2**64,
    -(2**63) - 1,
    1e308,
    float("-inf"),
    "",
    "\u0000",
    "\ud83d\ude00" * 50,
    "é" * 300,
    [],
    {},
    [1, [2, [3]]],
    {"type": "stop"},
    "%%%",
    "AAA",
    "AAAA" * 1000,
)


def mutate(rng: random.Random) -> str | bytes:
    """One frame: random binary of any small size, or JSON that is broken, mistyped, huge or junk."""
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.choice([0, 1, 2, 3, 5, 639, 640, 641, rng.randrange(4096)]))
    if kind == 1:
        text = json.dumps(rng.choice(VALID_MESSAGES))
        cut = rng.randrange(len(text) + 1)
        return text[:cut]  # truncated JSON
    if kind == 2:
        message = dict(rng.choice(VALID_MESSAGES))
        field = rng.choice([*message, "type", "data", "sequence", "ts", "extra"])
        message[field] = rng.choice(JUNK_VALUES)
        return json.dumps(message, allow_nan=True)
    if kind == 3:
        return json.dumps({"type": rng.choice(["", "STOP", "audio", "dance", "ping ", None, 5])})
    if kind == 4:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF)])) for _ in range(64))
    if kind == 5:
        return json.dumps(rng.choice(JUNK_VALUES), allow_nan=True)
    if kind == 6:
        return json.dumps(
            {
                "type": "audio_chunk",
                "data": base64.b64encode(rng.randbytes(rng.randrange(1, 99))).decode(),
                "sequence": rng.randrange(-5, 2**40),
            }
        )
    depth = rng.randrange(1, 5000)
    if rng.random() < 0.5:
        return "[" * depth  # deep nesting, unbalanced
    # Balanced deep nesting inside a message: msgspec raised RecursionError on these (issue 17).
    field = rng.choice(["data", "extra", "type", "sequence"])
    return f'{{"type":"audio_chunk","{field}":' + "[" * depth + "]" * depth + "}"
