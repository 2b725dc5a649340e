"""The Litestar-native peer: the channels plugin with its Redis pub/sub backend.

Receiving uses the WebSocket handlers that the plugin generates (``/rooms/{channel_name}``): each
streams its channel's events to the socket and reads nothing from it. Sending uses one more route,
``/publish``, that takes the same ``send`` frame as Cortex Core, builds the message frame once,
publishes it to the room's channel and replies with an ack. The generated handlers also send a
message back to its sender; the load generator ignores that echo and counts the ack instead. No
auth and no storage, like the ceiling.

Run: ``python -m bench.peers.litestar_channels --port 9000 --redis-url redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, WebSocket, get, websocket
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis

# A channel that carries no messages, subscribed at start-up only to open the PubSub connection.
STARTUP_CHANNEL = "bench-startup"

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

from bench.peers import serve_peer


def create_app(redis_url: str | None) -> Litestar:
    backend = RedisChannelsPubSubBackend(redis=Redis.from_url(redis_url))
    channels = ChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=True,
        ws_handler_base_path="/rooms",
    )

    @websocket("/publish")
    async def publish(socket: WebSocket) -> None:
        await socket.accept()
        while True:
            event = await socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            frame = _decode(event.get("text") or event.get("bytes") or b"{}")
            room = frame["conversation_id"]
            message = _encode({"conversation_id": room, "content": frame.get("content")}).decode()
            channels.publish('{"type":"message","message":' + message + "}", room)
            await socket.send_text('{"type":"ack","ref":' + _encode(frame.get("ref")).decode() + "}")

    @get("/health", sync_to_thread=False)
    def health() -> str:
        return "ok"

    async def open_pubsub_connection() -> None:
        # NOTE: with redis-py 8.2, SUBSCRIBE calls that race before the PubSub object has its
        # connection each open one, and all but the last are dropped with their channels (seen
        # here as rooms that never receive). Subscribing once at start-up opens the connection
        # before any client can race for it.
        await backend.subscribe([STARTUP_CHANNEL])

    return Litestar(route_handlers=[publish, health], plugins=[channels], on_startup=[open_pubsub_connection])


def main() -> None:
    serve_peer("Run the Litestar channels peer server.", create_app, redis_required=True)


if __name__ == "__main__":
    main()
