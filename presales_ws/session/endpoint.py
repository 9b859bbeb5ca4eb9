"""`/ws/session` at connect: who may open a session, with what parameters, and which session a resume token
reaches. Everything here happens before a single frame is read; a refusal says why, then closes."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import anyio
import msgspec
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from presales_ws.access import Admission, Refused, offered_subprotocol
from presales_ws.declaration import FORMAT_FIELDS, Declaration
from presales_ws.logs import get_logger
from presales_ws.protocol import CloseCode, Error, SessionParams
from presales_ws.registry import new_session_id
from presales_ws.resume.admission import check_shared_capacity, claim_session, hand_back, resume_token
from presales_ws.resume.replay import parse_finals_end
from presales_ws.resume.state import Takeover
from presales_ws.service import Service
from presales_ws.session.closing import CLOSE_TIMEOUT_S, close
from presales_ws.session.lifecycle import Session
from presales_ws.session.links import Link
from presales_ws.speakers import Role, parse_channel_roles

log = get_logger("presales_ws.session")

_params_type: Any = SessionParams


class SessionEndpoint:
    """The ASGI app of `/ws/session`, shaped like Starlette's endpoints (`Endpoint(scope, receive, send)`, then
    awaited). Not a `WebSocketEndpoint`: its `encoding` hooks close the socket on a malformed frame, where this
    protocol answers with an `error` and goes on, so frames are decoded by the session with msgspec."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send

    def __await__(self) -> Generator[Any, None, None]:
        return self.dispatch().__await__()

    async def dispatch(self) -> None:
        websocket = WebSocket(self.scope, receive=self.receive, send=self.send)
        service: Service = self.scope["app"].state.service
        subprotocol = offered_subprotocol(websocket)
        takeover: Takeover | None = None
        try:
            admission = service.gate.admit(websocket)
            params, channel_roles = self.parse_params(websocket, service)
            resumed = await self.resume(websocket, service, params, admission)
            if resumed is True:
                return
            takeover = resumed if isinstance(resumed, Takeover) else None
            if takeover is not None:
                channel_roles = takeover.state.channel_roles
            session_id = takeover.state.session_id if takeover else new_session_id()
            await check_shared_capacity(service, admission, session_id)
        except Refused as refusal:
            if takeover is not None:  # claimed, then refused: the session stays for the client's next resume
                await hand_back(service, takeover)
            log.info("session.refused", reason=refusal.code, close_code=int(refusal.close_code))
            error = Error(refusal.code, refusal.message)
            await close(websocket, refusal.close_code, refusal.code, error=error, subprotocol=subprotocol)
            return
        declared = frozenset(field for field in FORMAT_FIELDS if field in websocket.query_params)
        link = Link(websocket, self.receive, admission.subprotocol, resumed=False)
        declaration = Declaration(params, declared)
        session = Session(
            link, service, declaration, channel_roles, admission, session_id=session_id, takeover=takeover
        )
        await session.run()

    async def resume(
        self, websocket: WebSocket, service: Service, params: SessionParams, admission: Admission
    ) -> Takeover | bool:
        """What a resume token reaches: True once the copy held here served this socket (it is done with it); a
        Takeover of the session from Redis; False for a new session. A connection that would open a session here
        passes the capacity checks before it claims one: a refused connection claims nothing. What can refuse only
        after the claim (the key's lease across instances, which needs the session's id) hands the session back."""
        local = self.local_copy(service, params, admission)
        if local is None:
            self.check_capacity(service, admission)
        claim = await claim_session(service, params, admission, here=local.sharing if local else None)
        if local is not None:
            if claim in ("here", None) and await self.attach(local, websocket, params, admission):
                return True
            if isinstance(claim, Takeover):  # another instance had taken it over: this copy was out of date
                await self.end_copy(local)
            try:
                self.check_capacity(service, admission)
            except Refused:
                if isinstance(claim, Takeover):
                    await hand_back(service, claim)
                raise
        if not isinstance(claim, Takeover) or claim.state.session_id in service.registry:
            return False  # (still held here: never two copies of one session on an instance)
        return claim

    def local_copy(self, service: Service, params: SessionParams, admission: Admission) -> Session | None:
        """The session a resume token names, if it is held here, same key, same format. Any other token starts a
        new session (`resumed: false`) unless another instance can take it over, never an error."""
        token = resume_token(service, params)
        if token is None:
            return None
        session: Session | None = service.local_sessions.find(token, admission.key_id)
        if session is None:
            return None
        if (session.format.sample_rate, session.format.channels) != (params.sample_rate, params.channels):
            return None
        return session

    async def attach(self, session: Session, websocket: WebSocket, params: SessionParams, admission: Admission) -> bool:
        """Hand this socket to a session held here; True once the session is done with the socket."""
        finals_end = parse_finals_end(params.finals_end, params.channels)
        return await session.links.attach(Link(websocket, self.receive, admission.subprotocol, finals_end))

    async def end_copy(self, session: Session) -> None:
        """A copy held here that another holder superseded: it ends (bounded) before the session is taken up."""
        session.sharing.superseded()
        with anyio.move_on_after(CLOSE_TIMEOUT_S * 2):
            await session.ended.wait()

    def check_capacity(self, service: Service, admission: Admission) -> None:
        settings = service.settings
        if service.draining:
            raise Refused("shutting_down", "the server is restarting; reconnect", CloseCode.TRY_AGAIN_LATER)
        if len(service.registry) >= settings.max_sessions:
            raise Refused("server_full", "the server is at its session limit; retry later", CloseCode.TRY_AGAIN_LATER)
        if admission.key_id and service.registry.count_for_key(admission.key_id) >= settings.max_sessions_per_key:
            raise Refused("too_many_sessions", "this API key has too many open sessions", CloseCode.RATE_LIMITED)

    def parse_params(self, websocket: WebSocket, service: Service) -> tuple[SessionParams, tuple[Role, Role]]:
        query = dict(websocket.query_params)
        query.pop("key", None)  # never echoed in an error message
        try:
            params: SessionParams = msgspec.convert(query, _params_type, strict=False)
        except msgspec.ValidationError as exc:
            raise Refused("invalid_params", f"invalid query parameters: {exc}", CloseCode.BAD_PARAMETERS) from None
        roles = service.settings.channel_roles
        if params.channel_roles is not None:
            try:
                roles = parse_channel_roles(params.channel_roles)
            except ValueError as exc:
                raise Refused("invalid_params", f"channel_roles: {exc}", CloseCode.BAD_PARAMETERS) from None
        return params, roles
