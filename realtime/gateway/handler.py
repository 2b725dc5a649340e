"""The `/ws` route: authenticate the handshake, then hand the socket to a Connection."""

from __future__ import annotations

import logging

from litestar import WebSocket, websocket

from realtime.gateway.connection import Connection

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401


def _credential(socket: WebSocket) -> str | None:
    header = socket.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    token = socket.query_params.get("token")
    return token or None


@websocket("/ws", name="gateway")
async def gateway(socket: WebSocket) -> None:
    """Accept a chat client: credentials from the Authorization header or the `token` query parameter."""
    from realtime.auth.tokens import AuthenticationError

    state = socket.app.state
    hub = state.hub

    credential = _credential(socket)
    user = None
    if credential is not None and not hub.closing:
        try:
            user = await state.tokens.authenticate(credential)
        except AuthenticationError as error:
            logger.info("WebSocket handshake rejected: %s", error)

    # Accept and then close, rather than reject the handshake, so browsers can read the close code.
    await socket.accept()
    if hub.closing:
        await socket.close(code=1001, reason="server shutting down")
        return
    if user is None:
        await socket.close(code=CLOSE_UNAUTHORIZED, reason="missing or invalid credentials")
        return

    await Connection(socket, user, hub, state.settings).run()
