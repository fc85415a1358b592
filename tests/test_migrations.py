"""The schema comes from committed migrations: they run on an empty database and match the tables."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
from piccolo.conf.apps import Finder

from tests.conftest import ROOT, _with_path, recreate_database


async def test_migrations_run_up_on_an_empty_database_and_create_publish_event():
    url = _with_path(os.environ["DATABASE_URL"], "/intime_migrations_check")
    await recreate_database(url)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"DATABASE_URL": url},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the CLI prints only asked-for values; migrate reports on stderr
    conn = await asyncpg.connect(url)
    try:
        tables = {
            row["tablename"] for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"organizations", "users", "api_tokens", "events", "event_types"} <= tables
        assert await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'publish_event'") == 1
        assert await conn.fetchval("SELECT count(*) FROM event_types") > 20
    finally:
        await conn.close()
        admin = await asyncpg.connect(_with_path(url, "/postgres"))
        await admin.execute('DROP DATABASE "intime_migrations_check" WITH (FORCE)')
        await admin.close()


async def test_every_table_column_exists_in_the_migrated_schema():
    """A column added to a table class without a migration fails here."""
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    migrated = {(row["table_name"], row["column_name"]) for row in rows}
    missing = []
    for table in Finder().get_table_classes():
        for column in table._meta.columns:
            if (table._meta.tablename, column._meta.db_column_name) not in migrated:
                missing.append(f"{table._meta.tablename}.{column._meta.db_column_name}")
    assert missing == [], f"columns without a migration: {missing}"
