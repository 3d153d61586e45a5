"""Reports on the results store: one :class:`Report` built by
:func:`build_report`, rendered as text (:func:`render_text`), JSON
(:func:`render_json`, schema in docs/reports.md) or one self-contained HTML
page (:func:`render_html`).

The migration's progress (``strangler progress``, and the section heading the
HTML report): ``progress`` (who served what, per bucket and mode; pure),
``progress_load`` (read from the control database), ``progress_render``
(text, JSON, HTML)."""

from strangler_proxy.report.build import KeyReport, Report, build_report
from strangler_proxy.report.html import render_html
from strangler_proxy.report.json_report import SCHEMA, render_json, report_to_json
from strangler_proxy.report.text import render_text

__all__ = [
    "SCHEMA",
    "KeyReport",
    "Report",
    "build_report",
    "render_html",
    "render_json",
    "render_text",
    "report_to_json",
]
