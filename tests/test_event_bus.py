"""publish_event(): the outbox. An event exists, and is announced, exactly when its transaction commits."""

from __future__ import annotations

import asyncio
import json
import os

import asyncpg
import pytest

PUBLISH = "SELECT publish_event($1, $2, $3::jsonb, $4, $5::jsonb, $6)"


@pytest.fixture
async def conn():
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    yield connection
    await connection.close()


@pytest.fixture
async def listener():
    """A second connection LISTENing on `events` and `job`, collecting (channel, payload)."""
    connection = await asyncpg.connect(os.environ["DATABASE_URL"])
    heard: asyncio.Queue = asyncio.Queue()
    for channel in ("events", "job"):
        await connection.add_listener(channel, lambda _c, _p, ch, payload: heard.put_nowait((ch, json.loads(payload))))
    yield heard
    await connection.close()


async def test_committed_event_is_stored_and_announced_on_both_channels(conn, listener, factory):
    org = await factory.org()
    async with conn.transaction():
        event_id = await conn.fetchval(PUBLISH, "job.created", None, '{"title": "Nurse"}', None, None, org.id)

    row = await conn.fetchrow("SELECT event_type, payload, metadata, org_id FROM events WHERE id = $1", event_id)
    assert row["event_type"] == "job.created"
    assert json.loads(row["payload"]) == {"title": "Nurse"}
    assert json.loads(row["metadata"]) == {}
    assert row["org_id"] == org.id
    heard = [await asyncio.wait_for(listener.get(), 5), await asyncio.wait_for(listener.get(), 5)]
    assert sorted(channel for channel, _ in heard) == ["events", "job"]
    for _, note in heard:
        assert note == {"id": str(event_id), "type": "job.created", "org_id": str(org.id)}


async def test_rolled_back_event_leaves_no_row_and_no_notification(conn, listener, factory):
    org = await factory.org()
    # Given an event published inside a transaction that then rolls back
    transaction = conn.transaction()
    await transaction.start()
    doomed = await conn.fetchval(PUBLISH, "job.created", None, "{}", None, None, org.id)
    await transaction.rollback()
    # When a second event commits
    kept = await conn.fetchval(PUBLISH, "job.closed", None, "{}", None, None, org.id)
    # Then the first notification anyone hears is the committed one, and only it is stored
    _, first = await asyncio.wait_for(listener.get(), 5)
    assert first["id"] == str(kept)
    assert await conn.fetchval("SELECT count(*) FROM events WHERE id = $1", doomed) == 0
    assert await conn.fetchval("SELECT count(*) FROM events") == 1


async def test_publish_event_called_from_host_sql_refuses_unknown_types_and_non_objects(conn, factory):
    org = await factory.org()
    with pytest.raises(asyncpg.InvalidParameterValueError, match=r'unknown event type "job\.exploded"'):
        await conn.fetchval(PUBLISH, "job.exploded", None, "{}", None, None, org.id)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="payload must be a JSON object, not array"):
        await conn.fetchval(PUBLISH, "job.created", None, "[1, 2]", None, None, org.id)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="p_org_id is required"):
        await conn.fetchval(PUBLISH, "job.created", None, "{}", None, None, None)
    assert await conn.fetchval("SELECT count(*) FROM events") == 0


async def test_catalog_is_loaded_with_domains_for_every_type(conn):
    rows = await conn.fetch("SELECT name, domain, description FROM event_types WHERE NOT deprecated")
    by_name = {row["name"]: row for row in rows}
    for expected in (
        "job.created",
        "candidate.created",
        "submission.created",
        "interview.scheduled",
        "placement.created",
        "user.created",
        "webhook.test",
        "webhook.delivery.dead_lettered",
    ):
        assert expected in by_name
    assert by_name["job.created"]["domain"] == "recruiting"
    assert by_name["candidate.created"]["domain"] == "people"
    assert by_name["webhook.disabled"]["domain"] == "system"
    assert all(row["description"] for row in rows)


async def test_catalog_sync_deprecates_removed_types_instead_of_deleting(conn):
    from app.events.catalog import load_catalog, parse_catalog, sync_catalog

    smaller = parse_catalog(
        '[domains]\nrecruiting = "x"\n[[types]]\nname = "job.created"\ndomain = "recruiting"\ndescription = "d"\n'
    )
    try:
        await sync_catalog(smaller)
        assert await conn.fetchval("SELECT deprecated FROM event_types WHERE name = 'job.closed'") is True
        assert await conn.fetchval("SELECT deprecated FROM event_types WHERE name = 'job.created'") is False
    finally:
        await sync_catalog(load_catalog())
    assert await conn.fetchval("SELECT count(*) FROM event_types WHERE deprecated") == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[domains]\nx = "x"\n[[types]]\nname = "Job Created"\ndomain = "x"\ndescription = "d"',
            "dotted lower-case",
        ),
        (
            '[domains]\nx = "x"\n[[types]]\nname = "job.created"\ndomain = "y"\ndescription = "d"',
            "domain 'y'",
        ),
        (
            '[domains]\nx = "x"\n[[types]]\nname = "job.created"\ndomain = "x"\ndescription = ""',
            "description",
        ),
    ],
)
def test_a_broken_catalog_file_is_refused_with_the_reason(text, message):
    from app.events.catalog import CatalogError, parse_catalog

    with pytest.raises(CatalogError, match=message):
        parse_catalog(text)
