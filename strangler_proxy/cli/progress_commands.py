"""`strangler progress [--since 7d] [--json]`: how far the migration has come.

Every route and GraphQL field with its mode now, the share of its requests the
extracted services served (over the span and over time; with cells, over all
its cells and then per cell), its readiness, and
the share of all recorded traffic already off the monolith -- read from the
results store, so it spans every replica and restart (report/progress.py says
exactly what is counted).

The modes now come from the running proxy's admin API when it answers (found
as ``strangler routes`` finds it), which also gives the live share of *all*
its requests since it started; when it does not, from the file and the flips
stored in the control database -- and the output says which.

Exit codes: 0 the progress was shown; 2 a configuration or store problem.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from strangler_proxy.cli.admin_client import admin_get
from strangler_proxy.cli.report_commands import (
    DEFAULT_CONFIG,
    EXIT_PROBLEM,
    PIPED_WIDTH,
    check_results_url,
    load_optional_config,
    parse_since,
    results_url,
)
from strangler_proxy.config import Mode, StranglerConfig
from strangler_proxy.control.plan import RunningState, running_states
from strangler_proxy.databases import make_engine
from strangler_proxy.errors import StranglerError
from strangler_proxy.report.build import safe_url
from strangler_proxy.report.progress import DEFAULT_POINTS, LiveShare, Progress
from strangler_proxy.report.progress_load import load_progress
from strangler_proxy.report.progress_render import progress_to_json, render_progress_text
from strangler_proxy.routing.cells import scoped


def live_share(routes: Mapping[str, Any]) -> LiveShare:
    """The proxy's counters (``GET /routes``) as a share of all its REST requests."""
    counters = [r.get("counters") or {} for r in routes.get("routes", [])]
    unmatched = int((routes.get("unmatched") or {}).get("requests", 0))
    return LiveShare(
        requests=sum(int(c.get("requests", 0)) for c in counters) + unmatched,
        extracted=sum(int(c.get("target", 0)) for c in counters),
        unmatched=unmatched,
    )


def cell_states(routes: Mapping[str, Any]) -> dict[str, RunningState]:
    """Each route's and field's state in each cell (``cells`` of ``GET /routes``), by
    ``name@cell``: a flip of the cell's own, or the route's state it follows."""
    out: dict[str, RunningState] = {}
    for name, entries in (routes.get("cells") or {}).items():
        for e in entries:
            own = e["source"] == "cell"
            mode = Mode(e["mode"])
            out[scoped(name, e["cell"])] = RunningState(
                name=scoped(name, e["cell"]), mode=mode, percent=float(e["percent"]), source="flip" if own else "file",
                file_mode=mode, file_percent=float(e["percent"]), flipped_by=e.get("flipped_by"))
    return out


def _from_admin(config_path: str, admin_url: str | None, token: str | None
                ) -> tuple[dict[str, RunningState] | None, LiveShare | None, str]:
    """The modes and live counters of the running proxy, or None and why not."""
    answer = admin_get(config_path, admin_url, token, "/routes")
    if not answer.ok:
        return None, None, f"{answer.problem}"
    try:
        states = {**running_states(answer.body), **cell_states(answer.body)}
        return states, live_share(answer.body), f"the proxy's admin API at {answer.url}"
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return None, None, f"the admin API at {answer.url} answered in a shape this CLI does not know ({exc})"


async def _load(url: str, config: StranglerConfig | None, since: float | None, points: int,
                states: Mapping[str, RunningState] | None, note: str, live: LiveShare | None) -> Progress:
    engine = make_engine(url)
    try:
        return await load_progress(engine, config, since=since, points=points, admin_states=states,
                                   admin_note=note, live=live)
    finally:
        await engine.dispose()


def progress(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (docs/reports.md).")] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="Only the last 90s / 10m / 2h / 7d (whole store buckets).")
    ] = None,
    points: Annotated[int, typer.Option("--points", min=1, max=500, help="Points of the timelines.")] = DEFAULT_POINTS,
    config_path: Annotated[
        Path | None, typer.Option("--config", help=f"strangler.yaml (default ./{DEFAULT_CONFIG} if present).")
    ] = None,
    database_url_opt: Annotated[
        str | None, typer.Option("--database-url", help="Control database URL (overrides the config).")
    ] = None,
    admin_url: Annotated[str | None, typer.Option("--admin-url", help="admin API URL (env STRANGLER_ADMIN_URL)")] = None,
    token: Annotated[str | None, typer.Option("--token", help="admin bearer token (env STRANGLER_ADMIN_TOKEN)")] = None,
) -> None:
    """How much traffic the extracted services serve, per route and field and over time."""
    err = Console(stderr=True)
    out = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    since_at = parse_since(since) if since else None
    try:
        config = load_optional_config(config_path)
        url = results_url(config, database_url_opt)
        check_results_url(url)
        states, live, note = _from_admin(str(config_path or DEFAULT_CONFIG), admin_url, token)
        result = asyncio.run(_load(url, config, since_at, points, states, note, live))
    except StranglerError as exc:
        err.print(f"strangler progress: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_PROBLEM) from exc
    if states is None and not as_json:
        err.print(f"strangler progress: {note}; the modes now come from the file (and the flips stored in "
                  "the control database, if any)", markup=False, highlight=False, style="yellow")
    if as_json:
        sys.stdout.write(orjson.dumps(progress_to_json(result), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render_progress_text(result, out, database=safe_url(url))


def register(app: typer.Typer) -> None:
    app.command("progress")(progress)
