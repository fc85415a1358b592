"""Shared by the bench scenarios."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_web(port: int) -> subprocess.Popen:
    """One web process (uvicorn, as production runs it, without the access log) on this port."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            "app.main:create_app",
            "--factory",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
    )
