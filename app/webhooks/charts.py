"""Server-rendered SVG charts for the debugger: no chart library, no CDN, readable without colour.

Failures are drawn hatched as well as red, and p95 dashed as well as darker, so the charts read the
same in greyscale; each chart carries a title and a text summary for screen readers, and the page
offers the same numbers as a table.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

from app.webhooks.stats import Hour

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 720, 180, 44, 22, 10


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    for step in (
        1,
        2,
        5,
        10,
        20,
        25,
        50,
        100,
        200,
        250,
        500,
        1000,
        2000,
        2500,
        5000,
        10_000,
        20_000,
        50_000,
        100_000,
        200_000,
        500_000,
        1_000_000,
        10_000_000,
    ):
        if value <= step:
            return step
    return value


def _frame(title: str, summary: str, body: list[str], top: float, unit: str, hours: list[Hour]) -> Markup:
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title><desc>{escape(summary)}</desc>",
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6c9c4"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#b42318" stroke-width="3"/></pattern></defs>',
    ]
    for fraction in (0, 0.5, 1) if top >= 2 else (0, 1):
        y = PAD_TOP + plot_h * (1 - fraction)
        label = f"{top * fraction:,.0f}{unit}"
        parts.append(f'<line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{PAD_LEFT - 4}" y="{y + 4:.1f}" class="axis" text-anchor="end">{label}</text>')
    if hours:
        step = max(1, len(hours) // 6)
        slot = (WIDTH - PAD_LEFT) / len(hours)
        for index in range(0, len(hours), step):
            hour = hours[index].hour
            text = hour.strftime("%H:%M") if len(hours) <= 48 else hour.strftime("%a %H:%M")
            parts.append(f'<text x="{PAD_LEFT + slot * index:.1f}" y="{HEIGHT - 6}" class="axis">{text}</text>')
    parts.extend(body)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text in it was escaped above; the rest is numbers)


def outcomes_chart(hours: list[Hour], label: str) -> Markup:
    """Stacked bars per hour: successes (solid green) under failures (hatched red)."""
    top = _nice_max(max((h.successes + h.failures for h in hours), default=0))
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / max(1, len(hours))
    bar = max(1.0, slot * 0.8)
    body = []
    for index, hour in enumerate(hours):
        x = PAD_LEFT + slot * index + (slot - bar) / 2
        ok_h = plot_h * hour.successes / top
        bad_h = plot_h * hour.failures / top
        tip = f"{hour.hour:%Y-%m-%d %H:00} UTC: {hour.successes} succeeded, {hour.failures} failed"
        if ok_h:
            body.append(
                f'<rect x="{x:.1f}" y="{PAD_TOP + plot_h - ok_h:.1f}" width="{bar:.1f}" '
                f'height="{ok_h:.1f}" class="ok"><title>{tip}</title></rect>'
            )
        if bad_h:
            body.append(
                f'<rect x="{x:.1f}" y="{PAD_TOP + plot_h - ok_h - bad_h:.1f}" width="{bar:.1f}" '
                f'height="{bad_h:.1f}" fill="url(#hatch)" class="bad"><title>{tip}</title></rect>'
            )
    total_ok = sum(h.successes for h in hours)
    total_bad = sum(h.failures for h in hours)
    return _frame(
        f"Attempts per hour, {label}", f"{total_ok} succeeded and {total_bad} failed in {label}.", body, top, "", hours
    )


def latency_chart(hours: list[Hour], label: str) -> Markup:
    """p50 (solid) and p95 (dashed) attempt latency per hour."""
    values = [v for h in hours for v in (h.p50_ms, h.p95_ms) if v is not None]
    top = _nice_max(max(values, default=0))
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / max(1, len(hours))
    body = []
    for key, css in (("p50_ms", "p50"), ("p95_ms", "p95")):
        points = [
            f"{PAD_LEFT + slot * (index + 0.5):.1f},{PAD_TOP + plot_h * (1 - getattr(h, key) / top):.1f}"
            for index, h in enumerate(hours)
            if getattr(h, key) is not None
        ]
        if len(points) == 1:
            x, y = points[0].split(",")
            body.append(f'<circle cx="{x}" cy="{y}" r="3" class="{css}"/>')
        elif points:
            body.append(f'<polyline points="{" ".join(points)}" class="{css}" fill="none"/>')
    summary = (
        "No attempts in this window."
        if not values
        else (f"Highest hourly p95 {max(h.p95_ms or 0 for h in hours)} ms in {label}.")
    )
    return _frame(f"Attempt latency per hour (p50 solid, p95 dashed), {label}", summary, body, top, " ms", hours)
