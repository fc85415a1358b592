"""Webhook management through the JSON API: validation, the outbound guard, secrets, isolation."""

from __future__ import annotations

import json

import pytest

from app.core import crypto
from app.webhooks.tables import Webhook, WebhookDelivery


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def writer(factory):
    org = await factory.org()
    _, token = await factory.token(org, scopes="webhooks:write,dlq:write")
    return org, bearer(token)


VALID = {"name": "Payroll", "url": "http://127.0.0.1:9/hook", "event_patterns": ["job.*"]}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"url": "not a url"}, "url", ""),
        ({"url": "ftp://127.0.0.1/x"}, "url", "https://"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url", ""),
        ({"url": "http://10.0.0.1/hook"}, "url", ""),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url", ""),
        ({"event_patterns": ["jobs.*"]}, "event_patterns", "matches no event type"),
        ({"event_patterns": []}, "event_patterns", "at least one"),
        ({"timeout_seconds": 0}, "timeout_seconds", "1 to 60"),
        ({"timeout_seconds": 61}, "timeout_seconds", "1 to 60"),
        ({"name": ""}, "name", "1-100 characters"),
        ({"headers": {"X-InTime-Signature": "forged"}}, "headers", "cannot be overridden"),
        ({"headers": {"X-Evil": "a\r\nb"}}, "headers", "one line"),
        ({"retry_policy": {"base_delay_ms": 5000, "max_delay_ms": 10}}, "retry_policy.max_delay_ms", "less than"),
        ({"retry_policy": {"max_retries": 99}}, "retry_policy.max_retries", "at most 50"),
        ({"colour": "blue"}, "colour", "Unknown field"),
    ],
)
async def test_bad_webhooks_get_a_422_naming_the_field(client, writer, change, field, message):
    _, headers = writer
    response = await client.post("/api/v1/webhooks", json=VALID | change, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert field in errors and message in errors[field]
    assert await Webhook.count() == 0


async def test_private_addresses_are_refused_by_the_saved_url_check_without_connecting(client, writer):
    """The guard is tested on the validator: literal addresses are judged, never contacted."""
    _, headers = writer
    for url in ("http://192.168.1.10/", "http://[fc00::1]/", "http://100.64.0.1/", "http://0.0.0.0/"):
        response = await client.post("/api/v1/webhooks", json=VALID | {"url": url}, headers=headers)
        assert response.status_code == 422, url


async def test_create_shows_the_secret_once_and_stores_it_encrypted(client, writer):
    _, headers = writer
    created = await client.post("/api/v1/webhooks", json=VALID | {"timeout_seconds": 5}, headers=headers)
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["timeout_seconds"] == 5 and body["enabled"] is True
    row = await Webhook.objects().get(Webhook.id == body["id"])
    assert body["secret"] not in row.secret
    assert crypto.get_keyring().open(row.secret, f"webhook:{row.id}") == body["secret"]
    listed = (await client.get("/api/v1/webhooks", headers=headers)).json()
    assert [w["id"] for w in listed["items"]] == [body["id"]]
    assert "secret" not in listed["items"][0] and body["secret"] not in json.dumps(listed)


async def test_patch_changes_only_the_given_fields_and_delete_hides_it(client, writer):
    _, headers = writer
    body = (await client.post("/api/v1/webhooks", json=VALID, headers=headers)).json()
    patched = await client.patch(f"/api/v1/webhooks/{body['id']}", json={"description": "nightly"}, headers=headers)
    assert patched.status_code == 200
    assert patched.json()["description"] == "nightly" and patched.json()["name"] == "Payroll"
    assert (await client.delete(f"/api/v1/webhooks/{body['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"/api/v1/webhooks/{body['id']}", headers=headers)).status_code == 404
    assert (await Webhook.objects().get(Webhook.id == body["id"])).deleted_at is not None  # kept for audit


async def test_retry_config_round_trip_and_refusal(client, writer):
    _, headers = writer
    policy = {"strategy": "linear", "base_delay_ms": 500, "max_delay_ms": 5000, "max_retries": 4, "jitter": False}
    assert (await client.put("/api/v1/retry-config", json=policy, headers=headers)).json() == policy
    assert (await client.get("/api/v1/retry-config", headers=headers)).json() == policy
    bad = await client.put("/api/v1/retry-config", json=policy | {"max_delay_ms": 100}, headers=headers)
    assert bad.status_code == 422
    assert (await client.get("/api/v1/retry-config", headers=headers)).json() == policy


async def test_another_organisation_sees_and_changes_nothing(client, writer, factory):
    _, headers = writer
    body = (await client.post("/api/v1/webhooks", json=VALID, headers=headers)).json()
    other = await factory.org()
    _, token = await factory.token(other, scopes="webhooks:write,dlq:write")
    theirs = bearer(token)
    assert (await client.get("/api/v1/webhooks", headers=theirs)).json()["items"] == []
    for method, path in (
        ("GET", f"/api/v1/webhooks/{body['id']}"),
        ("PATCH", f"/api/v1/webhooks/{body['id']}"),
        ("DELETE", f"/api/v1/webhooks/{body['id']}"),
        ("POST", f"/api/v1/webhooks/{body['id']}/test"),
        ("POST", f"/api/v1/webhooks/{body['id']}/rotate-secret"),
        ("GET", f"/api/v1/webhooks/{body['id']}/deliveries"),
    ):
        response = await client.request(method, path, headers=theirs, json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path)
    assert (await Webhook.objects().get(Webhook.id == body["id"])).deleted_at is None


async def test_read_scope_cannot_write(client, factory):
    org = await factory.org()
    _, token = await factory.token(org, scopes="webhooks:read")
    response = await client.post("/api/v1/webhooks", json=VALID, headers=bearer(token))
    assert response.status_code == 403
    assert (await client.get("/api/v1/webhooks", headers=bearer(token))).status_code == 200
    assert (await client.post("/api/v1/dlq/retry", json={}, headers=bearer(token))).status_code == 403


async def test_bad_query_parameters_are_problems(client, writer):
    _, headers = writer
    body = (await client.post("/api/v1/webhooks", json=VALID, headers=headers)).json()
    base = f"/api/v1/webhooks/{body['id']}/deliveries"
    assert (await client.get(base, params={"status": "lost"}, headers=headers)).status_code == 422
    assert (await client.get(base, params={"limit": 0}, headers=headers)).status_code == 422
    assert (await client.get(base, params={"cursor": "garbage"}, headers=headers)).status_code == 422
    assert (await client.get(base, params={"since": "yesterday"}, headers=headers)).status_code in (400, 422)
    assert (await client.get("/api/v1/dlq", params={"webhook_id": "nope"}, headers=headers)).status_code == 422


async def test_another_organisations_dlq_items_and_jobs_are_out_of_reach(client, writer, factory):
    from app.events import services as events
    from app.webhooks import bulk, dlq, fanout

    org, headers = writer
    body = (await client.post("/api/v1/webhooks", json=VALID, headers=headers)).json()
    await events.publish(org.id, "job.created", {})
    (delivery_id,) = (await fanout.fan_out_backlog())[1]
    await client.patch(f"/api/v1/webhooks/{body['id']}", json={"enabled": False}, headers=headers)
    assert await dlq.drain_stopped() == 1  # the scheduler's step: what waited is in the DLQ
    job_id = await bulk.start_bulk(org.id, "dlq_clear", dlq.DlqFilter(), None)
    other = await factory.org()
    _, token = await factory.token(other, scopes="webhooks:write,dlq:write")
    theirs = bearer(token)
    assert (await client.get("/api/v1/dlq", headers=theirs)).json()["items"] == []
    assert (await client.get(f"/api/v1/deliveries/{delivery_id}", headers=theirs)).status_code == 404
    assert (await client.post(f"/api/v1/deliveries/{delivery_id}/replay", headers=theirs)).status_code == 404
    assert (await client.post(f"/api/v1/dlq/{delivery_id}/retry", headers=theirs)).status_code == 404
    assert (await client.delete(f"/api/v1/dlq/{delivery_id}", headers=theirs)).status_code == 404
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=theirs)).status_code == 404
    # Nothing of theirs touched it: whatever happened to it was done by its own organisation's job
    row = await WebhookDelivery.objects().get(WebhookDelivery.id == delivery_id)
    assert row.status == "dlq" and row.attempt_count == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/dlq/retry", {"webhook_id": 5}),
        ("POST", "/api/v1/dlq/clear", {"event_type": ["job.created"]}),
        ("POST", "/api/v1/dlq/clear", {"reason": {"x": 1}}),
        ("POST", "/api/v1/dlq/clear", {"reason": "bored"}),
        ("POST", "/api/v1/dlq/clear", [1, 2]),
        ("POST", "/api/v1/dlq/clear", {"since": "last tuesday"}),
        ("POST", "/api/v1/webhooks", VALID | {"name": "nul\x00name"}),
        ("POST", "/api/v1/webhooks", VALID | {"headers": {"X-Name": "café"}}),
        ("GET", "/api/v1/dlq?event_type=%00", None),
    ],
)
async def test_odd_input_is_a_4xx_problem_never_a_500(client, writer, method, path, body):
    _, headers = writer
    response = await client.request(method, path, json=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_an_empty_bulk_body_means_no_filter_but_a_falsy_one_is_refused(client, writer):
    _, headers = writer
    assert (await client.post("/api/v1/dlq/clear", headers=headers)).status_code == 202
    assert (await client.post("/api/v1/dlq/clear", json=[], headers=headers)).status_code == 422
    assert (await client.post("/api/v1/dlq/clear", json=False, headers=headers)).status_code == 422


@pytest.mark.parametrize(
    ("path", "body", "detail", "field"),
    [
        ("/api/v1/dlq/retry", {"webhook_id": 5}, "webhook_id must be a short text.", "webhook_id"),
        ("/api/v1/dlq/clear", {"colour": "red"}, "Unknown filter field colour.", None),
        ("/api/v1/dlq/clear", {"since": "last tuesday"}, "since and until are ISO 8601 times.", None),
        ("/api/v1/dlq/clear", [1, 2], "The request body must be a JSON object.", None),
        ("/api/v1/webhooks", [1, 2], "The request body must be a JSON object.", None),
        ("/api/v1/retry-config", "fast", "The request body must be a JSON object.", None),
    ],
)
async def test_a_refused_body_says_what_is_wrong_in_words(client, writer, path, body, detail, field):
    _, headers = writer
    method = "PUT" if path.endswith("retry-config") else "POST"
    answer = await client.request(method, path, json=body, headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"] == detail
    assert [e["field"] for e in answer.json().get("errors", [])] == ([field] if field else [])


async def test_webhooks_list_pages_with_a_cursor(client, writer):
    _, headers = writer
    for n in range(3):
        await client.post("/api/v1/webhooks", json=VALID | {"name": f"hook {n}"}, headers=headers)
    first = (await client.get("/api/v1/webhooks", params={"limit": 2}, headers=headers)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (
        await client.get("/api/v1/webhooks", params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers)
    ).json()
    assert len(second["items"]) == 1 and second["next_cursor"] is None
    names = [w["name"] for w in first["items"] + second["items"]]
    assert sorted(names) == ["hook 0", "hook 1", "hook 2"]
