"""The AI team's suggester, over HTTP: so an LLM service plugs in without touching this code.

Contract: POST SUGGESTER_URL with `{"question", "context": [{"speaker", "text"}], "session_id"}`; answer 200
with `{"response": str, "confidence": float}` within SUGGESTER_TIMEOUT_S; `{"response": null}` or 204 for
"nothing to suggest". Or stream the answer as it is written (`Content-Type: text/event-stream`): each event's
data is JSON, the first `{"confidence": x}`, then `{"delta": "text"}` pieces, and last `{"done": true}`.
Anything else (a bad status, invalid JSON, a stream cut before `done`) is logged and costs that suggestion
only: the call goes on without one.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import msgspec

from presales_ws.logs import get_logger
from presales_ws.suggesters.base import Answer, ContextLine, PartialSink
from presales_ws.suggesters.sse import event_data

log = get_logger("presales_ws.suggesters.http")


class SuggestRequest(msgspec.Struct, frozen=True):
    question: str
    context: Sequence[ContextLine]
    session_id: str


class SuggestReply(msgspec.Struct, frozen=True):
    response: str | None = None
    confidence: float | None = None  # required with a response: the threshold must have something to judge


class StreamEvent(msgspec.Struct, frozen=True):
    """One event of a streaming answer: the confidence first, then pieces of the response, then `done`."""

    confidence: float | None = None
    delta: str | None = None
    done: bool = False


class BrokenStream(Exception):
    """A streaming answer that cannot be used; the message says why, for the log."""


_reply_decoder = msgspec.json.Decoder(SuggestReply)
_event_decoder = msgspec.json.Decoder(StreamEvent)
_request_encoder = msgspec.json.Encoder()


class HttpSuggester:
    name = "http"

    def __init__(self, url: str, timeout_s: float, min_confidence: float, api_key: str | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.min_confidence = min_confidence
        self._headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # One pooled client for the process: keep-alive connections, so a question costs no TCP/TLS handshake.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def suggest(
        self,
        question: str,
        context: Sequence[ContextLine],
        session_id: str,
        on_partial: PartialSink | None = None,
    ) -> Answer | None:
        if self._client is None:
            raise RuntimeError("HttpSuggester.start() was not called")
        body = _request_encoder.encode(SuggestRequest(question, context, session_id))
        request = self._client.build_request("POST", self.url, content=body, headers=self._headers)
        try:
            reply = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("suggester.http_failed", error=type(exc).__name__, session_id=session_id)
            return None
        try:
            if reply.status_code == 204:
                return None
            if reply.status_code != 200:
                log.warning("suggester.http_status", status=reply.status_code, session_id=session_id)
                return None
            if reply.headers.get("content-type", "").startswith("text/event-stream"):
                return await self._read_stream(reply, on_partial, session_id)
            return self._read_reply(await reply.aread(), session_id)
        except httpx.HTTPError as exc:
            log.warning("suggester.http_failed", error=type(exc).__name__, session_id=session_id)
            return None
        finally:
            await reply.aclose()

    def _read_reply(self, content: bytes, session_id: str) -> Answer | None:
        try:
            answer = _reply_decoder.decode(content)
        except msgspec.DecodeError as exc:
            log.warning("suggester.http_bad_reply", detail=str(exc)[:200], session_id=session_id)
            return None
        if not answer.response:
            return None
        if answer.confidence is None:
            log.warning("suggester.http_bad_reply", detail="a response without a confidence", session_id=session_id)
            return None
        return self._judged(answer.response, answer.confidence)

    async def _read_stream(
        self, reply: httpx.Response, on_partial: PartialSink | None, session_id: str
    ) -> Answer | None:
        """Forward the answer so far after each delta; the complete one once `done` comes."""
        confidence: float | None = None
        pieces: list[str] = []
        events = 0
        try:
            async for data in event_data(reply.aiter_bytes()):
                events += 1
                try:
                    event = _event_decoder.decode(data)
                except msgspec.DecodeError as exc:
                    raise BrokenStream(f"event {events} is not a stream event: {str(exc)[:120]}") from None
                if event.confidence is not None:
                    confidence = event.confidence
                    if confidence < self.min_confidence:
                        return None  # not worth showing: stop reading (and paying for) the rest
                if event.delta:
                    if confidence is None:
                        raise BrokenStream("a delta before the confidence")
                    pieces.append(event.delta)
                    if on_partial is not None and (so_far := "".join(pieces).strip()):
                        on_partial(self._answer(so_far, confidence))
                if event.done:
                    response = "".join(pieces).strip()
                    return self._judged(response, confidence) if response and confidence is not None else None
            raise BrokenStream(f"the stream ended without done, after {events} events")
        except BrokenStream as exc:
            log.warning("suggester.http_bad_stream", detail=str(exc), events=events, session_id=session_id)
        except httpx.HTTPError as exc:
            log.warning(
                "suggester.http_bad_stream", detail=f"cut: {type(exc).__name__}", events=events, session_id=session_id
            )
        return None

    def _judged(self, response: str, confidence: float) -> Answer | None:
        return self._answer(response, confidence) if confidence >= self.min_confidence else None

    @staticmethod
    def _answer(response: str, confidence: float) -> Answer:
        return Answer(response, round(min(1.0, max(0.0, confidence)), 3), "http")
