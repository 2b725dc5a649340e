"""HTTP authentication: every request outside the public paths carries ``Authorization: Bearer``.

The middleware sets ``request.user`` to the domain ``User`` and ``request.auth`` to the kind of
credential (``"jwt"`` or ``"api_key"``). A request without valid credentials ends with 401 and a
``detail``.
WebSocket connections are not handled here: the gateway authenticates its handshake itself,
because browsers send the token in the query string there.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from realtime.auth.api_keys import looks_like_api_key
from realtime.auth.tokens import AuthenticationError, TokenService

# Regular expressions over the request path; matching paths need no credentials.
PUBLIC_PATHS = [
    "^/auth/register$",
    "^/auth/login$",
    "^/health$",
    "^/ready$",
    "^/schema",
    "^/ws$",
]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_credential(authorization: str | None) -> str:
    """Return the credential from an ``Authorization: Bearer X`` header value.

    Raises:
        AuthenticationError: when the header is missing or uses another scheme.
    """
    if not authorization:
        raise AuthenticationError("missing Authorization header; send Authorization: Bearer <token or API key>")
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise AuthenticationError("Authorization header must have the form: Bearer <token or API key>")
    return credential.strip()


class BearerAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates HTTP requests with the ``TokenService`` stored in ``app.state.tokens``."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        tokens: TokenService = connection.app.state.tokens
        try:
            credential = bearer_credential(connection.headers.get("authorization"))
            user = await tokens.authenticate(credential)
        except AuthenticationError as error:
            raise NotAuthorizedException(detail=error.detail, headers=_CHALLENGE) from None
        kind = "api_key" if looks_like_api_key(credential) else "jwt"
        return AuthenticationResult(user=user, auth=kind)


AUTH_MIDDLEWARE = DefineMiddleware(
    BearerAuthenticationMiddleware,
    exclude=PUBLIC_PATHS,
    scopes={ScopeType.HTTP},
)
