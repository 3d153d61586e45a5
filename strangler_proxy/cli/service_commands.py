"""`strangler service NAME`, `strangler backfill SERVICE`, `strangler sync SERVICE`.

- ``service`` migrates an app's database and serves it until Ctrl-C.
- ``backfill`` copies the service's tables from the monolith (progress bar,
  then rows / seconds / rows per second per table); ``--verify`` compares
  counts and checksums afterwards (``--verify-only`` skips the copy) and exits
  1 on any difference.
- ``sync`` drains the monolith's outbox into the service (``--reverse``: the
  service's outbox into the monolith) until Ctrl-C, serving its lag at
  ``/metrics``; ``--once`` drains what is there and exits.


Which services exist, and how their data moves, comes from ``stack.apps`` in
strangler.yaml (each app's ``AppSpec.datamove``). With a file that has a
``cells:`` section (``strangler up --cells N`` writes one), each command
addresses one cell's copy: ``--cell NAME`` says which, e.g. ``strangler
backfill ratings --cell c2 -c data/cells/strangler.yaml`` copies c2's
monolith database into c2's ratings database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from strangler_proxy.cli.common import ConfigOption, config_and_stack, console, fail, shown_url
from strangler_proxy.datamove.sync import SyncWorker
from strangler_proxy.errors import DataMoveError, StranglerError
from strangler_proxy.stack.components import DEFAULT_HOST, sync_metrics_port, sync_worker
from strangler_proxy.stack.registry import one_stack
from strangler_proxy.stack.runners import AppServer, SyncRunner

CellOption = typer.Option(None, "--cell", help="Which cell's copy (a file with a cells: section names its cells)")


# ----------------------------------------------------------------- service
async def _serve(server: AppServer, shown_db: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shown = await server.start()
    console.print(f"{server.name} serving {shown} (database {shown_db}); Ctrl-C stops it")
    try:
        await stop.wait()
    finally:
        await server.stop()


# ---------------------------------------------------------------- backfill
async def _backfill(
    name: str, config: str, *, batch_size: int, restart: bool, copy: bool, check: bool, quiet: bool,
    cell: str | None = None,
) -> dict[str, Any]:
    from strangler_proxy import migrate
    from strangler_proxy.databases import make_engine
    from strangler_proxy.datamove.backfill import backfill, count_remaining, verify
    from strangler_proxy.datamove.sync import mark_start

    loaded, _stack = config_and_stack(config)
    stack = one_stack(loaded, cell)
    app, spec = stack.service(name)
    plan = spec.datamove
    assert plan is not None
    service_url = stack.database_url(loaded, app.database)
    if spec.migrations is not None:
        await migrate.upgrade(spec.migrations, service_url)
    source = make_engine(stack.database_url(loaded, plan.source))
    target = make_engine(service_url)
    out: dict[str, Any] = {"service": app.label}
    try:
        if copy:
            for stream in plan.streams:
                # Changes made while we copy are replayed by the sync worker afterwards.
                await mark_start(stream, source, target)
            remaining = await count_remaining(plan.backfill, source, target)
            started = time.perf_counter()
            with Progress(
                TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, disable=quiet, transient=False,
            ) as bar:
                tasks: dict[str, TaskID] = {
                    t: bar.add_task(t, total=remaining[t]) for t in remaining
                }
                reports = await backfill(
                    plan.backfill, source, target, batch_size=batch_size, restart=restart,
                    progress=lambda table, n: bar.advance(tasks[table], n),
                )
            seconds = time.perf_counter() - started
            rows = sum(r.rows for r in reports)
            out["tables"] = [
                {"table": r.table, "rows": r.rows, "deleted": r.deleted, "seconds": round(r.seconds, 3),
                 "rows_per_second": round(r.rows_per_second), "resumed": r.resumed}
                for r in reports
            ]
            out["total"] = {"rows": rows, "seconds": round(seconds, 3),
                            "rows_per_second": round(rows / seconds) if seconds > 0 else 0}
        if check:
            checks = await verify(plan.backfill, source, target, batch_size=batch_size)
            out["verify"] = [
                {"table": c.table, "monolith_rows": c.source_count, "service_rows": c.target_count,
                 "monolith_checksum": c.source_checksum, "service_checksum": c.target_checksum, "ok": c.ok}
                for c in checks
            ]
            out["ok"] = all(c.ok for c in checks)
    finally:
        await source.dispose()
        await target.dispose()
    return out


def _print_backfill(out: dict[str, Any]) -> None:
    if "tables" in out:
        t = Table("table", "rows", "deleted", "seconds", "rows/s", "resumed", title=f"backfill {out['service']}")
        for r in out["tables"]:
            t.add_row(r["table"], str(r["rows"]), str(r["deleted"]), f"{r['seconds']:.2f}",
                      f"{r['rows_per_second']:,}", "yes" if r["resumed"] else "")
        total = out["total"]
        t.add_row("total", str(total["rows"]), "", f"{total['seconds']:.2f}", f"{total['rows_per_second']:,}", "")
        console.print(t)
    if "verify" in out:
        t = Table("table", "monolith rows", "service rows", "monolith checksum", "service checksum", "",
                  title=f"verify {out['service']}")
        for c in out["verify"]:
            t.add_row(c["table"], str(c["monolith_rows"]), str(c["service_rows"]), c["monolith_checksum"],
                      c["service_checksum"], "[green]ok[/green]" if c["ok"] else "[red]DIFFERENT[/red]")
        console.print(t)


# -------------------------------------------------------------------- sync
def _worker(
    name: str, config: str, *, reverse: bool, batch_size: int, poll_interval_s: float, source: str | None = None,
    cell: str | None = None,
) -> SyncWorker:
    loaded, _stack = config_and_stack(config)
    return sync_worker(one_stack(loaded, cell), loaded, name, reverse=reverse, source=source,
                       batch_size=batch_size, poll_interval_s=poll_interval_s)


async def _sync_once(worker: SyncWorker, reverse: bool) -> dict[str, Any]:
    try:
        await worker.prepare()
        started = time.perf_counter()
        applied = await worker.drain()
        seconds = time.perf_counter() - started
        return {
            "service": worker.service, "stream": worker.stream.name, "reverse": reverse, "applied": applied,
            "cursor": await worker.cursor(), "seconds": round(seconds, 3),
            "lag_p50_s": worker.lag_percentile(50), "lag_p99_s": worker.lag_percentile(99),
        }
    finally:
        await worker.source.dispose()
        await worker.target.dispose()


async def _sync_forever(worker: SyncWorker, host: str, metrics_port: int | None) -> None:
    runner = SyncRunner(worker, host=host, metrics_port=metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = await runner.start()
    console.print(f"sync {worker.service}/{worker.stream.name} running; metrics {url}; Ctrl-C stops it")
    try:
        await stop.wait()
    finally:
        await runner.stop()


def register(app: typer.Typer) -> None:
    @app.command("service")
    def service(
        name: str = typer.Argument(..., help="An app of the stack (stack.apps; the demo's: ratings, credits, images)"),
        port: int = typer.Option(None, "--port", "-p", help="Port [default: its upstream's in strangler.yaml]"),
        host: str = typer.Option(DEFAULT_HOST, "--host", help="Interface to listen on"),
        migrate: bool = typer.Option(True, help="Migrate its database first (--no-migrate: another copy did)"),
        cell: str | None = CellOption,
        config: str = ConfigOption,
    ) -> None:
        """Serve one app of the stack, e.g. an extracted service (its database is migrated first)."""
        try:
            loaded, _stack = config_and_stack(config)
            stack = one_stack(loaded, cell)
            app, spec = stack.python_app(name)
            url = stack.database_url(loaded, app.database)
            server = AppServer(app.label, spec, url, host=host, port=port if port is not None else app.port,
                               migrate_first=migrate)
            asyncio.run(_serve(server, shown_url(url)))
        except (StranglerError, OSError) as exc:
            raise fail(exc) from exc

    @app.command("backfill")
    def backfill_cmd(
        name: str = typer.Argument(..., help="A service of the stack with a datamove plan (demo: ratings, credits, images)"),
        verify: bool = typer.Option(False, "--verify", help="Compare counts and checksums after copying"),
        verify_only: bool = typer.Option(False, "--verify-only", help="Only compare; copy nothing"),
        batch_size: int = typer.Option(5000, min=1, help="Rows per batch (one transaction each)"),
        restart: bool = typer.Option(False, help="Ignore an unfinished run's cursor and start over"),
        cell: str | None = CellOption,
        config: str = ConfigOption,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    ) -> None:
        """Copy a service's data from the monolith's database: batched, idempotent, resumable."""
        try:
            out = asyncio.run(
                _backfill(name, config, batch_size=batch_size, restart=restart, copy=not verify_only,
                          check=verify or verify_only, quiet=as_json, cell=cell)
            )
        except StranglerError as exc:
            raise fail(exc) from exc
        except SQLAlchemyError as exc:  # e.g. the monolith database is not migrated or seeded
            raise fail(DataMoveError(f"backfill failed: {exc}", service=name)) from exc
        if as_json:
            typer.echo(json.dumps(out))
        else:
            _print_backfill(out)
        if out.get("ok") is False:
            raise typer.Exit(code=1)

    @app.command("sync")
    def sync_cmd(
        name: str = typer.Argument(..., help="A service with sync streams (demo: ratings, credits)"),
        once: bool = typer.Option(False, "--once", help="Drain what is in the outbox now, then exit"),
        reverse: bool = typer.Option(False, "--reverse", help="Service outbox -> monolith (after cut-over)"),
        source: str = typer.Option(
            None, "--from", help="Whose outbox to follow (default: the monolith's; credits also: ratings)"
        ),
        metrics_port: int = typer.Option(None, help="Port of /metrics (default: the service's port + 1000; -1: none)"),
        host: str = typer.Option(DEFAULT_HOST, "--host", help="Interface of /metrics"),
        batch_size: int = typer.Option(500, min=1, help="Outbox rows per transaction"),
        poll_interval: float = typer.Option(0.05, min=0.001, help="Seconds between polls when idle"),
        cell: str | None = CellOption,
        config: str = ConfigOption,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output (with --once)"),
    ) -> None:
        """Apply the outbox to the other side, in order, exactly once in effect."""
        try:
            worker = _worker(name, config, reverse=reverse, batch_size=batch_size, poll_interval_s=poll_interval,
                             source=source, cell=cell)
            if once:
                out = asyncio.run(_sync_once(worker, reverse))
                if as_json:
                    typer.echo(json.dumps(out))
                else:
                    p99 = out["lag_p99_s"]
                    console.print(
                        f"sync {worker.service}/{out['stream']}: applied {out['applied']} change(s), cursor {out['cursor']}"
                        + (f", lag p99 {p99:.3f}s" if p99 is not None else "")
                    )
                return
            if metrics_port is None:
                loaded, _stack = config_and_stack(config)
                metrics_port = sync_metrics_port(one_stack(loaded, cell).app(name).port, reverse=reverse)
            asyncio.run(_sync_forever(worker, host, None if metrics_port < 0 else metrics_port))
        except (StranglerError, OSError) as exc:
            raise fail(exc) from exc
        except SQLAlchemyError as exc:
            raise fail(DataMoveError(f"sync failed: {exc}", service=name)) from exc
