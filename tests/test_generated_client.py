"""A client generated from /schema (openapi-python-client) calls the API with typed models: create a
webhook, send it a test, list its deliveries and replay one. If /schema left a body undocumented,
the generated code would take and return plain dicts, and this test says which."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import httpx
import pytest

from tests.pipeline import bearer, wait_until

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _snake(name: str) -> str:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@pytest.fixture
def generated(app, tmp_path):
    schema = app.openapi_schema.to_schema()
    (tmp_path / "openapi.json").write_text(json.dumps(schema))
    command = ["generate", "--path", "openapi.json", "--meta", "none", "--output-path", "intime_client"]
    run = subprocess.run(
        [str(BIN / "openapi-python-client"), *command],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        package = importlib.import_module("intime_client")

        def operation(method: str, path: str):
            """The generated module of one route, found by its operationId and tag as the generator names them."""
            op = schema["paths"][path][method]
            return importlib.import_module(f"intime_client.api.{_snake(op['tags'][0])}.{_snake(op['operationId'])}")

        yield package, operation
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "intime_client" or n.startswith("intime_client.")]:
            del sys.modules[name]


def _typed(value, what: str):
    assert attrs.has(type(value)), f"{what} is not a typed model but {type(value).__name__}: is its body documented?"
    return value


async def test_a_generated_client_creates_a_webhook_lists_deliveries_and_replays(app, factory, generated):
    package, operation = generated
    org = await factory.org()
    _, token = await factory.token(org, scopes="webhooks:read,webhooks:write")
    client = package.AuthenticatedClient(base_url="http://127.0.0.1:8000", token=token)
    client.set_async_httpx_client(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000", headers=bearer(token)
        )
    )

    # Given a webhook created through the generated model of its request body
    create = operation("post", "/api/v1/webhooks")
    body_type = inspect.signature(create.asyncio_detailed).parameters["body"].annotation
    body_type = getattr(create, body_type, body_type) if isinstance(body_type, str) else body_type
    assert attrs.has(body_type), f"create-webhook's body is {body_type!r}, not a model"
    body = body_type.from_dict({"name": "Payroll", "url": "http://127.0.0.1:9/hook", "event_patterns": ["job.*"]})
    created = await create.asyncio_detailed(client=client, body=body)
    assert created.status_code == 201, created.content
    webhook = _typed(created.parsed, "create-webhook's answer")
    assert webhook.secret.startswith("whsec_") and webhook.event_patterns == ["job.*"]

    # When it gets a test delivery, its deliveries list that delivery with typed items
    sent = await operation("post", "/api/v1/webhooks/{webhook_id}/test").asyncio_detailed(webhook.id, client=client)
    assert sent.status_code == 202, sent.content
    delivery_id = str(_typed(sent.parsed, "test-send's answer").delivery_id)
    listed = await operation("get", "/api/v1/webhooks/{webhook_id}/deliveries").asyncio_detailed(
        webhook.id, client=client
    )
    page = _typed(listed.parsed, "the deliveries page")
    assert [str(_typed(item, "a delivery").id) for item in page.items] == [delivery_id]

    # Then, unless a worker is sending it right now (a replay then answers 409), replaying it answers 202
    # with the same delivery id
    get_delivery = operation("get", "/api/v1/deliveries/{delivery_id}")

    async def attempt_over() -> bool:
        shown = _typed((await get_delivery.asyncio_detailed(delivery_id, client=client)).parsed, "a delivery")
        return shown.status != "processing"  # pending (no worker in this test) or done

    await wait_until(attempt_over)
    replayed = await operation("post", "/api/v1/deliveries/{delivery_id}/replay").asyncio_detailed(
        delivery_id, client=client
    )
    assert replayed.status_code == 202, replayed.content
    assert str(_typed(replayed.parsed, "replay's answer").delivery_id) == delivery_id

    # And a refusal comes back as the documented problem model
    bad = await create.asyncio_detailed(
        client=client, body=body_type.from_dict({"name": "", "url": "x", "event_patterns": []})
    )
    assert bad.status_code == 422
    problem = _typed(bad.parsed, "the 422 problem")
    assert {error.field for error in problem.errors} >= {"name", "url", "event_patterns"}
