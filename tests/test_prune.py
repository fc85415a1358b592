"""The pruner removes what is past its retention (per organisation), in bounded batches, and nothing else.

Rows are made by the real pipeline (a webhook, a receiver on 127.0.0.1, the worker) and then aged in
SQL, as time would age them; `intime prune` and the pass the scheduler runs are the same function.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest

from app.core import db
from app.core.settings import get_settings
from app.lifecycle import prune, retention
from app.webhooks import operations
from tests.conftest import ROOT
from tests.pipeline import settled
from tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")


async def _age(sql: str, *args) -> None:
    async with db.connection() as conn:
        await conn.execute(sql, *args)


async def _one(sql: str, *args):
    async with db.connection() as conn:
        return await conn.fetchval(sql, *args)


async def _delivered(api, receiver, n: int = 1, body: bytes = b"thanks") -> tuple[dict, list[str]]:
    receiver.default = Answer(status=200, body=body)
    hook = await api.webhook(receiver.url)
    event_ids = [await api.publish() for _ in range(n)]
    for event_id in event_ids:
        await settled(event_id, hook["id"], "success")
    return hook, event_ids


async def test_deliveries_past_retention_go_with_their_attempts_and_events_and_younger_ones_stay(api, receiver):
    hook, (old, young) = await _delivered(api, receiver, 2)
    await _age(
        "UPDATE webhook_deliveries SET created_at = created_at - interval '31 days' WHERE event_id = $1", uuid.UUID(old)
    )
    await _age("UPDATE events SET created_at = created_at - interval '31 days' WHERE id = $1", uuid.UUID(old))

    assert (await prune.would_remove())["deliveries"] == 1
    report = await prune.run_pass()

    assert report["deliveries"] == 1 and report["events"] == 1
    listed = (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["items"]
    assert [item["event_id"] for item in listed] == [young]
    assert await _one("SELECT count(*) FROM delivery_attempts") == 1  # the old delivery's attempt went too
    assert await _one("SELECT count(*) FROM events WHERE id = $1", uuid.UUID(old)) == 0
    assert await _one("SELECT last_removed FROM prune_state WHERE kind = 'deliveries'") == 1


async def test_an_event_stays_while_a_delivery_of_it_is_kept_and_waiting_deliveries_are_never_pruned(api, receiver):
    receiver.default = Answer(status=503)
    hook = await api.webhook(
        receiver.url, retry_policy={"strategy": "fixed", "base_delay_ms": 60_000, "max_retries": 5}
    )
    event_id = await api.publish()
    await settled(event_id, hook["id"], "failed")
    await _age("UPDATE webhook_deliveries SET created_at = created_at - interval '60 days'")
    await _age("UPDATE events SET created_at = created_at - interval '60 days'")

    report = await prune.run_pass()

    assert report["deliveries"] == 0 and report["events"] == 0
    assert (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["items"][0]["status"] == "failed"


async def test_an_organisation_that_keeps_less_loses_its_rows_sooner_than_the_others(api, receiver, factory):
    hook, _ = await _delivered(api, receiver)
    await _age("UPDATE webhook_deliveries SET created_at = created_at - interval '3 days'")
    assert (await prune.run_pass())["deliveries"] == 0  # the default keeps them 30 days

    await retention.set_for_org(api.organisation.id, {"deliveries": "2"}, None)
    assert (await prune.run_pass())["deliveries"] == 1
    assert (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["items"] == []


async def test_response_bodies_go_first_and_the_attempt_keeps_its_status_headers_and_timing(api, receiver):
    hook, _ = await _delivered(api, receiver, body=b"receiver said: PII-42")
    await _age("UPDATE webhook_deliveries SET created_at = created_at - interval '8 days'")

    report = await prune.run_pass()

    assert report["bodies"] == 1 and report["deliveries"] == 0
    delivery = (await api.get(f"/webhooks/{hook['id']}/deliveries")).json()["items"][0]
    (attempt,) = (await api.get(f"/deliveries/{delivery['id']}")).json()["attempts"]
    assert attempt["response_status"] == 200 and attempt["duration_ms"] is not None
    assert attempt["response_headers"]
    assert not attempt.get("response_body")
    assert await _one("SELECT body_removed FROM delivery_attempts") == "retention"
    # The webhook's mark moved on: the next pass reads nothing again
    assert (await prune.run_pass())["bodies"] == 0


async def test_uncleared_dlq_items_are_announced_a_day_ahead_and_only_then_removed(api, receiver):
    receiver.default = Answer(status=400)  # non-retryable: straight to the DLQ
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    await settled(event_id, hook["id"], "dlq")
    # 29.5 days in the DLQ: within a day of the 30-day retention, not past it
    await _age("UPDATE webhook_deliveries SET dlq_at = now() - interval '29 days 12 hours' WHERE status = 'dlq'")

    first = await prune.run_pass()

    assert first["deliveries"] == 0
    announced = json.loads(
        await _one(
            "SELECT payload::text FROM events WHERE event_type = 'webhook.dlq.expiring' AND org_id = $1",
            api.organisation.id,
        )
    )
    assert announced["count"] == 1 and announced["webhooks"] == [{"webhook_id": hook["id"], "count": 1}]
    assert (await prune.run_pass())["deliveries"] == 0  # announced once, still kept
    assert await _one("SELECT count(*) FROM events WHERE event_type = 'webhook.dlq.expiring'") == 1

    # A day later by the item's clock but announced only just now: still kept
    await _age("UPDATE webhook_deliveries SET dlq_at = dlq_at - interval '1 day' WHERE status = 'dlq'")
    assert (await prune.run_pass())["deliveries"] == 0
    # and once the announcement is a day old, it goes
    await _age("UPDATE dlq_notices SET announced_at = announced_at - interval '1 day'")
    assert (await prune.run_pass())["deliveries"] == 1
    assert (await api.get("/dlq")).json()["items"] == []


async def test_a_dlq_item_never_announced_is_not_removed_even_when_long_past_retention(api, receiver):
    receiver.default = Answer(status=400)
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    await settled(event_id, hook["id"], "dlq")
    await _age("UPDATE webhook_deliveries SET dlq_at = now() - interval '90 days' WHERE status = 'dlq'")

    first = await prune.run_pass()  # the pruner was off for months: it announces now, removes a day later

    assert first["deliveries"] == 0
    notice = json.loads(await _one("SELECT payload::text FROM events WHERE event_type = 'webhook.dlq.expiring'"))
    assert notice["count"] == 1
    assert notice["first_expires_at"] > (await _one("SELECT (now() + interval '23 hours')::text")).replace(" ", "T")
    assert len((await api.get("/dlq")).json()["items"]) == 1


async def test_cleared_dlq_items_go_by_when_they_were_cleared(api, receiver):
    receiver.default = Answer(status=400)
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    row = await settled(event_id, hook["id"], "dlq")
    await operations.clear(api.organisation.id, row["id"], None)
    await _age(
        "UPDATE webhook_deliveries SET created_at = now() - interval '40 days', cleared_at = now() - interval '29 days'"
    )
    assert (await prune.run_pass())["cleared_dlq"] == 0
    await _age("UPDATE webhook_deliveries SET cleared_at = now() - interval '31 days'")
    assert (await prune.run_pass())["cleared_dlq"] == 1


async def test_health_checks_go_into_hourly_summaries_that_outlive_them(factory):
    org = await factory.org()
    integration = await factory.integration(org.id)
    provider = await factory.provider(integration, "primary", "http://127.0.0.1:9/send", "http://127.0.0.1:9/health")
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO health_checks (id, provider_id, org_id, at, ok, latency_ms) "
            "SELECT gen_random_uuid(), $1, $2, "
            "date_trunc('hour', now()) - interval '8 days' + g * interval '1 minute', g % 4 <> 0, g "
            "FROM generate_series(1, 10) g",
            provider,
            org.id,
        )
    report = await prune.run_pass()
    assert report["health_checks"] == 10
    summary = await _one(
        "SELECT row(checks, ok, latency_ms_sum, latency_ms_max)::text FROM health_check_hours WHERE provider_id = $1",
        provider,
    )
    assert summary == "(10,8,55,10)"


async def test_batches_are_bounded_and_two_pruners_at_once_remove_each_row_once(api, receiver, monkeypatch):
    monkeypatch.setenv("INTIME_PRUNE_BATCH", "10")
    get_settings.cache_clear()
    try:
        hook = await api.webhook(receiver.url)
        async with db.connection() as conn:
            await conn.execute(
                "WITH e AS (INSERT INTO events (org_id, event_type, created_at, fanned_out_at) "
                "SELECT $1, 'job.created', now() - interval '40 days', now() FROM generate_series(1, 95) RETURNING id) "
                "INSERT INTO webhook_deliveries (org_id, webhook_id, event_id, event_type, status, created_at) "
                "SELECT $1, $2, e.id, 'job.created', 'success', now() - interval '40 days' FROM e",
                api.organisation.id,
                uuid.UUID(hook["id"]),
            )
        assert get_settings().retention.batch == 10
        one, two = await asyncio.gather(prune.run_pass(), prune.run_pass())
        assert one["deliveries"] + two["deliveries"] == 95
        assert one["events"] + two["events"] == 95
        assert await _one("SELECT count(*) FROM webhook_deliveries") == 0
    finally:
        monkeypatch.delenv("INTIME_PRUNE_BATCH")
        get_settings.cache_clear()


async def test_the_cli_dry_run_removes_nothing_and_the_pass_removes_what_it_listed(api, receiver):
    await _delivered(api, receiver, 2)
    await _age("UPDATE webhook_deliveries SET created_at = created_at - interval '31 days'")

    def cli(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "prune", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=os.environ.copy(),
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert cli("--dry-run")["deliveries"] == 2
    assert await _one("SELECT count(*) FROM webhook_deliveries") == 2
    assert cli()["deliveries"] == 2
    assert await _one("SELECT count(*) FROM webhook_deliveries") == 0


async def test_the_scheduler_prunes_on_its_own(api, receiver, monkeypatch):
    from tasks.scheduler import Scheduler

    await _delivered(api, receiver)
    await _age("UPDATE webhook_deliveries SET created_at = created_at - interval '31 days'")
    instance = Scheduler(prunes=True)
    task = asyncio.create_task(instance.run())
    try:

        async def gone():
            return await _one("SELECT count(*) FROM webhook_deliveries") == 0

        from tests.pipeline import wait_until

        await wait_until(gone, timeout=15)
        assert await _one("SELECT last_run_at IS NOT NULL FROM prune_state WHERE kind = 'deliveries'")
    finally:
        instance.stopping.set()
        instance.wake.set()
        await asyncio.wait_for(task, 10)


async def test_finished_background_calls_go_with_the_deliveries_and_unfinished_ones_stay(factory):
    org = await factory.org()
    integration = await factory.integration(org.id)
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO integration_calls (id, call_id, org_id, integration_id, operation, payload, status, "
            "created_at) SELECT gen_random_uuid(), 'c-' || s, $1, $2, 'send', '{}'::jsonb, s, "
            "now() - interval '31 days' FROM unnest(ARRAY['succeeded', 'rejected', 'abandoned', 'queued']) s",
            org.id,
            integration,
        )
    assert (await prune.run_pass())["deliveries"] == 3
    assert await _one("SELECT array_agg(status)::text FROM integration_calls") == "{queued}"
