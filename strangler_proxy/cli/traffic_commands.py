"""`strangler traffic`: send the stack's traffic plan through the proxy.

The plan comes from ``stack.traffic`` in strangler.yaml (the demo's: a mix of
film-catalogue reads, votes and GraphQL queries).

A progress bar while it runs, then a table per request kind (requests, ok,
errors, p50/p99) and the totals (statuses, achieved rate, schedule lag).
``--json`` prints the summary as JSON instead. Exit code 1 when more than 1%
of the requests failed (no answer, or a status the kind does not expect), 2
when the plan cannot be built (no ``stack.traffic``, or the app cannot be asked
what it needs).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from strangler_proxy.cli.common import ConfigOption, config_and_stack
from strangler_proxy.errors import StranglerError
from strangler_proxy.stack.traffic import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION_S,
    DEFAULT_GRAPHQL_SHARE,
    DEFAULT_RATE,
    DEFAULT_SEED,
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    DEFAULT_WRITE_SHARE,
    MAX_ERROR_SHARE,
    Outcome,
    PlanFactory,
    PlanSettings,
    TrafficOptions,
    TrafficSummary,
    run_traffic,
)

EXIT_FAILED = 1
EXIT_PROBLEM = 2

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _print_summary(summary: TrafficSummary, url: str) -> None:
    table = Table("kind", "requests", "ok", "errors", "p50 ms", "p99 ms", title=f"traffic to {url}")
    for kind, c in summary.by_kind.items():
        table.add_row(
            kind, str(c["requests"]), str(c["ok"]), str(c["errors"]),
            _ms(summary.latency_ms(50, kind)), _ms(summary.latency_ms(99, kind)),
        )
    table.add_row(
        "[bold]total[/bold]", str(summary.sent), str(summary.ok), str(summary.errors),
        _ms(summary.latency_ms(50)), _ms(summary.latency_ms(99)),
    )
    console.print(table)
    statuses = ", ".join(f"{s}: {n}" for s, n in summary.statuses().items())
    console.print(f"statuses  {statuses}")
    console.print(
        f"sent {summary.sent} of {summary.planned} in {summary.elapsed_s:.1f}s "
        f"({summary.achieved_rate:.1f}/s); schedule lag p99 {_ms(summary.lag_ms(99))} ms"
        + (f"; {summary.dropped} not sent before the end" if summary.dropped else "")
    )
    if summary.errors:
        reasons = ", ".join(f"{r}: {n}" for r, n in summary.error_reasons().items())
        colour = "red" if summary.failed else "yellow"
        console.print(f"[{colour}]errors {summary.errors} ({summary.error_share:.1%})[/{colour}]  {reasons}")


def _factory(config: str) -> PlanFactory:
    try:
        _loaded, stack = config_and_stack(config)
    except StranglerError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_PROBLEM) from exc
    if stack.traffic is None:
        err_console.print(f"[red]error:[/red] {config} names no traffic plan (stack.traffic: module:attribute)")
        raise typer.Exit(EXIT_PROBLEM)
    factory: PlanFactory = stack.traffic
    return factory


async def _run(url: str, options: TrafficOptions, factory: PlanFactory, settings: PlanSettings,
               show_progress: bool) -> TrafficSummary:
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=options.timeout_s, limits=limits) as client:
        try:
            plan = await factory(client, settings)
        except (httpx.HTTPError, ValueError) as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_PROBLEM) from exc
        with Progress(
            TextColumn("traffic"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[errors]} errors"),
            TimeElapsedColumn(), console=console, disable=not show_progress, transient=False,
        ) as bar:
            task = bar.add_task("traffic", total=options.planned, errors=0)
            errors = 0

            def done(outcome: Outcome) -> None:
                nonlocal errors
                errors += outcome.error is not None
                bar.update(task, advance=1, errors=errors)

            return await run_traffic(options, plan, client, on_done=done)


def register(app: typer.Typer) -> None:
    @app.command("traffic")
    def traffic(
        url: str = typer.Option(DEFAULT_URL, "--url", help="Where to send it (the proxy)"),
        rate: float = typer.Option(DEFAULT_RATE, min=0.1, help="Requests per second (open loop)"),
        duration: float = typer.Option(DEFAULT_DURATION_S, min=0.1, help="Seconds to send for"),
        seed: int = typer.Option(DEFAULT_SEED, help="Seed of the request mix (same seed, same requests)"),
        concurrency: int = typer.Option(DEFAULT_CONCURRENCY, min=1, help="Requests in flight at most"),
        titles: int | None = typer.Option(
            None, min=1, help="Titles (records) the ids range over [default: asked from --url]"
        ),
        graphql_share: float = typer.Option(DEFAULT_GRAPHQL_SHARE, min=0, max=1, help="Share of GraphQL queries"),
        vote_share: float = typer.Option(DEFAULT_WRITE_SHARE, min=0, max=1, help="Share of writes (votes, retractions)"),
        timeout: float = typer.Option(DEFAULT_TIMEOUT_S, min=0.1, help="Seconds one request may take"),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable summary (no progress bar)"),
        config: str = ConfigOption,
    ) -> None:
        """Send the stack's repeatable traffic plan (reads, writes, GraphQL) through the proxy."""
        if graphql_share + vote_share > 1:
            err_console.print("[red]error:[/red] --graphql-share plus --vote-share must be at most 1")
            raise typer.Exit(EXIT_PROBLEM)
        options = TrafficOptions(rate=rate, duration_s=duration, concurrency=concurrency, timeout_s=timeout)
        settings = PlanSettings(seed=seed, size=titles, graphql_share=graphql_share, write_share=vote_share)
        summary = asyncio.run(_run(url.rstrip("/"), options, _factory(config), settings, show_progress=not as_json))
        if as_json:
            typer.echo(json.dumps(summary.as_json()))
        else:
            _print_summary(summary, url)
        if summary.failed:
            if not as_json:
                err_console.print(f"more than {MAX_ERROR_SHARE:.0%} of the requests failed")
            raise typer.Exit(EXIT_FAILED)
