"""The Litestar application and the start-up and shutdown order of its long-lived parts.

Start: database (migrated), broker, hub, message writer, token service. Shutdown, in reverse:
stop accepting WebSocket connections, store and acknowledge the writes in flight, close sockets
with 1001, stop the writer, the broker and the database engine.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from persistence.database import Database

from realtime.api import AUTH_MIDDLEWARE, EXCEPTION_HANDLERS, ROUTE_HANDLERS, request_max_body_size
from realtime.auth.tokens import TokenService
from realtime.broker import Broker, MemoryBroker, RedisBroker
from realtime.gateway.handler import GATEWAY_PATH, gateway, serve_gateway
from realtime.gateway.hub import Hub
from realtime.pipeline import MessagePipeline
from realtime.settings import Settings, load_settings, resolve_jwt_secret

logger = logging.getLogger(__name__)


def create_broker(settings: Settings) -> Broker:
    if settings.redis_url:
        return RedisBroker(settings.redis_url)
    return MemoryBroker()


class CortexApp(Litestar):
    """Litestar, with WebSockets on the gateway path served straight from the ASGI scope.

    Litestar's routing and middleware are skipped for them (see ``realtime.gateway.handler``), so
    app-level middleware, guards and hooks do not apply to the gateway. Everything else goes
    through Litestar, including a gateway request on a path that Litestar routes to ``/ws``
    (``/ws/``), which the ``gateway`` route serves with the same code.
    """

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if scope["type"] == "websocket" and scope["path"] == GATEWAY_PATH:
            await serve_gateway(self.state, scope, receive, send)  # type: ignore[arg-type]
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> Litestar:
    """Build the application; its lifespan opens and closes the database, broker and writer."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        await db.migrate()
        await db.start_message_writer()
        broker = create_broker(settings)
        hub = Hub(db, broker)
        pipeline = MessagePipeline(
            db,
            hub,
            batch_max=settings.write_batch_max,
            batch_wait_ms=settings.write_batch_wait_ms,
            batch_interval_ms=settings.write_batch_interval_ms,
            queue_max=settings.write_queue_max,
        )
        hub.pipeline = pipeline
        app.state.settings = settings
        app.state.db = db
        app.state.broker = broker
        app.state.hub = hub
        app.state.pipeline = pipeline
        app.state.tokens = TokenService(db, secret=resolve_jwt_secret(settings), ttl_seconds=settings.token_ttl_seconds)

        await broker.start()
        await pipeline.start()
        if settings.redis_url:
            hub.start_sweeping(settings.lost_event_check_seconds)
        # Everything allocated so far (modules, the app, caches) lives as long as the process:
        # move it out of the collector's sight, and collect the young generation less often,
        # since the hot path allocates many short-lived frames and dicts. Garbage collection
        # took about 8% of server CPU under fan-out load before (python -m bench fanout --profile).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)
        logger.info(
            "Cortex Core ready: database %s, broker %s",
            db.dialect,
            "redis" if settings.redis_url else "in-process",
        )
        try:
            yield
        finally:
            # A SIGTERM through `cortex-core serve` has drained and closed sockets already; this
            # covers every other way the app stops.
            hub.closing = True
            await pipeline.drain(settings.shutdown_grace_seconds / 2)
            await hub.shutdown(1.0)
            await hub.stop_sweeping()
            await pipeline.stop(1.0)
            await broker.stop()
            await db.dispose()
            logger.info("Cortex Core stopped")

    middleware = [AUTH_MIDDLEWARE]
    if settings.http_rate_limit_per_minute > 0:
        rate_limit = RateLimitConfig(
            rate_limit=("minute", settings.http_rate_limit_per_minute),
            exclude=["^/health$", "^/ready$", "^/schema", "^/ws$"],
        )
        middleware.insert(0, rate_limit.middleware)

    app = CortexApp(
        route_handlers=[*ROUTE_HANDLERS, gateway],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
        lifespan=[lifespan],
        request_max_body_size=request_max_body_size(settings),
        openapi_config=OpenAPIConfig(
            title="Cortex Core",
            version="1.0.0",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An access token (JWT) or an API key",
                    )
                }
            ),
            security=[{"bearer": []}],
        ),
        # Logging is set up by the program that runs the app (`cortex-core serve`, uvicorn, the tests);
        # Litestar's own logging config would add a queue handler and thread of its own.
        logging_config=None,
    )
    app.state.settings = settings
    return app


def create_app_from_env() -> Litestar:
    """Application factory for `uvicorn --factory`: settings from the environment."""
    return create_app(load_settings())
