"""Authentication: password hashing, access tokens, API keys and the HTTP middleware."""

from realtime.auth.guard import AUTH_MIDDLEWARE, BearerAuthenticationMiddleware, bearer_credential
from realtime.auth.tokens import AuthenticationError, TokenService

__all__ = [
    "AUTH_MIDDLEWARE",
    "AuthenticationError",
    "BearerAuthenticationMiddleware",
    "TokenService",
    "bearer_credential",
]
