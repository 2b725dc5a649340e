"""User lookup by email, for adding participants: ``GET /users``."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from persistence.models import User
from realtime.api.schemas import UserList, user_view


@get("/users", tags=["users"], summary="Find a user by exact email, compared case-insensitively")
async def find_users(
    request: Request[User, Any, State],
    state: State,
    email: Annotated[str, QueryParameter(name="email", min_length=1, max_length=320)],
) -> UserList:
    # No stored email contains NUL, and PostgreSQL rejects it in a query parameter.
    if "\x00" in email:
        return UserList(items=[])
    async with state.db.unit_of_work() as uow:
        user = await uow.users.get_by_email(email)
    items = [user_view(user, request.user.user_id)] if user is not None else []
    return UserList(items=items)
