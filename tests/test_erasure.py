"""Erasure of events' payloads (GDPR, issue 15), end to end: the real pipeline (scheduler in the test's
loop, a `dramatiq tasks` worker, a receiver on 127.0.0.1 whose answer repeats the payload), erased by
the API or the CLI, then the whole database searched for what was erased."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from app.core import db
from app.lifecycle import erase
from tests.factories import csrf_headers, sign_in
from tests.pipeline import FAST, bearer, drained, paused, settled, wait_until
from tests.receiver import Answer
from tests.test_cli import intime

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")

PAGES = "/employee/admin/integrations"


def unique_marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


async def columns_containing(marker: str) -> list[str]:
    """Every column of every table in the database whose value, as text, contains `marker`."""
    found = []
    async with db.connection() as conn:
        columns = await conn.fetch(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
            "AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY', 'bytea')"
        )
        assert len(columns) > 50  # the search really covers the schema
        for table, column, data_type in columns:
            if data_type == "bytea":
                where, value = f'position($1::bytea IN "{column}") > 0', marker.encode()
            else:
                where, value = f'"{column}"::text LIKE $1', f"%{marker}%"
            hit = await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE {where})', value)  # noqa: S608
            if hit:
                found.append(f"{table}.{column}")
    return found


async def publish(client, token: str, payload: dict, **fields) -> str:
    response = await client.post(
        "/api/v1/events", json={"type": "job.created", "payload": payload, **fields}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def erase_by_api(client, token: str, event_id: str):
    return await client.delete(f"/api/v1/events/{event_id}/payload", headers=bearer(token))


async def test_erased_payload_is_gone_from_every_table_and_the_debugger_still_shows_the_delivery(
    api, receiver, client, factory
):
    # Given a delivered event whose payload, metadata and the receiver's answers all carry a marker
    marker = unique_marker()
    echo = json.dumps({"received": {"note": marker}}).encode()
    receiver.then(Answer(status=503, body=echo))
    receiver.default = Answer(status=200, body=echo)
    hook = await api.webhook(receiver.url)
    _, token = await factory.token(api.organisation, scopes="events:write,webhooks:read,webhooks:write")
    event_id = await publish(
        client, token, {"note": marker}, metadata={"trace": marker}, aggregate_id=str(uuid.uuid4())
    )
    delivery = await settled(event_id, hook["id"], "success")
    (first, second) = receiver.log
    assert marker.encode() in first.body and marker.encode() in second.body
    assert {"events.payload", "events.metadata", "delivery_attempts.response_body"} <= set(
        await columns_containing(marker)
    )

    # When the payload is erased through the API
    erased = await erase_by_api(client, token, event_id)

    # Then the answer says what went, and the marker is in no column of any table
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["event_id"] == event_id and body["erased_at"] and body["attempts_cleared"] == 2
    assert body["deliveries_stopped"] == 0
    assert await columns_containing(marker) == []

    # and the delivery and its attempts are still there, with ids, types, statuses and timings
    details = (await api.get(f"/deliveries/{delivery['id']}")).json()
    assert details["id"] == str(delivery["id"]) and details["event_type"] == "job.created"
    assert details["status"] == "success" and details["event_erased_at"] is not None
    assert details["payload"] == {} and details["metadata"] == {} and details["request_body"] == ""
    assert [a["response_status"] for a in details["attempts"]] == [503, 200]
    for attempt in details["attempts"]:
        assert attempt["id"] and attempt["started_at"] and attempt["duration_ms"] is not None
        assert attempt["response_body"] is None and attempt["body_removed"] == "erasure"
        assert attempt["request_headers"]["X-InTime-Event"] == "job.created"

    # and the debugger says the payload was erased instead of showing an empty one
    person = await factory.user(api.organisation, role="admin")
    await sign_in(client, person)
    page = await client.get(f"{PAGES}/webhooks/{hook['id']}/deliveries/{delivery['id']}")
    assert page.status_code == 200
    assert "Payload erased on" in page.text and page.text.count("Body erased") == 2
    assert page.text.count('data-testid="attempt"') == 2 and marker not in page.text
    assert 'data-testid="curl"' not in page.text
    listed = await client.get(f"{PAGES}/webhooks/{hook['id']}")
    assert str(delivery["id"]) in listed.text

    # and a replay is refused with the reason, through the API and the page button alike
    replay = await api.post(f"/deliveries/{delivery['id']}/replay")
    assert replay.status_code == 409
    assert replay.headers["content-type"].startswith("application/problem+json")
    assert "payload was erased on" in replay.json()["detail"] and "nothing to send" in replay.json()["detail"]
    button = await client.post(
        f"{PAGES}/deliveries/{delivery['id']}/replay",
        data={"from": "history"},
        headers={"hx-request": "true", **csrf_headers(client)},
    )
    assert button.status_code == 409 and "nothing to send" in button.text
    await drained()
    assert len(receiver.log) == 2

    # and erasing again is harmless and answers the same time; each request is audited
    again = await erase_by_api(client, token, event_id)
    assert again.status_code == 200
    assert again.json()["erased_at"] == body["erased_at"] and again.json()["attempts_cleared"] == 0
    async with db.connection() as conn:
        audits = await conn.fetch("SELECT actor, event_id, aggregate_id, events, attempts FROM erasures ORDER BY at")
    assert [(a["event_id"], a["events"], a["attempts"]) for a in audits] == [
        (uuid.UUID(event_id), 1, 2),
        (uuid.UUID(event_id), 1, 0),
    ]
    assert all(a["actor"].startswith("API token ") and a["aggregate_id"] is None for a in audits)


async def test_a_delivery_waiting_to_be_sent_is_never_sent_once_its_payload_is_erased(
    api, receiver, client, factory, worker_process
):
    # Given two deliveries that wait: one for its retry, one handed to a worker that has not taken it
    receiver.default = Answer(status=503)
    retrying = await api.webhook(receiver.url, retry_policy=FAST | {"base_delay_ms": 2000, "max_delay_ms": 2000})
    _, token = await factory.token(api.organisation, scopes="events:write")
    first = await publish(client, token, {"n": 1})
    await settled(first, retrying["id"], "failed")
    assert len(receiver.log) == 1

    with paused(worker_process):
        second = await publish(client, token, {"n": 2})

        async def handed_over():
            async with db.connection() as conn:
                return await conn.fetchval(
                    "SELECT message_id IS NOT NULL FROM webhook_deliveries WHERE event_id = $1", uuid.UUID(second)
                )

        await wait_until(handed_over)

        # When both events' payloads are erased
        for event_id in (first, second):
            erased = await erase_by_api(client, token, event_id)
            assert erased.status_code == 200 and erased.json()["deliveries_stopped"] == 1

    # Then neither is sent again (the retry came due, the message reached the worker): both are in
    # the DLQ, saying why
    await drained(delayed=True)
    await asyncio.sleep(2.2)  # past the time the retry was due
    await drained(delayed=True)
    assert len(receiver.log) == 1
    for event_id in (first, second):
        delivery = await settled(event_id, retrying["id"], "dlq")
        assert delivery["dlq_reason"] == "payload_erased"
    dlq = (await api.get("/dlq", reason="payload_erased")).json()
    assert len(dlq["items"]) == 2


async def test_an_answer_arriving_after_the_erasure_is_stored_without_its_body_and_not_retried(
    api, receiver, client, factory
):
    # Given a send under way whose answer (a retryable failure) will repeat the payload
    marker = unique_marker()
    receiver.then(Answer(status=503, body=marker.encode(), delay=1.5))
    hook = await api.webhook(receiver.url)
    _, token = await factory.token(api.organisation, scopes="events:write")
    event_id = await publish(client, token, {"note": marker})
    await receiver.wait_for(1)

    # When the payload is erased while the receiver is still answering
    erased = await erase_by_api(client, token, event_id)
    assert erased.status_code == 200 and erased.json()["deliveries_stopped"] == 0

    # Then the answer is recorded without its body, and the retry is dead-lettered unsent
    delivery = await settled(event_id, hook["id"], "dlq")
    assert delivery["dlq_reason"] == "payload_erased" and delivery["attempt_count"] == 1
    await drained(delayed=True)
    assert len(receiver.log) == 1
    (attempt,) = (await api.get(f"/deliveries/{delivery['id']}")).json()["attempts"]
    assert attempt["response_status"] == 503 and attempt["response_body"] is None
    assert attempt["body_removed"] == "erasure"
    assert await columns_containing(marker) == []


async def test_dlq_retry_one_or_in_bulk_does_not_resend_an_erased_delivery(api, receiver, client, factory):
    # Given a dead-lettered delivery whose payload is then erased
    receiver.default = Answer(status=500)
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"max_retries": 0})
    _, token = await factory.token(api.organisation, scopes="events:write")
    event_id = await publish(client, token, {"n": 1})
    delivery = await settled(event_id, hook["id"], "dlq")
    assert (await erase_by_api(client, token, event_id)).status_code == 200
    receiver.default = Answer(status=200)

    # When it is retried from the DLQ, alone and in bulk
    one = await api.post(f"/dlq/{delivery['id']}/retry")
    job = await api.post("/dlq/retry", {})

    # Then neither sends it: the one answers why, the job counts it as an error
    assert one.status_code == 409 and "nothing to send" in one.json()["detail"]
    assert job.status_code == 202

    async def finished():
        found = (await api.get(f"/jobs/{job.json()['job_id']}")).json()
        return found if found["status"] == "done" else None

    done = await wait_until(finished)
    assert done["total"] == 1 and done["processed"] == 1 and done["errors"] == 1
    await drained()
    assert len(receiver.log) == 1
    assert (await settled(event_id, hook["id"], "dlq"))["dlq_reason"] == "retries_exhausted"


async def test_the_cli_erases_every_event_of_an_aggregate_and_audits_it_once(api, receiver, client, factory):
    # Given three delivered events of one aggregate and one of another
    await api.webhook(receiver.url)
    _, token = await factory.token(api.organisation, scopes="events:write")
    aggregate, other = str(uuid.uuid4()), str(uuid.uuid4())
    mine = [await publish(client, token, {"n": n}, aggregate_id=aggregate) for n in range(3)]
    theirs = await publish(client, token, {"keep": "me"}, aggregate_id=other)
    await receiver.wait_for(4)
    await drained()

    # When the CLI erases the aggregate
    done = intime("events", "erase", "--org", api.organisation.slug, "--aggregate-id", aggregate)

    # Then it prints a summary, those three are erased and the fourth is untouched
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == 3 and summary["attempts"] == 3 and summary["deliveries_stopped"] == 0
    async with db.connection() as conn:
        rows = {
            str(row["id"]): row
            for row in await conn.fetch(
                "SELECT id, payload::text AS payload, erased_at FROM events WHERE org_id = $1", api.organisation.id
            )
        }
        audits = await conn.fetch("SELECT actor, event_id, aggregate_id, events, attempts FROM erasures")
    assert all(rows[e]["erased_at"] is not None and rows[e]["payload"] == "{}" for e in mine)
    assert rows[theirs]["erased_at"] is None and json.loads(rows[theirs]["payload"]) == {"keep": "me"}
    assert [(a["actor"], a["aggregate_id"], a["event_id"], a["events"], a["attempts"]) for a in audits] == [
        ("cli", uuid.UUID(aggregate), None, 3, 3)
    ]


async def test_an_aggregate_is_erased_in_bounded_batches(api, client, factory, monkeypatch):
    _, token = await factory.token(api.organisation, scopes="events:write")
    aggregate = uuid.uuid4()
    ids = [await publish(client, token, {"n": n}, aggregate_id=str(aggregate)) for n in range(5)]
    batches: list[int] = []
    original = erase._erase_batch

    async def counted(org_id, batch):
        batches.append(len(batch))
        return await original(org_id, batch)

    monkeypatch.setattr(erase, "BATCH", 2)
    monkeypatch.setattr(erase, "_erase_batch", counted)
    done = await erase.erase(api.organisation.id, aggregate_id=aggregate, actor="test")
    assert done.events == 5 and batches == [2, 2, 1]
    async with db.connection() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM events WHERE id = ANY($1::uuid[]) AND erased_at IS NULL", [uuid.UUID(i) for i in ids]
        )
    assert left == 0


async def test_cli_erase_refuses_bad_input_on_stderr(api, factory):
    org = api.organisation.slug
    cases = [
        (["--org", org, "--event-id", "not-a-uuid"], "is not a UUID"),
        (["--org", org, "--event-id", str(uuid.uuid4())], "no event"),
        (["--org", "nowhere", "--aggregate-id", str(uuid.uuid4())], "nowhere"),
    ]
    for args, message in cases:
        done = intime("events", "erase", *args)
        assert done.returncode == 1 and message in done.stderr and done.stdout == "", (args, done.stderr)
        assert "Traceback" not in done.stderr
    both = intime("events", "erase", "--org", org, "--event-id", str(uuid.uuid4()), "--aggregate-id", str(uuid.uuid4()))
    neither = intime("events", "erase", "--org", org)
    assert both.returncode != 0 and "not allowed with" in both.stderr
    assert neither.returncode != 0 and "one of the arguments" in neither.stderr
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM erasures") == 0


async def test_erasure_needs_events_write_and_the_organisations_own_event(api, client, factory):
    # Given an event of this organisation, and tokens of another organisation and without the scope
    _, token = await factory.token(api.organisation, scopes="events:write")
    _, reader = await factory.token(api.organisation, scopes="webhooks:read,webhooks:write")
    other = await factory.org()
    _, stranger = await factory.token(other, scopes="events:write")
    event_id = await publish(client, token, {"keep": "me"})

    # When each asks to erase it, or names no real event
    answers = {
        "no scope": await erase_by_api(client, reader, event_id),
        "other org": await erase_by_api(client, stranger, event_id),
        "unknown": await erase_by_api(client, token, str(uuid.uuid4())),
        "malformed": await erase_by_api(client, token, "not-a-uuid"),
        "no token": await client.delete(f"/api/v1/events/{event_id}/payload"),
    }

    # Then each gets its problem, and the payload is still there
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {"no scope": 403, "other org": 404, "unknown": 404, "malformed": 404, "no token": 401}
    for answer in answers.values():
        assert answer.headers["content-type"].startswith("application/problem+json")
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT payload::text AS payload, erased_at FROM events WHERE id = $1", uuid.UUID(event_id)
        )
        assert await conn.fetchval("SELECT count(*) FROM erasures") == 0
    assert json.loads(row["payload"]) == {"keep": "me"} and row["erased_at"] is None
