"""Inline SVG line charts, generated in Python: no JavaScript library, no CDN,
so the HTML report renders the same offline, in a mail attachment or in CI.

    >>> svg = line_chart([Series("match %", "#2a7", [(0, 99.0), (1, 100.0)])], y_max=100, x_labels=("a", "b"))
    >>> svg.startswith('<svg class="chart"') and "polyline" in svg
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH = 640
HEIGHT = 200
PAD_LEFT = 52
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 28
Y_TICKS = 4


@dataclass(frozen=True, slots=True)
class Series:
    """One line; ``None`` values leave a gap."""

    label: str
    color: str
    points: list[tuple[int, float | None]]  # (x index, y)
    dashed: bool = False


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.2g}"


def line_chart(
    series: list[Series],
    *,
    y_max: float | None = None,
    x_labels: tuple[str, str] = ("", ""),
    y_unit: str = "",
    title: str = "",
) -> str:
    """An SVG chart of the series over a shared x axis (indices 0..n-1)."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y is not None]
    n = (max(xs) + 1) if xs else 1
    top = y_max if y_max is not None else (max(ys) * 1.1 if ys else 1.0)
    top = top or 1.0
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def px(x: int) -> float:
        return PAD_LEFT + (plot_w * x / (n - 1) if n > 1 else plot_w / 2)

    def py(y: float) -> float:
        return PAD_TOP + plot_h * (1 - min(y, top) / top)

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>',
    ]
    for i in range(Y_TICKS + 1):
        v = top * i / Y_TICKS
        y = py(v)
        parts.append(f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(v)}{escape(y_unit)}</text>')
    parts.append(f'<text x="{PAD_LEFT}" y="{HEIGHT - 8}" class="tick">{escape(x_labels[0])}</text>')
    parts.append(f'<text x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 8}" class="tick" text-anchor="end">{escape(x_labels[1])}</text>')
    for s in series:
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        run: list[str] = []
        runs: list[list[str]] = []
        for x, y in s.points:
            if y is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{px(x):.1f},{py(y):.1f}")
        if run:
            runs.append(run)
        for r in runs:
            if len(r) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{s.color}" stroke-width="2"{dash} points="{" ".join(r)}"/>'
                )
        for x, y in s.points:
            if y is not None:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{s.color}">'
                    f"<title>{escape(s.label)}: {_fmt(y)}{escape(y_unit)}</title></circle>"
                )
    legend_x = PAD_LEFT + 8
    for i, s in enumerate(series):
        ly = PAD_TOP + 14 + i * 14
        parts.append(f'<rect x="{legend_x}" y="{ly - 8}" width="10" height="3" fill="{s.color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{ly - 3}" class="legend">{escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
