"""The HTML report: one self-contained file (inline CSS, inline SVG charts,
a few lines of inline script), readable offline.

Per key: readiness, the match rate over time, p50/p99 latencies of both sides
over time, the top differing paths, and example differences with the legacy
and candidate bodies side by side and the differing paths highlighted. With
cells, a route's figures are over all its cells, and its per-cell lines (in the
summary and in its section) give each cell's own figures and readiness.

The page's own script collects any JavaScript error into ``#js-errors`` and,
once it has run, marks ``#render-status`` with ``data-rendered="yes"`` --
what the browser test (and anyone curious) can check in the DOM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

import orjson

from strangler_proxy.jsonpath import render_segment
from strangler_proxy.report.build import KeyReport, Report
from strangler_proxy.report.charts import Series, line_chart
from strangler_proxy.report.json_report import body_text
from strangler_proxy.report.progress_render import PROGRESS_CSS, progress_html
from strangler_proxy.report.text import NOTHING_YET
from strangler_proxy.store.queries import StoredSample

LEGACY_COLOR = "#5b6ee1"
CANDIDATE_COLOR = "#e1763b"
MATCH_COLOR = "#2b9a5a"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-top:1px solid #dde;padding-top:16px}
h3{font-size:15px;margin:16px 0 6px}.meta{color:#667;font-size:12px}
table{border-collapse:collapse;margin:8px 0;background:#fff}th,td{border:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ready{color:#12703a;font-weight:600}.not-ready{color:#b3261e;font-weight:600}.insufficient-samples{color:#8a6100;font-weight:600}
figure{margin:0}figcaption{font-size:13px;color:#445}.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{background:#fff;border:1px solid #dde}
.chart .plot{fill:#fff}.chart .grid{stroke:#eef;stroke-width:1}.chart .tick,.chart .legend{font-size:11px;fill:#556}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:12px}pre{background:#fff;border:1px solid #dde;padding:8px;overflow:auto;max-height:420px;margin:0;font-size:12px}
mark.diff{background:#ffe08a;outline:1px solid #e0a800}code{font-size:12px}.empty{font-size:16px;padding:16px;background:#fff;border:1px dashed #bbc}
#js-errors{color:#b3261e}#filter{margin:8px 0;padding:4px;width:280px}
tr.cell-row td:first-child{padding-left:24px;color:#445}
"""

# Runs first: every later error, however early, ends up in #js-errors.
_HEAD_SCRIPT = """
window.__reportErrors=[];
window.addEventListener('error',function(e){window.__reportErrors.push(String(e.message||e));
var el=document.getElementById('js-errors');if(el){el.textContent=window.__reportErrors.join('\\n');}});
"""

_TAIL_SCRIPT = """
(function(){
  var filter=document.getElementById('filter');
  var rows=document.querySelectorAll('#summary tbody tr');
  if(filter){filter.addEventListener('input',function(){
    var q=filter.value.toLowerCase();
    rows.forEach(function(r){r.style.display=r.getAttribute('data-key').toLowerCase().indexOf(q)<0?'none':'';});
  });}
  var status=document.getElementById('render-status');
  status.textContent='rendered '+document.querySelectorAll('svg.chart').length+' charts, '+rows.length+' rows';
  status.setAttribute('data-rendered','yes');
  document.getElementById('js-errors').textContent=window.__reportErrors.join('\\n');
})();
"""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _ms(s: float | None) -> str:
    return "–" if s is None else f"{s * 1000:.1f}"


def _anchor(key: str) -> str:
    return "key-" + "".join(c if c.isalnum() else "-" for c in key)


def _summary_table(report: Report) -> str:
    head = (
        "<tr><th>key</th><th>samples</th><th>match</th><th>mismatch</th><th>transient</th><th>candidate errors</th>"
        "<th>served by target</th><th>noise paths</th><th>legacy p50 / p99 ms</th><th>candidate p50 / p99 ms</th><th>readiness</th></tr>"
    )
    rows = []
    for k in report.keys:
        rows.append(_summary_row(k, f'<a href="#{_anchor(k.key)}">{escape(k.key)}</a>', ""))
        rows.extend(_summary_row(c, f"@{escape(c.cell or '')}", ' class="cell-row"') for c in k.cells)
    return f'<table id="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _summary_row(k: KeyReport, label: str, attrs: str) -> str:
    c = k.summary.counts
    return (
        f'<tr data-key="{escape(k.key)}"{attrs}><td>{label}</td>'
        f'<td class="num">{c.compared}</td><td class="num">{_pct(c.match, c.compared)}</td>'
        f'<td class="num">{_pct(c.mismatch, c.compared)}</td><td class="num">{c.transient}</td>'
        f'<td class="num">{c.candidate_error}</td>'
        f'<td class="num">{c.served}</td><td class="num">{len(k.summary.noise)}</td>'
        f'<td class="num">{_ms(k.p("legacy", 0.5))} / {_ms(k.p("legacy", 0.99))}</td>'
        f'<td class="num">{_ms(k.p("candidate", 0.5))} / {_ms(k.p("candidate", 0.99))}</td>'
        f'<td class="{k.readiness.status}">{escape(k.readiness.label)}</td></tr>'
    )


def _cells_table(k: KeyReport) -> str:
    """The route's figures and readiness in each cell."""
    if not k.cells:
        return ""
    rows = "".join(
        f'<tr data-cell="{escape(c.cell or "")}"><td>{escape(c.cell or "")}</td><td class="num">{c.summary.counts.compared}</td>'
        f'<td class="num">{_pct(c.summary.counts.mismatch, c.summary.counts.compared)}</td>'
        f'<td class="num">{c.summary.counts.candidate_error}</td><td class="num">{c.summary.counts.served}</td>'
        f'<td class="num">{_ms(c.p("candidate", 0.99))}</td>'
        f'<td class="{c.readiness.status}">{escape(c.readiness.label)}</td></tr>'
        for c in k.cells
    )
    return (
        '<h3>Per cell</h3><table class="cells"><tr><th>cell</th><th>samples</th><th>mismatch</th>'
        f"<th>candidate errors</th><th>served by target</th><th>candidate p99 ms</th><th>readiness</th></tr>{rows}</table>"
    )


def _charts(k: KeyReport) -> str:
    tl = k.summary.timeline
    if not tl:
        return '<p class="meta">No results over time yet.</p>'
    labels = (_iso(tl[0].start), _iso(tl[-1].end))
    match = [(i, 100 * p.counts.match / p.counts.compared if p.counts.compared else None) for i, p in enumerate(tl)]

    def lat(side: str, q: float) -> list[tuple[int, float | None]]:
        out: list[tuple[int, float | None]] = []
        for i, p in enumerate(tl):
            v = (p.legacy_latency if side == "legacy" else p.candidate_latency).quantile(q)
            out.append((i, None if v is None else v * 1000))
        return out

    rate = line_chart(
        [Series("match %", MATCH_COLOR, match)], y_max=100, x_labels=labels, y_unit="%", title=f"{k.key} match rate"
    )
    latency = line_chart(
        [
            Series("legacy p50", LEGACY_COLOR, lat("legacy", 0.5)),
            Series("legacy p99", LEGACY_COLOR, lat("legacy", 0.99), dashed=True),
            Series("candidate p50", CANDIDATE_COLOR, lat("candidate", 0.5)),
            Series("candidate p99", CANDIDATE_COLOR, lat("candidate", 0.99), dashed=True),
        ],
        x_labels=labels,
        y_unit="ms",
        title=f"{k.key} latency",
    )
    return (
        f'<div class="charts"><figure><figcaption>match rate over time</figcaption>{rate}</figure>'
        f"<figure><figcaption>latency (ms), legacy vs candidate</figcaption>{latency}</figure></div>"
    )


def _paths_table(k: KeyReport) -> str:
    if not k.summary.top_paths:
        return '<p class="meta">No differing paths.</p>'
    rows = "".join(
        f'<tr><td><code>{escape(p.path)}</code></td><td>{escape(p.kind)}</td><td class="num">{p.count}</td></tr>'
        for p in k.summary.top_paths
    )
    return f'<table class="paths"><tr><th>path</th><th>kind</th><th>count</th></tr>{rows}</table>'


def _json_html(value: Any, path: str, marks: set[str], indent: int) -> str:
    """Pretty-printed JSON with the nodes at ``marks`` paths highlighted."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            inner = "{}"
        else:
            items = [
                f'{pad}  {escape(orjson.dumps(k).decode())}: {_json_html(v, path + render_segment(k), marks, indent + 1)}'
                for k, v in value.items()
            ]
            inner = "{\n" + ",\n".join(items) + f"\n{pad}}}"
    elif isinstance(value, list):
        if not value:
            inner = "[]"
        else:
            items = [f"{pad}  {_json_html(v, f'{path}[{i}]', marks, indent + 1)}" for i, v in enumerate(value)]
            inner = "[\n" + ",\n".join(items) + f"\n{pad}]"
    else:
        inner = escape(orjson.dumps(value).decode())
    if path in marks:
        return f'<mark class="diff" title="{escape(path)}">{inner}</mark>'
    return inner


def _body_html(body: bytes | None, marks: set[str]) -> str:
    if body is None:
        return '<span class="meta">(no body)</span>'
    try:
        return _json_html(orjson.loads(body), "$", marks, 0)
    except orjson.JSONDecodeError:
        return escape(body_text(body) or "")


def _example(s: StoredSample) -> str:
    marks = {str(d.get("path")) for d in s.differences}
    diffs = "".join(
        f'<tr><td><code>{escape(str(d.get("path")))}</code></td><td>{escape(str(d.get("kind")))}</td>'
        f'<td><code>{escape(orjson.dumps(d.get("legacy"), default=str).decode())}</code></td>'
        f'<td><code>{escape(orjson.dumps(d.get("candidate"), default=str).decode())}</code></td></tr>'
        for d in s.differences
    )
    table = (
        f'<table class="diffs"><tr><th>path</th><th>kind</th><th>legacy</th><th>candidate</th></tr>{diffs}</table>'
        if diffs
        else ""
    )
    reason = f" — {escape(s.reason)}" if s.reason else ""
    return (
        f'<div class="example"><h3>{escape(s.verdict)}: <code>{escape(s.method)} {escape(s.target)}</code></h3>'
        f'<p class="meta">{_iso(s.at)} · status legacy {s.legacy_status} / candidate {s.candidate_status} · '
        f"latency {_ms(s.legacy_latency_s)} / {_ms(s.candidate_latency_s)} ms{reason}</p>{table}"
        f'<div class="sides"><div><h4>legacy</h4><pre>{_body_html(s.legacy_body, marks)}</pre></div>'
        f'<div><h4>candidate</h4><pre>{_body_html(s.candidate_body, marks)}</pre></div></div></div>'
    )


def _key_section(k: KeyReport) -> str:
    examples = "".join(_example(s) for s in k.samples) or '<p class="meta">No stored examples.</p>'
    noise = ", ".join(f"<code>{escape(e.path)}</code> ({e.count})" for e in k.summary.noise[:10]) or "none"
    return (
        f'<section id="{_anchor(k.key)}" class="key"><h2>{escape(k.key)} '
        f'<span class="{k.readiness.status}">{escape(k.readiness.label)}</span></h2>'
        f'<p class="meta">{k.kind} · {k.summary.counts.total} results · '
        f"{k.summary.counts.served} served by target (not compared) · "
        f"{k.summary.counts.transient} transient (gone when asked again) · noise paths: {noise}</p>"
        f"{_cells_table(k)}{_charts(k)}<h3>Top differing paths</h3>{_paths_table(k)}<h3>Examples</h3>{examples}</section>"
    )


def render_html(report: Report) -> str:
    """The whole page as one string."""
    if report.empty:
        body = f'<p class="empty" id="nothing">{escape(NOTHING_YET)}</p>'
        if report.keys:
            body += _summary_table(report)
    else:
        body = (
            '<input id="filter" type="search" placeholder="filter keys…" aria-label="filter keys">'
            + _summary_table(report)
            + "".join(_key_section(k) for k in report.keys)
        )
    if report.progress is not None:  # the one chart for the wall comes first
        body = progress_html(report.progress) + body
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>strangler report</title><style>{_CSS}{PROGRESS_CSS}</style><script>{_HEAD_SCRIPT}</script></head><body>"
        f"<h1>strangler shadow report{escape(f', cell {report.cell}' if report.cell else '')}</h1>"
        f'<p class="meta">generated {_iso(report.generated_at)} · store {escape(report.database)}</p>'
        f'{body}<pre id="js-errors"></pre><p class="meta" id="render-status"></p>'
        f"<script>{_TAIL_SCRIPT}</script></body></html>"
    )
