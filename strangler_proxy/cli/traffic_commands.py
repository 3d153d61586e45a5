"""`strangler traffic`: send the stack's traffic plan, or a recording, through the proxy.

The plan comes from ``stack.traffic`` in strangler.yaml (the demo's: a mix of
film-catalogue reads, votes and GraphQL queries). ``--replay FILE`` sends a
HAR recording instead (:mod:`strangler_proxy.stack.har`) at its recorded pace
(``--speed``), its writes only with ``--include-writes``; entries it cannot
replay are named on stderr before anything is sent.

When the proxy runs cells, every planned request carries a partition key
(``cells.partition_key``: a header, query parameter or cookie) from a key set
in which every cell has keys (:mod:`strangler_proxy.stack.keys`), so every
cell gets about its weight's share; the keys per cell are printed first
(``cells`` in ``--json``). The cells are the config file's ``cells:`` section;
a file without one (``strangler up --cells N`` runs a generated file beside
strangler.yaml) is completed by the running proxy's: its admin API's
``GET /config``, found as ``strangler routes`` finds it. A replay is sent as
recorded.

A progress bar while it runs, then a table per request kind (requests, ok,
errors, p50/p99) and the totals (statuses, achieved rate, schedule lag, what
a replay skipped). ``--json`` prints the summary as JSON instead. Exit code 1
when more than 1% of the requests failed (no answer, or a status the kind does
not expect), 2 when nothing can be sent: the plan cannot be built (no
``stack.traffic``, or the app cannot be asked what it needs), or the recording
cannot be read or has nothing to replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from strangler_proxy.cli.admin_client import admin_get
from strangler_proxy.cli.common import ConfigOption, config_and_stack, one_line
from strangler_proxy.config import CellsConfig
from strangler_proxy.errors import HarError, StranglerError
from strangler_proxy.routing.cells import CellTable
from strangler_proxy.stack.har import SKIPPED_WRITE, Recording, Replay, parse_har
from strangler_proxy.stack.keys import KeyedPlan, carrying, cell_keys, key_placement
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
    Schedule,
    SteadyRate,
    TrafficOptions,
    TrafficSummary,
    run_schedule,
    traffic_client,
)

EXIT_FAILED = 1
EXIT_PROBLEM = 2
# Refused entries named one per line on stderr; past this many, a count (--json lists every one).
SHOWN_PROBLEMS = 20
# Asking the running proxy for its cells (a file without them) must not hold a run up.
ADMIN_TIMEOUT_S = 2.0
# Options of the generated mix and of a replay: neither takes the other's.
MIX_OPTIONS = ("rate", "duration", "seed", "titles", "graphql_share", "vote_share", "config")
REPLAY_OPTIONS = ("speed", "include_writes", "host")

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
    if summary.skipped is not None:
        parts = [f"{reason}: {n}" + (" (--include-writes sends them)" if reason == SKIPPED_WRITE else "")
                 for reason, n in summary.skipped.items() if n]
        console.print(f"skipped   {', '.join(parts) if parts else 'none'}")
    if summary.errors:
        reasons = ", ".join(f"{r}: {n}" for r, n in summary.error_reasons().items())
        colour = "red" if summary.failed else "yellow"
        console.print(f"[{colour}]errors {summary.errors} ({summary.error_share:.1%})[/{colour}]  {reasons}")


@dataclass(frozen=True, slots=True)
class Keying:
    """The partition keys every planned request carries (the config has cells)."""

    spec: str  # cells.partition_key
    keys: tuple[str, ...]
    per_cell: dict[str, int]  # keys each cell owns
    source: str  # where the cells were read: the file, or the proxy's admin API

    def as_json(self) -> dict[str, object]:
        return {"partition_key": self.spec, "keys": len(self.keys), "keys_per_cell": self.per_cell,
                "from": self.source}


def _running_cells(config: str) -> tuple[CellsConfig | None, str]:
    """The running proxy's cells (its admin API's ``GET /config``); None when it has none or does not answer."""
    answer = admin_get(config, None, None, "/config", timeout_s=ADMIN_TIMEOUT_S)
    try:
        found = answer.body["config"]["cells"] if answer.ok else None
        return (CellsConfig.model_validate(found), f"the proxy's admin API ({answer.url})") if found else (None, "")
    except (KeyError, TypeError, ValidationError):  # not the answer of a proxy with cells
        return None, ""


def _keying(cells: CellsConfig | None, source: str) -> Keying | None:
    """Keys over the cells, or None (no cells, or a key the requests carry themselves)."""
    if cells is None:
        return None
    problem = key_placement(cells.partition_key)
    if problem is not None:
        err_console.print(f"cells: {escape(problem)}")
        return None
    table = CellTable(cells)
    try:
        keys = cell_keys(table)
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_PROBLEM) from exc
    counts = {cell: 0 for cell in table.names}
    for key in keys:
        counts[table.cell_of(key)] += 1
    return Keying(cells.partition_key, keys, counts, source)


def _factory(config: str) -> tuple[PlanFactory, CellsConfig | None]:
    try:
        loaded, stack = config_and_stack(config)
    except StranglerError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_PROBLEM) from exc
    if stack.traffic is None:
        err_console.print(f"[red]error:[/red] {config} names no traffic plan (stack.traffic: module:attribute)")
        raise typer.Exit(EXIT_PROBLEM)
    factory: PlanFactory = stack.traffic
    return factory, loaded.cells


async def _run(url: str, concurrency: int, timeout_s: float,
               schedule_of: Callable[[httpx.AsyncClient], Awaitable[Schedule]],
               show_progress: bool, *, default_headers: bool = True) -> TrafficSummary:
    """Open the client, get the schedule (it may ask the app), send it with a progress bar."""
    async with traffic_client(url, concurrency=concurrency, timeout_s=timeout_s,
                              default_headers=default_headers) as client:
        schedule = await schedule_of(client)
        with Progress(
            TextColumn("traffic"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[errors]} errors"),
            TimeElapsedColumn(), console=console, disable=not show_progress, transient=False,
        ) as bar:
            task = bar.add_task("traffic", total=schedule.planned, errors=0)
            errors = 0

            def done(outcome: Outcome) -> None:
                nonlocal errors
                errors += outcome.error is not None
                bar.update(task, advance=1, errors=errors)

            return await run_schedule(schedule, client, concurrency=concurrency, timeout_s=timeout_s, on_done=done)


def _steady(options: TrafficOptions, factory: PlanFactory, settings: PlanSettings,
            keying: Keying | None = None) -> Callable[[httpx.AsyncClient], Awaitable[Schedule]]:
    async def schedule_of(client: httpx.AsyncClient) -> Schedule:
        try:
            # What the plan asks the app goes to a cell too (the first key's).
            with carrying(client, keying.spec, keying.keys[0]) if keying else contextlib.nullcontext():
                plan = await factory(client, settings)
        except (httpx.HTTPError, ValueError) as exc:  # the plan's own sentence (it may quote an answer)
            err_console.print("[red]error:[/red]", Text(one_line(str(exc) or type(exc).__name__)))
            raise typer.Exit(EXIT_PROBLEM) from exc
        except Exception as exc:  # noqa: BLE001 - the app's plan broke on an answer it did not expect
            err_console.print("[red]error:[/red]", Text(one_line(
                f"the traffic plan (stack.traffic) failed asking {client.base_url} what it needs: "
                f"{type(exc).__name__}: {exc}; is that the proxy of this stack? Or pass --titles N.")))
            raise typer.Exit(EXIT_PROBLEM) from exc
        if keying is not None:
            plan = KeyedPlan(plan, keying.spec, keying.keys, settings.seed)
        return SteadyRate(plan, options)

    return schedule_of


def _checked_url(url: str) -> str:
    """``--url`` as the client's base, or exit 2 before anything is sent."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        err_console.print("[red]error:[/red]", Text(f"--url {url!r}: an http:// or https:// URL, "
                                                     f"such as {DEFAULT_URL}"))
        raise typer.Exit(EXIT_PROBLEM)
    return url.rstrip("/")


def _failure_line(summary: TrafficSummary) -> str:
    """Why a run failed, in one line: the share and the commonest reasons."""
    reasons = "; ".join(f"{r} ×{n}" for r, n in list(summary.error_reasons().items())[:3])
    return (f"more than {MAX_ERROR_SHARE:.0%} of the requests failed: {summary.errors} of {summary.sent}"
            + (f" ({reasons})" if reasons else ""))


def _given(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    """The options among ``names`` given on the command line (or by environment)."""
    found = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            found.append("--" + name.replace("_", "-"))
    return found


def _replay_of(path: Path, host: str | None, speed: float, include_writes: bool, as_json: bool) -> Replay:
    """Read the recording and name each entry it refuses; exit 2 when nothing can be replayed."""
    try:
        recording = parse_har(path.read_bytes(), source=str(path), host=host)
    except OSError as exc:
        err_console.print(f"[red]error:[/red] cannot read {escape(str(path))}: {escape(exc.strerror or str(exc))}")
        raise typer.Exit(EXIT_PROBLEM) from exc
    except HarError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_PROBLEM) from exc
    replay = Replay(recording, speed=speed, include_writes=include_writes)
    shown = recording.problems if as_json else recording.problems[:SHOWN_PROBLEMS]
    for problem in shown:
        err_console.print(f"[yellow]not replayed:[/yellow] {escape(str(path))}: {escape(str(problem))}")
    if len(shown) < len(recording.problems):
        err_console.print(f"[yellow]not replayed:[/yellow] {len(recording.problems) - len(shown)} more entries "
                          "(--json lists every one)")
    if not replay.planned:
        err_console.print(f"[red]error:[/red] {escape(str(path))}: nothing to replay: {_nothing_why(replay)}")
        raise typer.Exit(EXIT_PROBLEM)
    if not as_json:
        pace = "all at once" if not speed else f"over {replay.span_s:.1f}s"
        console.print(f"replaying {replay.planned} requests of {escape(str(path))} recorded on "
                      f"{escape(recording.host or '-')} ({pace}, --speed {speed:g})")
    return replay


def _nothing_why(replay: Replay) -> str:
    recording = replay.recording
    if not recording.entries:
        return "the recording has no entries"
    if recording.requests:
        return f"all {len(recording.requests)} requests to {recording.host} are writes (--include-writes sends them)"
    if recording.hosts:
        hosts = ", ".join(f"{h} ({n})" for h, n in recording.hosts.items())
        return f"no entry is to host {recording.host} (entries per host: {hosts})"
    return f"none of its {recording.entries} entries can be replayed (see above)"


def _replay_json(summary: TrafficSummary, replay: Replay) -> dict[str, object]:
    recording: Recording = replay.recording
    return {
        **summary.as_json(),
        "replay": {
            "file": recording.source, "host": recording.host, "entries": recording.entries,
            "speed": replay.speed, "include_writes": replay.include_writes,
            "problems": [p.as_json() for p in recording.problems],
        },
    }


def register(app: typer.Typer) -> None:
    @app.command("traffic")
    def traffic(
        ctx: typer.Context,
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
        replay: Path | None = typer.Option(
            None, "--replay", metavar="FILE", help="Replay a HAR recording (browser devtools, mitmproxy) instead"
        ),
        speed: float = typer.Option(
            1.0, min=0, help="With --replay: pace times this (2: twice as fast; 0: as fast as --concurrency allows)"
        ),
        include_writes: bool = typer.Option(
            False, "--include-writes", help="With --replay: send writes (POST, PUT, PATCH, DELETE...) too"
        ),
        host: str | None = typer.Option(
            None, "--host", help="With --replay: the recorded host to replay [default: the most common one]"
        ),
    ) -> None:
        """Send the stack's repeatable traffic plan (reads, writes, GraphQL), or a recording, through the proxy."""
        url = _checked_url(url)
        wrong = _given(ctx, MIX_OPTIONS if replay is not None else REPLAY_OPTIONS)
        if wrong:
            needs = "only without --replay" if replay is not None else "only with --replay FILE"
            err_console.print(f"[red]error:[/red] {', '.join(wrong)}: {needs}")
            raise typer.Exit(EXIT_PROBLEM)
        keying: Keying | None = None  # a replay is sent as recorded
        if replay is not None:
            recorded_plan = _replay_of(replay, host, speed, include_writes, as_json)

            async def recorded(_client: httpx.AsyncClient) -> Schedule:
                return recorded_plan

            # Only the recorded headers go out: none of the client's own defaults.
            summary = asyncio.run(_run(url.rstrip("/"), concurrency, timeout, recorded, show_progress=not as_json,
                                       default_headers=False))
        else:
            if graphql_share + vote_share > 1:
                err_console.print("[red]error:[/red] --graphql-share plus --vote-share must be at most 1")
                raise typer.Exit(EXIT_PROBLEM)
            options = TrafficOptions(rate=rate, duration_s=duration, concurrency=concurrency, timeout_s=timeout)
            settings = PlanSettings(seed=seed, size=titles, graphql_share=graphql_share, write_share=vote_share)
            factory, cells = _factory(config)
            keying = _keying(*((cells, config) if cells is not None else _running_cells(config)))
            if keying is not None and not as_json:
                spread = ", ".join(f"{cell} {n}" for cell, n in keying.per_cell.items())
                console.print(f"cells (from {keying.source}): {len(keying.keys)} keys in {keying.spec} ({spread})",
                              highlight=False)
            steady = _steady(options, factory, settings, keying)
            summary = asyncio.run(_run(url.rstrip("/"), concurrency, timeout, steady, show_progress=not as_json))
        if as_json:
            out = summary.as_json() if replay is None else _replay_json(summary, recorded_plan)
            if keying is not None:
                out["cells"] = keying.as_json()
            typer.echo(json.dumps(out))
        else:
            _print_summary(summary, url)
        if summary.failed:
            if not as_json:
                err_console.print(Text(_failure_line(summary)))
            raise typer.Exit(EXIT_FAILED)
