"""The `/ws` route: authenticate the handshake, then hand the socket to a Connection.

``serve_gateway`` works on the raw ASGI scope. ``realtime.app.CortexApp`` calls it directly for
``/ws``, before Litestar's routing and middleware, because those and Litestar's ``WebSocket``
object would stay alive for the whole connection. They cost about 4 KB per idle connection
(tracemalloc, 4,000 connections of ``python -m bench connections``) and a call per frame sent.
The Litestar route below serves any other path that Litestar routes to ``/ws``.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from litestar import WebSocket, websocket
from litestar.datastructures import State
from litestar.types import Receive, Scope, Send

from realtime.gateway.connection import Connection

logger = logging.getLogger(__name__)

GATEWAY_PATH = "/ws"
CLOSE_UNAUTHORIZED = 4401
# The close code and reason Litestar sends when a WebSocket handler raises.
CLOSE_HANDLER_FAILED = 4500


def _credential(scope: Scope) -> str | None:
    """Return the credential from the Authorization header, or else from the `token` query parameter."""
    for name, value in scope["headers"]:
        # uvicorn's websockets-sansio protocol passes header names in the client's case.
        if name.lower() == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
            return None
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True, separator="&"):
        if name == "token":
            return value or None
    return None


async def _open_connection(state: State, scope: Scope, receive: Receive, send: Send) -> Connection | None:
    """Authenticate and accept the socket; return its Connection, or None once it is closed."""
    from realtime.auth.tokens import AuthenticationError

    hub = state.hub
    credential = _credential(scope)
    user = None
    if credential is not None and not hub.closing:
        try:
            user = await state.tokens.authenticate(credential)
        except AuthenticationError as error:
            logger.info("WebSocket handshake rejected: %s", error)

    # Accept and then close, rather than reject the handshake, so browsers can read the close code.
    event = await receive()
    if event["type"] != "websocket.connect":
        return None  # the client left during authentication
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    if hub.closing:
        await send({"type": "websocket.close", "code": 1001, "reason": "server shutting down"})
        return None
    if user is None:
        await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": "missing or invalid credentials"})
        return None
    return Connection(receive, send, user, hub, state.settings)


async def serve_gateway(state: State, scope: Scope, receive: Receive, send: Send) -> None:
    """Accept a chat client: credentials from the Authorization header or the `token` query parameter."""
    try:
        # The handshake runs in its own frame, so the user model and the credential are freed
        # before the connection starts serving.
        connection = await _open_connection(state, scope, receive, send)
    except Exception:
        logger.exception("WebSocket handshake failed")
        try:
            await send({"type": "websocket.close", "code": CLOSE_HANDLER_FAILED, "reason": "Internal Server Error"})
        except Exception as error:  # the client may be gone already
            logger.debug("close %d not sent: %s", CLOSE_HANDLER_FAILED, error)
        return
    if connection is not None:
        await connection.run()


@websocket(GATEWAY_PATH, name="gateway")
async def gateway(socket: WebSocket) -> None:
    """Serve `/ws` for requests that reach Litestar's router (see the module docstring)."""
    await serve_gateway(socket.app.state, socket.scope, socket.receive, socket.send)
