"""Charts drawn on the server as inline SVG: no JavaScript, no CDN, nothing to load.

One drawer, `line_chart`, serves every chart of the admin: the health pages' response times and the
dashboards' traffic (request rate, error rate, latency percentiles). A chart is a set of series, each
a list of `(x, y)` points; `y` None is a gap in the line (a failed probe, a minute without requests),
marked on the baseline when `mark_gaps` is set. Each series is one `<path>` (isolated points show as
dots through round line caps); the `<svg>` carries `class="gw-chart"`, `data-chart="<name>"`, a
`<title>` and a `<desc>`, so a screen reader, a browser test and a person read the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Distinguishable colours for the series' lines, in order.
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


def _number(value: float) -> str:
    """An axis or summary number: short, no float noise (0.30000000000000004 → 0.3)."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def time_ticks(start: datetime, end: datetime, *, count: int = 6) -> list[tuple[float, str]]:
    """About `count` x-axis labels between two moments (x = POSIX seconds), at whole minutes or hours."""
    span = (end - start).total_seconds()
    steps = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    step = next((s for s in steps if span / s <= count), steps[-1])
    first = datetime.fromtimestamp((int(start.timestamp()) // step + 1) * step, tz=start.tzinfo)
    label = "%H:%M" if step < 86400 else "%m-%d"
    ticks = []
    moment = first
    while moment <= end:
        ticks.append((moment.timestamp(), moment.strftime(label)))
        moment += timedelta(seconds=step)
    return ticks


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    chart: str,
    x_label: str,
    y_unit: str = "",
    x_ticks: Sequence[tuple[float, str]] | None = None,
    x_range: tuple[float, float] | None = None,
    y_at_least: float = 0.0,
    mark_gaps: bool = False,
    y_format: Callable[[float], str] = _number,
    width: int = 720,
    height: int = 220,
) -> SafeString:
    """An SVG line chart; every text in it is escaped, every number formatted here.

    `chart` names it for tests and styles (`data-chart`); `x_ticks` are `(x, label)` pairs (default:
    the ends of the x range); the y axis runs from 0 to a round number at or above the largest value
    and `y_at_least` (so a flat 0 % error rate does not fill the chart).
    """
    left, right, top, bottom = 64, 12, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y is not None]
    x_min, x_max = x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    if x_max == x_min:
        x_max = x_min + 1
    y_max = _nice_ceiling(max([*ys, y_at_least]) if ys or y_at_least else 1.0)

    def px(x: float) -> float:
        return left + (x - x_min) / (x_max - x_min) * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_max * plot_h

    summary = "; ".join(
        f"{item.label}: latest {y_format(last)}{y_unit}"
        if (last := _last(item)) is not None
        else f"{item.label}: no data"
        for item in series
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gw-chart" data-chart="{escape(chart)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(summary or 'no series')}</desc>",
        f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        grid_y = top + plot_h - fraction * plot_h
        parts.append(f'<line x1="{left}" y1="{grid_y:.1f}" x2="{left + plot_w}" y2="{grid_y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 4}" y="{grid_y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{escape(y_format(y_max * fraction) + y_unit)}</text>"
        )
    ticks = x_ticks if x_ticks is not None else ((x_min, _number(x_min)), (x_max, _number(x_max)))
    for x, label in ticks:
        if x_min <= x <= x_max:
            parts.append(
                f'<line x1="{px(x):.1f}" y1="{top + plot_h}" x2="{px(x):.1f}" y2="{top + plot_h + 4}" stroke="#999"/>'
                f'<text x="{px(x):.1f}" y="{top + plot_h + 15}" font-size="10" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="10" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    if not ys:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" font-size="12" '
            'text-anchor="middle" fill="#757575">no data yet</text>'
        )
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        commands: list[str] = []
        pen_down = False
        for x, y in item.points:
            if y is None:
                pen_down = False
                if mark_gaps:
                    parts.append(
                        f'<circle cx="{px(x):.1f}" cy="{top + plot_h:.1f}" r="2.5" fill="{FAILURE_COLOUR}">'
                        f"<title>{escape(item.label)}: failed</title></circle>"
                    )
                continue
            commands.append(f"{'L' if pen_down else 'M'}{px(x):.1f},{py(y):.1f}")
            pen_down = True
        if commands:
            # "h0" after a lone M draws a dot (round cap), so a point between two gaps stays visible;
            # a circle over it makes it as easy to see as a line.
            for command, following in _pairs(commands):
                if command.startswith("M") and not following.startswith("L"):
                    cx, cy = command[1:].split(",")
                    parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            d = " ".join(c if c.startswith("L") or nxt.startswith("L") else c + " h0" for c, nxt in _pairs(commands))
            parts.append(
                f'<path class="gw-series" data-series="{escape(item.label)}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5" stroke-linecap="round" stroke-linejoin="round" d="{d}"/>'
            )
        legend_y = top + 12 + index * 14
        parts.append(
            f'<rect x="{left + plot_w - 230}" y="{legend_y - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + plot_w - 216}" y="{legend_y + 1}" font-size="10">{escape(item.label[:40])}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - built here from escaped text and formatted numbers


def _last(series: Series) -> float | None:
    return next((y for _, y in reversed(series.points) if y is not None), None)


def _pairs(commands: list[str]) -> list[tuple[str, str]]:
    return list(zip(commands, [*commands[1:], "M"], strict=True))


def latency_chart(
    series: Sequence[Series], *, title: str, x_label: str, width: int = 720, height: int = 220
) -> SafeString:
    """Probe response times (ms) of the health pages; a failed probe is marked on the baseline."""
    return line_chart(
        series, title=title, chart="response-time", x_label=x_label, y_unit=" ms", mark_gaps=True,
        width=width, height=height,
    )  # fmt: skip
