"""The terminal report: one rich table, routes and GraphQL fields together,
then the top differing paths of every key that has any.

"samples" are compared requests (what readiness judges); "served by target"
are requests the candidate answered with nothing compared (canary's target
share, extracted without reverse shadow) -- shown so an extracted route is
visibly busy even when it has no samples. Candidate errors include those of
served traffic. "transient" are mismatches that were gone when both sides
were asked again a moment later (replication lag): counted apart, never in
the samples or the mismatch %.

With cells, a route's row is over all its cells, and a line per cell
(``  @c1``) follows it with that cell's own figures and readiness."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from strangler_proxy.report.build import KeyReport, Report

TOP_PATHS_IN_TEXT = 3
NOTHING_YET = "No shadow results stored yet: nothing to report."


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def _readiness(k: KeyReport) -> Text:
    r = k.readiness
    style = {"ready": "bold green", "not-ready": "red", "insufficient-samples": "yellow"}[r.status]
    return Text(r.label, style=style)


def render_text(report: Report, console: Console) -> None:
    """Print the report; says so plainly when there is nothing in it."""
    if report.empty:
        console.print(NOTHING_YET)
        if not report.keys:
            return
    title = "strangler shadow report" + (f", cell {report.cell}" if report.cell else "")
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("key", "left"),
        ("samples", "right"),
        ("match", "right"),
        ("mismatch", "right"),
        ("transient", "right"),
        ("cand. errors", "right"),
        ("served by target", "right"),
        ("noise paths", "right"),
        ("legacy p50/p99 ms", "right"),
        ("candidate p50/p99 ms", "right"),
        ("readiness", "left"),
    ):
        # Keys are what users grep for and paste into --gate: never wrapped.
        table.add_column(
            name, justify=justify, no_wrap=name == "key", overflow="fold"  # type: ignore[arg-type]
        )
    for k in report.keys:
        for row in (k, *k.cells):
            _add_row(table, row, f"  @{row.cell}" if row is not k else k.key)
    console.print(table)
    for k in report.keys:
        if k.summary.top_paths:
            console.print(f"[bold]{k.key}[/bold] top differing paths:")
            for p in k.summary.top_paths[:TOP_PATHS_IN_TEXT]:
                console.print(f"  {p.count:>8}  {p.kind:<8} {p.path}", markup=False, highlight=False)


def _add_row(table: Table, k: KeyReport, label: str) -> None:
    c = k.summary.counts
    table.add_row(
        label,
        str(c.compared),
        _pct(c.match, c.compared),
        _pct(c.mismatch, c.compared),
        str(c.transient),
        str(c.candidate_error),
        str(c.served),
        str(len(k.summary.noise)),
        f"{_ms(k.p('legacy', 0.5))} / {_ms(k.p('legacy', 0.99))}",
        f"{_ms(k.p('candidate', 0.5))} / {_ms(k.p('candidate', 0.99))}",
        _readiness(k),
    )
