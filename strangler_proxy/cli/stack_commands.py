"""`strangler up`, `strangler monolith`, `strangler proxy`, `strangler service`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
