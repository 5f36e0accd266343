"""Response-time charts drawn on the server as inline SVG: no JavaScript, no CDN, nothing to load.

A chart is a set of series (one per target), each a list of `(x, y)` points where `y` is a latency in
ms or None (a failed probe or an hour without samples: a gap in the line, marked on the baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Distinguishable colours for the targets' lines, in order.
PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#546e7a")
FAILURE_COLOUR = "#c62828"


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float | None]]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^n at or above value (the y axis' top)."""
    if value <= 0:
        return 1.0
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def latency_chart(
    series: Sequence[Series], *, title: str, x_label: str, width: int = 720, height: int = 220
) -> SafeString:
    """An SVG line chart of latencies (ms); every text in it is escaped, every number formatted here."""
    left, right, top, bottom = 56, 12, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y is not None]
    x_min, x_max = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_max == x_min:
        x_max = x_min + 1
    y_max = _nice_ceiling(max(ys) if ys else 1.0)

    def px(x: float) -> float:
        return left + (x - x_min) / (x_max - x_min) * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="health-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        y = top + plot_h - fraction * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{y_max * fraction:g} ms</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    if not ys and not any(s.points for s in series):
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" font-size="12" '
            'text-anchor="middle" fill="#757575">no data yet</text>'
        )
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for x, y in item.points:
            if y is None:
                segments.append([])
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{top + plot_h:.1f}" r="2.5" fill="{FAILURE_COLOUR}">'
                    f"<title>{escape(item.label)}: failed</title></circle>"
                )
            else:
                segments[-1].append(f"{px(x):.1f},{py(y):.1f}")
        for segment in segments:
            if len(segment) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(segment)}"/>'
                )
            elif segment:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
        legend_y = top + 12 + index * 14
        parts.append(
            f'<rect x="{left + plot_w - 230}" y="{legend_y - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + plot_w - 216}" y="{legend_y + 1}" font-size="10">{escape(item.label[:40])}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - built here from escaped text and formatted numbers
