"""`strangler proxy`, `validate`, `routes`, `flip` and `audit`.

``proxy`` runs one proxy replica; ``validate`` checks a file without running
anything; the other three talk to a running proxy's admin API. They find it
by, first match wins: ``--admin-url``/``--token``, the environment
(``STRANGLER_ADMIN_URL``/``STRANGLER_ADMIN_TOKEN``), then the config file
(``proxy.admin`` and the first of ``proxy.admin_tokens``; default
``./strangler.yaml``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from strangler_proxy.config import ADMIN_TOKEN_ENV, DEFAULT_ADMIN_PORT, StranglerConfig, load_config
from strangler_proxy.errors import ConfigErrors, StranglerError

DEFAULT_CONFIG = "strangler.yaml"
ADMIN_URL_ENV = "STRANGLER_ADMIN_URL"
DEFAULT_ADMIN_URL = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"
ADMIN_TIMEOUT_S = 10.0

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors name file:line; never wrap them

ConfigOpt = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="strangler.yaml (admin address and token)")
AdminUrlOpt = typer.Option(None, "--admin-url", help=f"admin API URL (env {ADMIN_URL_ENV})")
TokenOpt = typer.Option(None, "--token", help=f"admin bearer token (env {ADMIN_TOKEN_ENV})")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output")


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=code)


def _file_config(path: str) -> StranglerConfig | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return load_config(p)
    except ConfigErrors as exc:
        _fail(f"cannot read the admin address from {path}:\n{exc}")


def admin_target(config_path: str, admin_url: str | None, token: str | None) -> tuple[str, str | None]:
    """Where the admin API is and which token to send (see the module docstring)."""
    config: StranglerConfig | None = None
    url = admin_url or os.environ.get(ADMIN_URL_ENV)
    tok = token or os.environ.get(ADMIN_TOKEN_ENV)
    if url is None or tok is None:
        config = _file_config(config_path)
    if url is None:
        if config is not None:
            admin = config.proxy.admin
            host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host
            url = f"http://{host}:{admin.port}"
        else:
            url = DEFAULT_ADMIN_URL
    if tok is None and config is not None and config.proxy.admin_tokens:
        tok = next(iter(config.proxy.admin_tokens.values()))
    return url.rstrip("/"), tok


def _call(config_path: str, admin_url: str | None, token: str | None, method: str, path: str,
          **kwargs: Any) -> Any:
    url, tok = admin_target(config_path, admin_url, token)
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    try:
        with httpx.Client(base_url=url, timeout=ADMIN_TIMEOUT_S, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the admin API at {url} ({exc.__class__.__name__}): is the proxy running?")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        if isinstance(body, dict) and body.get("errors"):
            message = "\n".join(body["errors"])
        _fail(f"{response.status_code}: {message or response.text.strip()}")
    return body


def _pct(value: float) -> str:
    return f"{value:g}%"


def _state(mode: str, percent: float) -> str:
    return f"{mode} {_pct(percent)}" if mode == "canary" else mode


def _routes_table(routes: list[dict[str, Any]]) -> Table:
    table = Table(title="routes")
    table.add_column("route", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("source")
    table.add_column("target")
    for col in ("requests", "to target", "errors", "shadowed"):
        table.add_column(col, justify="right")
    table.add_column("guardrails")
    for r in routes:
        c = r.get("counters") or {}
        guard = r.get("guardrails") or {}
        guard_text = guard.get("state", "")
        if "samples" in guard:
            guard_text += f" ({guard['samples']} samples, err {guard.get('error_rate', 0):.0%}, " \
                          f"diff {guard.get('mismatch_rate', 0):.0%})"
        source = r["source"] + (f" ({r['flipped_by']})" if r.get("flipped_by") else "")
        table.add_row(
            r["name"], _state(r["mode"], r["percent"]), source, r.get("target") or "-",
            str(c.get("requests", 0)), str(c.get("target", 0)), str(c.get("errors", 0)), str(c.get("shadowed", 0)),
            guard_text,
        )
    return table


def _fields_table(fields: list[dict[str, Any]]) -> Table:
    table = Table(title="GraphQL fields")
    for col in ("field", "mode", "source", "target"):
        table.add_column(col)
    for f in fields:
        table.add_row(f["name"], _state(f["mode"], f["percent"]), f["source"], f["target"])
    return table


def _audit_table(entries: list[dict[str, Any]]) -> Table:
    table = Table(title="flips (newest first)")
    for col in ("at", "name", "who", "kind", "from", "to", "reason"):
        table.add_column(col)
    for e in entries:
        table.add_row(
            e["at"].replace("T", " ")[:19], e["name"], e["who"], e["kind"],
            _state(e["from"]["mode"], e["from"]["percent"]), _state(e["to"]["mode"], e["to"]["percent"]),
            e["reason"] or "",
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command("proxy")
    def proxy(
        config: str = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="strangler.yaml to run"),
        port: int | None = typer.Option(None, "--port", help="proxy port (default: proxy.listen.port, 8080)"),
        admin_port: int | None = typer.Option(None, "--admin-port", help="admin port (default: proxy.admin.port, 9901)"),
        access_log: str = typer.Option(
            "-", "--access-log", help="where the JSON access lines go: '-' (stdout) or a file (appended)"
        ),
    ) -> None:
        """Run the proxy alone (SIGHUP or saving the file reloads it; Ctrl-C stops)."""
        import uvloop

        from strangler_proxy.logs import configure_logging
        from strangler_proxy.server import run_proxy

        handler = configure_logging(access_log)
        try:
            uvloop.run(run_proxy(config, port=port, admin_port=admin_port))
        except StranglerError as exc:
            _fail(str(exc))
        finally:
            if handler is not None:
                handler.close()

    @app.command("validate")
    def validate(
        file: str = typer.Argument(..., help="the strangler.yaml to check"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Check a config file without running anything (exit 1 and every error if it is bad)."""
        try:
            cfg = load_config(file)
        except ConfigErrors as exc:
            if as_json:
                console.print_json(json.dumps({"ok": False, "errors": [str(e) for e in exc.errors]}))
                raise typer.Exit(code=1) from exc
            for e in exc.errors:
                err_console.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(code=1) from exc
        summary = {"ok": True, "file": file, "upstreams": len(cfg.upstreams), "routes": len(cfg.routes),
                   "fields": len(cfg.graphql.fields)}
        if as_json:
            console.print_json(json.dumps(summary))
        else:
            console.print(f"{file}: OK ({summary['upstreams']} upstreams, {summary['routes']} routes, "
                          f"{summary['fields']} GraphQL fields)", highlight=False)

    @app.command("routes")
    def routes(config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
               as_json: bool = JsonOpt) -> None:
        """Routes and fields of a running proxy: mode, source, live counters, guardrails."""
        body = _call(config, admin_url, token, "GET", "/routes")
        if as_json:
            console.print_json(json.dumps(body))
            return
        console.print(_routes_table(body["routes"]))
        if body.get("fields"):
            console.print(_fields_table(body["fields"]))

    @app.command("flip")
    def flip(
        route: str = typer.Argument(..., help="route name, or a GraphQL field Type.field"),
        mode: str = typer.Argument(..., help="legacy, shadow, canary or extracted"),
        percent: int | None = typer.Option(None, "--percent", "-p", min=0, max=100, help="canary percent, 0..100"),
        reason: str = typer.Option("", "--reason", "-r", help="why (kept in the audit log)"),
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Change a route's (or field's) mode or canary percent on a running proxy."""
        payload: dict[str, Any] = {"mode": mode, "reason": reason}
        if percent is not None:
            payload["percent"] = percent
        body = _call(config, admin_url, token, "POST", f"/routes/{route}/flip", json=payload)
        if as_json:
            console.print_json(json.dumps(body))
            return
        before = _state(body["from"]["mode"], body["from"]["percent"])
        after = _state(body["to"]["mode"], body["to"]["percent"])
        if not body["changed"]:
            console.print(f"{route}: already {after}; nothing changed", highlight=False)
            return
        table = Table(title="flip")
        for col in ("route", "from", "to", "who", "now follows"):
            table.add_column(col)
        table.add_row(route, before, after, body["who"], body["source"])
        console.print(table)

    @app.command("audit")
    def audit(
        route: str | None = typer.Option(None, "--route", help="only this route or field"),
        limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000),
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """The audit log of flips, rollbacks and file changes, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if route:
            params["name"] = route
        body = _call(config, admin_url, token, "GET", "/audit", params=params)
        if as_json:
            console.print_json(json.dumps(body))
            return
        console.print(_audit_table(body["entries"]))
