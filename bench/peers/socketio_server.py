"""The peer most Python teams pick: python-socketio's ASGI server with its Redis manager.

Rooms live in Socket.IO; a ``send`` event is emitted to the room (skipping the sender) through
``AsyncRedisManager``, so every process, the sending one included, delivers it after a round trip
through Redis. The event handler's return value is the sender's ack. Run one process per port,
each with the same ``--redis-url``, under uvicorn with Cortex Core's uvicorn options. No auth and
no storage, like the ceiling.

Run: ``python -m bench.peers.socketio_server --port 9000 --redis-url redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import socketio

from bench.peers import serve_peer


def create_app(redis_url: str | None) -> socketio.ASGIApp:
    manager = socketio.AsyncRedisManager(redis_url)
    server = socketio.AsyncServer(async_mode="asgi", client_manager=manager, transports=["websocket"])

    @server.event
    async def join(sid: str, room: str) -> str:
        await server.enter_room(sid, room)
        return "ok"

    @server.event
    async def send(sid: str, data: dict) -> str:
        await server.emit("message", data, to=data["room"], skip_sid=sid)
        return data["ref"]

    return socketio.ASGIApp(server)


def main() -> None:
    serve_peer("Run the python-socketio peer server.", create_app, redis_required=True)


if __name__ == "__main__":
    main()
