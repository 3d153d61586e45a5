"""`strangler rollout start|status|pause|resume|abort`: staggered rollouts over cells, on a running
proxy's admin API (found as `strangler routes` finds it). docs/rollouts.md says how they work.

    strangler rollout start ratings --to extracted --waves "c1;c2,c3;rest" --bake 5m --reason "cut over"
    strangler rollout status            # the active rollouts, else the most recent ones
    strangler rollout status 3          # one rollout: its plan, the last gate's figures, its history
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
)

RECENT = 5
ReasonOpt = typer.Option("", "--reason", "-r", help="why (kept in the rollout's history and the audit log)")
rollout_app = typer.Typer(help="Staggered rollouts: move a route or field to a mode cell by cell, wave by wave, "
                               "gated on health, rolled back automatically.", no_args_is_help=True)


def _state(mode: str, percent: float) -> str:
    return f"canary {percent:g}%" if mode == "canary" else mode


def _line(r: dict[str, Any]) -> str:
    step = r["step"]
    return (f"rollout #{r['id']} {r['name']} -> {_state(r['to']['mode'], r['to']['percent'])}: {r['state']}, "
            f"step {step['index']}/{step['of']} ({step['text']}) -- {r['message']}")


def rollouts_table(rollouts: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("id", "route", "to", "state", "step", "waves", "by", "message"):
        table.add_column(col, no_wrap=col in ("id", "route", "state"))
    for r in rollouts:
        table.add_row(
            f"#{r['id']}", r["name"], _state(r["to"]["mode"], r["to"]["percent"]), r["state"],
            f"{r['step']['index']}/{r['step']['of']} {r['step']['text']}",
            " ; ".join(",".join(w) for w in r["waves"]), r["created_by"], r["message"],
        )
    return table


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.2%}"


def gate_table(gate: dict[str, Any]) -> Table:
    table = Table(title="last gate (since the step began)")
    for col in ("cell", "verdict", "samples", "mismatch", "upper bound", "errors", "p99 cand/legacy ms",
                "guardrails", "why"):
        table.add_column(col, justify="right" if col in ("samples", "mismatch", "upper bound", "errors") else "left")
    for cell, f in gate.items():
        p99 = f"{f.get('candidate_p99_ms') or '-'} / {f.get('legacy_p99_ms') or '-'}"
        table.add_row(cell, f.get("verdict", ""), f"{f['samples']}/{f['min_samples']}", _rate(f.get("mismatch_rate")),
                      _rate(f.get("mismatch_upper")), _rate(f.get("error_rate")), p99, f.get("guardrails") or "-",
                      "; ".join(f.get("reasons") or []))
    return table


def history_table(history: list[dict[str, Any]]) -> Table:
    table = Table(title="history")
    for col in ("at", "step", "event", "by", "message"):
        table.add_column(col)
    for e in history:
        table.add_row(e["at"].replace("T", " ")[:19], str(e["step"] or ""), e["kind"], e["who"], e["message"])
    return table


def plan_table(r: dict[str, Any]) -> Table:
    table = Table(title=f"rollout #{r['id']}: {r['name']} ({r['state']})")
    for col in ("step", "wave", "cells", "to", "status"):
        table.add_column(col)
    for s in r["plan"]:
        table.add_row(str(s["index"] + 1), str(s["wave"]), ",".join(s["cells"]), _state(s["mode"], s["percent"]),
                      s["status"])
    return table


def _show_one(r: dict[str, Any]) -> None:
    console.print(plan_table(r))
    console.print(Text(_line(r)))
    if r.get("gate"):
        console.print(gate_table(r["gate"]))
    if r.get("history"):
        console.print(history_table(r["history"]))


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")


@rollout_app.command("start")
def start(
    name: str = typer.Argument(..., help="the route, or a GraphQL field Type.field"),
    to: str = typer.Option(..., "--to", help="extracted, or canary:P (e.g. canary:25)"),
    waves: str = typer.Option(..., "--waves", help='cells in waves: "c1;c2,c3;rest" (waves by ;, cells by ,; '
                                                   'rest: every cell not named)'),
    bake: str = typer.Option("5m", "--bake", help="wait this long after each step before its gate (30s, 5m, 1h)"),
    steps: str = typer.Option("", "--steps", help="canary percents inside each wave before --to: 5,25,100"),
    on_failure: str = typer.Option("rollback", "--on-failure", help="rollback (every flipped cell) or pause"),
    max_wait: str = typer.Option("30m", "--max-wait", help="a step without a decision this long after its bake "
                                                           "pauses (too little traffic)"),
    min_samples: int | None = typer.Option(None, "--min-samples", min=1, help="samples each cell needs per step "
                                                                              "(default: readiness.min_samples)"),
    reason: str = ReasonOpt,
    config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start a rollout: the waves' cells move to --to one step at a time, each gated on health."""
    payload: dict[str, Any] = {"name": name, "to": to, "waves": waves, "steps": steps, "bake": bake,
                               "max_wait": max_wait, "on_failure": on_failure, "reason": reason}
    if min_samples is not None:
        payload["min_samples"] = min_samples
    body = call_admin(config, admin_url, token, "POST", "/rollouts", json=payload)
    if as_json:
        console.print_json(json.dumps(body))
        return
    with reading_answer("POST /rollouts"):
        console.print(plan_table(body))
        console.print(Text(f"rollout #{body['id']} started; follow it with `strangler rollout status {body['id']}`"))


@rollout_app.command("status")
def status(
    rollout_id: int | None = typer.Argument(None, metavar="[ID]", help="one rollout (default: the active ones, "
                                                                       "else the most recent)"),
    config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Where rollouts stand: state, step, the last gate's figures, history."""
    if rollout_id is not None:
        body = call_admin(config, admin_url, token, "GET", f"/rollouts/{rollout_id}")
        if as_json:
            console.print_json(json.dumps(body))
            return
        with reading_answer(f"GET /rollouts/{rollout_id}"):
            _show_one(body)
        return
    body = call_admin(config, admin_url, token, "GET", "/rollouts", params={"active": "1", "limit": 100})
    title = "active rollouts"
    with reading_answer("GET /rollouts"):
        rollouts = body["rollouts"]
    if not rollouts:
        body = call_admin(config, admin_url, token, "GET", "/rollouts", params={"limit": RECENT})
        title = "no active rollout; the most recent ones"
        with reading_answer("GET /rollouts"):
            rollouts = body["rollouts"]
    if as_json:
        console.print_json(json.dumps({"rollouts": rollouts}))
        return
    if not rollouts:
        console.print("no rollout yet: start one with `strangler rollout start NAME --to extracted --waves ...`")
        return
    with reading_answer("GET /rollouts"):
        console.print(rollouts_table(rollouts, title))


def _operator_command(action: str, done: str) -> None:
    def command(
        rollout_id: int = typer.Argument(..., metavar="ID", help="the rollout (`strangler rollout status`)"),
        reason: str = ReasonOpt,
        config: str = ConfigOpt, admin_url: str | None = AdminUrlOpt, token: str | None = TokenOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        body = call_admin(config, admin_url, token, "POST", f"/rollouts/{rollout_id}/{action}",
                          json={"reason": reason})
        if as_json:
            console.print_json(json.dumps(body))
            return
        with reading_answer(f"POST /rollouts/{rollout_id}/{action}"):
            console.print(Text(_line(body)))

    command.__doc__ = done
    rollout_app.command(action)(command)


_operator_command("pause", "Pause a running rollout: the cells stay as they are until resume or abort.")
_operator_command("resume", "Resume a paused rollout: its current step is applied again and bakes afresh.")
_operator_command("abort", "Abort a rollout: every cell it flipped goes back, in reverse order, to its state "
                           "before.")
