"""Server-sent events (text/event-stream) from a byte stream: what a streaming LLM service answers with.

The parsing rules of the HTML standard's EventSource, for the one field we use: always UTF-8; lines end with
CRLF, LF or CR (and nothing else: JSON may hold U+2028 unescaped, which `str.splitlines` would cut at);
`data:` lines (several join with a newline) make an event and a blank line dispatches it; `:` lines are
comments; `event:`, `id:` and `retry:` are read and ignored. An event not closed by a blank line before the
stream ends is discarded, as the standard says: a cut stream never yields half an event.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator

_LINE_END = re.compile(r"\r\n|\r|\n")


async def event_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The data of each complete event, in order."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    data: list[str] = []
    pending = ""  # the start of a line whose end has not arrived
    async for chunk in chunks:
        text = pending + decoder.decode(chunk)
        cut = len(text) - 1 if text.endswith("\r") else len(text)  # a CR may be the first half of a CRLF
        *lines, pending = _LINE_END.split(text[:cut])
        pending += text[cut:]
        for line in lines:
            if event := _read_line(line, data):
                yield event
    if pending.endswith("\r") and (event := _read_line(pending[:-1], data)):  # a CR at the very end ends a line
        yield event


def _read_line(line: str, data: list[str]) -> str | None:
    """Take one line into `data`; the event's data when the line is the blank one that dispatches it."""
    if not line:
        event = "\n".join(data) if data else None
        data.clear()
        return event
    field, colon, value = line.partition(":")
    if field == "data":
        data.append(value[1:] if colon and value.startswith(" ") else value)
    return None
