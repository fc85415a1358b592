"""A production install: the built wheel carries the templates and static files and no development
tools, and its app serves pages from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

CHECK = """
from litestar.testing import TestClient
import app
from app.main import create_app
assert "/prod/" in app.__file__, app.__file__
client = TestClient(create_app())  # no lifespan: pages that need no database
login = client.get("/login")
assert login.status_code == 200 and "password" in login.text, login.status_code
assert client.get("/static/vendor/htmx-2.0.11.min.js").status_code == 200
print("ok")
"""


def test_the_wheel_serves_pages_without_the_checkout(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "app/templates/base.html" in names and "app/static/vendor/htmx-2.0.11.min.js" in names
    assert not [name for name in names if name.startswith(("devtools/", "tests/", "bench/"))]

    target = tmp_path / "prod"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{target}{os.pathsep}{site}",
        "INTIME_ENV": "production",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",  # never contacted: no lifespan
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "INTIME_SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "INTIME_ENCRYPTION_KEYS": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "INTIME_BASE_URL": "https://portal.example.test",
    }
    ran = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0 and ran.stdout.strip().endswith("ok"), ran.stderr[-2000:]
