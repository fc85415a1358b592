"""Integrations against local provider servers on 127.0.0.1 that the tests take down and restore:
automatic failover and failback from health checks and from real calls, manual trigger, rate limits."""

from __future__ import annotations

import json
import time

import pytest

from app.core import db, problems
from app.integrations import calls, failover, health
from tests.receiver import Answer, Receiver

FAST = {
    "breaker_failure_threshold": 2,
    "breaker_cooldown_seconds": 1,
    "breaker_cooldown_max_seconds": 4,
    "breaker_probe_successes": 1,
    "failback_after_seconds": 1,
}


@pytest.fixture
async def providers():
    primary, secondary = await Receiver().start(), await Receiver().start()
    yield primary, secondary
    await primary.stop()
    await secondary.stop()


async def setup(factory, providers, **settings):
    org = await factory.org()
    primary, secondary = providers
    integration = await factory.integration(org.id, "Email delivery", "email", **(FAST | settings))
    first = await factory.provider(integration, "SendGrid", primary.url, primary.url, priority=1, credentials="sg-key")
    second = await factory.provider(
        integration, "Mailgun", secondary.url, secondary.url, priority=2, credentials="mg-key"
    )
    return org, integration, first, second


async def active_of(integration_id):
    async with db.connection() as conn:
        return await conn.fetchval("SELECT active_provider_id FROM integrations WHERE id = $1", integration_id)


async def audit(integration_id):
    async with db.connection() as conn:
        return await conn.fetch(
            "SELECT kind, trigger, reason, actor, from_provider_id, to_provider_id FROM failover_events "
            "WHERE integration_id = $1 ORDER BY at",
            integration_id,
        )


async def published(event_type):
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT payload::text FROM events WHERE event_type = $1", event_type)
    return [json.loads(r["payload"]) for r in rows]


async def test_health_checks_fail_over_when_the_primary_goes_down_and_back_when_it_recovers(factory, providers):
    primary, _ = providers
    _org, integration, first, second = await setup(factory, providers)
    assert await health.check_provider(first) is True
    primary.default = Answer(status=503)
    assert await health.check_provider(first) is False
    assert await active_of(integration) in (None, first)  # one failure: the breaker is still closed
    await health.check_provider(first)
    assert await active_of(integration) == second
    [switch] = await audit(integration)
    assert (switch["kind"], switch["trigger"], switch["from_provider_id"], switch["to_provider_id"]) == (
        "failover",
        "automatic",
        first,
        second,
    )
    assert "circuit opened" in switch["reason"]
    assert [e["to_provider"] for e in await published("integration.failover")] == ["Mailgun"]

    primary.default = Answer(status=200)
    later = time.time() + 1.1  # past the cooldown (the breaker's clock, injected): the next check is a probe
    assert await health.check_provider(first, now=later) is True
    assert await active_of(integration) == second  # healthy, but not for long enough yet
    await health.check_provider(first, now=later + 1.1)
    assert await active_of(integration) == first
    assert [e["to_provider"] for e in await published("integration.failback")] == ["SendGrid"]
    assert [a["kind"] for a in await audit(integration)] == ["failover", "failback"]


async def test_failed_calls_count_too_and_the_next_call_goes_to_the_next_provider(factory, providers):
    primary, secondary = providers
    _, integration, first, second = await setup(factory, providers, failback_mode="manual")
    primary.default = Answer(status=500)
    for _ in range(2):
        with pytest.raises(calls.CallFailed, match="SendGrid answered HTTP 500"):
            await calls.call_integration(integration, "send", {"to": "ada@example.test"})
    assert await active_of(integration) == second
    result = await calls.call_integration(integration, "send", {"to": "ada@example.test"})
    assert result["provider"] == "Mailgun" and result["status"] == 200
    [call] = secondary.log
    assert (call.method, call.path) == ("POST", "/hook/send")
    assert call.headers["authorization"] == "Bearer mg-key" and json.loads(call.body) == {"to": "ada@example.test"}
    # Manual failback: the primary recovering changes nothing by itself.
    primary.default = Answer(status=200)
    later = time.time() + 1.1  # past the cooldown, then healthy for longer than failback_after_seconds
    await health.check_provider(first, now=later)
    await health.check_provider(first, now=later + 1.1)
    assert await active_of(integration) == second


async def test_a_manual_failover_is_audited_and_announced(factory, providers):
    org, integration, first, _second = await setup(factory, providers)
    with pytest.raises(problems.Problem, match="Say why"):
        await failover.trigger_failover(org.id, integration, "  ", "admin@example.test")
    moved = await failover.trigger_failover(org.id, integration, "SendGrid maintenance window", "admin@example.test")
    assert moved == {"from": "SendGrid", "to": "Mailgun", "kind": "failover"}
    [row] = await audit(integration)
    assert (row["trigger"], row["reason"], row["actor"]) == (
        "manual",
        "SendGrid maintenance window",
        "admin@example.test",
    )
    [event] = await published("integration.failover")
    assert event["trigger"] == "manual" and event["from_provider"] == "SendGrid"
    back = await failover.trigger_failover(org.id, integration, "maintenance over", "admin@example.test")
    assert back["kind"] == "failback" and await active_of(integration) == first
    other = await factory.org()
    with pytest.raises(problems.NotFound):
        await failover.trigger_failover(other.id, integration, "not mine", "mallory@example.test")


async def test_nowhere_to_fail_over_to_is_an_error_not_a_switch(factory, providers):
    _primary, secondary = providers
    org, integration, _first, second = await setup(factory, providers)
    secondary.default = Answer(status=503)
    await health.check_provider(second)
    with pytest.raises(problems.Problem, match="nowhere to fail over to"):
        await failover.trigger_failover(org.id, integration, "try", "admin@example.test")
    assert await audit(integration) == []


async def test_a_call_over_the_rate_limit_is_deferred_not_dropped(factory, providers):
    org = await factory.org()
    primary, _ = providers
    integration = await factory.integration(org.id, "SMS", "sms")
    await factory.provider(integration, "Twilio", primary.url, primary.url, priority=1, rate_limit_per_hour=2)
    for _ in range(2):
        await calls.call_integration(integration, "send", {"n": 1})
    with pytest.raises(calls.Deferred) as deferred:
        await calls.call_integration(integration, "send", {"n": 3})
    assert 1700 < deferred.value.retry_after <= 1800  # two an hour: the next token in 30 minutes
    assert len(primary.log) == 2


async def test_the_scheduler_and_a_worker_run_the_checks_and_fail_over_on_their_own(
    factory, providers, worker_process, scheduler
):
    from tests.pipeline import wait_until

    primary, _ = providers
    _, integration, first, second = await setup(factory, providers, health_interval_seconds=5)  # the shortest
    primary.default = Answer(status=503)

    async def failed_over():
        return await active_of(integration) == second

    await wait_until(failed_over, timeout=15)
    async with db.connection() as conn:
        checks = await conn.fetchval("SELECT count(*) FROM health_checks WHERE provider_id = $1 AND NOT ok", first)
    assert checks >= 2  # the breaker's threshold: two failed checks in a row


async def test_the_api_shows_health_and_failover_and_takes_changes_and_triggers(client, factory, providers):
    primary, _ = providers
    org, integration, first, _second = await setup(factory, providers)
    primary.default = Answer(status=503)
    await health.check_provider(first)
    _, token = await factory.token(org, scopes="integrations:write")
    bearer = {"authorization": f"Bearer {token}"}
    listed = (await client.get("/api/v1/integrations", headers=bearer)).json()["items"]
    [item] = listed
    assert item["active_provider"] == "SendGrid" and [p["name"] for p in item["providers"]] == ["SendGrid", "Mailgun"]
    assert item["providers"][0]["last_ok"] is False and item["providers"][0]["last_error"] == "HTTP 503"
    assert "credentials" not in str(listed).replace("has_credentials", "") and "sg-key" not in str(listed)
    base = f"/api/v1/integrations/{integration}"
    assert (await client.get(f"{base}/failover", headers=bearer)).json()["failover_mode"] == "automatic"
    changed = await client.put(
        f"{base}/failover", json={"failback_mode": "manual", "failback_after_seconds": 600}, headers=bearer
    )
    assert changed.status_code == 200 and changed.json()["failback_mode"] == "manual"
    bad = await client.put(
        f"{base}/failover", json={"failover_mode": "sometimes", "breaker_min_calls": -1, "colour": 1}, headers=bearer
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"failover_mode", "breaker_min_calls", "colour"}
    no_reason = await client.post(f"{base}/failover", json={}, headers=bearer)
    assert no_reason.status_code == 422
    moved = await client.post(f"{base}/failover", json={"reason": "vendor incident"}, headers=bearer)
    assert moved.status_code == 200 and moved.json()["to"] == "Mailgun"
    one = (await client.get(base, headers=bearer)).json()
    assert one["active_provider"] == "Mailgun"
    assert one["audit"][0]["reason"] == "vendor incident" and one["audit"][0]["actor"].startswith("API token")
    # A read-only token cannot trigger; another organisation's token does not see it.
    _, reader = await factory.token(org, scopes="integrations:read")
    refused = await client.post(f"{base}/failover", json={"reason": "x"}, headers={"authorization": f"Bearer {reader}"})
    assert refused.status_code == 403
    _, stranger = await factory.token(await factory.org(), scopes="integrations:write")
    hidden = await client.get(base, headers={"authorization": f"Bearer {stranger}"})
    assert hidden.status_code == 404
    assert (await client.get("/api/v1/integrations", headers={"authorization": f"Bearer {stranger}"})).json()[
        "items"
    ] == []
