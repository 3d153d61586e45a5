"""A :class:`~strangler_proxy.report.progress.Progress` as text (``strangler
progress``), as JSON (``--json``, and ``progress`` in the report's JSON) and as
the section at the top of the HTML report.

The JSON shape (``schema: "strangler.progress/v1"``) is documented in
docs/reports.md; fields are only ever added within one schema version. With
cells, a route's row is over all its cells and a line per cell follows it
(``cells`` in the JSON).

    >>> sparkline([0.0, 0.5, 1.0, None])
    '▁▅█·'
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from strangler_proxy.report.charts import Series, line_chart
from strangler_proxy.report.progress import KeyProgress, Progress, ProgressPoint, Served

SCHEMA = "strangler.progress/v1"
SPARK = "▁▂▃▄▅▆▇█"
NO_DATA = "·"
SHARE_COLOR = "#2b9a5a"
NOTHING_YET = "No requests recorded yet: nothing has been shadowed or served by a target."
DEFINITION = (
    "served by extracted = requests the extracted services answered without failing, of the requests "
    "the results store records (routes and fields in shadow, canary or extracted; requests no route "
    "matched and routes in legacy mode are not recorded)"
)
_READINESS_STYLE = {"ready": "bold green", "not-ready": "red", "insufficient-samples": "yellow"}


def sparkline(shares: Sequence[float | None]) -> str:
    """One character per point, ``▁`` (0 %) to ``█`` (100 %); ``·``: nothing recorded."""
    top = len(SPARK) - 1
    return "".join(NO_DATA if s is None else SPARK[min(top, int(s * len(SPARK)))] for s in shares)


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def _count(n: float) -> str:
    return f"{round(n):,}"


def _mode(k: KeyProgress) -> str:
    return k.state.text() if k.state is not None else "(not in the config)"


# ------------------------------------------------------------------ text


def render_progress_text(progress: Progress, console: Console, *, database: str = "") -> None:
    """The headline share, its timeline, the live share if known, then one row per key."""
    p = progress
    where = f"results store {database}" if database else "results store"
    span = f"; since {_when(p.since)}" if p.since is not None else ""
    console.print(f"Migration progress ({where}{span}; modes: {p.modes_note})", markup=False, highlight=False)
    if p.empty:
        console.print(NOTHING_YET)
    else:
        assert p.start is not None and p.end is not None
        headline = Text.assemble(
            "Off the monolith: ", (_pct(p.served.share), "bold"),
            f" of {_count(p.served.requests)} recorded requests   ",
            (sparkline([x.served.share for x in p.points]), "green"),
            f"  {_when(p.start)} -> {_when(p.end)}",
        )
        console.print(headline)
    if p.live is not None:
        console.print(
            f"Live, this proxy since it started: {_pct(p.live.share)} of {p.live.requests:,} REST requests went to "
            f"extracted services ({p.live.unmatched:,} of them matched no route)", markup=False, highlight=False,
        )
    table = Table(title="routes and GraphQL fields", title_justify="left")
    for name, justify in (("key", "left"), ("mode now", "left"), ("served by extracted", "right"),
                          ("of requests", "right"), ("latest", "right"), ("over time", "left"),
                          ("readiness", "left")):
        table.add_column(name, justify=justify, no_wrap=name in ("key", "over time"))  # type: ignore[arg-type]
    for k in p.keys:
        for row in (k, *k.cells):
            table.add_row(
                k.key if row is k else f"  @{row.cell}", _mode(row),
                _pct(row.served.share), _count(row.served.requests) + ("*" if row.sample_rate < 1 else ""),
                _pct(row.latest), sparkline([x.served.share for x in row.points]),
                Text(row.readiness.label, style=_READINESS_STYLE[row.readiness.status]),
            )
    console.print(table)
    console.print(DEFINITION + ("; * estimated from a sampled mirror (sample_rate)" if any(
        k.sample_rate < 1 for k in p.keys) else ""), markup=False, highlight=False, style="dim")


# ------------------------------------------------------------------ JSON


def _served(s: Served) -> dict[str, Any]:
    return {
        "share": None if s.share is None else round(s.share, 6),
        "extracted": round(s.extracted),
        "requests": round(s.requests),
    }


def _timeline(points: Sequence[ProgressPoint]) -> list[dict[str, Any]]:
    return [{"start": _iso(x.start), "end": _iso(x.end), **_served(x.served)} for x in points]


def _key(k: KeyProgress) -> dict[str, Any]:
    r = k.readiness
    return {
        "key": k.key,
        "kind": k.kind,
        "mode": k.state.mode.value if k.state else None,
        "percent": k.state.percent if k.state else None,
        "source": k.state.source if k.state else None,
        "served": _served(k.served),
        "latest_share": None if k.latest is None else round(k.latest, 6),
        "sample_rate": k.sample_rate,
        "readiness": {"ready": r.ready, "status": r.status, "label": r.label},
        "timeline": _timeline(k.points),
        "cell": k.cell,
        "cells": [_key(c) for c in k.cells],  # the breakdown per cell, same shape
    }


def progress_to_json(progress: Progress) -> dict[str, Any]:
    p = progress
    live = None
    if p.live is not None:
        live = {"share": None if p.live.share is None else round(p.live.share, 6), "requests": p.live.requests,
                "extracted": p.live.extracted, "unmatched": p.live.unmatched}
    return {
        "schema": SCHEMA,
        "generated_at": _iso(p.generated_at),
        "since": _iso(p.since),
        "start": _iso(p.start),
        "end": _iso(p.end),
        "empty": p.empty,
        "modes_from": p.modes_from,
        "modes_note": p.modes_note,
        "overall": _served(p.served),
        "live": live,
        "timeline": _timeline(p.points),
        "keys": [_key(k) for k in p.keys],
    }


# ------------------------------------------------------------------ HTML

PROGRESS_CSS = """
#progress .big{font-size:32px;font-weight:700;margin:4px 0}#progress .big span{font-size:14px;font-weight:400;color:#445}
#progress svg.spark{vertical-align:middle}#progress tr.cell-row td:first-child{padding-left:24px;color:#445}
"""
_SPARK_W, _SPARK_H = 120, 22


def _spark_svg(points: Sequence[ProgressPoint]) -> str:
    """A tiny inline share-over-time line (0..100 %), gaps where nothing was recorded."""
    n = max(1, len(points))
    runs: list[list[tuple[float, float]]] = [[]]
    for i, x in enumerate(points):
        share = x.served.share
        if share is None:
            runs.append([])
        else:
            runs[-1].append((_SPARK_W * (i + 0.5) / n, (_SPARK_H - 2) * (1 - share) + 1))
    marks = []
    for run in (r for r in runs if r):
        if len(run) == 1:  # a lone point between gaps
            marks.append(f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="1.5" fill="{SHARE_COLOR}"/>')
        else:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            marks.append(f'<polyline fill="none" stroke="{SHARE_COLOR}" stroke-width="1.5" points="{coords}"/>')
    return (f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{_SPARK_W}" height="{_SPARK_H}" '
            f'viewBox="0 0 {_SPARK_W} {_SPARK_H}" role="img" aria-label="share over time">'
            f'<rect width="{_SPARK_W}" height="{_SPARK_H}" fill="#f3f5f8"/>{"".join(marks)}</svg>')


def _html_row(k: KeyProgress, label: str, cell_row: bool) -> str:
    attrs = ' class="cell-row"' if cell_row else ""
    return (
        f'<tr data-key="{escape(k.key)}"{attrs}><td>{escape(label)}</td><td>{escape(_mode(k))}</td>'
        f'<td class="num">{_pct(k.served.share)}</td><td class="num">{_count(k.served.requests)}</td>'
        f'<td class="num">{_pct(k.latest)}</td><td>{_spark_svg(k.points)}</td>'
        f'<td class="{k.readiness.status}">{escape(k.readiness.label)}</td></tr>'
    )


def progress_html(progress: Progress) -> str:
    """The section at the top of the HTML report."""
    p = progress
    rows = "".join(_html_row(row, k.key if row is k else f"@{row.cell}", row is not k)
                   for k in p.keys for row in (k, *k.cells))
    table = (
        '<table id="progress-table"><thead><tr><th>key</th><th>mode now</th><th>served by extracted</th>'
        f"<th>of requests</th><th>latest</th><th>over time</th><th>readiness</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    if p.empty or p.start is None or p.end is None:
        head = f'<p class="meta">{escape(NOTHING_YET)}</p>'
    else:
        chart = line_chart(
            [Series("served by extracted %", SHARE_COLOR,
                    [(i, None if x.served.share is None else 100 * x.served.share) for i, x in enumerate(p.points)])],
            y_max=100, x_labels=(_when(p.start), _when(p.end)), y_unit="%", title="share served by extracted services",
        )
        head = (
            f'<p class="big">{_pct(p.served.share)} <span>of {_count(p.served.requests)} recorded requests '
            f"served by extracted services</span></p><figure><figcaption>over time</figcaption>{chart}</figure>"
        )
    live = ""
    if p.live is not None:
        live = (f'<p class="meta">Live, this proxy since it started: {_pct(p.live.share)} of {p.live.requests:,} '
                f"REST requests ({p.live.unmatched:,} matched no route)</p>")
    return (
        f'<section id="progress"><h2>Migration progress</h2>{head}{live}'
        f'<p class="meta">{escape(DEFINITION)} · modes: {escape(p.modes_note)}</p>{table}</section>'
    )
