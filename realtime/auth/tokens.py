"""Access tokens (HS256 JWTs via PyJWT) and the one place that turns a bearer credential into a User.

Claims: ``sub`` (user id), ``iat``, ``exp``, ``email`` and ``name``. A token minted by another
service with the same secret and claims is accepted like one issued here. When its ``sub`` names
no user yet and it carries ``email`` and ``name``, the user is created with that id.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import jwt
from pydantic import BaseModel, EmailStr, ValidationError

from persistence.errors import ConflictError
from persistence.models import Name, User
from realtime.auth.api_keys import hash_api_key, looks_like_api_key

if TYPE_CHECKING:
    from persistence.database import Database

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
# Tolerated clock difference, in seconds, for tokens minted by other hosts.
CLOCK_SKEW_SECONDS = 10


class AuthenticationError(Exception):
    """The credential is missing, malformed, expired, wrongly signed, revoked or names no user."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _NewUserClaims(BaseModel):
    """The claims that create a user on first sight of an externally minted token."""

    email: EmailStr
    name: Name


class TokenService:
    """Issues access tokens and authenticates bearer credentials (JWTs and API keys).

    Every ``authenticate`` call reads the database, so a revoked API key fails on its next use.
    """

    def __init__(self, db: Database, *, secret: str, ttl_seconds: int) -> None:
        self._db = db
        self._secret = secret
        self._ttl = timedelta(seconds=ttl_seconds)

    def issue(self, user: User) -> tuple[str, datetime]:
        """Sign an access token for ``user``; return it with its expiry time (UTC)."""
        issued_at = datetime.now(timezone.utc).replace(microsecond=0)
        expires_at = issued_at + self._ttl
        claims = {
            "sub": str(user.user_id),
            "iat": issued_at,
            "exp": expires_at,
            "email": user.email,
            "name": user.name,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires_at

    async def authenticate(self, credential: str) -> User:
        """Return the user a bearer credential belongs to.

        Raises:
            AuthenticationError: for any credential that is not a valid, live token or API key.
        """
        credential = credential.strip()
        if not credential:
            raise AuthenticationError("missing bearer credential")
        if looks_like_api_key(credential):
            return await self._authenticate_api_key(credential)
        return await self._authenticate_jwt(credential)

    async def _authenticate_api_key(self, key: str) -> User:
        async with self._db.unit_of_work() as uow:
            user_id = await uow.credentials.user_id_for_api_key(hash_api_key(key))
            user = await uow.users.get_or_none(user_id) if user_id is not None else None
        if user is None:
            raise AuthenticationError("invalid or revoked API key")
        return user

    async def _authenticate_jwt(self, token: str) -> User:
        claims = self._decode(token)
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise AuthenticationError("invalid access token: sub is not a user id (UUID)") from None

        async with self._db.unit_of_work() as uow:
            user = await uow.users.get_or_none(user_id)
        if user is not None:
            return user
        return await self._create_user_from_claims(user_id, claims)

    def _decode(self, token: str) -> dict:
        try:
            # Naming only HS256 rejects alg=none and every other algorithm, whatever algorithm the header names.
            return jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "iat"]},
                leeway=CLOCK_SKEW_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("access token expired") from None
        except jwt.InvalidTokenError as error:
            raise AuthenticationError(f"invalid access token: {error}") from None

    async def _create_user_from_claims(self, user_id: uuid.UUID, claims: dict) -> User:
        """Create the user named by a token minted elsewhere; see the module docstring."""
        try:
            new_user = _NewUserClaims.model_validate(claims)
        except ValidationError:
            raise AuthenticationError(
                "access token names an unknown user and carries no valid email and name to create it"
            ) from None

        try:
            async with self._db.unit_of_work() as uow:
                user = await uow.users.create(name=new_user.name, email=new_user.email, user_id=user_id)
        except ConflictError:
            # Either a concurrent request created this user a moment ago, or the email belongs
            # to another account. Only the first case is a valid credential.
            async with self._db.unit_of_work() as uow:
                existing = await uow.users.get_or_none(user_id)
            if existing is None:
                raise AuthenticationError(
                    "access token names an unknown user whose email belongs to another account"
                ) from None
            return existing

        logger.info("created user %s from an externally minted access token", user.user_id)
        return user
