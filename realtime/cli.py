"""The ``cortex-core`` command line: serve, migrate, users create, token, export, import, demo.

Settings come from ``CORTEX_*`` environment variables; a flag overrides its variable. Invalid
settings stop every command with exit code 2 and a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realtime.settings import Settings, SettingsError, load_settings, mask_url_password, resolve_jwt_secret

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# --- commands ---


def command_serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        database_url=args.database_url,
        redis_url=args.redis_url,
    )
    if settings.workers > 1 and not settings.redis_url:
        print(
            f"error: --workers {settings.workers} needs Redis for fan-out between the worker processes; "
            "set CORTEX_REDIS_URL or pass --redis-url, or run one worker",
            file=sys.stderr,
        )
        return EXIT_USAGE

    # Migrate once here, before uvicorn starts: an unreachable database then stops the command
    # with a plain message, and worker processes do not race to migrate.
    asyncio.run(_migrate(settings))
    base = f"{_display_host(settings.host)}:{settings.port}"
    print(f"Cortex Core serving on http://{base}  (WebSocket ws://{base}/ws, API docs http://{base}/schema)", flush=True)

    from realtime import server

    if settings.workers == 1:
        server.run(settings, host=settings.host, port=settings.port)
        return EXIT_OK

    # Each worker's application factory reads its settings from the environment.
    _export_settings(settings)
    server.run_workers(settings, host=settings.host, port=settings.port, workers=settings.workers)
    return EXIT_OK


def _export_settings(settings: Settings) -> None:
    values = {
        "CORTEX_HOST": settings.host,
        "CORTEX_PORT": str(settings.port),
        "CORTEX_WORKERS": str(settings.workers),
        "CORTEX_DATABASE_URL": settings.database_url,
    }
    if settings.redis_url:
        values["CORTEX_REDIS_URL"] = settings.redis_url
    os.environ.update(values)


async def _migrate(settings: Settings) -> tuple[str | None, str | None]:
    from persistence.database import Database

    async with Database(settings.database_url) as db:
        return await db.migrate()


def command_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(database_url=args.database_url)
    before, after = asyncio.run(_migrate(settings))
    if before is None:
        print(f"database schema created at the latest revision ({after})")
    elif before == after:
        print(f"database schema already at the latest revision ({after}); nothing to apply")
    else:
        print(f"database schema upgraded from revision {before} to the latest revision ({after})")
    return EXIT_OK


async def _create_user(settings: Settings, email: str, name: str, password: str | None) -> dict[str, Any]:
    from persistence.database import Database
    from realtime.api.schemas import UserProfile
    from realtime.auth.passwords import hash_password

    password_hash = await hash_password(password) if password is not None else None
    async with Database(settings.database_url) as db:
        await db.migrate()
        async with db.unit_of_work() as uow:
            user = await uow.users.create(name=name, email=email)
            if password_hash is not None:
                await uow.credentials.set_password_hash(user.user_id, password_hash)
    return UserProfile.of(user).model_dump(mode="json")


def command_users_create(args: argparse.Namespace) -> int:
    from pydantic import EmailStr, TypeAdapter, ValidationError

    from persistence.models import Name
    from realtime.api.schemas import Password

    settings = load_settings(database_url=args.database_url)
    checks = [("--email", EmailStr, args.email), ("--name", Name, args.name)]
    if args.password is not None:
        checks.append(("--password", Password, args.password))
    for option, value_type, value in checks:
        try:
            TypeAdapter(value_type).validate_python(value)
        except ValidationError as error:
            message = error.errors()[0].get("msg", "invalid value")
            print(f"error: {option}: {message}", file=sys.stderr)
            return EXIT_USAGE

    user = asyncio.run(_create_user(settings, args.email, args.name, args.password))
    print(json.dumps(user, ensure_ascii=False))
    return EXIT_OK


async def _issue_token(settings: Settings, email: str) -> str | None:
    from persistence.database import Database
    from realtime.auth.tokens import TokenService

    async with Database(settings.database_url) as db:
        await db.migrate()
        async with db.unit_of_work() as uow:
            user = await uow.users.get_by_email(email)
        if user is None:
            return None
        tokens = TokenService(db, secret=resolve_jwt_secret(settings), ttl_seconds=settings.token_ttl_seconds)
        token, _ = tokens.issue(user)
        return token


def command_token(args: argparse.Namespace) -> int:
    settings = load_settings(database_url=args.database_url)
    token = asyncio.run(_issue_token(settings, args.email))
    if token is None:
        print(f"error: no user with email {args.email!r}; create one with: cortex-core users create", file=sys.stderr)
        return EXIT_FAILURE
    print(token)
    return EXIT_OK


async def _export(settings: Settings, path: Path) -> int:
    from persistence.database import Database
    from persistence.transfer import export_database

    async with Database(settings.database_url) as db:
        return await export_database(db, path)


def command_export(args: argparse.Namespace) -> int:
    settings = load_settings(database_url=args.database_url)
    database_file = settings.sqlite_path()
    if database_file is not None and not database_file.exists():
        print(f"error: database file {database_file} does not exist; nothing to export", file=sys.stderr)
        return EXIT_FAILURE
    rows = asyncio.run(_export(settings, Path(args.file)))
    print(f"exported {rows} rows to {args.file}")
    return EXIT_OK


async def _import(settings: Settings, path: Path) -> int:
    from persistence.database import Database
    from persistence.transfer import import_database

    async with Database(settings.database_url) as db:
        await db.migrate()
        return await import_database(db, path, progress=sys.stderr.isatty())


def command_import(args: argparse.Namespace) -> int:
    settings = load_settings(database_url=args.database_url)
    path = Path(args.file)
    if not path.is_file():
        print(f"error: export file {path} not found", file=sys.stderr)
        return EXIT_FAILURE
    rows = asyncio.run(_import(settings, path))
    print(f"imported {rows} rows from {path}")
    return EXIT_OK


def command_demo(args: argparse.Namespace) -> int:
    from realtime.demo import DemoOptions, run_demo

    options = DemoOptions(
        url=args.url,
        languages=args.languages,
        limit_dialogues=args.limit_dialogues,
        concurrency=args.concurrency,
        progress=not args.no_progress,
    )
    return asyncio.run(run_demo(options))


# --- parser ---


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy async URL of the database (overrides CORTEX_DATABASE_URL)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cortex-core",
        description="Cortex Core: a WebSocket real-time messaging server. Settings come from CORTEX_* variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (creates and migrates the database first)")
    serve.add_argument("--host", help="address to listen on (CORTEX_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port to listen on (CORTEX_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes; more than 1 needs Redis (CORTEX_WORKERS, default 1)")
    _add_database_url(serve)
    serve.add_argument("--redis-url", help="Redis URL for fan-out between instances (overrides CORTEX_REDIS_URL)")
    serve.set_defaults(handler=command_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    _add_database_url(migrate)
    migrate.set_defaults(handler=command_migrate)

    users = commands.add_parser("users", help="manage users")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    create = user_commands.add_parser("create", help="create a user and print it as JSON")
    create.add_argument("--email", required=True, help="email address, unique case-insensitively")
    create.add_argument("--name", required=True, help="display name, 1 to 100 characters")
    create.add_argument("--password", help="password for POST /auth/login, at least 8 characters; without it the user logs in only with tokens")
    _add_database_url(create)
    create.set_defaults(handler=command_users_create)

    token = commands.add_parser("token", help="print a signed access token for a user")
    token.add_argument("--email", required=True, help="email address of the user")
    _add_database_url(token)
    token.set_defaults(handler=command_token)

    export = commands.add_parser("export", help="write every row of the database to FILE as JSON lines")
    export.add_argument("file", metavar="FILE", help="output file")
    _add_database_url(export)
    export.set_defaults(handler=command_export)

    import_ = commands.add_parser("import", help="load a FILE written by export into an empty database")
    import_.add_argument("file", metavar="FILE", help="input file")
    _add_database_url(import_)
    import_.set_defaults(handler=command_import)

    demo = commands.add_parser(
        "demo", help="replay the chatterbot-corpus dialogues against a running server and check delivery"
    )
    demo.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the server (default http://127.0.0.1:8000)")
    demo.add_argument("--languages", nargs="+", metavar="LANGUAGE", help="corpus languages to replay (default: all)")
    demo.add_argument("--limit-dialogues", type=int, metavar="N", help="replay at most N dialogues per corpus file")
    demo.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="conversations replayed at the same time (default 4)"
    )
    demo.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    demo.set_defaults(handler=command_demo)

    return parser


def _without_password(args: argparse.Namespace) -> str:
    url = getattr(args, "database_url", None) or os.environ.get("CORTEX_DATABASE_URL") or "(default)"
    return mask_url_password(url)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 success, 1 failure, 2 bad usage or settings)."""
    # No logging set-up here: until the server configures logging, warnings reach stderr through
    # the logging module's last-resort handler.
    args = build_parser().parse_args(argv)

    from sqlalchemy.exc import DBAPIError

    from persistence.errors import PersistenceError

    try:
        return args.handler(args)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PersistenceError as error:
        print(f"error: {error.detail}", file=sys.stderr)
        return EXIT_FAILURE
    except (OSError, DBAPIError) as error:
        # Raised before anything was served: the database named by the settings is unreachable,
        # refuses the login, or its SQLite folder does not exist.
        reason = getattr(error, "orig", None) or error
        print(
            f"error: cannot use the database {_without_password(args)}: {reason}; "
            "check CORTEX_DATABASE_URL (or --database-url) and that the server is running",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
