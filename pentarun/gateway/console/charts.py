"""Charts for the console as inline SVG, drawn on the server. Pure: data in, markup out.

    health_chart(points, now) -> Markup       health-check latency over time, failures marked
    latency_chart(percentiles, limits) -> Markup   p50/p95/p99 bars beside the tier limits

No script and no inline style (the console's CSP allows neither): colours come from classes
the stylesheet defines (`chart-*`). Every chart is an `<svg role="img">` with a `<title>` and
a `<desc>` saying in words what it shows, so a screen reader gets the same facts; every text
that reaches the markup is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 28


@dataclass(frozen=True)
class HealthPoint:
    at: float  # UNIX time
    ok: bool
    latency_ms: float | None


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (> 0)."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 < value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 2.5, 5, 10):
        if power * step >= value:
            return power * step
    return power * 10


def _frame(title: str, desc: str, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-labelledby="{label}-title {label}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{label}-title">{escape(title)}</title>'
        f'<desc id="{label}-desc">{escape(desc)}</desc>' + "".join(body) + "</svg>"
    )


def _axis(top_ms: float) -> list[str]:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    out = []
    for fraction in (0.0, 0.5, 1.0):
        y = PAD_TOP + plot_h * (1 - fraction)
        out.append(
            f'<line class="chart-grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" '
            f'y1="{_num(y)}" y2="{_num(y)}"/>'
            f'<text class="chart-label" x="{PAD_LEFT - 6}" y="{_num(y + 4)}" '
            f'text-anchor="end">{_num(top_ms * fraction)} ms</text>'
        )
    return out


def health_chart(points: Sequence[HealthPoint], label: str = "health") -> Markup:
    """Latency of each health check (oldest left), failed checks as marks on the floor."""
    if not points:
        return _frame(
            "Health history",
            "No health checks recorded yet.",
            [
                f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" '
                'text-anchor="middle">No health checks yet</text>'
            ],
            label,
        )
    ordered = sorted(points, key=lambda p: p.at)
    start, end = ordered[0].at, ordered[-1].at
    span = max(end - start, 1e-9)
    latencies = [p.latency_ms for p in ordered if p.ok and p.latency_ms is not None]
    top = nice_ceiling(max(latencies, default=1.0))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x_of(at: float) -> float:
        return PAD_LEFT + (plot_w * (at - start) / span if len(ordered) > 1 else plot_w / 2)

    def y_of(ms: float) -> float:
        return PAD_TOP + plot_h * (1 - min(ms, top) / top)

    body = _axis(top)
    line = [
        f"{_num(x_of(p.at))},{_num(y_of(p.latency_ms))}"
        for p in ordered
        if p.ok and p.latency_ms is not None
    ]
    if len(line) > 1:
        body.append(f'<polyline class="chart-line" points="{" ".join(line)}"/>')
    for p in ordered:
        if p.ok and p.latency_ms is not None:
            body.append(
                f'<circle class="chart-ok" cx="{_num(x_of(p.at))}" '
                f'cy="{_num(y_of(p.latency_ms))}" r="2.5"/>'
            )
        elif not p.ok:
            x = x_of(p.at)
            body.append(
                f'<rect class="chart-fail" x="{_num(x - 2)}" y="{PAD_TOP}" width="4" '
                f'height="{plot_h}"/>'
            )
    body.append(
        f'<text class="chart-label" x="{PAD_LEFT}" y="{HEIGHT - 8}">{_clock(start)} UTC</text>'
        f'<text class="chart-label" x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 8}" '
        f'text-anchor="end">{_clock(end)} UTC</text>'
    )
    failed = sum(1 for p in ordered if not p.ok)
    desc = (
        f"{len(ordered)} health checks from {_clock(start)} to {_clock(end)} UTC: "
        f"{len(ordered) - failed} passed, {failed} failed"
        + (f"; latency {_num(min(latencies))} to {_num(max(latencies))} ms" if latencies else "")
        + "."
    )
    return _frame("Health history", desc, body, label)


@dataclass(frozen=True)
class Limit:
    name: str  # a tier: platinum, gold, silver
    p95_ms: float


def latency_chart(
    percentiles: Sequence[tuple[str, float | None]],
    limits: Sequence[Limit] = (),
    label: str = "latency",
) -> Markup:
    """One bar per percentile (e.g. p50, p95, p99 in ms), with the tiers' p95 limits drawn
    across when they fit the scale."""
    known = [(name, value) for name, value in percentiles if value is not None]
    if not known:
        return _frame(
            "Call latency",
            "No calls in the measuring window.",
            [
                f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" '
                'text-anchor="middle">No calls in the window</text>'
            ],
            label,
        )
    top = nice_ceiling(max(value for _, value in known) * 1.1)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    body = _axis(top)
    slot = plot_w / len(percentiles)
    for index, (name, value) in enumerate(percentiles):
        x = PAD_LEFT + slot * index + slot * 0.25
        if value is not None:
            h = plot_h * min(value, top) / top
            body.append(
                f'<rect class="chart-bar" x="{_num(x)}" y="{_num(PAD_TOP + plot_h - h)}" '
                f'width="{_num(slot * 0.5)}" height="{_num(h)}"/>'
                f'<text class="chart-value" x="{_num(x + slot * 0.25)}" '
                f'y="{_num(PAD_TOP + plot_h - h - 4)}" text-anchor="middle">'
                f"{_num(value)} ms</text>"
            )
        body.append(
            f'<text class="chart-label" x="{_num(x + slot * 0.25)}" y="{HEIGHT - 8}" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
    for limit in limits:
        if limit.p95_ms <= top:
            y = PAD_TOP + plot_h * (1 - limit.p95_ms / top)
            body.append(
                f'<line class="chart-limit chart-limit-{escape(limit.name)}" x1="{PAD_LEFT}" '
                f'x2="{WIDTH - PAD_RIGHT}" y1="{_num(y)}" y2="{_num(y)}"/>'
                f'<text class="chart-label" x="{WIDTH - PAD_RIGHT}" y="{_num(y - 3)}" '
                f'text-anchor="end">{escape(limit.name)} p95 limit</text>'
            )
    desc = "Call latency: " + ", ".join(
        f"{name} {_num(value)} ms" if value is not None else f"{name} unknown"
        for name, value in percentiles
    )
    return _frame("Call latency percentiles", desc + ".", body, label)
