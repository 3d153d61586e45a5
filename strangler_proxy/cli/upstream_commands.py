"""`strangler upstreams`, `failover`, `drain` and `undrain`: an upstream's endpoints and
the operators' switches, on a running proxy's admin API (found as `strangler routes`
finds it: ``--admin-url``/``--token``, the environment, then the config file).

``drain --wait`` polls ``GET /upstreams/NAME`` until the endpoint has no request
in flight on the replica asked (the drain itself reaches every replica).
"""

from __future__ import annotations

import json
import time
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
    fail_with,
    reading_answer,
)

DEFAULT_WAIT_S = 60.0
POLL_S = 0.25

ReasonOpt = typer.Option("", "--reason", "-r", help="why (kept in the audit log)")


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _health(e: dict[str, Any]) -> str:
    if e.get("ejected"):
        return f"ejected ({e.get('ejected_for_s', 0):g}s left)"
    if "healthy" not in e:
        return "-"
    return "healthy" if e["healthy"] else "unhealthy"


def _switch(e: dict[str, Any]) -> str:
    if e.get("drain") == "draining":
        return f"draining ({e['in_flight']} in flight)"
    return e.get("drain") or ("not in the pinned zone" if e.get("excluded") else "")


def upstreams_table(upstreams: list[dict[str, Any]]) -> Table:
    """Every endpoint of every upstream, one row each."""
    table = Table(title="upstreams")
    for col in ("upstream", "#", "endpoint", "zone", "prio", "weight", "health"):
        table.add_column(col, no_wrap=col in ("upstream", "endpoint"))
    for col in ("ejections", "in flight", "requests", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    table.add_column("switch")
    for u in upstreams:
        name = u["name"] + (f"\npinned: {u['pinned_zone']}" if u.get("pinned_zone") else "")
        for i, e in enumerate(u["endpoints"]):
            table.add_row(
                name if i == 0 else "", str(e["index"]), e["url"], e["zone"], str(e["priority"]), str(e["weight"]),
                _health(e), str(e.get("ejections", 0)), str(e["in_flight"]), str(e.get("requests", 0)),
                _ms(e.get("p50_ms")), _ms(e.get("p99_ms")), _switch(e),
            )
    return table


def _endpoint(view: dict[str, Any], url: str) -> dict[str, Any]:
    [found] = [e for e in view["endpoints"] if e["url"] == url]
    return found


def _wait_drained(where: tuple[str, str | None, str | None], upstream: str, url: str, timeout_s: float
                  ) -> tuple[int, float]:
    """Poll until ``url`` has nothing in flight; (in flight, seconds waited)."""
    started = time.monotonic()
    with console.status(f"draining {url}", spinner="dots") as status:
        while True:
            body = call_admin(*where, "GET", f"/upstreams/{upstream}")
            with reading_answer(f"GET /upstreams/{upstream}"):
                in_flight = int(_endpoint(body, url)["in_flight"])
            waited = time.monotonic() - started
            if in_flight == 0 or waited >= timeout_s:
                return in_flight, waited
            status.update(f"draining {url}: {in_flight} request(s) in flight, {waited:.0f}s")
            time.sleep(POLL_S)


def register(app: typer.Typer) -> None:
    @app.command("upstreams")
    def upstreams(config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
                  as_json: bool = JsonOpt) -> None:
        """Every upstream endpoint of a running proxy: zone, priority, health, ejections, in flight, p50/p99,
        drained, the pinned zone."""
        body = call_admin(config, admin_url, token, "GET", "/upstreams")
        if as_json:
            console.print_json(json.dumps(body))
            return
        with reading_answer("GET /upstreams"):
            table = upstreams_table(body["upstreams"])
        console.print(table)

    @app.command("failover")
    def failover(
        upstream: str = typer.Argument(..., help="the upstream (a name under upstreams: in strangler.yaml)"),
        to: str | None = typer.Option(None, "--to", help="pin it to this zone: only its endpoints serve"),
        auto: bool = typer.Option(False, "--auto", help="unpin: health and priorities decide again"),
        reason: str = ReasonOpt,
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Pin an upstream to one zone (the disaster-recovery switch), or --auto to give it back to health."""
        if (to is None) == (not auto):
            fail_with("give --to ZONE or --auto, one of them", code=2)
        payload: dict[str, Any] = {"auto": True} if auto else {"zone": to}
        body = call_admin(config, admin_url, token, "POST", f"/upstreams/{upstream}/failover",
                          json={**payload, "reason": reason})
        if as_json:
            console.print_json(json.dumps(body))
            return
        with reading_answer(f"POST /upstreams/{upstream}/failover"):
            line = (f"{upstream}: already {body['to']}; nothing changed" if not body["changed"] else
                    f"{upstream}: {body['from']} -> {body['to']} by {body['who']}")
        console.print(Text(line))

    def _drain_command(undrain: bool, upstream: str, endpoint: str, reason: str,
                       where: tuple[str, str | None, str | None], wait: bool, timeout_s: float,
                       as_json: bool) -> None:
        action = "undrain" if undrain else "drain"
        body = call_admin(*where, "POST", f"/upstreams/{upstream}/{action}",
                          json={"endpoint": endpoint, "reason": reason})
        with reading_answer(f"POST /upstreams/{upstream}/{action}"):
            url, changed, in_flight = str(body["endpoint"]), bool(body["changed"]), int(body["in_flight"])
        if wait and in_flight > 0:
            in_flight, waited = _wait_drained(where, upstream, url, timeout_s)
            body.update(in_flight=in_flight, drain="drained" if in_flight == 0 else "draining",
                        waited_s=round(waited, 3))
            if in_flight > 0:
                if as_json:
                    console.print_json(json.dumps(body))
                fail_with(f"{upstream} {url}: still {in_flight} request(s) in flight after {timeout_s:g}s; "
                          "it stays drained (no new requests), run with --wait again or look at `strangler upstreams`")
        if as_json:
            console.print_json(json.dumps(body))
            return
        if undrain:
            line = f"{upstream} {url}: " + ("back in service" if changed else "was not drained; nothing changed")
        elif body["drain"] == "drained":
            line = f"{upstream} {url}: drained (no request in flight)" + ("" if changed else "; it already was")
        else:
            line = (f"{upstream} {url}: draining, {in_flight} request(s) in flight -- no new ones are sent; "
                    "--wait waits for them")
        console.print(Text(line))

    @app.command("drain")
    def drain(
        upstream: str = typer.Argument(..., help="the upstream"),
        endpoint: str = typer.Argument(..., help="its URL, its index (# in `strangler upstreams`), or a zone with "
                                                 "one endpoint"),
        reason: str = ReasonOpt,
        wait: bool = typer.Option(False, "--wait", help="wait until its requests in flight have finished"),
        timeout_s: float = typer.Option(DEFAULT_WAIT_S, "--timeout", min=0, help="--wait: give up after this many "
                                                                                  "seconds (exit 1)"),
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Stop sending new requests to an endpoint; those in flight finish. Every replica follows."""
        _drain_command(False, upstream, endpoint, reason, (config, admin_url, token), wait, timeout_s, as_json)

    @app.command("undrain")
    def undrain(
        upstream: str = typer.Argument(..., help="the upstream"),
        endpoint: str = typer.Argument(..., help="its URL, its index, or a zone with one endpoint"),
        reason: str = ReasonOpt,
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Put a drained endpoint back into service."""
        _drain_command(True, upstream, endpoint, reason, (config, admin_url, token), False, 0.0, as_json)
