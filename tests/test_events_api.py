"""Publishing through the JSON API and reading the catalog; bad input gets a clear problem."""

from __future__ import annotations

from app.events.tables import Event


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_published_event_is_stored_for_the_tokens_organisation(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    response = await client.post(
        "/api/v1/events",
        json={
            "type": "candidate.created",
            "aggregate_id": "7b8f4d2e-9a1c-4c59-8a40-0f7e1c2d3b4a",
            "payload": {"candidate_id": "c-9"},
            "metadata": {"source": "ats"},
        },
        headers=bearer(token),
    )
    assert response.status_code == 201
    event = await Event.objects().get(Event.id == response.json()["id"])
    assert event.org == org.id
    assert event.event_type == "candidate.created"
    assert str(event.aggregate_id) == "7b8f4d2e-9a1c-4c59-8a40-0f7e1c2d3b4a"
    assert event.payload in ({"candidate_id": "c-9"}, '{"candidate_id": "c-9"}')


async def test_bad_events_are_refused_with_problem_details_and_nothing_stored(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    cases = [
        ({"type": "job.exploded", "payload": {}}, 422, "Unknown event type 'job.exploded'"),
        ({"type": "job.created", "payload": [1, 2]}, 422, "payload must be a JSON object, not an array"),
        ({"type": "job.created", "payload": "text"}, 422, "payload must be a JSON object, not a string"),
        ({"type": "job.created", "payload": {}, "metadata": 5}, 422, "metadata must be a JSON object"),
        (
            {"type": "job.created", "payload": {}, "aggregate_id": "nope"},
            422,
            "aggregate_id 'nope' is not a UUID",
        ),
        ({"payload": {}}, 422, "The request is not valid."),
    ]
    for body, status, detail in cases:
        response = await client.post("/api/v1/events", json=body, headers=bearer(token))
        assert response.status_code == status, body
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert detail in problem["detail"], problem
        assert problem["status"] == status and problem["title"]
    malformed = await client.post(
        "/api/v1/events",
        content=b'{"type": "job.',
        headers=bearer(token) | {"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.headers["content-type"].startswith("application/problem+json")
    assert await Event.count() == 0


async def test_missing_field_is_named_in_the_problem(client, factory):
    org = await factory.org()
    _, token = await factory.token(org)
    problem = (await client.post("/api/v1/events", json={"payload": {}}, headers=bearer(token))).json()
    assert any("type" in error["message"] for error in problem["errors"])


async def test_catalog_lists_types_with_domains_and_examples(client, factory):
    org = await factory.org()
    _, token = await factory.token(org, scopes="webhooks:read")
    body = (await client.get("/api/v1/event-types", headers=bearer(token))).json()
    by_name = {item["name"]: item for item in body["items"]}
    assert by_name["job.created"]["domain"] == "recruiting"
    assert by_name["job.created"]["category"] == "job"
    assert by_name["job.created"]["example"]["title"] == "Senior Nurse"
    assert body["next_cursor"] is None


async def test_unknown_api_path_is_a_problem_not_a_page(client):
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_openapi_documents_the_api_with_bearer_auth_and_no_pages(client):
    spec = (await client.get("/schema/openapi.json")).json()
    assert "/api/v1/events" in spec["paths"] and "/api/v1/event-types" in spec["paths"]
    assert not any(path.startswith("/employee") or path == "/login" for path in spec["paths"])
    assert spec["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    docs = await client.get("/schema")
    assert docs.status_code == 200 and "/static/vendor/rapidoc" in docs.text
