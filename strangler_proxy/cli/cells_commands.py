"""`strangler cells` and `strangler cells which KEY`: a running proxy's cells and where a key
goes, on its admin API (found as `strangler routes` finds it: ``--admin-url``/``--token``,
the environment, then the config file).

``cells`` shows each cell's weight, its share of the keys, its share of this proxy's recent
requests, the health of its own upstreams and its per-cell modes (overrides, and how many
routes and fields follow the global mode). Without a ``cells:`` section both say so and exit 0:
there is nothing to show.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from strangler_proxy.cli.proxy_commands import (
    AdminUrlOpt,
    ConfigOpt,
    JsonOpt,
    TokenOpt,
    call_admin,
    console,
    reading_answer,
    state_text,
)

_HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "down": "bold red"}


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _health(health: dict[str, Any]) -> Text:
    state = str(health["state"])
    parts = [f"{u['upstream']} {u['serving']}/{u['endpoints']}" + (f" ({u['drained']} drained)" if u["drained"] else "")
             for u in health["upstreams"]]
    text = Text(state, style=_HEALTH_STYLE.get(state, ""))
    if parts:
        text.append("\n" + ", ".join(parts), style="dim")
    return text


def _guard(g: dict[str, Any] | None) -> str:
    if not g or g.get("state") in (None, "inactive", "disabled"):
        return ""
    return f" [{g['state']}]"


def cells_table(body: dict[str, Any]) -> Table:
    """One row per cell."""
    window = float(body.get("traffic_window_s") or 0)
    table = Table(title=f"cells (key: {body['partition_key']}, unkeyed: {body['unkeyed']})", title_justify="left")
    table.add_column("cell", no_wrap=True)
    for col in ("weight", "keys", f"traffic ({window:.0f}s)"):
        table.add_column(col, justify="right")
    table.add_column("health")
    table.add_column("per-cell modes")
    for c in body["cells"]:
        traffic = c["traffic"]
        overrides = [f"{m['name']}: {state_text(m['mode'], m['percent'])}"
                     + (f" ({m['flipped_by']})" if m.get("flipped_by") else "") + _guard(m.get("guardrails"))
                     for m in c["overrides"]]
        following = len(c["following"])
        modes = "\n".join([*overrides, f"{following} follow the global mode" if following else "none follow the global mode"])
        name = c["name"] + (f"\npins: {', '.join(c['pins'])}" if c.get("pins") else "")
        table.add_row(name, f"{c['weight']:g}", _pct(c["key_share"]),
                      f"{_pct(traffic['share'])} ({traffic['requests']})", _health(c["health"]), modes)
    return table


def _placement_line(body: dict[str, Any]) -> str:
    key = body["key"]
    who = "a request without a key" if key is None else f"key {key!r}"
    if body["cell"] is None:
        return f"{who}: refused -- {body['why']}"
    upstreams = f"; its upstreams: {', '.join(body['upstreams'])}" if body.get("upstreams") else ""
    return f"{who} -> cell {body['cell']}: {body['why']}{upstreams}"


cells_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                        help="A running proxy's cells (weight, shares, health, per-cell modes); `which KEY`: where a key goes.")


@cells_app.callback()
def cells(ctx: typer.Context, config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt,
          token: str | None = TokenOpt, as_json: bool = JsonOpt) -> None:
    """A running proxy's cells: weight, share of keys and of recent traffic, health, per-cell modes."""
    if ctx.invoked_subcommand is not None:
        return
    body = call_admin(config, admin_url, token, "GET", "/cells")
    if as_json:
        console.print_json(json.dumps(body))
        return
    with reading_answer("GET /cells"):
        if not body["enabled"]:
            console.print(Text(str(body["message"])))
            return
        table = cells_table(body)
    console.print(table)


@cells_app.command("which")
def which(
    key: str = typer.Argument(..., help="a partition key (a tenant, a customer, a title id); '' for no key"),
    config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Which cell serves KEY, and why (pinned, hashed to a slot, or the unkeyed rule)."""
    body = call_admin(config, admin_url, token, "GET", "/cells/which", params={"key": key})
    if as_json:
        console.print_json(json.dumps(body))
        return
    with reading_answer("GET /cells/which"):
        line = str(body["message"]) if not body["enabled"] else _placement_line(body)
    console.print(Text(line))


def register(app: typer.Typer) -> None:
    app.add_typer(cells_app, name="cells")
