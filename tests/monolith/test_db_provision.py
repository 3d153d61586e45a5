"""`strangler db create` where nothing needs creating, and the helpers' examples.

The PostgreSQL cases (creating, refusing, the commands) are in test_db_create.py.
"""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import typer
from typer.testing import CliRunner

from strangler_proxy import provision
from strangler_proxy.cli import db_commands
from strangler_proxy.dataplane import accesslog
from strangler_proxy.diff import redaction

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", [provision, accesslog, redaction], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


def test_db_create_on_sqlite_only_makes_the_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "strangler.yaml", tmp_path / "strangler.yaml")  # the demo's stack: its databases
    for name in ("STRANGLER_DATABASE_URL", *(f"STRANGLER_{n.upper()}_DATABASE_URL" for n in ("monolith", "control"))):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STRANGLER_DATA_DIR", str(tmp_path / "not" / "yet"))
    app = typer.Typer()
    db_commands.register(app)
    result = CliRunner().invoke(app, ["db", "create", "-d", "monolith", "-d", "control", "-d", "results", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["database"].rsplit("/", 1)[-1], r["names"], r["status"]) for r in rows] == [
        ("monolith.sqlite3", ["monolith"], "sqlite"),
        ("control.sqlite3", ["control", "results"], "sqlite"),
    ]
    assert (tmp_path / "not" / "yet").is_dir() and not list((tmp_path / "not" / "yet").iterdir())


def test_a_missing_database_message_names_the_project_name_when_the_server_name_differs() -> None:
    dbs = provision.group({
        "monolith": "postgresql+asyncpg://app@db.example:5433/shop_monolith",
        "control": "postgresql+asyncpg://app@db.example:5433/control",
        "results": "postgresql+asyncpg://app@db.example:5433/control",
    })
    message = str(provision.missing_error(dbs))
    assert message.splitlines()[0] == "these databases do not exist yet on db.example:5433: shop_monolith (monolith), control"
    createdb, psql = provision.create_commands(dbs[0], "app")
    assert createdb == "createdb -h db.example -p 5433 -U postgres -O app shop_monolith"
    assert psql == "psql -h db.example -p 5433 -U postgres -d postgres -c 'CREATE DATABASE \"shop_monolith\" OWNER \"app\"'"


def test_an_odd_database_name_is_quoted_for_sql_and_for_the_shell() -> None:
    [db] = provision.group({"monolith": "postgresql+asyncpg://postgres@127.0.0.1/it's \"odd\""})
    createdb, psql = provision.create_commands(db, "postgres")
    assert createdb == "createdb -h 127.0.0.1 -U postgres 'it'\"'\"'s \"odd\"'"
    assert "CREATE DATABASE \"it's \"\"odd\"\"\"" in psql.replace("'\"'\"'", "'")
