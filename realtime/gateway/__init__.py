"""The WebSocket gateway: the chat protocol spoken on `/ws`."""
