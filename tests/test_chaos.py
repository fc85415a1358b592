"""The short version of `./task chaos`: 300 events to three webhooks and one whose endpoint hangs past
its timeout for a share of requests, with a second worker whose clock is 5 s ahead, while the worker is
SIGKILLed in the middle of sends, Redis restarts empty, the receiver answers 500 for 3 s, the scheduler
is killed and PostgreSQL crash-restarts. It runs on servers of its own (it restarts them), in about a minute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_is_lost_when_every_part_fails_in_turn(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--small", "--json", "--data-dir", str(tmp_path / "chaos")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [f["fault"] for f in report["faults"]] == [
        "kill worker",
        "wipe Redis",
        "receiver outage",
        "kill scheduler",
        "restart PostgreSQL",
    ]
    assert report["events"] == 300 and report["pairs"] == 1200
    assert report["skewed_worker_s"] == 5.0 and report["hanging"]["hung_requests"] > 0, report["hanging"]
    assert report["hanging"]["untrue_histories"] == 0, report["hanging"]
    assert report["hanging"]["unexplained_lost_attempts"] == 0, report["hanging"]
    assert report["lost"] == 0, json.dumps(report, indent=1, default=str)
    assert report["duplicates_with_another_id"] == 0, report
    assert (report["left_processing"], report["left_unfinished"]) == (0, 0), report
    assert report["dlq"] == {}, report
    assert report["failed_attempts"] > 0  # the outage really happened
    assert report["passed"] and result.returncode == 0, report["problems"]
