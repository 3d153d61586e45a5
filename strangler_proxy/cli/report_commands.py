"""`strangler report [KEY...] [--cell NAME] [--json] [--html FILE] [--gate]`.

Reads the results store directly (no running proxy needed). With cells, each
route is shown once over all its cells with a line per cell; ``--cell NAME``
reports that cell's keys alone. A gate on a route passes only when it is ready
in every cell too. Exit codes:
0 the report was made (and, with ``--gate``, every named key is ready);
1 ``--gate`` and at least one named key is not ready;
2 a usage, configuration or store problem.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from strangler_proxy.config import DEFAULT_BUCKET_S, StranglerConfig, load_config
from strangler_proxy.databases import database_url, is_sqlite, make_engine
from strangler_proxy.errors import ConfigError, StoreError, StranglerError
from strangler_proxy.report.build import Report, build_report, safe_url
from strangler_proxy.report.html import render_html
from strangler_proxy.report.json_report import render_json
from strangler_proxy.report.progress_load import load_progress
from strangler_proxy.report.text import render_text

DEFAULT_CONFIG = "strangler.yaml"
EXIT_NOT_READY = 1
EXIT_PROBLEM = 2
PIPED_WIDTH = 200


def load_optional_config(config_path: Path | None) -> StranglerConfig | None:
    if config_path is None:
        default = Path(DEFAULT_CONFIG)
        return load_config(default) if default.exists() else None
    return load_config(config_path)


def results_url(config: StranglerConfig | None, explicit: str | None) -> str:
    if explicit:
        return explicit
    return config.control_database_url() if config else database_url("control")


def check_results_url(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {url!r}", field="--database-url") from exc
    if is_sqlite(url):
        db = parsed.database
        if db and db != ":memory:" and not os.path.exists(db):
            raise StoreError(f"no results store at {db}; run `strangler db upgrade` and shadow some traffic")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``90s``, ``10m``, ``2h``, ``7d`` -> that many seconds ago (epoch seconds).

    >>> round(time.time() - parse_since("10m"))
    600
    """
    number, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit():
        raise typer.BadParameter(f"{text!r}: use a number and a unit, like 90s, 10m, 2h or 7d")
    return time.time() - int(number) * _DURATION_UNITS[unit]


async def _build(url: str, config: StranglerConfig | None, keys: list[str] | None, since: float | None,
                 cell: str | None = None) -> Report:
    engine = make_engine(url)
    try:
        report = await build_report(engine, config, keys, database=safe_url(url), since=since, cell=cell)
        # The migration's progress heads the HTML report and is in its JSON (docs/reports.md).
        return replace(report, progress=await load_progress(engine, config, since=since))
    finally:
        await engine.dispose()


def report(
    keys: Annotated[list[str] | None, typer.Argument(help="Routes or graphql:Type.field keys (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (docs/reports.md).")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")] = None,
    gate: Annotated[
        bool, typer.Option("--gate", help="CI gate: exit 1 unless every named KEY is ready.")
    ] = False,
    config_path: Annotated[
        Path | None, typer.Option("--config", help=f"strangler.yaml (default ./{DEFAULT_CONFIG} if present).")
    ] = None,
    database_url_opt: Annotated[
        str | None, typer.Option("--database-url", help="Results database URL (overrides the config).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only results of the last 90s / 10m / 2h / 7d (from the start of the store bucket it falls in, store.bucket_s)."),
    ] = None,
    cell: Annotated[
        str | None, typer.Option("--cell", help="Only this cell's results (KEYs then name routes, without the cell).")
    ] = None,
) -> None:
    """Shadow results per route and GraphQL field: match rates, latencies,
    differing paths and readiness to flip."""
    err = Console(stderr=True)
    # Piped output (CI logs, files) gets a wide table instead of 80 columns.
    out = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    since_at = parse_since(since) if since else None
    if gate and not keys:
        err.print("--gate needs the keys to check: strangler report --gate ROUTE [ROUTE...]")
        raise typer.Exit(EXIT_PROBLEM)
    try:
        config = load_optional_config(config_path)
        if since_at is not None:  # whole buckets: the one `since` falls in counts, so --since 5s is never empty
            bucket_s = config.store.bucket_s if config else DEFAULT_BUCKET_S
            since_at = since_at // bucket_s * bucket_s
        url = results_url(config, database_url_opt)
        check_results_url(url)
        result = asyncio.run(_build(url, config, keys or None, since_at, cell))
    except StranglerError as exc:
        err.print(f"strangler report: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_PROBLEM) from exc
    if html is not None:
        try:
            html.write_text(render_html(result), encoding="utf-8")
        except OSError as exc:
            err.print(f"strangler report: cannot write {html}: {exc.strerror}", markup=False)
            raise typer.Exit(EXIT_PROBLEM) from exc
    if as_json:
        sys.stdout.write(render_json(result) + "\n")
    else:
        render_text(result, out)
        if html is not None:
            out.print(f"HTML report written to {html}")
    if gate:
        not_ready = [k for k in result.keys if not k.ready]
        # In --json mode stdout stays pure JSON; the gate speaks on stderr.
        say = err if as_json else out
        for k in result.keys:
            mark = "PASS" if k.ready else "FAIL"
            say.print(f"gate {mark} {k.key}: {k.gate_label}", markup=False, highlight=False)
        if not_ready:
            raise typer.Exit(EXIT_NOT_READY)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
