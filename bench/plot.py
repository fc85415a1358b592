"""The bench's plot: one SVG of horizontal bars per measured figure, each against its target.

Plain SVG written by hand (no plotting library to install): a panel per scenario, bars scaled within
the panel, the target drawn as a dashed line, a bar red where its target is missed.
"""

from __future__ import annotations

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


def svg(result: dict) -> str:
    panels = _panels(result)
    height = 50 + sum(PANEL_GAP + ROW_H * len(bars) for _, _, bars in panels) + 20
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
    out.append(
        f'<text x="10" y="{height - 8}" fill="#555">Green: target met; red: missed; dashed line: the target.</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
