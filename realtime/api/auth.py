"""Registration, login, the caller's profile and API keys: ``/auth``."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from persistence.models import User
from realtime.api.params import PUBLIC
from realtime.api.params import IdPath, parse_id
from realtime.api.schemas import (
    ApiKeyCreated,
    ApiKeyCreateRequest,
    ApiKeyList,
    ApiKeyView,
    LoginRequest,
    RegisterRequest,
    TokenResponse,
    UserProfile,
)
from realtime.auth.api_keys import generate_api_key, hash_api_key
from realtime.auth.passwords import hash_password, needs_rehash, verify_password

logger = logging.getLogger(__name__)

# One detail for an unknown email and a wrong password, so a login does not reveal which accounts exist.
LOGIN_FAILED = "invalid email or password"


def token_response(state: State, user: User) -> TokenResponse:
    token, expires_at = state.tokens.issue(user)
    return TokenResponse(user=UserProfile.of(user), access_token=token, expires_at=expires_at)


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/register", summary="Create an account and return an access token", security=PUBLIC)
    async def register(self, state: State, data: JSONBody[RegisterRequest]) -> TokenResponse:
        if not state.settings.allow_registration:
            raise PermissionDeniedException(detail="registration is closed on this server (CORTEX_ALLOW_REGISTRATION=false)")

        password_hash = await hash_password(data.password)
        async with state.db.unit_of_work() as uow:
            user = await uow.users.create(name=data.name, email=data.email)
            await uow.credentials.set_password_hash(user.user_id, password_hash)
        logger.info("registered user %s", user.user_id)
        return token_response(state, user)

    @post("/login", status_code=200, summary="Exchange email and password for an access token", security=PUBLIC)
    async def login(self, state: State, data: JSONBody[LoginRequest]) -> TokenResponse:
        async with state.db.unit_of_work() as uow:
            user = await uow.users.get_by_email(data.email)
            password_hash = await uow.credentials.get_password_hash(user.user_id) if user else None

        if user is None or not await verify_password(password_hash, data.password):
            raise NotAuthorizedException(detail=LOGIN_FAILED)

        if password_hash is not None and needs_rehash(password_hash):
            new_hash = await hash_password(data.password)
            async with state.db.unit_of_work() as uow:
                await uow.credentials.set_password_hash(user.user_id, new_hash)
        return token_response(state, user)

    @get("/me", summary="The authenticated user, with email")
    async def me(self, request: Request[User, Any, State]) -> UserProfile:
        return UserProfile.of(request.user)

    @post("/api-keys", summary="Create an API key; the key is returned only in this response")
    async def create_api_key(
        self, request: Request[User, Any, State], state: State, data: JSONBody[ApiKeyCreateRequest]
    ) -> ApiKeyCreated:
        key = generate_api_key()
        async with state.db.unit_of_work() as uow:
            record = await uow.credentials.create_api_key(
                user_id=request.user.user_id, name=data.name, key_hash=hash_api_key(key)
            )
        logger.info("user %s created API key %s", request.user.user_id, record.id)
        return ApiKeyCreated(id=record.id, name=record.name, key=key, created_at=record.created_at)

    @get("/api-keys", summary="The caller's API keys, without the keys themselves")
    async def list_api_keys(self, request: Request[User, Any, State], state: State) -> ApiKeyList:
        async with state.db.unit_of_work() as uow:
            keys = await uow.credentials.list_api_keys(request.user.user_id)
        return ApiKeyList(items=[ApiKeyView.of(key) for key in keys])

    @delete("/api-keys/{key_id:str}", summary="Revoke an API key; it fails from its next request on")
    async def revoke_api_key(self, request: Request[User, Any, State], state: State, key_id: IdPath) -> None:
        parsed_id = parse_id(key_id, "key_id")
        async with state.db.unit_of_work() as uow:
            await uow.credentials.revoke_api_key(request.user.user_id, parsed_id)
        logger.info("user %s revoked API key %s", request.user.user_id, parsed_id)


