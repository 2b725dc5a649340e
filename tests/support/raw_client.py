"""A WebSocket client that reads only when told to, for tests of clients that stop reading.

It drives the `websockets` sans-I/O protocol over a blocking socket, so nothing reads from the
socket in the background the way an asyncio client library does.
"""

from __future__ import annotations

import socket
import time

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class RawClient:
    def __init__(self, port: int, token: str, *, receive_buffer_bytes: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer_bytes is not None:
            # Set before connecting so the TCP window stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws?token={token}"))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self._handshake()

    def _flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            self.sock.sendall(data)

    def _handshake(self) -> None:
        while True:
            self.protocol.receive_data(self.sock.recv(65536))
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    if event.status_code != 101:
                        raise AssertionError(f"handshake refused with HTTP {event.status_code}")
                    self._early_frames = self.protocol.events_received()
                    return

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def read_frames(self, timeout: float, *, answer_pings: bool = True) -> tuple[list[str], int | None]:
        """Read until the server closes: return the text frames received and the close code.

        With `answer_pings` False the client reads pings but never sends the pongs, like a peer
        whose process hung. Raises TimeoutError when the server has not closed within `timeout`.
        """
        deadline = time.monotonic() + timeout
        texts = [frame.data.decode() for frame in self._early_frames if isinstance(frame, Frame) and frame.opcode is Opcode.TEXT]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the server did not close the connection within {timeout} s")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    texts.append(event.data.decode())
            if answer_pings:
                self._flush()
            else:
                self.protocol.data_to_send()
            if self.protocol.close_rcvd is not None or not data:
                code = self.protocol.close_rcvd.code if self.protocol.close_rcvd is not None else None
                return texts, code

    def close(self) -> None:
        self.sock.close()
