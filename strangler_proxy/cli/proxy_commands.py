"""`strangler proxy`, `validate`, `routes`, `flip` and `audit` (`--cell`: one cell's flips).

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.errors import NotRenderableError
from rich.table import Table
from rich.text import Text

from strangler_proxy.cli.common import one_line
from strangler_proxy.config import ADMIN_TOKEN_ENV, DEFAULT_ADMIN_PORT, Mode, StranglerConfig, load_config
from strangler_proxy.control.switch_rules import audit_name
from strangler_proxy.errors import ConfigErrors, StranglerError
from strangler_proxy.routing.cells import scoped
from strangler_proxy.routing.router import RouteState

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


def fail_with(message: str, code: int = 1) -> NoReturn:
    """``error: message`` on stderr (never wrapped) and exit ``code``."""
    # The message as text, never markup: it may quote what a server answered ("[/x]" included).
    err_console.print("[red]error:[/red]", Text(message), highlight=False)
    raise typer.Exit(code=code)


def _file_config(path: str) -> StranglerConfig | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return load_config(p)
    except ConfigErrors as exc:
        fail_with(f"cannot read the admin address from {path}:\n{exc}")


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


class AdminCallFailed(Exception):
    """An admin API call that gave no usable answer; the message is one line saying why and
    what to try."""


# What to check when the admin API refuses the token.
_TOKEN_HINTS = {
    401: f"no token was sent: pass --token, set {ADMIN_TOKEN_ENV}, or name one in proxy.admin_tokens",
    403: f"the token is not one of the running proxy's (proxy.admin_tokens, {ADMIN_TOKEN_ENV}): check --token",
}


def admin_call(url: str, token: str | None, method: str, path: str, *, timeout_s: float = ADMIN_TIMEOUT_S,
               **kwargs: Any) -> Any:
    """The JSON body of a 2xx answer of the admin API at ``url``; anything else -- no connection,
    no answer in time, an answer broken off, a refusal, a body that is not JSON -- raises
    :class:`AdminCallFailed` with one line saying which (a refusal's own reasons, such as every
    error of a refused flip, are kept)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.TimeoutException as exc:
        raise AdminCallFailed(f"the admin API at {url} did not answer within {timeout_s:g} s "
                              f"({exc.__class__.__name__}): is the proxy overloaded, or is that not its admin port?"
                              ) from exc
    except httpx.ConnectError as exc:
        raise AdminCallFailed(f"cannot reach the admin API at {url} (connection refused): is the proxy running, "
                              f"and is that its admin port (--admin-url, {ADMIN_URL_ENV})?") from exc
    except httpx.HTTPError as exc:  # the connection broke: a half-written answer, a reset
        raise AdminCallFailed(f"the admin API at {url} broke off its answer to {method} {path} "
                              f"({exc.__class__.__name__}: {one_line(str(exc), 120)}); nothing is known "
                              "about what it did: look at `strangler audit` and the proxy's log") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            message = "\n".join(str(e) for e in body["errors"])  # a refused flip or reload: every reason
        message = message or one_line(response.text, 200) or response.reason_phrase
        hint = _TOKEN_HINTS.get(status)
        raise AdminCallFailed(f"{status}: {message}" + (f" ({hint})" if hint else ""))
    if body is None:
        kind = response.headers.get("Content-Type", "no Content-Type")
        raise AdminCallFailed(f"the admin API at {url} answered {method} {path} with {status} and "
                              f"{len(response.content)} bytes of {kind} that are not JSON: is that the admin port "
                              "of a strangler proxy?")
    return body


def call_admin(config_path: str, admin_url: str | None, token: str | None, method: str, path: str,
               **kwargs: Any) -> Any:
    """:func:`admin_call` on the admin API the options name; a failure is one line and exit 1."""
    url, tok = admin_target(config_path, admin_url, token)
    try:
        return admin_call(url, tok, method, path, **kwargs)
    except AdminCallFailed as exc:
        fail_with(str(exc))


@contextmanager
def reading_answer(what: str) -> Iterator[None]:
    """Turn an answer of an unexpected shape (a missing key, a wrong type) into one line."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, NotRenderableError) as exc:
        fail_with(f"the admin API's answer to {what} is not what this strangler expects "
              f"({exc.__class__.__name__}: {one_line(str(exc), 80)}): are the CLI and the proxy the same version?")


def state_text(mode: str, percent: float) -> str:
    """``canary 25%``, ``shadow``: a mode as the tables show it."""
    # Audit rows of upstream switches carry zones where flips carry modes: only a canary has a percent.
    return RouteState(Mode.CANARY, percent).text() if mode == Mode.CANARY.value else mode


def _guard_text(guard: dict[str, Any] | None) -> str:
    guard = guard or {}
    text = str(guard.get("state", ""))
    if "samples" in guard:
        text += f" ({guard['samples']} samples, err {guard.get('error_rate', 0):.0%}, " \
                f"diff {guard.get('mismatch_rate', 0):.0%})"
    return text


def _cell_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells worth a line under their route: an override of their own, or guardrails
    watching (the route is canary or extracted there)."""
    return [e for e in entries if e.get("source") == "cell"
            or (e.get("guardrails") or {}).get("state") not in (None, "inactive", "disabled")]


def _routes_table(routes: list[dict[str, Any]], cells: dict[str, list[dict[str, Any]]] | None = None) -> Table:
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
        source = r["source"] + (f" ({r['flipped_by']})" if r.get("flipped_by") else "")
        table.add_row(
            r["name"], state_text(r["mode"], r["percent"]), source, r.get("target") or "-",
            str(c.get("requests", 0)), str(c.get("target", 0)), str(c.get("errors", 0)), str(c.get("shadowed", 0)),
            _guard_text(r.get("guardrails")),
        )
        for e in _cell_rows((cells or {}).get(r["name"], [])):
            cell_source = ("cell flip" + (f" ({e['flipped_by']})" if e.get("flipped_by") else "")
                           if e["source"] == "cell" else "global")
            table.add_row(f"  @{e['cell']}", state_text(e["mode"], e["percent"]), cell_source, "", "", "", "", "",
                          _guard_text(e.get("guardrails")))
    return table


def _fields_table(fields: list[dict[str, Any]], cells: dict[str, list[dict[str, Any]]] | None = None) -> Table:
    table = Table(title="GraphQL fields")
    for col in ("field", "mode", "source", "target"):
        table.add_column(col)
    for f in fields:
        table.add_row(f["name"], state_text(f["mode"], f["percent"]), f["source"], f["target"])
        for e in (x for x in (cells or {}).get(f["name"], []) if x.get("source") == "cell"):
            who = f" ({e['flipped_by']})" if e.get("flipped_by") else ""
            table.add_row(f"  @{e['cell']}", state_text(e["mode"], e["percent"]), f"cell flip{who}", "")
    return table


def _audit_table(entries: list[dict[str, Any]]) -> Table:
    table = Table(title="flips and switches (newest first)")
    for col in ("at", "name", "who", "kind", "from", "to", "reason"):
        table.add_column(col)
    for e in entries:
        endpoint = (e.get("details") or {}).get("endpoint")  # a drain names its endpoint
        table.add_row(
            e["at"].replace("T", " ")[:19], e["name"] + (f" {endpoint}" if endpoint else ""), e["who"], e["kind"],
            state_text(e["from"]["mode"], e["from"]["percent"]), state_text(e["to"]["mode"], e["to"]["percent"]),
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
        workers: str = typer.Option(
            "1", "--workers", help="proxy processes sharing the port (SO_REUSEPORT): a number, or 'auto' (one "
                                   "per CPU); flips and results are shared through the control database"
        ),
    ) -> None:
        """Run the proxy alone (SIGHUP or saving the file reloads it; Ctrl-C stops)."""
        import uvloop

        from strangler_proxy.logs import configure_logging
        from strangler_proxy.server import run_proxy
        from strangler_proxy.workers import run_workers, worker_count

        try:
            count = worker_count(workers)
        except ValueError:
            fail_with(f"--workers {workers!r}: a number of at least 1, or auto")
        if count > 1:
            configure_logging(None)
            raise typer.Exit(run_workers(config, count, port=port, admin_port=admin_port, access_log=access_log))
        handler = configure_logging(access_log)
        try:
            uvloop.run(run_proxy(config, port=port, admin_port=admin_port))
        except StranglerError as exc:
            fail_with(str(exc))
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
        body = call_admin(config, admin_url, token, "GET", "/routes")
        if as_json:
            console.print_json(json.dumps(body))
            return
        with reading_answer("GET /routes"):
            cells = body.get("cells")  # per-cell states, when the proxy has cells
            tables = [_routes_table(body["routes"], cells)]
            if body.get("fields"):
                tables.append(_fields_table(body["fields"], cells))
        for table in tables:
            console.print(table)

    @app.command("flip")
    def flip(
        route: str = typer.Argument(..., help="route name, or a GraphQL field Type.field"),
        mode: str = typer.Argument(..., help="legacy, shadow, canary or extracted"),
        percent: int | None = typer.Option(None, "--percent", "-p", min=0, max=100, help="canary percent, 0..100"),
        cell: str | None = typer.Option(None, "--cell", help="flip it in this cell only (`strangler cells`)"),
        reason: str = typer.Option("", "--reason", "-r", help="why (kept in the audit log)"),
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Change a route's (or field's) mode or canary percent on a running proxy (--cell: in one cell)."""
        payload: dict[str, Any] = {"mode": mode, "reason": reason}
        if percent is not None:
            payload["percent"] = percent
        if cell is not None:
            payload["cell"] = cell
        body = call_admin(config, admin_url, token, "POST", f"/routes/{route}/flip", json=payload)
        if as_json:
            console.print_json(json.dumps(body))
            return
        with reading_answer(f"POST /routes/{route}/flip"):
            before = state_text(body["from"]["mode"], body["from"]["percent"])
            after = state_text(body["to"]["mode"], body["to"]["percent"])
            changed = bool(body["changed"])
            name = str(body.get("name") or route)  # ratings@c1 for a cell
            # A cell without an override of its own follows its route's (global) mode.
            follows = "global" if cell is not None and body["source"] == "file" else body["source"]
            table = Table(title="flip")
            for col in ("route", "from", "to", "who", "now follows"):
                table.add_column(col)
            table.add_row(name, before, after, body["who"], follows)
        if not changed:
            console.print(f"{name}: already {after}; nothing changed", highlight=False)
            return
        console.print(table)

    @app.command("audit")
    def audit(
        route: str | None = typer.Option(None, "--route", help="only this route or field"),
        cell: str | None = typer.Option(None, "--cell", help="with --route: only its flips in this cell"),
        upstream: str | None = typer.Option(None, "--upstream", help="only this upstream's failovers and drains"),
        limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000),
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """The audit log of flips, rollbacks, file changes, failovers and drains, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if route and upstream:
            fail_with("give --route or --upstream, not both")
        if cell is not None and not route:
            fail_with("--cell needs --route: the flips of that route in that cell")
        if route or upstream:
            params["name"] = scoped(route, cell) if route else audit_name(upstream or "")
        body = call_admin(config, admin_url, token, "GET", "/audit", params=params)
        if as_json:
            console.print_json(json.dumps(body))
            return
        with reading_answer("GET /audit"):
            table = _audit_table(body["entries"])
        console.print(table)
