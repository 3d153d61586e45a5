"""`strangler db upgrade|downgrade` and `strangler seed`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Database migrations of every database the project knows.", no_args_is_help=True)
    app.add_typer(db, name="db")
    # Commands are added by the monolith work (issue 2) and later issues.
