"""devtools.skew: a subprocess whose wall clock is really off (libfaketime preloaded), while its
monotonic clock, and so asyncio, runs at the machine's pace."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from devtools.skew import skewed_env

PROBE = """
import asyncio, json, time
from datetime import UTC, datetime

async def nap():
    started = time.monotonic()
    await asyncio.sleep(0.2)
    return time.monotonic() - started

wall_started = time.time()
slept = asyncio.run(nap())
print(json.dumps({
    "time": wall_started,
    "datetime": datetime.now(UTC).timestamp(),
    "asyncio_sleep_s": slept,
    "wall_during_sleep_s": time.time() - wall_started,
}))
"""


def _probe(seconds: float) -> tuple[dict, float, float]:
    before = time.time()
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=skewed_env(seconds), capture_output=True, text=True, timeout=30
    )
    after = time.time()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), before, after


@pytest.mark.parametrize("seconds", [5.0, -5.0])
def test_the_subprocess_wall_clock_is_off_by_the_skew(seconds):
    seen, before, after = _probe(seconds)
    # Both of the child's readings lie within [before, after] of this process's clock, shifted.
    for reading in (seen["time"], seen["datetime"]):
        assert before + seconds - 0.05 <= reading <= after + seconds + 0.05, (reading - before, seconds)


def test_asyncio_in_the_skewed_subprocess_keeps_real_time():
    seen, before, after = _probe(5.0)
    assert 0.19 <= seen["asyncio_sleep_s"] <= 0.5, seen
    assert 0.19 <= seen["wall_during_sleep_s"] <= 0.5, seen  # the skew is an offset, not a rate
    assert after - before < 10
