"""Dispatch: the one path by which a delivery leaves PostgreSQL for the queue (test sends aside).

A delivery waits in PostgreSQL, *held* (status pending or failed, `message_id` NULL), until it is due
by PostgreSQL's clock and its webhook has room: at most `max_in_flight` of a webhook's deliveries are
queued or being sent at once, and at most `rate_limit_per_second` start per second, counted across
every worker in Redis (a sorted set of slots and a token bucket per webhook, timed by Redis `TIME`).
Dispatch then writes, in one transaction, the id of the message that will carry each delivery, and
enqueues those messages with no delay: the worker's claim takes a delivery only for the message named
on its row, so a duplicate or stale message can never send it.

Who dispatches: the scheduler, each round and whenever a retry is scheduled (NOTIFY on `HELD_CHANNEL`),
for every webhook with due deliveries; a worker, as soon as it frees a slot of a webhook that has
deliveries waiting for one (the `held` hint); the web process after a replay. Waiting for a slot uses
no retry and holds no worker: the delivery stays a row. Fair share follows: a webhook, however big its
backlog or however slow its endpoint, has at most its cap of messages in the queue and of sends in
flight, so another organisation's delivery waits behind at most the caps of the webhooks with work.

What can go wrong, and what repairs it: a slot whose release never came (a worker died) expires on
its own (`QUEUE_ALLOWANCE_S` while queued, the webhook's timeout plus the lease margin once claimed);
a message lost after its id was written is found by the sweep (schedule.sweep), which checks Redis for
the message itself, not the queue's length, and hands the delivery back to dispatch.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.core import db, queue
from app.core.redis import run_scripts
from app.webhooks import delivery_settings, statements

log = logging.getLogger("intime.dispatch")

# A message carries up to this many deliveries of one webhook, claimed, sent concurrently and recorded
# as each send completes. Per-delivery messages and round trips were what bounded throughput (measured:
# about 240 deliveries/s); 20 keeps one message's sends few enough to start together.
DELIVERY_BATCH = 20
WEBHOOKS_PER_ROUND = 500
# A slot taken at dispatch is held this long at most before its claim renews it for the send itself.
QUEUE_ALLOWANCE_S = 180
HINT_TTL_MS = 600_000
# Scheduled retries and replays wake the scheduler's dispatch through this channel.
HELD_CHANNEL = "deliveries_held"


def slots_key(webhook_id: uuid.UUID | str) -> str:
    return f"intime:slots:{webhook_id}"


def _rate_key(webhook_id: uuid.UUID | str) -> str:
    return f"intime:rate:{webhook_id}"


def _hint_key(webhook_id: uuid.UUID | str) -> str:
    return f"intime:held:{webhook_id}"


def member(message_id: uuid.UUID | str, delivery_id: uuid.UUID | str) -> str:
    """A slot is named by the message and the delivery, so a stale message's release frees nothing."""
    return f"{message_id}:{delivery_id}"


# The token bucket: `rate` tokens a second, at most max(1, rate) saved up.
_CLOCK_AND_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = math.max(0, tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1]))
local rate = tonumber(ARGV[2])
local tokens = 0
if rate > 0 then
  local burst = math.max(1, rate)
  local state = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  tokens = tonumber(state[1]) or burst
  tokens = math.min(burst, tokens + (now - (tonumber(state[2]) or now)) * rate / 1000)
  free = math.min(free, math.floor(tokens))
end
"""
# KEYS: slots, bucket, hint; ARGV: cap, rate (0: none), due (1: deliveries are known to wait).
# Returns how many may start now, and when a rate-limited webhook gets its next token (ms, 0: n/a).
FREE = (
    _CLOCK_AND_BUCKET
    + """
if free == 0 and ARGV[3] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[4]) end
local wait = 0
if rate > 0 and tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {free, wait}
"""
)
# KEYS: slots, bucket, hint; ARGV: cap, rate, slot ttl ms, more (1: more wait than offered), hint ttl,
# then the members offered. Takes a slot (and a token) for as many as may start; returns that count.
TAKE = (
    _CLOCK_AND_BUCKET
    + """
local offered = #ARGV - 5
local n = math.min(free, offered)
for i = 1, n do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[5 + i]) end
if n > 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 60000) end
if rate > 0 then
  redis.call('HSET', KEYS[2], 'tokens', tokens - n, 'at', now)
  redis.call('PEXPIRE', KEYS[2], math.ceil(math.max(1, rate) / rate * 1000) + 1000)
end
if n < offered or ARGV[4] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
else redis.call('DEL', KEYS[3]) end
return n
"""
)
# KEYS: slots, hint; ARGV: members. Frees them; returns 1 if deliveries of the webhook wait for a slot.
RELEASE = """
redis.call('ZREM', KEYS[1], unpack(ARGV))
return redis.call('EXISTS', KEYS[2])
"""
# KEYS: slots; ARGV: ttl ms, members. A claim holds its slots for the send (timeout plus margin).
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 60000)
return 0
"""


@dataclass
class Round:
    """What one dispatch round did: messages sent, and when the scheduler should look again."""

    handed: int = 0
    messages: int = 0
    next_in: float | None = None  # seconds until a held delivery comes due or a rate token frees up
    batches: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (message, webhook, deliveries)


async def dispatch(webhook_ids: Iterable[uuid.UUID] | None = None) -> Round:
    """Hand due held deliveries to the queue, each webhook up to its free slots and tokens.

    With `webhook_ids`, only those webhooks (a worker that freed their slots, a replay); without, every
    webhook with due deliveries, and the round also says when the next held delivery comes due."""
    result = Round()
    if webhook_ids is not None:
        wanted = list(dict.fromkeys(webhook_ids))
        if wanted:
            await _dispatch_page(wanted, result, known_due=False)
    else:
        after = uuid.UUID(int=0)
        while True:
            async with db.connection() as conn:
                rows = await conn.fetch(statements.DUE_WEBHOOKS, after, WEBHOOKS_PER_ROUND)
            page = [row["webhook_id"] for row in rows]
            if page:
                await _dispatch_page(page, result, known_due=True)
            if len(page) < WEBHOOKS_PER_ROUND:
                break
            after = page[-1]
        async with db.connection() as conn:
            due_in = await conn.fetchval(statements.NEXT_HELD_DUE_IN)
        if due_in is not None:
            result.next_in = due_in if result.next_in is None else min(result.next_in, due_in)
    if result.batches:
        await queue.asend_batches(result.batches)
    return result


async def _dispatch_page(webhook_ids: list[uuid.UUID], result: Round, *, known_due: bool) -> None:
    async with db.connection() as conn:
        limits = await delivery_settings.limits_in(conn, webhook_ids)
    hooks = list(limits)
    if not hooks:
        return
    free_waits = await run_scripts(
        [
            (
                FREE,
                [slots_key(hook), _rate_key(hook), _hint_key(hook)],
                [limits[hook].max_in_flight, limits[hook].rate_limit_per_second or 0, int(known_due), HINT_TTL_MS],
            )
            for hook in hooks
        ]
    )
    room: dict[uuid.UUID, int] = {}
    for hook, (free, wait_ms) in zip(hooks, free_waits, strict=True):
        if free > 0:
            room[hook] = int(free)
        if wait_ms and known_due:
            wait = int(wait_ms) / 1000
            result.next_in = wait if result.next_in is None else min(result.next_in, wait)
    if not room:
        return
    taken_slots: list[tuple[uuid.UUID, str, uuid.UUID]] = []
    try:
        async with db.connection() as conn, conn.transaction():
            rows = await conn.fetch(statements.LOCK_HELD, list(room), list(room.values()))
            offered: dict[uuid.UUID, list[tuple[str, uuid.UUID]]] = {hook: [] for hook in room}
            for row in rows:
                batch = offered[row["webhook_id"]]
                # A new message every DELIVERY_BATCH deliveries of this webhook.
                message_id = str(uuid.uuid4()) if len(batch) % DELIVERY_BATCH == 0 else batch[-1][0]
                batch.append((message_id, row["id"]))
            taken = await run_scripts(
                [
                    (
                        TAKE,
                        [slots_key(hook), _rate_key(hook), _hint_key(hook)],
                        [
                            limits[hook].max_in_flight,
                            limits[hook].rate_limit_per_second or 0,
                            (QUEUE_ALLOWANCE_S * 1000),
                            int(len(offered[hook]) >= room[hook]),
                            HINT_TTL_MS,
                            *(member(message_id, delivery_id) for message_id, delivery_id in offered[hook]),
                        ],
                    )
                    for hook in room
                ]
            )
            ids, messages = [], []
            batches: dict[tuple[str, str], list[str]] = {}
            for hook, count in zip(room, taken, strict=True):
                for message_id, delivery_id in offered[hook][: int(count)]:
                    taken_slots.append((hook, message_id, delivery_id))
                    ids.append(delivery_id)
                    messages.append(uuid.UUID(message_id))
                    batches.setdefault((message_id, str(hook)), []).append(str(delivery_id))
            if ids:
                await conn.execute(statements.HAND_OVER, ids, messages)
    except BaseException:
        # The hand-over did not commit (the database went away): its slots would stay taken for the
        # whole queue allowance, with no message to free them.
        if taken_slots:
            with contextlib.suppress(Exception):
                await release(taken_slots)
        raise
    result.handed += len(ids)
    result.messages += len(batches)
    result.batches.extend((message_id, hook, group) for (message_id, hook), group in batches.items())


async def release(slots: Iterable[tuple[uuid.UUID, uuid.UUID | str, uuid.UUID | str]]) -> set[uuid.UUID]:
    """Free the slots of (webhook, message, delivery) whose send is over (or never began); returns
    the webhooks whose deliveries wait for a slot, for the caller to dispatch."""
    by_hook: dict[uuid.UUID, list[str]] = {}
    for webhook_id, message_id, delivery_id in slots:
        by_hook.setdefault(webhook_id, []).append(member(message_id, delivery_id))
    if not by_hook:
        return set()
    waiting = await run_scripts(
        [(RELEASE, [slots_key(hook), _hint_key(hook)], members) for hook, members in by_hook.items()]
    )
    return {hook for hook, flag in zip(by_hook, waiting, strict=True) if flag}


async def release_and_hand_on(slots: Iterable[tuple[uuid.UUID, uuid.UUID | str, uuid.UUID | str]]) -> None:
    """Free slots and dispatch what waited for them; a failure here only delays that to the scheduler's
    next round (the slots expire on their own, the held deliveries stay rows)."""
    try:
        waiting = await release(slots)
        if waiting:
            await dispatch(waiting)
    except Exception:
        log.exception("handing freed slots on failed; the scheduler's next round will")


async def renew(claimed: Iterable[tuple[uuid.UUID, str, uuid.UUID, float]]) -> None:
    """A claim holds its deliveries' slots, each (webhook, message, delivery, seconds), for their sends
    (the queue allowance may have run out meanwhile)."""
    by_hook: dict[uuid.UUID, list] = {}
    for webhook_id, message_id, delivery_id, seconds in claimed:
        by_hook.setdefault(webhook_id, [int(seconds * 1000)]).append(member(message_id, delivery_id))
    if by_hook:
        try:
            await run_scripts([(RENEW, [slots_key(hook)], args) for hook, args in by_hook.items()])
        except Exception:  # Redis away: the sends go ahead; their slots may expire early, nothing worse
            log.warning("renewing the slots of claimed deliveries failed", exc_info=True)


async def wake(conn) -> None:
    """Tell the scheduler a delivery was held with a due time (a retry, a replay): it dispatches then."""
    await conn.execute("SELECT pg_notify($1, '')", HELD_CHANNEL)
