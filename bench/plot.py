"""The bench's plot: one SVG of horizontal bars per measured figure, each against its target.

Plain SVG written by hand (no plotting library to install): a panel per scenario, bars scaled within
the panel, the target drawn as a dashed line, a bar red where its target is missed. Below them, curves
over time (the steady-state scenario: table bytes and page p95, pruning off then on).
"""

from __future__ import annotations

import math
from html import escape

WIDTH = 760
LABEL_W = 250
BAR_W = WIDTH - LABEL_W - 110
ROW_H = 22
PANEL_GAP = 38


def _panels(result: dict) -> list[tuple[str, str, list[tuple[str, float, float | None, bool]]]]:
    """(title, unit, [(label, value, target, higher_is_better)])."""
    by = {row["scenario"]: row for row in result["rows"] if row["scenario"] != "pages"}
    panels = []
    bars = []
    if "throughput" in by:
        bars.append(("InTime, every attempt recorded", by["throughput"]["recorded_per_s"], 1500.0, True))
    if "baseline (a) asyncio" in by:
        bars.append(("(a) bare asyncio + aiohttp, no DB", by["baseline (a) asyncio"]["per_s"], None, True))
    naive = by.get("baseline (b) Dramatiq + shared httpx client")
    if naive:
        bars.append(("(b) Dramatiq + shared httpx, signed, no DB", naive["per_s"], None, True))
    if bars:
        panels.append(("Sustained throughput", "deliveries/s", bars))
    costs = [
        (label, row["cpu_ms_per_delivery"]["all"], target, False)
        for label, row, target in (
            ("InTime, all processes", by.get("throughput"), 1.4),
            ("(a) bare asyncio", by.get("baseline (a) asyncio"), None),
            ("(b) Dramatiq + shared httpx", naive, None),
        )
        if row and "cpu_ms_per_delivery" in row
    ]
    if costs:
        panels.append(("CPU per delivery", "ms", costs))
    if "latency" in by:
        lat = by["latency"]
        panels.append(
            (
                f"Latency at {lat['rate_per_s']} events/s, publish commit to arrival",
                "ms",
                [
                    ("p50", lat["p50_ms"], 50.0, False),
                    ("p95", lat["p95_ms"], None, False),
                    ("p99", lat["p99_ms"], 250.0, False),
                ],
            )
        )
    timing = []
    if "fan-out" in by and by["fan-out"]["all_received_s"] is not None:
        f = by["fan-out"]
        timing.append((f"fan-out to {f['webhooks']:,} webhooks", f["all_received_s"] * 1000, 3000.0, False))
    if "retry timing" in by:
        r = by["retry timing"]
        timing.append(("retry lateness p50", r["lateness_p50_ms"], None, False))
        timing.append(("retry lateness p99", r["lateness_p99_ms"], 1000.0, False))
    if timing:
        panels.append(("Fan-out and retry timing", "ms", timing))
    if "steady" in by:
        st = by["steady"]
        off_rate = st["off"]["recorded_per_s"]
        panels.append(
            (
                f"Steady state at {st['rate_per_s']:,} deliveries/s offered, retention {st['retention_s']} s",
                "deliveries recorded/s",
                [
                    ("pruning off (reference)", off_rate, None, True),
                    ("pruning on, second half", st["on"]["recorded_per_s"], 0.9 * off_rate, True),
                ],
            )
        )
    pages = [
        row
        for row in result["rows"]
        if row["scenario"] == "pages" and row["check"] in ("debugger page", "history partial")
    ]
    if pages:
        panels.append(
            (
                "Debugger page p95 by deliveries stored",
                "ms",
                [(f"{row['check']}, {row['deliveries']:,}", row["p95_ms"], 50.0, False) for row in pages],
            )
        )
    return panels


CHART_H = 150
CHART_GAP = 84
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#555555")
Series = tuple[str, list[tuple[float, float]]]


def _charts(result: dict) -> list[tuple[str, str, list[Series], float]]:
    """(title, unit, [(label, [(seconds, value)])], where pruning goes on): the steady scenario's curves,
    its off phase first and its on phase after it on one time axis."""
    steady = next((row for row in result["rows"] if row["scenario"] == "steady"), None)
    if not steady:
        return []
    switch = float(steady["off_seconds"])
    samples = [(s["t"], s) for s in steady["off"]["samples"]] + [(switch + s["t"], s) for s in steady["on"]["samples"]]
    tables = ("webhook_deliveries", "delivery_attempts", "events", "total")
    checks = list(samples[0][1]["page_p95_ms"]) if samples else []
    return [
        (
            "Steady state: table size, pruning off then on",
            "MB, pg_total_relation_size",
            [(table, [(t, s["bytes"][table] / 2**20) for t, s in samples]) for table in tables],
            switch,
        ),
        (
            "Steady state: rows, pruning off then on",
            "thousands",
            [(table, [(t, s["rows"][table] / 1000) for t, s in samples]) for table in tables],
            switch,
        ),
        (
            "Steady state: page p95 (20 requests per sample)",
            "ms",
            [(name, [(t, s["page_p95_ms"][name]) for t, s in samples]) for name in checks],
            switch,
        ),
    ]


def _nice(value: float) -> float:
    """The smallest 1, 2, 2.5, 3, 4, 5, 8 or 10 times a power of ten at or above `value` (round ticks)."""
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 3, 4, 5, 8, 10) if step * power >= value)


def _chart(out: list[str], y: float, title: str, unit: str, series: list[Series], switch: float) -> None:
    left, right = 70, WIDTH - 20
    top, bottom = y + 30, y + 30 + CHART_H
    points = [point for _, line in series for point in line]
    x_max = max([t for t, _ in points] + [switch, 1.0])
    y_max = _nice(max([v for _, v in points] + [1e-9]) * 1.05)
    sx, sy = (right - left) / x_max, CHART_H / y_max
    out.append(f'<text x="10" y="{y + 14}" font-weight="600">{escape(title)} ({escape(unit)})</text>')
    for i in range(5):
        value = y_max * i / 4
        gy = bottom - value * sy
        out.append(f'<line x1="{left}" x2="{right}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="#e4e4e4"/>')
        label = f"{value:,.0f}" if y_max >= 10 else f"{value:g}"
        out.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end" fill="#555">{label}</text>')
    for minute in range(int(x_max // 60) + 1):
        gx = left + minute * 60 * sx
        out.append(f'<text x="{gx:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#555">{minute}</text>')
    out.append(f'<text x="{right}" y="{bottom + 28}" text-anchor="end" fill="#555">minutes</text>')
    sw = left + switch * sx
    out.append(f'<line x1="{sw:.1f}" x2="{sw:.1f}" y1="{top}" y2="{bottom}" stroke="#333" stroke-dasharray="3 2"/>')
    out.append(f'<text x="{sw - 4:.1f}" y="{top + 10}" text-anchor="end" fill="#333">pruning off</text>')
    out.append(f'<text x="{sw + 4:.1f}" y="{top + 10}" fill="#333">pruning on</text>')
    for n, (label, line) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        # the gap between the phases is not drawn across
        for part in ([p for p in line if p[0] < switch], [p for p in line if p[0] >= switch]):
            if part:
                path = " ".join(f"{left + t * sx:.1f},{bottom - v * sy:.1f}" for t, v in part)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        lx = left + n * 165
        out.append(f'<rect x="{lx}" y="{bottom + 34}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{lx + 14}" y="{bottom + 43}">{escape(label)}</text>')


def svg(result: dict) -> str:
    panels = _panels(result)
    charts = _charts(result)
    height = 50 + sum(PANEL_GAP + ROW_H * len(bars) for _, _, bars in panels) + 20
    height += len(charts) * (CHART_H + CHART_GAP)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="system-ui, sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text x="10" y="24" font-size="15" font-weight="600">InTime Integrations: ./task bench, '
        f"{escape(result['date'])}{' (quick)' if result.get('quick') else ''}, "
        f"{result['machine']['cpus']} CPUs</text>",
    ]
    y = 50
    for title, unit, bars in panels:
        out.append(f'<text x="10" y="{y + 14}" font-weight="600">{escape(title)} ({escape(unit)})</text>')
        y += 22
        top = max([value for _, value, _, _ in bars] + [t for _, _, t, _ in bars if t is not None]) or 1
        scale = BAR_W / (top * 1.05)
        for label, value, target, higher in bars:
            missed = target is not None and (value < target if higher else value > target)
            colour = "#c0392b" if missed else "#2e7d5b"
            out.append(f'<text x="{LABEL_W - 8}" y="{y + 14}" text-anchor="end">{escape(label)}</text>')
            out.append(
                f'<rect x="{LABEL_W}" y="{y + 3}" width="{max(1.0, value * scale):.1f}" height="{ROW_H - 7}" '
                f'fill="{colour}"/>'
            )
            out.append(f'<text x="{LABEL_W + value * scale + 6:.1f}" y="{y + 14}">{value:,.0f}</text>')
            if target is not None:
                x = LABEL_W + target * scale
                out.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + ROW_H}" stroke="#333" stroke-dasharray="3 2"/>'
                )
            y += ROW_H
        y += PANEL_GAP - 22
    for title, unit, series, switch in charts:
        _chart(out, y, title, unit, series, switch)
        y += CHART_H + CHART_GAP
    out.append(
        f'<text x="10" y="{height - 8}" fill="#555">Green: target met; red: missed; dashed line: the target.</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
