"""Every statement that moves a background call (integration_calls) from one state to the next, and the
limits those moves obey, each written once, here.

States: queued -> running -> succeeded; running -> failed | deferred (waiting until next_attempt_at)
-> running ...; running -> rejected (the provider refused it) | abandoned (failed or waited too often).
A worker claims a call with one conditional UPDATE, so two messages for the same call (a duplicate, the
sweep's re-send) never make the same attempt twice; what it records afterwards is fenced by the attempt
number the claim returned (`attempts = $n`), so a worker that outlived its lease cannot overwrite what
the sweep decided since. Every due time is PostgreSQL's `now()`, never a worker's clock.
"""

from __future__ import annotations

from app.core.backoff import Backoff

# A failing call is tried again after 5 s, doubling to 10 min, 20 times: about two hours, long enough to
# outlast a provider's outage or a breaker's cooldown. Deferrals (waiting for a rate-limit slot or a
# provider's Retry-After) are not failures and do not count against those; 500 of them (days of a
# provider answering 429) end the call too.
MAX_FAILURES = 20
MAX_DEFERRALS = 500
# With jitter (app.core.backoff): calls that failed together, in one outage, do not all come back together.
CALL_BACKOFF = Backoff(first=5.0, cap=600.0)
# How long a claimed call is its worker's. Longer than the actor's time limit (120 s, which cancels an
# attempt that outlives it), so the sweep never takes a call from a worker still making it: it runs
# out only when the worker died mid-call.
LEASE_SECONDS = 150
WAITING = ("queued", "failed", "deferred")

# --- into queued ------------------------------------------------------------------------------------

# One row per (integration, call id): the same call enqueued twice is one call (the Idempotency-Key says
# so anyway). No row comes back when the integration does not exist, or the call is already known.
INSERT = """
INSERT INTO integration_calls (id, call_id, org_id, integration_id, operation, payload, status, failures,
                               deferrals, reserved_for, next_attempt_at, created_at, updated_at)
SELECT $1::uuid, $2::text, i.org_id, i.id, $4::text, $5::jsonb, 'queued', $6::int, $7::int, $8::uuid, now(), now(),
       now()
FROM integrations i WHERE i.id = $3::uuid
ON CONFLICT (integration_id, call_id) DO NOTHING RETURNING id
"""
EXISTING = "SELECT id FROM integration_calls WHERE integration_id = $1 AND call_id = $2"

# --- waiting -> running -------------------------------------------------------------------------------

# Only a waiting call that is due: a stray or duplicate message can neither send early nor twice. A
# message may arrive a little before next_attempt_at (the clocks of the machines that sent and took it
# differ): 500 ms early is on time.
CLAIM = """
UPDATE integration_calls SET status = 'running', attempts = attempts + 1, requeued_at = NULL,
    lease_expires_at = now() + make_interval(secs => $2), updated_at = now()
WHERE id = $1 AND status IN ('queued', 'failed', 'deferred') AND next_attempt_at <= now() + interval '500 ms'
RETURNING id, call_id, integration_id, operation, payload::text AS payload, attempts, failures, deferrals,
          reserved_for
"""
# Why a message claimed nothing: the call is done, someone else's, or not due yet (then: in how long).
WHY_NOT_CLAIMED = (
    "SELECT status, GREATEST(0, ceil(extract(epoch FROM next_attempt_at - now()) * 1000))::bigint AS wait_ms "
    "FROM integration_calls WHERE id = $1"
)

# --- running -> an outcome (each only while the claim numbered $2 is still the current one) ------------

SUCCEEDED = """
UPDATE integration_calls SET status = 'succeeded', completed_at = now(), updated_at = now(), last_error = NULL,
    lease_expires_at = NULL, next_attempt_at = NULL, reserved_for = NULL, provider_name = $3, status_code = $4
WHERE id = $1 AND status = 'running' AND attempts = $2
"""
# failed or deferred: the next attempt's schedule ($4 ms from now) and its booked slot, if any.
AGAIN = """
UPDATE integration_calls SET status = $3::text, next_attempt_at = now() + make_interval(secs => $4::float8 / 1000),
    failures = failures + (CASE WHEN $3::text = 'failed' THEN 1 ELSE 0 END),
    deferrals = deferrals + (CASE WHEN $3::text = 'deferred' THEN 1 ELSE 0 END),
    reserved_for = $5, last_error = $6, lease_expires_at = NULL, requeued_at = NULL, updated_at = now()
WHERE id = $1 AND status = 'running' AND attempts = $2 RETURNING id
"""
# rejected or abandoned: kept, with why.
ENDED = """
UPDATE integration_calls SET status = $3::text, last_error = $4, status_code = COALESCE($5, status_code),
    completed_at = now(), updated_at = now(), lease_expires_at = NULL, next_attempt_at = NULL, reserved_for = NULL
WHERE id = $1 AND status = 'running' AND attempts = $2
"""

# --- what a lost message or a dead worker left behind (the sweep) --------------------------------------

# Due for longer than $1 and not re-sent in the last $2: its message must have been lost (Redis wiped,
# an enqueue that failed). SKIP LOCKED lets several schedulers share the work.
REQUEUE_OVERDUE = """
UPDATE integration_calls SET requeued_at = now() WHERE id IN (
    SELECT id FROM integration_calls WHERE status IN ('queued', 'failed', 'deferred')
      AND next_attempt_at < now() - $1::interval
      AND (requeued_at IS NULL OR requeued_at < now() - $2::interval)
    ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
# Lease run out: the worker died mid-call, so whether the provider got it is unknown.
LOCK_EXPIRED_LEASES = (
    "SELECT id, call_id, attempts, failures FROM integration_calls "
    "WHERE status = 'running' AND lease_expires_at < now() "
    "ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED"
)
LOST_ATTEMPT = "the worker making this call stopped before it recorded the outcome"
