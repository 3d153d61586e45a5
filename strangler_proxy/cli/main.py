"""Entry point of the ``strangler`` console script.

Each area registers its commands from its own module (``register(app)``), so
the map of commands is this list.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="strangler",
    help="Migrate a monolith to services one route or field at a time.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_all() -> None:
    from strangler_proxy.cli import (
        cells_commands,
        db_commands,
        plan_commands,
        progress_commands,
        proxy_commands,
        report_commands,
        rollout_commands,
        service_commands,
        stack_commands,
        traffic_commands,
        upstream_commands,
    )

    for module in (
        stack_commands,
        db_commands,
        proxy_commands,
        upstream_commands,
        cells_commands,
        rollout_commands,
        plan_commands,
        traffic_commands,
        report_commands,
        progress_commands,
        service_commands,
    ):
        module.register(app)


def main() -> None:
    _register_all()
    app()


if __name__ == "__main__":
    main()
