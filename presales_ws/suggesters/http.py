"""The AI team's suggester, over HTTP: so an LLM service plugs in without touching this code.

Contract: POST SUGGESTER_URL with `{"question", "context": [{"speaker", "text"}], "session_id"}`; answer 200
with `{"response": str, "confidence": float}` within SUGGESTER_TIMEOUT_S; `{"response": null}` or 204 for
"nothing to suggest". Anything else is logged and counts as no suggestion: the call goes on without one.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import msgspec

from presales_ws.logs import get_logger
from presales_ws.suggesters.base import Answer, ContextLine

log = get_logger("presales_ws.suggesters.http")


class SuggestRequest(msgspec.Struct, frozen=True):
    question: str
    context: Sequence[ContextLine]
    session_id: str


class SuggestReply(msgspec.Struct, frozen=True):
    response: str | None = None
    confidence: float | None = None  # required with a response: the threshold must have something to judge


_reply_decoder = msgspec.json.Decoder(SuggestReply)
_request_encoder = msgspec.json.Encoder()


class HttpSuggester:
    name = "http"

    def __init__(self, url: str, timeout_s: float, min_confidence: float, api_key: str | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.min_confidence = min_confidence
        self._headers = {"content-type": "application/json"}
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

    async def suggest(self, question: str, context: Sequence[ContextLine], session_id: str) -> Answer | None:
        if self._client is None:
            raise RuntimeError("HttpSuggester.start() was not called")
        body = _request_encoder.encode(SuggestRequest(question, context, session_id))
        try:
            reply = await self._client.post(self.url, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            log.warning("suggester.http_failed", error=type(exc).__name__, session_id=session_id)
            return None
        if reply.status_code == 204:
            return None
        if reply.status_code != 200:
            log.warning("suggester.http_status", status=reply.status_code, session_id=session_id)
            return None
        try:
            answer = _reply_decoder.decode(reply.content)
        except msgspec.DecodeError as exc:
            log.warning("suggester.http_bad_reply", detail=str(exc)[:200], session_id=session_id)
            return None
        if not answer.response:
            return None
        if answer.confidence is None:
            log.warning("suggester.http_bad_reply", detail="a response without a confidence", session_id=session_id)
            return None
        if answer.confidence < self.min_confidence:
            return None
        return Answer(answer.response, round(min(1.0, max(0.0, answer.confidence)), 3), "http")
