"""The cortex-core command line, run in-process the way the console script runs it."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import jwt
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from litestar.testing import AsyncTestClient

from persistence.database import Database, alembic_config

from realtime.app import create_app
from realtime.cli import main
from realtime.settings import load_settings

JWT_SECRET = "cli-suite-secret-0123456789abcdef0123456789"
HEAD_REVISION = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def database_url(tmp_path, monkeypatch):
    """A fresh SQLite file named by CORTEX_DATABASE_URL, with a fixed signing key."""
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("CORTEX_DATABASE_URL", url)
    monkeypatch.setenv("CORTEX_JWT_SECRET", JWT_SECRET)
    for name in ("CORTEX_REDIS_URL", "CORTEX_WORKERS", "CORTEX_PORT"):
        monkeypatch.delenv(name, raising=False)
    return url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def run_in_thread(capsys, *argv: str) -> tuple[int, str, str]:
    """Run a command from an async test: the command starts its own event loop, so not on this one."""
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CORTEX_MAX_MESSAGE_CHARS", "0"),
        ("CORTEX_TOKEN_TTL_SECONDS", "soon"),
        ("CORTEX_DATABASE_URL", "mysql://localhost/cortex"),
        ("CORTEX_REDIS_URL", "http://127.0.0.1:6379"),
        ("CORTEX_JWT_SECRET", "short"),
        ("CORTEX_ALLOW_REGISTRATION", "perhaps"),
    ],
)
def test_settings_invalid_variable_exits_2_naming_it(capsys, monkeypatch, database_url, variable, value):
    monkeypatch.setenv(variable, value)

    code, out, err = run(capsys, "migrate")

    assert code == 2
    assert variable in err
    assert out == ""


def test_serve_invalid_port_exits_2_naming_variable(capsys, database_url):
    code, _, err = run(capsys, "serve", "--port", "70000")

    assert code == 2
    assert "CORTEX_PORT" in err


def test_serve_several_workers_without_redis_exits_2(capsys, database_url):
    code, _, err = run(capsys, "serve", "--workers", "2")

    assert code == 2
    assert "Redis" in err
    assert "CORTEX_REDIS_URL" in err


def test_migrate_creates_database_file(capsys, database_url, tmp_path):
    code, out, _ = run(capsys, "migrate")

    assert code == 0
    assert (tmp_path / "cli.db").exists()
    assert out.strip() == f"database schema created at the latest revision ({HEAD_REVISION})"


async def downgrade(url: str, revision: str) -> None:
    async with Database(url) as db, db.engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


def test_migrate_reports_revisions_applied(capsys, database_url):
    """migrate prints the revision it started from, or that nothing was left to apply."""
    run(capsys, "migrate")
    asyncio.run(downgrade(database_url, "0002"))

    _, upgraded, _ = run(capsys, "migrate")
    _, current, _ = run(capsys, "migrate")

    assert upgraded.strip() == f"database schema upgraded from revision 0002 to the latest revision ({HEAD_REVISION})"
    assert current.strip() == f"database schema already at the latest revision ({HEAD_REVISION}); nothing to apply"


def test_users_create_prints_user_json(capsys, database_url):
    code, out, _ = run(capsys, "users", "create", "--email", "Ops@Example.com", "--name", "Ops", "--password", "long enough")

    assert code == 0
    user = json.loads(out)
    assert user["name"] == "Ops"
    assert user["email"].lower() == "ops@example.com"
    assert set(user) == {"user_id", "name", "email", "metadata"}


async def test_users_create_password_allows_login(capsys, database_url):
    await run_in_thread(capsys, "users", "create", "--email", "ops@example.com", "--name", "Ops", "--password", "long enough")

    async with AsyncTestClient(app=create_app(load_settings())) as client:
        response = await client.post("/auth/login", json={"email": "ops@example.com", "password": "long enough"})

    assert response.status_code == 200


def test_users_create_duplicate_email_exits_1(capsys, database_url):
    run(capsys, "users", "create", "--email", "ops@example.com", "--name", "Ops")

    code, out, err = run(capsys, "users", "create", "--email", "OPS@example.com", "--name", "Other")

    assert code == 1
    assert "ops@example.com" in err.lower()
    assert out == ""


@pytest.mark.parametrize(
    ("option", "arguments"),
    [
        ("--email", ["--email", "not-an-email", "--name", "X"]),
        ("--name", ["--email", "x@example.com", "--name", "   "]),
        ("--password", ["--email", "x@example.com", "--name", "X", "--password", "short"]),
    ],
)
def test_users_create_invalid_value_exits_2(capsys, database_url, option, arguments):
    code, _, err = run(capsys, "users", "create", *arguments)

    assert code == 2
    assert option in err


async def test_token_prints_jwt_accepted_by_server(capsys, database_url):
    _, out, _ = await run_in_thread(capsys, "users", "create", "--email", "bot@example.com", "--name", "Bot")
    user_id = json.loads(out)["user_id"]

    code, out, _ = await run_in_thread(capsys, "token", "--email", "BOT@example.com")

    assert code == 0
    token = out.strip()
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == user_id
    assert claims["email"] == "bot@example.com"
    async with AsyncTestClient(app=create_app(load_settings())) as client:
        response = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["user_id"] == user_id


def test_token_unknown_email_exits_1(capsys, database_url):
    code, out, err = run(capsys, "token", "--email", "nobody@example.com")

    assert code == 1
    assert out == ""
    assert "nobody@example.com" in err


def test_token_without_secret_uses_key_beside_database(capsys, monkeypatch, database_url, tmp_path):
    monkeypatch.delenv("CORTEX_JWT_SECRET")
    run(capsys, "users", "create", "--email", "bot@example.com", "--name", "Bot")

    code, out, _ = run(capsys, "token", "--email", "bot@example.com")

    assert code == 0
    secret = (tmp_path / "cli.db.secret").read_text().strip()
    assert jwt.decode(out.strip(), secret, algorithms=["HS256"])["email"] == "bot@example.com"


def test_export_import_round_trip_keeps_users(capsys, monkeypatch, database_url, tmp_path):
    run(capsys, "users", "create", "--email", "a@example.com", "--name", "A")
    run(capsys, "users", "create", "--email", "b@example.com", "--name", "B")
    export_file = tmp_path / "export.jsonl"

    exported, out, _ = run(capsys, "export", str(export_file))
    assert exported == 0
    assert "exported" in out

    target = tmp_path / "copy.db"
    imported, out, err = run(capsys, "import", str(export_file), "--database-url", f"sqlite+aiosqlite:///{target}")

    assert imported == 0, err
    assert "imported" in out
    with sqlite3.connect(target) as connection:
        table = next(name for (name,) in connection.execute("SELECT name FROM sqlite_master") if name == "users")
        emails = sorted(row[0] for row in connection.execute(f"SELECT email FROM {table}"))
    assert emails == ["a@example.com", "b@example.com"]


def test_import_into_non_empty_database_exits_1(capsys, database_url, tmp_path):
    run(capsys, "users", "create", "--email", "a@example.com", "--name", "A")
    export_file = tmp_path / "export.jsonl"
    run(capsys, "export", str(export_file))

    code, _, err = run(capsys, "import", str(export_file))

    assert code == 1
    assert "error: the target database is not empty" in err


def test_import_malformed_file_exits_1_naming_line(capsys, database_url, tmp_path):
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text("this is not an export\n")

    code, _, err = run(capsys, "import", str(bad_file))

    assert code == 1
    assert "line 1" in err


def test_import_missing_file_exits_1(capsys, database_url, tmp_path):
    code, _, err = run(capsys, "import", str(tmp_path / "absent.jsonl"))

    assert code == 1
    assert "absent.jsonl" in err


def test_export_missing_database_exits_1(capsys, database_url, tmp_path):
    code, _, err = run(capsys, "export", str(tmp_path / "out.jsonl"))

    assert code == 1
    assert "cli.db" in err


def test_python_module_entry_point_matches_console_script():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "realtime", "--help"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0
    assert "cortex-core" in result.stdout
    for command in ("serve", "migrate", "users", "token", "export", "import", "demo"):
        assert command in result.stdout
