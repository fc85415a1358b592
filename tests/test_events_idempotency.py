"""Idempotency-Key on POST /api/v1/events (and idempotency_key in a batch item): the same key and
body within the TTL answer 200 with the first event's id and create nothing; another body is a 409;
keys belong to one organisation; the rule holds for concurrent requests because PostgreSQL keeps it."""

from __future__ import annotations

import asyncio

from app.core import db
from app.events import idempotency
from app.events.tables import Event

EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"
BODY = {"type": "job.created", "payload": {"job_id": "j-1", "title": "Welder"}}


def headers(token: str, key: str | None = None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} | ({"idempotency-key": key} if key is not None else {})


async def test_same_key_and_body_answers_200_with_the_first_id_and_creates_nothing(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    first = await client.post(EVENTS, json=BODY, headers=headers(token, "order-42"))
    # The same body with its keys in another order is the same request.
    again = await client.post(
        EVENTS,
        json={"payload": {"title": "Welder", "job_id": "j-1"}, "type": "job.created"},
        headers=headers(token, "order-42"),
    )
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await Event.count() == 1


async def test_same_key_with_another_body_is_a_409_problem(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    first = await client.post(EVENTS, json=BODY, headers=headers(token, "order-42"))
    other = await client.post(EVENTS, json=BODY | {"payload": {"job_id": "j-2"}}, headers=headers(token, "order-42"))
    assert first.status_code == 201
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "was used for a different request" in other.json()["detail"]
    assert await Event.count() == 1


async def test_concurrent_requests_with_one_key_make_exactly_one_event(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    responses = await asyncio.gather(
        *(client.post(EVENTS, json=BODY, headers=headers(token, "burst")) for _ in range(10))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 9 + [201]
    assert len({response.json()["id"] for response in responses}) == 1
    assert await Event.count() == 1


async def test_keys_belong_to_one_organisation(client, factory):
    a, b = await factory.org(), await factory.org()
    (_, token_a), (_, token_b) = await factory.token(a), await factory.token(b)
    from_a = await client.post(EVENTS, json=BODY, headers=headers(token_a, "shared-key"))
    from_b = await client.post(EVENTS, json=BODY | {"payload": {"other": 1}}, headers=headers(token_b, "shared-key"))
    assert from_a.status_code == 201 and from_b.status_code == 201
    assert from_a.json()["id"] != from_b.json()["id"]
    assert await Event.count().where(Event.org == a.id) == 1
    assert await Event.count().where(Event.org == b.id) == 1


async def test_a_key_must_be_1_to_255_printable_characters(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    for key in ("x" * 5000, "x" * 256, ""):
        response = await client.post(EVENTS, json=BODY, headers=headers(token, key))
        assert response.status_code == 422, len(key)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert "1-255 printable characters" in problem["detail"]
        assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert await Event.count() == 0
    assert (await client.post(EVENTS, json=BODY, headers=headers(token, "x" * 255))).status_code == 201


async def test_a_key_older_than_its_lifetime_counts_as_new_and_is_pruned(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    first = await client.post(EVENTS, json=BODY, headers=headers(token, "old"))
    await client.post(EVENTS, json=BODY, headers=headers(token, "other"))
    async with db.connection() as conn:  # 25 h ago, past the default lifetime of 24 h
        await conn.execute("UPDATE event_idempotency_keys SET created_at = now() - interval '25 hours'")

    again = await client.post(EVENTS, json=BODY | {"payload": {"new": True}}, headers=headers(token, "old"))

    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert await Event.count() == 3
    assert await idempotency.prune() == 1  # "other"; "old" was claimed anew
    replay = await client.post(EVENTS, json=BODY | {"payload": {"new": True}}, headers=headers(token, "old"))
    assert replay.status_code == 200 and replay.json()["id"] == again.json()["id"]


async def test_batch_items_have_keys_of_their_own_shared_with_single_publishes(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    single = await client.post(EVENTS, json=BODY, headers=headers(token, "k-single"))
    batch = {
        "events": [
            BODY | {"idempotency_key": "k-single"},  # the single publish's key and body: its event
            BODY | {"payload": {"n": 2}, "idempotency_key": "k-single"},  # its key, another body
            BODY | {"payload": {"n": 3}, "idempotency_key": "k-3"},
            BODY | {"payload": {"n": 3}, "idempotency_key": "k-3"},  # the same key twice in one batch
            BODY | {"payload": {"n": 4}, "idempotency_key": "k-3"},
            BODY | {"payload": {"n": 5}},
        ]
    }

    response = await client.post(BATCH, json=batch, headers=headers(token))

    items = response.json()["items"]
    assert [item["status"] for item in items] == [200, 409, 201, 200, 409, 201]
    assert items[0]["id"] == single.json()["id"]
    assert items[3]["id"] == items[2]["id"]
    assert items[1]["errors"][0]["field"] == "events[1].idempotency_key"
    assert await Event.count() == 3  # the single one, k-3 and the unkeyed one
    # And sent again, the batch creates nothing new.
    again = (await client.post(BATCH, json=batch, headers=headers(token))).json()["items"]
    assert [item["status"] for item in again] == [200, 409, 200, 200, 409, 201]
    assert again[2]["id"] == items[2]["id"]
    assert await Event.count() == 4


async def test_replays_count_toward_the_hourly_limit(client, factory):
    org = await factory.org()
    _, token = await factory.token(org, rate_limit_per_hour=3)
    statuses = [(await client.post(EVENTS, json=BODY, headers=headers(token, "k"))).status_code for _ in range(4)]
    assert statuses == [201, 200, 200, 429]
    assert await Event.count() == 1
