"""Servers that Cortex Core is measured against; benchmark-only, never imported by the product."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def server_options(log_level: str) -> dict[str, Any]:
    """Return Cortex Core's own uvicorn options, so every server in a comparison runs the same stack."""
    from realtime.server import uvicorn_options
    from realtime.settings import load_settings

    return uvicorn_options(load_settings(log_level=log_level))


def serve_peer(description: str, create_app: Callable[[str | None], Any], *, redis_required: bool) -> None:
    """Parse ``--host``, ``--port``, ``--redis-url`` and ``--log-level``, then serve the app under uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=redis_required, help="Redis shared by every process of this server")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    args = parser.parse_args()
    uvicorn.run(create_app(args.redis_url), host=args.host, port=args.port, **server_options(args.log_level))
