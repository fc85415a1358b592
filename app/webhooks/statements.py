"""Every statement that moves a delivery from one state to the next, each written once, here.

State machine (DESIGN): pending -> processing -> success; processing -> failed (retry scheduled at
next_attempt_at) -> processing ...; processing -> dlq; dlq -> pending (retry from the DLQ). A delivery
whose event's payload was erased (lifecycle/erase.py) has nothing left to send: waiting, it goes to the
DLQ (`payload_erased`), the claim hands one that slipped through back to the DLQ, and no replay takes it. Every
transition is one conditional UPDATE, so two actors racing for a delivery cannot both win: the
WHERE clause states what the delivery must still be for the transition to apply. Writes after a send
are fenced by the attempt number the claim returned (`attempt_count = $n`): a worker that outlived
its lease cannot overwrite what the sweep or another worker decided since.

Statements that name their deliveries by id write that fence as `(...) IS TRUE`. The meaning is the
same (a NULL fails either way), but PostgreSQL cannot then prove a partial index of states (waiting,
handed over, held, leased) usable for them, so it finds the rows by primary key alone. Otherwise it
trusts those indexes' statistics, which under churn say "nearly empty" while they hold thousands of
entries (most of them dead), and scans a whole one beside or instead of the key: measured in the
scale-out bench as ~10,000 index entries read per claim and half again PostgreSQL's CPU per delivery
(tests/test_query_plans.py).

Modelled on procrastinate's `sql/queries.sql`: the engine's modules say when a transition happens,
this one says what it does.
"""

from __future__ import annotations

# --- into pending ----------------------------------------------------------------------------------

# Fan-out: one delivery per (event, webhook). The unique index makes a repeated fan-out harmless.
FAN_OUT_DELIVERIES = (
    "INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, event_type, status, "
    "next_attempt_at, created_at, updated_at) "
    "SELECT u.id, u.org_id, u.webhook_id, u.event_id, u.event_type, 'pending', now(), now(), now() "
    "FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[]) "
    "AS u(id, org_id, webhook_id, event_id, event_type) "
    "ON CONFLICT (event_id, webhook_id) DO NOTHING RETURNING id"
)

# A test send is a delivery of its own (trigger 'test'), so it shows in the history like any other. It
# goes to the queue at once, in the message $5, outside the webhook's cap: an admin checking an endpoint
# should not wait behind its backlog.
INSERT_TEST_DELIVERY = (
    "INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, event_type, status, next_trigger, "
    "next_attempt_at, message_id, requeued_at, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, 'webhook.test', 'pending', 'test', now(), $5, now(), now(), now()) RETURNING id"
)
# The test event is marked fanned out at once, so no other webhook subscribed to system events gets it.
MARK_EVENT_FANNED_OUT = "UPDATE events SET fanned_out_at = now() WHERE id = $1"

# A replay (or a DLQ retry) adds an attempt to the same delivery, so the receiver sees the same
# webhook-id and can de-duplicate; `attempts_base` starts a fresh retry budget, so a retried delivery
# gets the whole policy again. Only while its webhook can still take it and its event still has a
# payload (an erased one would go out empty). The delivery is held for dispatch (a message already
# carrying it can no longer claim it).
REPLAY = """
UPDATE webhook_deliveries d SET status = 'pending', next_trigger = 'manual', attempts_base = d.attempt_count,
    next_attempt_at = now(), message_id = NULL, requeued_at = NULL, lease_expires_at = NULL, dlq_reason = NULL,
    dlq_at = NULL, cleared_at = NULL, cleared_by = NULL, completed_at = NULL, updated_at = now()
FROM webhooks w, events e
WHERE d.id = ANY($1) AND d.org_id = $2 AND d.status = ANY($3) AND w.id = d.webhook_id
  AND w.deleted_at IS NULL AND w.enabled AND e.id = d.event_id AND e.erased_at IS NULL
RETURNING d.id, d.webhook_id
"""
# Why a replay did not apply: the admin is told which of the conditions above failed.
WHY_NOT_REPLAYED = (
    "SELECT d.status, d.cleared_at, w.enabled, w.deleted_at, e.erased_at FROM webhook_deliveries d "
    "JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id WHERE d.id = $1 AND d.org_id = $2"
)

# --- held -> handed over (dispatch.py) -----------------------------------------------------------------

# Webhooks with held deliveries due by the database's clock, in id order after $1, $2 at most: a skip
# scan of the held-by-webhook index (one probe per webhook, however many deliveries each holds). That
# index's predicate is the `(...) IS TRUE` form written here and in LOCK_HELD, and only a query that
# states it can use it; the index of all held deliveries by due time (NEXT_HELD_DUE_IN's, plain form)
# cannot stand in, which the planner otherwise chose after an ANALYZE, reading every webhook's backlog.
DUE_WEBHOOKS = """
WITH RECURSIVE due(webhook_id) AS (
    (SELECT webhook_id FROM webhook_deliveries
     WHERE (status IN ('pending', 'failed') AND message_id IS NULL) IS TRUE AND next_attempt_at <= now()
       AND webhook_id > $1
     ORDER BY webhook_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.webhook_id FROM webhook_deliveries d
            WHERE (d.status IN ('pending', 'failed') AND d.message_id IS NULL) IS TRUE AND d.next_attempt_at <= now()
              AND d.webhook_id > due.webhook_id ORDER BY d.webhook_id LIMIT 1)
    FROM due WHERE due.webhook_id IS NOT NULL
)
SELECT webhook_id FROM due WHERE webhook_id IS NOT NULL LIMIT $2
"""
# Seconds until the next held delivery comes due (NULL: none waits): how long the scheduler may sleep.
NEXT_HELD_DUE_IN = (
    "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM webhook_deliveries "
    "WHERE status IN ('pending', 'failed') AND message_id IS NULL AND next_attempt_at > now()"
)
# Up to $2[i] due held deliveries of webhook $1[i], oldest due first, if it still takes deliveries
# (a disabled webhook's are drained to the DLQ instead). Locked till the messages are recorded.
LOCK_HELD = """
SELECT h.id, h.webhook_id FROM unnest($1::uuid[], $2::int[]) AS f(webhook_id, n)
JOIN webhooks w ON w.id = f.webhook_id AND w.enabled AND w.deleted_at IS NULL
CROSS JOIN LATERAL (
    SELECT d.id, d.webhook_id FROM webhook_deliveries d
    WHERE d.webhook_id = f.webhook_id AND (d.status IN ('pending', 'failed') AND d.message_id IS NULL) IS TRUE
      AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at LIMIT f.n FOR UPDATE OF d SKIP LOCKED
) h
"""
# Each delivery's message, written before the message is sent; requeued_at is when it was handed over.
HAND_OVER = (
    "UPDATE webhook_deliveries d SET message_id = u.message_id, requeued_at = now() "
    "FROM unnest($1::uuid[], $2::uuid[]) AS u(id, message_id) WHERE d.id = u.id"
)

# --- handed over -> processing ------------------------------------------------------------------------

# The claim is the only way into `processing`, and it takes a delivery only for the message its row
# names ($3), which dispatch wrote once the delivery was due by the database's clock: a stray,
# duplicate or stale message claims nothing, whatever the clock of the machine that sent or took it.
# The lease is the webhook's timeout plus a margin ($2): if the worker dies mid-send, the sweep takes
# over when it runs out. `erased_at` set: the event's payload was erased after the delivery last left
# the waiting states (it was being sent then, and is retried now): the worker dead-letters it unsent.
CLAIM = """
WITH claimed AS (
    UPDATE webhook_deliveries d
    SET status = 'processing', attempt_count = d.attempt_count + 1, updated_at = now(),
        lease_expires_at = now() + make_interval(secs => w.timeout_seconds + $2)
    FROM webhooks w
    WHERE d.id = ANY($1::uuid[]) AND w.id = d.webhook_id
      AND (d.status IN ('pending', 'failed') AND d.message_id = $3::uuid) IS TRUE
    RETURNING d.id, d.org_id, d.webhook_id, d.event_id, d.event_type, d.attempt_count, d.attempts_base,
              d.next_trigger, w.url, w.secret, w.previous_secret, w.previous_secret_expires_at, w.headers,
              w.timeout_seconds, w.enabled, w.deleted_at
)
SELECT c.*, e.payload::text AS payload, e.metadata::text AS metadata, e.aggregate_id, e.created_at AS event_at,
       e.erased_at
FROM claimed c JOIN events e ON e.id = c.event_id
"""

# --- processing -> success ----------------------------------------------------------------------------

# Many successes in one statement (one round trip, one commit): the attempts, the new states (fenced),
# and the failure counters. Batching is what lifted throughput past about 240 deliveries/s.
# An answer that arrives after its event's payload was erased (the send was under way) may echo the
# payload: its body is not stored (`erased`: one primary-key read of the delivery and of its event).
RECORD_SUCCESSES = """
WITH attempts AS (
    INSERT INTO delivery_attempts (id, delivery_id, attempt_number, trigger, started_at, duration_ms,
                                   request_url, request_headers, response_status, response_headers,
                                   response_body, response_truncated, outcome, body_removed)
    SELECT a.id, a.delivery_id, a.n, a.trigger, a.started_at, a.duration_ms, a.url, a.request_headers::jsonb,
           a.status, a.response_headers::jsonb, CASE WHEN erased THEN NULL ELSE a.body END, a.truncated, 'success',
           CASE WHEN erased THEN 'erasure' END
    FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::timestamptz[], $6::int[], $7::text[],
                $8::text[], $9::int[], $10::text[], $11::text[], $12::bool[])
         AS a(id, delivery_id, n, trigger, started_at, duration_ms, url, request_headers, status, response_headers,
              body, truncated)
         CROSS JOIN LATERAL (SELECT (SELECT e.erased_at IS NOT NULL FROM webhook_deliveries x
                                     JOIN events e ON e.id = x.event_id WHERE x.id = a.delivery_id) IS TRUE AS erased) g
), reset AS (
    UPDATE webhooks SET consecutive_failures = 0 WHERE id = ANY($13::uuid[]) AND consecutive_failures <> 0
)
UPDATE webhook_deliveries d SET status = 'success', completed_at = now(), updated_at = now(),
    lease_expires_at = NULL, next_attempt_at = NULL, last_status_code = u.status, last_error = NULL,
    next_trigger = 'scheduled'
FROM unnest($2::uuid[], $3::int[], $9::int[]) AS u(id, n, status)
WHERE d.id = u.id AND (d.status = 'processing' AND d.attempt_count = u.n) IS TRUE
"""

# --- processing -> (decision pending) after a failed attempt ---------------------------------------------

# Every attempt is on record, also one whose outcome arrives after the sweep took the delivery over
# (without its body if the event's payload was erased meanwhile, as in RECORD_SUCCESSES).
INSERT_ATTEMPT = (
    "INSERT INTO delivery_attempts (id, delivery_id, attempt_number, trigger, started_at, duration_ms, "
    "request_url, request_headers, response_status, response_headers, response_body, response_truncated, "
    "error_class, error_message, outcome, body_removed) "
    "SELECT $1::uuid, $2::uuid, $3::int, $4::text, $5::timestamptz, $6::int, $7::text, $8::jsonb, $9::int, "
    "$10::jsonb, CASE WHEN erased THEN NULL ELSE $11::text END, $12::bool, $13::text, $14::text, $15::text, "
    "CASE WHEN erased THEN 'erasure' END "
    "FROM (SELECT (SELECT e.erased_at IS NOT NULL FROM webhook_deliveries x JOIN events e ON e.id = x.event_id "
    "WHERE x.id = $2::uuid) IS TRUE AS erased) g"
)
# The last answer is shown on the delivery; RETURNING tells the worker whether the claim is still its own.
NOTE_FAILED_ANSWER = (
    "UPDATE webhook_deliveries SET last_status_code = $3, last_error = $4 "
    "WHERE id = $1 AND (status = 'processing' AND attempt_count = $2) IS TRUE RETURNING id"
)

# What the retry decision needs of a delivery and its webhook.
DECISION_COLUMNS = (
    "d.id, d.org_id, d.webhook_id, d.event_type, d.attempt_count, d.attempts_base, "
    "w.retry_policy::text AS override, w.enabled, w.deleted_at"
)
# The backoff middleware decides only while the claim numbered $2 is still the current one.
LOCK_FOR_DECISION = (
    f"SELECT {DECISION_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "  # noqa: S608
    "WHERE d.id = $1 AND (d.status = 'processing' AND d.attempt_count = $2) IS TRUE FOR UPDATE OF d"
)
# The organisation's default policy (retry_config.org_policy_in), also read inside the decision's transaction.
ORG_POLICY = "SELECT strategy, base_delay_ms, max_delay_ms, max_retries, jitter FROM retry_policies WHERE org_id = $1"

# --- processing -> failed -------------------------------------------------------------------------------

# Held until due by the database's clock; dispatch sends it then (dispatch.wake tells the scheduler).
SCHEDULE_RETRY = (
    "UPDATE webhook_deliveries SET status = 'failed', lease_expires_at = NULL, updated_at = now(), "
    "next_attempt_at = now() + make_interval(secs => $2::float8 / 1000), next_trigger = 'scheduled', "
    "message_id = NULL, requeued_at = NULL WHERE id = $1"
)
# The attempt shows how long until the next one.
NOTE_NEXT_DELAY = "UPDATE delivery_attempts SET next_delay_ms = $2 WHERE id = $1"

# --- processing / pending / failed -> dlq --------------------------------------------------------------

# Only while the claim numbered $4 is still the current one (NULL: whatever the state). $3 takes back
# the claim's attempt when it never sent one (its webhook was disabled or deleted meanwhile).
TO_DLQ = (
    "UPDATE webhook_deliveries SET status = 'dlq', dlq_reason = $2, dlq_at = now(), updated_at = now(), "
    "lease_expires_at = NULL, next_attempt_at = NULL, cleared_at = NULL, cleared_by = NULL, "
    "attempt_count = attempt_count - $3 "
    "WHERE id = $1 AND ($4::int IS NULL OR (status = 'processing' AND attempt_count = $4)) IS TRUE RETURNING id"
)
# An organisation's delivery rules (delivery_settings.py); no row: the defaults.
DELIVERY_RULES = "SELECT count_payload_rejections, max_in_flight FROM delivery_settings WHERE org_id = $1"
SET_DELIVERY_RULES = (
    "INSERT INTO delivery_settings (org_id, count_payload_rejections, max_in_flight, updated_at) "
    "VALUES ($1, $2, $3, now()) ON CONFLICT (org_id) DO UPDATE SET "
    "count_payload_rejections = excluded.count_payload_rejections, max_in_flight = excluded.max_in_flight, "
    "updated_at = now()"
)
# Each webhook's effective limits (delivery_settings.limits_in), in one round trip for any number of
# webhooks: its own cap, else its organisation's default, else $2 (DEFAULT_MAX_IN_FLIGHT, for an
# organisation without a delivery_settings row), and its rate limit (NULL: none). Ids that are not a
# webhook are left out; a deleted webhook is not, since its deliveries still in flight count.
WEBHOOK_LIMITS = (
    "SELECT w.id, coalesce(w.max_in_flight, s.max_in_flight, $2) AS max_in_flight, w.rate_limit_per_second "
    "FROM webhooks w LEFT JOIN delivery_settings s ON s.org_id = w.org_id WHERE w.id = ANY($1::uuid[])"
)
# Counts failed deliveries in a row (dlq.AUTO_DISABLE_AFTER disables the webhook); a success resets it.
COUNT_FAILED_DELIVERY = (
    "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 WHERE id = $1 "
    "RETURNING consecutive_failures, name"
)
# What still waits for a webhook when it is disabled: the count webhook.disabled announces.
COUNT_WAITING = (
    "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status IN ('pending', 'failed') "
    "AND next_trigger <> 'test'"
)
# Deliveries waiting for a webhook that will take none (disabled, deleted) go to the DLQ, one bounded
# batch per transaction, so a webhook with 100k waiting holds no long lock and no request waits for
# them. Test sends are left alone: they are allowed to a disabled webhook. The sweep runs this every
# second, so each step reads the index of waiting deliveries by one webhook: first which stopped
# webhooks still have something waiting, then one webhook's next batch. Written as one join, the
# planner scanned the whole table whenever its statistics counted many waiting rows (under load).
# The batch is a CTE, evaluated once: as an `IN (... LIMIT)` subquery a nested-loop plan may run it
# again and move more than the batch.
STOPPED_WITH_WAITING = """
SELECT s.id FROM webhooks s
WHERE (NOT s.enabled OR s.deleted_at IS NOT NULL)
  AND EXISTS (SELECT 1 FROM webhook_deliveries waiting WHERE waiting.webhook_id = s.id
              AND waiting.status IN ('pending', 'failed') AND waiting.next_trigger <> 'test')
"""
DRAIN_STOPPED = """
WITH batch AS MATERIALIZED (
    SELECT waiting.id FROM webhook_deliveries waiting
    WHERE waiting.webhook_id = $2 AND waiting.status IN ('pending', 'failed') AND waiting.next_trigger <> 'test'
    LIMIT $1 FOR UPDATE OF waiting SKIP LOCKED
)
UPDATE webhook_deliveries d SET status = 'dlq',
    dlq_reason = CASE WHEN w.deleted_at IS NOT NULL THEN 'webhook_deleted' ELSE 'webhook_disabled' END,
    dlq_at = now(), next_attempt_at = NULL, lease_expires_at = NULL, updated_at = now()
FROM batch, webhooks w
WHERE d.id = batch.id AND w.id = $2
"""

# Erasure (lifecycle/erase.py): what still waits to be sent for the erased events $1 goes to the DLQ in
# the transaction that erases them, test sends too: there is nothing left to send. One handed over
# already is no longer claimable (the claim takes only waiting deliveries); its message frees its slot.
# Not announced as dead-lettered and not counted towards auto-disable: nothing failed. Found by the
# (event, webhook) index; the state is in the `IS TRUE` form so that no partial index of states is used.
ERASED_TO_DLQ = (
    "UPDATE webhook_deliveries SET status = 'dlq', dlq_reason = 'payload_erased', dlq_at = now(), "
    "updated_at = now(), next_attempt_at = NULL, lease_expires_at = NULL "
    "WHERE event_id = ANY($1::uuid[]) AND (status IN ('pending', 'failed')) IS TRUE"
)

# --- dlq -> cleared (kept for audit) ------------------------------------------------------------------

CLEAR_ONE = (
    "UPDATE webhook_deliveries SET cleared_at = now(), cleared_by = $3, updated_at = now() "
    "WHERE id = $1 AND org_id = $2 AND (status = 'dlq' AND cleared_at IS NULL) IS TRUE RETURNING id"
)
DELIVERY_STATUS = "SELECT status FROM webhook_deliveries WHERE id = $1 AND org_id = $2"
# The bulk job's batch: the organisation is already fixed by the job's own filter.
CLEAR_MANY = (
    "UPDATE webhook_deliveries SET cleared_at = now(), cleared_by = $2, updated_at = now() "
    "WHERE id = ANY($1) AND (status = 'dlq' AND cleared_at IS NULL) IS TRUE RETURNING id"
)

# --- what a lost message or a dead worker left behind (the sweep) --------------------------------------

# Handed over more than $1 ago and still unclaimed: the sweep asks Redis whether each message still
# exists (queued, delayed for a Dramatiq retry, or taken by a worker and not yet acknowledged).
LOCK_HANDED_OVER = (
    "SELECT id, webhook_id, message_id FROM webhook_deliveries "
    "WHERE status IN ('pending', 'failed') AND message_id IS NOT NULL AND requeued_at < now() - $1::interval "
    "ORDER BY requeued_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
# Its message is gone: held again, for dispatch to send in a new one.
UNHAND = "UPDATE webhook_deliveries SET message_id = NULL, requeued_at = NULL WHERE id = ANY($1::uuid[])"
# Its message lives (a long queue): looked at again after the others.
STILL_HANDED = "UPDATE webhook_deliveries SET requeued_at = now() WHERE id = ANY($1::uuid[])"
# Lease run out: the worker died mid-send. SKIP LOCKED lets several schedulers share the work.
LOCK_EXPIRED_LEASES = (
    f"SELECT {DECISION_COLUMNS}, d.next_trigger, d.updated_at, d.message_id, w.url "  # noqa: S608
    "FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
    "WHERE d.status = 'processing' AND d.lease_expires_at < now() "
    "LIMIT $1 FOR UPDATE OF d SKIP LOCKED"
)
# An attempt whose failure was recorded but whose retry decision never ran (the decision failed, or
# the worker stopped between the two): the sweep decides on it instead of calling it lost.
RECORDED_ATTEMPT = (
    "SELECT id, response_headers->>'retry-after' AS retry_after FROM delivery_attempts "
    "WHERE delivery_id = $1 AND attempt_number = $2"
)
# The lost attempt is recorded (it may or may not have arrived) and counts like a failed one.
INSERT_LOST_ATTEMPT = (
    "INSERT INTO delivery_attempts (id, delivery_id, attempt_number, trigger, started_at, request_url, "
    "error_class, error_message, outcome) VALUES ($1, $2, $3, $4, $5, $6, 'lease_expired', "
    "'the worker sending this attempt stopped before it recorded the outcome', 'lost')"
)

# --- the webhook's own states, which decide what its deliveries may do ----------------------------------

ENABLE_WEBHOOK = (
    "UPDATE webhooks SET enabled = true, disabled_reason = NULL, disabled_at = NULL, "
    "consecutive_failures = 0, updated_at = now() WHERE id = $1"
)
# Only an enabled webhook is disabled, so the webhook.disabled event is published once.
DISABLE_WEBHOOK = (
    "UPDATE webhooks SET enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now() "
    "WHERE id = $1 AND enabled RETURNING name"
)
# Soft delete: deliveries and attempts stay for audit.
DELETE_WEBHOOK = "UPDATE webhooks SET deleted_at = now(), enabled = false, updated_at = now() WHERE id = $1"
