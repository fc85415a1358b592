"""POST /api/v1/events/batch: up to 500 events in one transaction, a result for each by its index;
invalid items are refused one by one while the valid ones are published; each event counts toward
the token's hourly limit."""

from __future__ import annotations

import uuid

from app.events.tables import Event

BATCH = "/api/v1/events/batch"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def event(n: int = 1, event_type: str = "job.created", **fields) -> dict:
    return {"type": event_type, "payload": {"n": n}} | fields


async def test_batch_publishes_every_event_and_answers_their_ids_in_order(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    aggregate = str(uuid.uuid4())
    body = {"events": [event(1), event(2, "job.closed", aggregate_id=aggregate), event(3, metadata={"src": "ats"})]}

    response = await client.post(BATCH, json=body, headers=bearer(token))

    assert response.status_code == 200, response.text
    result = response.json()
    assert [item["index"] for item in result["items"]] == [0, 1, 2]
    assert [item["status"] for item in result["items"]] == [201, 201, 201]
    assert (result["published"], result["replayed"], result["failed"]) == (3, 0, 0)
    stored = {str(row.id): row for row in await Event.objects().where(Event.org == org.id)}
    assert len(stored) == 3
    first, second, third = (stored[item["id"]] for item in result["items"])
    assert first.event_type == "job.created" and first.payload in ({"n": 1}, '{"n": 1}')
    assert second.event_type == "job.closed" and str(second.aggregate_id) == aggregate
    assert third.metadata in ({"src": "ats"}, '{"src": "ats"}')


async def test_invalid_items_are_refused_by_index_with_field_errors_and_the_valid_ones_published(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    body = {
        "events": [
            event(1),
            {"type": "job.exploded", "payload": {}},
            {"type": "job.created", "payload": [1, 2]},
            {"payload": {}},
            "not an object",
            {"type": "job.created", "payload": {}, "aggregate_id": "nope"},
            {"type": 5, "payload": {}},
            {"type": "job.created", "payload": {}, "colour": "red"},
            {"type": "job.created", "payload": {"text": "nul \u0000 here"}},
            {"type": "job.created", "payload": {}, "idempotency_key": "k" * 256},
            event(2),
        ]
    }

    response = await client.post(BATCH, json=body, headers=bearer(token))

    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == [201, 422, 422, 422, 422, 422, 422, 422, 422, 422, 201]
    fields = {item["index"]: item["errors"][0]["field"] for item in items if item["status"] == 422}
    assert fields == {
        1: "events[1].type",
        2: "events[2].payload",
        3: "events[3].type",
        4: "events[4]",
        5: "events[5].aggregate_id",
        6: "events[6].type",
        7: "events[7].colour",
        8: "events[8].payload",
        9: "events[9].idempotency_key",
    }
    assert "Unknown event type 'job.exploded'" in items[1]["detail"]
    assert items[2]["detail"] == "payload must be a JSON object, not an array."
    assert all("id" not in item for item in items if item["status"] == 422)
    assert response.json()["failed"] == 9
    assert sorted(str(row["id"]) for row in await Event.select(Event.id)) == sorted([items[0]["id"], items[10]["id"]])


async def test_a_batch_that_cannot_be_read_is_a_problem_and_publishes_nothing(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    cases = [
        ({"events": [event(n) for n in range(501)]}, 422, "events", "length <= 500"),
        ({"events": []}, 422, "events", "length >= 1"),
        ({"events": {"type": "job.created"}}, 422, "events", "Expected `array`"),
        ({}, 422, None, "events"),
        ([event(1)], 422, None, "must be a JSON object"),
    ]
    for body, status, field, text in cases:
        response = await client.post(BATCH, json=body, headers=bearer(token))
        assert response.status_code == status, (body if len(str(body)) < 200 else "501 items", response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert text in str(problem), problem
        if field:
            assert problem["errors"][0]["field"] == field
    malformed = await client.post(
        BATCH, content=b'{"events": [{"type": "job.', headers=bearer(token) | {"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.headers["content-type"].startswith("application/problem+json")
    assert await Event.count() == 0


async def test_500_events_are_one_batch(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    response = await client.post(BATCH, json={"events": [event(n) for n in range(500)]}, headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["published"] == 500
    assert await Event.count().where(Event.org == org.id) == 500


async def test_each_event_of_a_batch_counts_toward_the_hourly_limit(client, factory):
    org = await factory.org()
    _, token = await factory.token(org, rate_limit_per_hour=10)
    # Given 4 + 4 events in two batches and one single event: 9 of the 10 requests an hour
    for _ in range(2):
        response = await client.post(BATCH, json={"events": [event(n) for n in range(4)]}, headers=bearer(token))
        assert response.status_code == 200
    single = await client.post("/api/v1/events", json=event(9), headers=bearer(token))
    assert single.status_code == 201
    # When a batch of 2 would make 11
    refused = await client.post(BATCH, json={"events": [event(10), event(11)]}, headers=bearer(token))
    # Then it is refused whole, and so is anything after it
    assert refused.status_code == 429
    assert "limit of 10 requests per hour" in refused.json()["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert (await client.post("/api/v1/events", json=event(12), headers=bearer(token))).status_code == 429
    assert await Event.count() == 9


async def test_batch_needs_the_events_write_scope(client, factory):
    org = await factory.org()
    _, token = await factory.token(org, scopes="webhooks:read")
    response = await client.post(BATCH, json={"events": [event(1)]}, headers=bearer(token))
    assert response.status_code == 403
    assert await Event.count() == 0


async def test_openapi_documents_the_batch_and_the_idempotency_key(client):
    spec = (await client.get("/schema/openapi.json")).json()
    single = spec["paths"]["/api/v1/events"]["post"]
    header = next(p for p in single["parameters"] if p["name"].lower() == "idempotency-key")
    assert header["in"] == "header" and not header.get("required", False)
    assert {"200", "201", "409", "422"} <= set(single["responses"])
    batch = spec["paths"]["/api/v1/events/batch"]["post"]
    ref = batch["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    events = spec["components"]["schemas"][ref]["properties"]["events"]
    assert events["maxItems"] == 500 and events["minItems"] == 1
    assert {"type", "payload", "idempotency_key"} <= set(events["items"]["properties"])
    assert {"200", "400", "422", "429"} <= set(batch["responses"])
