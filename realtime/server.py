"""Run the application under uvicorn, with a shutdown that keeps the delivery guarantees.

On SIGTERM or SIGINT the server stops listening, stores and acknowledges the writes in flight,
closes every WebSocket with 1001, and only then lets uvicorn finish. On its own, uvicorn would
close open sockets with 1012 before the application could drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import logging
import re
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
import uvicorn.config
from litestar import Litestar

from realtime.app import create_app
from realtime.settings import Settings

logger = logging.getLogger(__name__)

_SECRET_QUERY = re.compile(r"([?&](?:token|access_token|api_key)=)[^&\s\"]*", re.IGNORECASE)


class RedactQueryCredentials(logging.Filter):
    """Replace credentials in query strings (``?token=...``) in uvicorn's log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = _SECRET_QUERY.sub(r"\1[redacted]", record.msg)
        return True


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first exit signal drains the application before uvicorn shuts down."""

    def __init__(self, config: uvicorn.Config, app: Litestar, grace_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_seconds = grace_seconds
        self._draining = False
        self._drained = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn raises the captured signal again once it has stopped, so the process would
            # die by SIGTERM. After a completed drain the shutdown is a normal exit with status 0.
            if self._drained:
                self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        hub = getattr(self._app.state, "hub", None)
        if self._draining or hub is None or not self.started:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        loop = asyncio.get_event_loop()
        # Signal handlers run between bytecodes of the main thread; schedule instead of acting here.
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit(sig, frame)))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        state = self._app.state
        try:
            logger.info("received signal %d: draining before shutdown", sig)
            for server in getattr(self, "servers", []):
                server.close()
            state.hub.closing = True
            await state.pipeline.drain(self._grace_seconds * 0.6)
            await state.hub.shutdown(self._grace_seconds * 0.3)
            self._drained = True
        except Exception:
            logger.exception("draining before shutdown failed; shutting down anyway")
        finally:
            super().handle_exit(sig, frame)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Return the uvicorn options for these settings: fastest installed loop, parser and ws stack."""
    heartbeat = settings.heartbeat_seconds or None
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        # The sans-I/O websockets implementation costs about two thirds of the CPU per frame of
        # the older one in uvicorn 0.55 (measured with bench/fanout.py).
        "ws": "websockets-sansio",
        "ws_max_size": settings.max_frame_bytes,
        # Compression is negotiated per connection, so every subscriber's copy of a message would
        # be compressed separately. With it off, the text serialized once goes out unchanged.
        "ws_per_message_deflate": settings.ws_compression,
        # uvicorn pings every connection each interval and drops one that has not answered within
        # the timeout, so a dead peer is gone after at most two intervals.
        "ws_ping_interval": heartbeat,
        "ws_ping_timeout": heartbeat,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": 2,
        "lifespan": "on",
    }


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; single process."""
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=redacting_log_config(settings.log_level), **uvicorn_options(settings)
    )
    server = DrainingServer(config, app, settings.shutdown_grace_seconds)
    server.run()


def redacting_log_config(level: str = "info") -> dict[str, Any]:
    """Return uvicorn's logging configuration plus the application's loggers, redacting credentials.

    The application's records go to stderr with their logger name, at `level`. Every handler
    carries RedactQueryCredentials. Worker processes build their logging from this dictionary,
    so they redact too.
    """
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"redact_query_credentials": {"()": f"{__name__}.RedactQueryCredentials"}}
    config["formatters"]["application"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
    }
    config["handlers"]["application"] = {
        "formatter": "application",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_query_credentials"]
    config["root"] = {"handlers": ["application"], "level": level.upper()}
    return config


def run_workers(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Serve with several worker processes under uvicorn's supervisor (needs Redis).

    NOTE: uvicorn's worker processes use its own server class, so on shutdown they close open
    WebSockets with 1012 instead of draining and closing with 1001; run separate instances behind
    a load balancer where that matters.
    """
    uvicorn.run(
        "realtime.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=redacting_log_config(settings.log_level),
        **uvicorn_options(settings),
    )


__all__ = ["redacting_log_config", "run", "run_workers"]
