"""A small chat client over the real WebSocket protocol, plus HTTP set-up helpers for tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.support.server import ServerProcess, mint_token

RECEIVE_TIMEOUT_SECONDS = 10


@dataclass
class ChatUser:
    user_id: str
    name: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_user(server: ServerProcess, name: str = "user") -> ChatUser:
    """Create a user by presenting a token minted with the shared secret (the server creates it)."""
    user_id = str(uuid.uuid4())
    email = f"{name}-{user_id[:8]}@example.com"
    user = ChatUser(user_id, name, email, mint_token(user_id, email=email, name=name))
    response = httpx.get(server.base_url + "/auth/me", headers=user.headers, timeout=10)
    response.raise_for_status()
    return user


def new_conversation(server: ServerProcess, owner: ChatUser, participants: list[ChatUser]) -> str:
    """Create a workspace owned by `owner` and a conversation in it; return the conversation id."""
    workspace = httpx.post(
        server.base_url + "/workspaces",
        json={"name": "tests", "description": "created by a test"},
        headers=owner.headers,
        timeout=10,
    )
    workspace.raise_for_status()
    conversation = httpx.post(
        f"{server.base_url}/workspaces/{workspace.json()['id']}/conversations",
        json={"topic": "test conversation", "participant_ids": [user.user_id for user in participants]},
        headers=owner.headers,
        timeout=10,
    )
    conversation.raise_for_status()
    return conversation.json()["id"]


def history(server: ServerProcess, user: ChatUser, conversation_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
    """Every stored message after `after_seq`, read page by page over HTTP."""
    messages: list[dict[str, Any]] = []
    while True:
        response = httpx.get(
            f"{server.base_url}/conversations/{conversation_id}/messages",
            params={"after_seq": after_seq, "limit": 200},
            headers=user.headers,
            timeout=10,
        )
        response.raise_for_status()
        page = response.json()
        messages.extend(page["items"])
        if not page["has_more"] or not page["items"]:
            return messages
        after_seq = page["items"][-1]["seq"]


class ChatClient:
    """One WebSocket connection speaking the chat protocol."""

    def __init__(self, connection: ClientConnection, ready: dict[str, Any]) -> None:
        self.connection = connection
        self.ready = ready

    @classmethod
    async def connect(
        cls, server: ServerProcess, user: ChatUser, *, via: str = "header", **options: Any
    ) -> ChatClient:
        if via == "header":
            connection = await websockets.connect(server.ws_url, additional_headers=user.headers, **options)
        else:
            connection = await websockets.connect(f"{server.ws_url}?token={user.token}", **options)
        ready = json.loads(await asyncio.wait_for(connection.recv(), RECEIVE_TIMEOUT_SECONDS))
        if ready.get("type") != "ready":
            raise AssertionError(f"expected a ready frame first, got {ready}")
        return cls(connection, ready)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = RECEIVE_TIMEOUT_SECONDS) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def expect(self, frame_type: str, timeout: float = RECEIVE_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Receive the next frame, skipping typing notices, and check its type."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == "typing" and frame_type != "typing":
                continue
            if frame["type"] != frame_type:
                raise AssertionError(f"expected a {frame_type} frame, got {frame}")
            return frame

    async def subscribe(self, conversation_id: str, since_seq: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "conversation_id": conversation_id, "ref": "sub"}
        if since_seq is not None:
            frame["since_seq"] = since_seq
        await self.send(frame)
        return await self.expect("subscribed")

    async def send_message(self, conversation_id: str, content: str, client_msg_id: str | None = None, ref: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "send", "conversation_id": conversation_id, "content": content}
        if client_msg_id is not None:
            frame["client_msg_id"] = client_msg_id
        if ref is not None:
            frame["ref"] = ref
        await self.send(frame)

    async def messages(self, count: int, timeout: float = RECEIVE_TIMEOUT_SECONDS) -> list[dict[str, Any]]:
        """Collect `count` messages from message and ack frames, in the order they arrive."""
        received: list[dict[str, Any]] = []
        while len(received) < count:
            frame = await self.recv(timeout)
            if frame["type"] in ("message", "ack"):
                received.append(frame["message"])
        return received

    async def close(self) -> None:
        await self.connection.close()
