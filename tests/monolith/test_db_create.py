"""First run on a PostgreSQL server without the project's databases.

`strangler db create` creates them (and says so only once); `db upgrade` and
`up` without them fail naming every one and how to create it; a role that may
not create databases gets the exact commands an administrator runs. Every
database here has a random name and is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from strangler_proxy.cli import db_commands, stack_commands
from tests.conftest import PG_ADMIN_DSN, _pg_reachable

pytestmark = pytest.mark.postgres

SERVER = PG_ADMIN_DSN.rsplit("/", 1)[0]  # postgresql://postgres@127.0.0.1:5432
REPO = Path(__file__).resolve().parents[2]
# The toolkit's database and the demo stack's (strangler.yaml's stack: section).
DATABASE_NAMES = ("monolith", "control", "ratings", "credits", "images")


async def _admin(*statements: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        rows: list[asyncpg.Record] = []
        for sql in statements:
            rows = await conn.fetch(sql)
        return rows
    finally:
        await conn.close()


def _existing(names: list[str]) -> set[str]:
    rows = asyncio.run(_admin(f"SELECT datname FROM pg_database WHERE datname = ANY(ARRAY{names!r}::text[])"))
    return {r["datname"] for r in rows}


class Server:
    """Unique database names on the real server, pointed at by the environment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
        self.prefix = prefix
        self.monkeypatch = monkeypatch
        self.names = {name: f"{prefix}_{name}" for name in DATABASE_NAMES}
        self.login_as("postgres")

    def login_as(self, role: str) -> None:
        host = SERVER.split("@", 1)[1]
        for name, database in self.names.items():
            self.monkeypatch.setenv(
                f"STRANGLER_{name.upper()}_DATABASE_URL", f"postgresql+asyncpg://{role}@{host}/{database}"
            )

    @property
    def databases(self) -> list[str]:
        return list(self.names.values())


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Server]:
    problem = asyncio.run(_pg_reachable())
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_DSN}: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    monkeypatch.chdir(tmp_path)  # the demo's strangler.yaml (no databases: section): the environment decides
    shutil.copy(REPO / "strangler.yaml", tmp_path / "strangler.yaml")
    monkeypatch.delenv("STRANGLER_DATABASE_URL", raising=False)
    s = Server(monkeypatch, f"strangler_t_{uuid.uuid4().hex[:10]}")
    yield s
    asyncio.run(_admin(*(f'DROP DATABASE IF EXISTS "{d}" WITH (FORCE)' for d in s.databases)))


@pytest.fixture
def role(server: Server) -> Iterator[str]:
    """A login role without CREATEDB, dropped at the end (after the databases it may own)."""
    name = f"strangler_test_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE ROLE "{name}" LOGIN'))
    yield name
    asyncio.run(_admin(*(f'DROP DATABASE IF EXISTS "{d}" WITH (FORCE)' for d in server.databases),
                       f'DROP ROLE IF EXISTS "{name}"'))


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    db_commands.register(app)
    stack_commands.register(app)
    return app


def _run(cli: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_upgrade_without_the_databases_names_every_one_and_how_to_create_them(cli: typer.Typer, server: Server) -> None:
    code, out = _run(cli, "db", "upgrade")
    assert code == 1
    for name, database in server.names.items():
        assert f"{database} ({name}" in out
    assert "(control, results)" in out  # the results store lives in the control database
    assert "run `strangler db create`" in out and "--create-databases" in out
    assert "sqlalche.me" not in out and "Traceback" not in out
    assert not _existing(server.databases)  # nothing was created behind the user's back


def test_up_without_the_databases_fails_before_starting_anything(cli: typer.Typer, server: Server) -> None:
    code, out = _run(cli, "up", "--no-proxy")
    assert code == 1
    for name in ("monolith", "ratings", "credits", "images"):
        assert server.names[name] in out
    assert server.names["control"] not in out  # no proxy, no control database needed
    assert "strangler db create" in out and "Traceback" not in out


def test_db_create_creates_them_once_then_upgrade_migrates(cli: typer.Typer, server: Server) -> None:
    code, out = _run(cli, "db", "create", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert {r["database"]: r["status"] for r in rows} == {d: "created" for d in server.databases}
    assert next(r for r in rows if r["database"] == server.names["control"])["names"] == ["control", "results"]
    assert _existing(server.databases) == set(server.databases)

    code, out = _run(cli, "db", "create")
    assert code == 0, out
    assert "nothing to create" in out and "created" not in out.replace("nothing to create", "")

    code, out = _run(cli, "db", "upgrade", "--json")
    assert code == 0, out
    assert {r["database"] for r in json.loads(out)} == {"monolith", "control", "results", "ratings", "credits", "images"}


def test_upgrade_can_create_the_missing_databases_itself(cli: typer.Typer, server: Server) -> None:
    code, out = _run(cli, "db", "upgrade", "--database", "monolith", "--create-databases")
    assert code == 0, out
    assert f"created database {server.names['monolith']} (monolith)" in out
    assert _existing(server.databases) == {server.names["monolith"]}
    code, out = _run(cli, "db", "upgrade", "--database", "monolith", "--create-databases")
    assert code == 0 and "created database" not in out


def test_a_role_without_createdb_gets_the_exact_commands(
    cli: typer.Typer, server: Server, role: str
) -> None:
    server.login_as(role)
    code, out = _run(cli, "db", "create", "--database", "monolith", "--database", "results")
    assert code == 1
    host, _, port = SERVER.split("@", 1)[1].partition(":")
    where = f"-h {host}" + (f" -p {port}" if port not in ("", "5432") else "")
    monolith, control = server.names["monolith"], server.names["control"]
    assert f'role "{role}" may not create databases' in out
    lines = [line.strip() for line in out.splitlines()]
    for database in (monolith, control):
        assert f"createdb {where} -U postgres -O {role} {database}" in lines
        assert f"psql {where} -U postgres -d postgres -c 'CREATE DATABASE \"{database}\" OWNER \"{role}\"'" in lines
    assert not _existing(server.databases)

    # What the administrator runs is enough: the role can then migrate its databases.
    asyncio.run(_admin(*(f'CREATE DATABASE "{d}" OWNER "{role}"' for d in (monolith, control))))
    code, out = _run(cli, "db", "upgrade", "--database", "monolith", "--database", "results")
    assert code == 0, out
    code, out = _run(cli, "db", "create", "--database", "monolith", "--database", "results", "--json")
    assert code == 0 and {r["status"] for r in json.loads(out)} == {"exists"}
