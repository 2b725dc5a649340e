"""Write the frames a connection gets during one event loop callback with one socket write.

A batch of stored messages reaches each subscriber as several frames within one callback of the
event loop (the pipeline acknowledges and delivers a whole batch at once). Through the ASGI
`send`, every frame is its own `transport.write`, which on loopback and on a busy server is one
system call and one TCP segment each: the largest single cost of the event loop under fan-out
load (docs/benchmarks.md). Instead, a connection keeps the frames pushed to it until the event
loop has run the callbacks that were ready, then encodes them all with the connection's websockets
protocol and writes them with a single `transport.write`. The frames stay separate WebSocket
messages, in the order pushed.

That needs uvicorn's `websockets-sansio` protocol object, which the server selects, because the
ASGI interface has no way to write several messages at once. The protocol is found behind the
ASGI `send` (a bound method of it). Under any other server, or when the protocol cannot take
the frames right now, frames go through `send` one by one as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

logger = logging.getLogger(__name__)


class Holder(Protocol):
    """A connection that keeps its frames until `write_held` is called."""

    def write_held(self) -> None: ...


def raw_protocol(send: Callable[..., Any]) -> WebSocketsSansIOProtocol | None:
    """Return uvicorn's websockets-sansio protocol behind an ASGI `send`, or None."""
    protocol = getattr(send, "__self__", None)
    return protocol if isinstance(protocol, WebSocketsSansIOProtocol) else None


def write_frames(protocol: WebSocketsSansIOProtocol, frames: Iterable[str]) -> bool:
    """Write text frames with one transport write; False, with nothing written, if not possible now.

    The checks are the ones uvicorn's `send` makes before it writes a frame: the handshake is
    done, no close was sent, the peer is connected, the transport is not paused and the
    websockets protocol is open. The caller then sends the frames one by one through `send`,
    which waits for the transport or reports the disconnect.
    """
    if (
        not protocol.handshake_complete
        or protocol.initial_response is not None
        or protocol.close_sent
        or getattr(protocol, "disconnected", False)
        or not protocol.writable.is_set()
        or protocol.transport.is_closing()
    ):
        return False
    connection = protocol.conn
    try:
        for frame in frames:
            connection.send_text(frame.encode())
    except InvalidState:
        # The peer began closing; uvicorn's send reports this as a disconnect. Only the first
        # frame can meet it, since nothing else runs between two frames.
        return False
    protocol.transport.write(b"".join(connection.data_to_send()))
    return True


# Connections keeping frames, per event loop, until the callback that writes them runs. Each loop
# has its own list, so loops in different threads never write each other's connections.
_holders: dict[asyncio.AbstractEventLoop, list[Holder]] = {}


def hold(holder: Holder) -> None:
    """Have `holder.write_held()` called after the callbacks that are ready now (call_soon)."""
    loop = asyncio.get_running_loop()
    waiting = _holders.get(loop)
    if waiting is None:
        waiting = _holders[loop] = []
        loop.call_soon(_write_all, loop)
    waiting.append(holder)


def _write_all(loop: asyncio.AbstractEventLoop) -> None:
    for holder in _holders.pop(loop, ()):
        try:
            holder.write_held()
        except Exception:
            logger.exception("writing held frames failed")
