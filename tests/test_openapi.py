"""/schema documents the whole JSON API: every body, every field, every problem a route can answer,
well enough that a generated client can call it with typed models."""

from __future__ import annotations

import pytest

BODY_METHODS = {"post", "put", "patch"}
# Routes whose POST takes no body: the path says everything.
NO_BODY = {
    ("post", "/api/v1/webhooks/{webhook_id}/test"),
    ("post", "/api/v1/webhooks/{webhook_id}/rotate-secret"),
    ("post", "/api/v1/deliveries/{delivery_id}/replay"),
    ("post", "/api/v1/dlq/{delivery_id}/retry"),
    ("post", "/api/v1/oauth/{provider_key}/connect"),
}


@pytest.fixture
def schema(app) -> dict:
    return app.openapi_schema.to_schema()


def _operations(schema: dict):
    for path, methods in schema["paths"].items():
        if path.startswith("/api/v1/"):
            for method, operation in methods.items():
                yield method, path, operation


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_every_api_route_documents_its_request_and_response_bodies(schema):
    missing = []
    for method, path, operation in _operations(schema):
        if method in BODY_METHODS and (method, path) not in NO_BODY:
            content = operation.get("requestBody", {}).get("content", {})
            body = content.get("application/json", {}).get("schema")
            if not body or (not _resolve(schema, body).get("properties") and "oneOf" not in _resolve(schema, body)):
                missing.append(f"{method.upper()} {path}: request body")
        successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        assert successes, f"{method.upper()} {path} documents no success"
        for code, response in successes.items():
            if code == "204":
                continue
            body = next(iter(response.get("content", {}).values()), {}).get("schema")
            if not body or not (_resolve(schema, body).get("properties") or _resolve(schema, body).get("items")):
                missing.append(f"{method.upper()} {path}: {code} body")
    assert not missing, "undocumented bodies:\n" + "\n".join(missing)


def test_every_api_route_documents_the_problems_it_can_answer(schema):
    for method, path, operation in _operations(schema):
        responses = operation["responses"]
        for code in ("401", "429"):
            assert code in responses, f"{method.upper()} {path} does not document {code}"
        if "{" in path:
            assert "404" in responses or "422" in responses, f"{method.upper()} {path} names a resource: 404?"
        if method in BODY_METHODS and (method, path) not in NO_BODY:
            assert "422" in responses, f"{method.upper()} {path} takes a body: 422?"
        for code, response in responses.items():
            if code.startswith("4"):
                content = response.get("content", {})
                assert "application/problem+json" in content, f"{method.upper()} {path} {code} is not problem+json"
                assert _resolve(schema, content["application/problem+json"]["schema"])["properties"]["detail"]


def test_payload_erasure_is_documented_with_its_scope_and_answer(schema):
    operation = schema["paths"]["/api/v1/events/{event_id}/payload"]["delete"]
    assert {"200", "401", "403", "404", "429"} <= set(operation["responses"])
    answer = _resolve(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"event_id", "erased_at", "attempts_cleared"} <= set(answer["properties"])
    detail = _resolve(
        schema,
        schema["paths"]["/api/v1/deliveries/{delivery_id}"]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ],
    )
    assert "event_erased_at" in detail["properties"]
