"""Check that docker-compose.yml and the Dockerfile fit together, by reading them, because Docker does not run here."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_services_present_server_and_redis(compose):
    assert {"server", "redis", "postgres"} <= set(compose["services"])


def test_compose_postgres_only_under_profile(compose):
    assert compose["services"]["postgres"]["profiles"] == ["postgres"]
    assert "profiles" not in compose["services"]["server"]
    assert "profiles" not in compose["services"]["redis"]


def test_compose_every_service_has_healthcheck(compose):
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test, f"service {name} has no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL"), f"service {name}: healthcheck test must start with CMD"


def test_compose_server_port_matches_listen_port(compose, dockerfile):
    server = compose["services"]["server"]
    container_port = server["ports"][0].split(":")[-1]
    assert _option(server["command"], "--port") == container_port
    assert _option(server["command"], "--host") == "0.0.0.0"
    assert re.search(rf"^EXPOSE {container_port}$", dockerfile, re.MULTILINE)


def test_compose_server_healthcheck_probes_ready_on_listen_port(compose):
    server = compose["services"]["server"]
    probe = " ".join(server["healthcheck"]["test"])
    port = _option(server["command"], "--port")
    assert f"127.0.0.1:{port}/ready" in probe


def test_compose_redis_url_names_redis_service(compose):
    server = compose["services"]["server"]
    url = urlsplit(server["environment"]["CORTEX_REDIS_URL"])
    assert url.scheme == "redis"
    assert url.hostname in compose["services"]
    assert url.port == 6379
    assert "redis-server" in compose["services"]["redis"]["command"]


def test_compose_server_waits_for_healthy_redis(compose):
    depends_on = compose["services"]["server"]["depends_on"]
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_compose_database_url_defaults_to_sqlite_in_volume(compose):
    server = compose["services"]["server"]
    url = server["environment"]["CORTEX_DATABASE_URL"]
    default = re.fullmatch(r"\$\{CORTEX_DATABASE_URL:-(.+)\}", url)
    assert default, "CORTEX_DATABASE_URL must be overridable from the environment"
    assert default.group(1).startswith("sqlite+aiosqlite:////data/")
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in server["volumes"]}
    assert mounts["/data"] in compose["volumes"]


def test_compose_postgres_credentials_match_documented_url(compose):
    postgres = compose["services"]["postgres"]["environment"]
    header = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    documented = re.search(r"postgresql\+asyncpg://(\w+):(\w+)@postgres:5432/(\w+)", header)
    assert documented, "the file header must show the PostgreSQL URL to use"
    assert documented.groups() == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])


def test_dockerfile_runs_console_script_as_non_root(dockerfile):
    assert re.search(r"^USER (?!root)\S+$", dockerfile, re.MULTILINE)
    assert 'CMD ["cortex-core", "serve"' in dockerfile
    assert "CORTEX_DATABASE_URL=sqlite+aiosqlite:////data/" in dockerfile
