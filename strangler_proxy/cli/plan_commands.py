"""`strangler plan [FILE]`: what saving a config file would do to the running proxy.

The file gets the same validation as a reload (:func:`~strangler_proxy.config.load_config`,
then the route table is built); the running proxy is asked for its config
(``GET /config``) and for the state of every route and field (``GET /routes``);
:func:`~strangler_proxy.control.plan.make_plan` says what would change.
Nothing is applied.

Exit codes, for CI: **0** saving the file changes nothing; **2** it changes
something (listed); **1** no plan could be made: the file is invalid (every
``file:line: field: message`` is printed) or the proxy could not be asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from strangler_proxy.cli.admin_client import admin_get
from strangler_proxy.cli.proxy_commands import AdminUrlOpt, TokenOpt
from strangler_proxy.config import StranglerConfig, load_config
from strangler_proxy.control.plan import (
    TOPICS,
    Added,
    ModeChange,
    Plan,
    Removed,
    check_like_reload,
    make_plan,
    running_states,
)
from strangler_proxy.errors import ConfigError, ConfigErrors

DEFAULT_CONFIG = "strangler.yaml"
SCHEMA = "strangler.plan/v1"
EXIT_NO_CHANGE = 0
EXIT_NO_PLAN = 1
EXIT_CHANGES = 2
TOPIC_TITLES = {
    "upstreams": "Upstreams",
    "compare": "Compare rules",
    "guardrails": "Guardrails",
    "routes": "Other route settings",
    "fields": "Other GraphQL field settings",
    "settings": "Other settings",
}

out = Console(soft_wrap=True, highlight=False)  # paths and values are never wrapped
err = Console(stderr=True, soft_wrap=True, highlight=False)


def _no_plan(file: str, errors: list[str], as_json: bool, *, valid: bool = False) -> typer.Exit:
    """Exit 1: the file is invalid, or (``valid``) it is fine but the proxy could not be asked."""
    if as_json:
        out.print_json(json.dumps({"schema": SCHEMA, "file": file, "valid": valid, "changed": None,
                                   "errors": errors, "changes": []}))
    else:
        for e in errors:
            err.print(Text.assemble(("error:", "red"), " ", e))
    return typer.Exit(EXIT_NO_PLAN)


def _load(file: str) -> StranglerConfig:
    """The file, validated as a reload validates it; ConfigErrors lists every problem."""
    config = load_config(file)
    try:
        check_like_reload(config)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from exc
    return config


def _print(plan: Plan, file: str, admin: str) -> None:
    if not plan.changed:
        out.print(f"{file}: no changes. Saving it changes nothing on the proxy at {admin}.", markup=False)
        return
    out.print(f"{file} against the proxy at {admin}: {len(plan.changes)} change(s) if it is saved", markup=False)
    sections = [
        ("Routes and fields added or removed", plan.of(Added) + plan.of(Removed)),
        ("Modes and percents", plan.of(ModeChange)),
        *((TOPIC_TITLES[t], list(plan.settings(t))) for t in TOPICS),
    ]
    for title, changes in sections:
        if changes:
            out.print(f"\n[bold]{title}[/bold]")
            for change in changes:
                out.print("  " + change.describe(), markup=False)


def _as_json(plan: Plan, file: str, admin: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "file": file,
        "admin_url": admin,
        "valid": True,
        "changed": plan.changed,
        "errors": [],
        "changes": [c.as_json() for c in plan.changes],
    }


def plan(
    file: str = typer.Argument(DEFAULT_CONFIG, help="the edited strangler.yaml (default ./strangler.yaml)"),
    admin_url: str | None = AdminUrlOpt,
    token: str | None = TokenOpt,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (docs/operations.md)"),
) -> None:
    """Show what saving FILE would change on the running proxy; exit 0 none, 2 changes, 1 no plan."""
    if not Path(file).is_file():
        raise _no_plan(file, [f"{file}: no such file"], as_json)
    try:
        config = _load(file)
    except ConfigErrors as exc:
        raise _no_plan(file, [str(e) for e in exc.errors], as_json) from exc
    routes = admin_get(file, admin_url, token, "/routes")
    running = admin_get(file, admin_url, token, "/config") if routes.ok else routes
    if not running.ok:
        raise _no_plan(file, [f"{running.problem}; no plan without the running proxy"], as_json, valid=True)
    try:
        states = running_states(routes.body)
        result = make_plan(running.body["config"], config, states)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise _no_plan(file, [f"the admin API at {routes.url} answered in a shape this CLI does not know "
                              f"({exc.__class__.__name__}: {exc}); are both the same version?"], as_json,
                       valid=True) from exc
    if as_json:
        out.print_json(json.dumps(_as_json(result, file, routes.url)))
    else:
        _print(result, file, routes.url)
    raise typer.Exit(EXIT_CHANGES if result.changed else EXIT_NO_CHANGE)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
