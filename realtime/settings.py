"""Server settings, read from ``CORTEX_*`` environment variables and validated at start-up."""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./cortex.db"
# Shortest HS256 key accepted from the environment: RFC 7518 requires a key at least as long as
# the hash output (256 bits).
MIN_JWT_SECRET_BYTES = 32


class SettingsError(Exception):
    """A setting has a value the server cannot run with; the message names it and the accepted form."""


class Settings(BaseSettings):
    """Every setting of the server. Each field maps to ``CORTEX_<FIELD NAME IN CAPITALS>``."""

    model_config = SettingsConfigDict(env_prefix="CORTEX_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///PATH or postgresql+asyncpg://...",
    )
    redis_url: str | None = Field(
        None, description="Redis URL for fan-out between instances; unset means the in-process broker"
    )
    jwt_secret: str | None = Field(None, description="HS256 key for access tokens")
    token_ttl_seconds: int = Field(3600, ge=60, le=30 * 24 * 3600)
    allow_registration: bool = True
    max_message_chars: int = Field(16000, ge=1, le=1_000_000)
    max_frame_bytes: int = Field(262144, ge=1024, le=64 * 1024 * 1024)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug)$")

    # Group commit: a batch is whatever waits when the writer is free, up to write_batch_max
    # messages. With write_batch_wait_ms above 0 the writer lingers that long for a fuller batch,
    # which trades ack latency for fewer transactions.
    write_batch_max: int = Field(200, ge=1, le=10_000)
    write_batch_wait_ms: float = Field(0.0, ge=0, le=1000)
    # Under load (the last batch contained more than one message), batches begin at least this
    # far apart. Fuller batches cost less CPU per message in the store, in Redis and in frame
    # writes, and a message may wait this much longer for its ack. 0 starts each batch as soon
    # as the writer is free.
    write_batch_interval_ms: float = Field(5.0, ge=0, le=1000)
    # Messages accepted but not yet stored, across all connections of a process. When the writer
    # is this far behind, new sends wait (backpressure) instead of queueing without bound.
    write_queue_max: int = Field(10_000, ge=1, le=1_000_000)
    # Frames queued for one connection before it counts as a slow consumer and is closed with 4408.
    outbox_max_frames: int = Field(1000, ge=1, le=1_000_000)
    # Seconds a connection may take no frame at all while catch-up frames wait for it, before it
    # is closed with 4408 as a slow consumer.
    slow_consumer_seconds: float = Field(10.0, gt=0, le=3600)
    # With Redis: seconds between checks for messages whose live event was lost (an instance
    # killed between storing and publishing). Such a message reaches subscribers within about two
    # intervals.
    lost_event_check_seconds: float = Field(1.0, gt=0, le=3600)
    # Seconds between server pings on a connection; a connection with no pong after another
    # interval is closed. 0 turns heartbeats off.
    heartbeat_seconds: float = Field(20.0, ge=0, le=3600)
    # Messages one connection may send per second (a token bucket with a burst of twice that);
    # 0 turns the limit off.
    rate_limit_messages_per_second: float = Field(0, ge=0)
    # HTTP requests one client address may make per minute (429 beyond it); health, readiness,
    # the OpenAPI schema and the WebSocket handshake are not counted. 0 turns the limit off.
    http_rate_limit_per_minute: int = Field(0, ge=0)
    # Whether WebSocket connections may negotiate permessage-deflate. Off by default: chat
    # messages are short, and compressing each subscriber's copy costs more CPU than it saves.
    ws_compression: bool = False
    # Seconds a graceful shutdown waits for in-flight writes and acks.
    shutdown_grace_seconds: float = Field(6.0, ge=0, le=300)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:/// (for example sqlite+aiosqlite:///./cortex.db) "
                "or postgresql+asyncpg:// (for example postgresql+asyncpg://user@host/db)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://, for example redis://127.0.0.1:6379/0")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if len(value.encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_JWT_SECRET_BYTES} bytes long")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        """The database file for a SQLite URL; None for PostgreSQL or an in-memory database."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        if not path or path == ":memory:":
            return None
        return Path(path.split("?", 1)[0])


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment, with CLI overrides; raise SettingsError naming the variable."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            variable = f"CORTEX_{field.upper()}"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{variable}: {message} (got {_shown_value(field, item.get('input'))})")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from error


def mask_url_password(url: str) -> str:
    """Return `url` with the password of its user part replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _shown_value(field: str, value: object) -> str:
    """Return a rejected value as an error message may show it: no secret, no password in a URL."""
    if field == "jwt_secret":
        return "a value that is not shown"
    if isinstance(value, str):
        return repr(mask_url_password(value))
    return repr(value)


def resolve_jwt_secret(settings: Settings) -> str:
    """Return the token signing key: the configured one, or one generated and kept beside the database.

    With CORTEX_JWT_SECRET unset, a random key is written to ``<database file>.secret`` (mode 0600) on
    first start and read back later, so tokens survive restarts and every instance on one SQLite file
    shares it. For PostgreSQL there is no file to keep it beside, so a process-local key is used and
    tokens do not survive a restart; set CORTEX_JWT_SECRET there.
    """
    if settings.jwt_secret:
        return settings.jwt_secret

    database_file = settings.sqlite_path()
    if database_file is None:
        logger.warning(
            "CORTEX_JWT_SECRET is unset and the database is not a SQLite file: using a random key "
            "for this process only; tokens will not survive a restart or work on other instances"
        )
        return secrets.token_urlsafe(48)

    secret_file = database_file.with_name(database_file.name + ".secret")
    if not secret_file.exists():
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(48)
        try:
            # O_EXCL: when two instances start at once, one writes and the other reads its key.
            with secret_file.open("x", encoding="ascii") as handle:
                handle.write(candidate)
            secret_file.chmod(0o600)
        except FileExistsError:
            pass
    secret = secret_file.read_text(encoding="ascii").strip()
    logger.warning(
        "CORTEX_JWT_SECRET is unset: signing tokens with the generated key kept in %s; "
        "set CORTEX_JWT_SECRET to share a key with other services",
        secret_file,
    )
    return secret
