"""The rules a receiver and an admin rely on: patterns, signatures, and the retry schedule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook as StandardWebhook

from app.webhooks import patterns, retry, signing

CATALOG = {
    "job.created": "recruiting",
    "job.closed": "recruiting",
    "submission.created": "recruiting",
    "candidate.created": "people",
    "webhook.disabled": "system",
    "webhook.delivery.dead_lettered": "system",
}


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("job.created", "job.created", True),
        ("job.created", "job.closed", False),
        ("job.*", "job.closed", True),
        ("job.*", "jobs.created", False),
        ("job.*", "submission.created", False),
        ("recruiting.*", "submission.created", True),
        ("recruiting.*", "candidate.created", False),
        ("people.*", "candidate.created", True),
        ("webhook.*", "webhook.delivery.dead_lettered", True),
        ("webhook.delivery.*", "webhook.delivery.dead_lettered", True),
        ("webhook.delivery.*", "webhook.disabled", False),
        ("*", "candidate.created", True),
    ],
)
def test_pattern_matching(pattern, event_type, expected):
    assert patterns.matches(pattern, event_type, CATALOG.get(event_type, "recruiting")) is expected


def test_patterns_that_match_nothing_or_are_malformed_are_refused():
    assert patterns.validate_patterns([" job.* ", "job.*", "recruiting.*"], CATALOG) == ["job.*", "recruiting.*"]
    for bad, message in (
        (["jobs.*"], "matches no event type"),
        (["job.creatd"], "matches no event type"),
        (["job.**"], "is not a pattern"),
        (["Job.Created"], "is not a pattern"),
        (["job.*.created"], "is not a pattern"),
        ([""], "at least one"),
    ):
        with pytest.raises(patterns.PatternError, match=message):
            patterns.validate_patterns(bad, CATALOG)
    assert patterns.matching_types(["recruiting.*"], CATALOG) == ["job.closed", "job.created", "submission.created"]


def test_signatures_verify_with_standard_webhooks_and_a_plain_hmac():
    secret = signing.generate_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    body = json.dumps({"id": "e1", "type": "job.created", "data": {"x": 1}}).encode()
    now = datetime.now(UTC)
    headers = signing.signature_headers("d-1", "job.created", body, [secret], now)
    # The Standard Webhooks reference library accepts it...
    StandardWebhook(secret).verify(body, headers)
    # ...and so does the HMAC a receiver writes by hand from the README
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-InTime-Signature"] == expected
    assert headers["webhook-id"] == headers["X-InTime-Delivery"] == "d-1"
    assert headers["X-InTime-Timestamp"].endswith("Z")


def test_during_rotation_both_secrets_sign_and_either_verifies():
    old, new = signing.generate_secret(), signing.generate_secret()
    body = b'{"id":"e1"}'
    headers = signing.signature_headers("d-2", "job.created", body, [new, old], datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    StandardWebhook(old).verify(body, headers)
    StandardWebhook(new).verify(body, headers)
    assert headers["X-InTime-Signature"] == signing.intime_signature(body, new)
    with pytest.raises(Exception, match="No matching signature"):
        StandardWebhook(signing.generate_secret()).verify(body, headers)


def test_the_three_strategies_follow_the_formula():
    exponential = retry.Policy("exponential", 1000, 60_000, 10, jitter=False)
    assert [retry.base_delay_ms(exponential, n) for n in range(1, 8)] == [1000, 2000, 4000, 8000, 16000, 32000, 60000]
    linear = retry.Policy("linear", 1000, 3500, 10, jitter=False)
    assert [retry.base_delay_ms(linear, n) for n in range(1, 5)] == [1000, 2000, 3000, 3500]
    fixed = retry.Policy("fixed", 750, 750, 3, jitter=False)
    assert [retry.base_delay_ms(fixed, n) for n in range(1, 4)] == [750, 750, 750]


def test_retries_stop_after_max_retries():
    policy = retry.Policy("fixed", 10, 10, 2, jitter=False)
    assert retry.next_delay_ms(policy, 1) == 10
    assert retry.next_delay_ms(policy, 2) == 10
    assert retry.next_delay_ms(policy, 3) is None
    assert retry.next_delay_ms(retry.Policy("fixed", 10, 10, 0, False), 1) is None


def test_retry_after_is_honoured_up_to_the_max_delay():
    policy = retry.Policy("exponential", 1000, 30_000, 5, jitter=False)
    assert retry.next_delay_ms(policy, 1, retry_after_ms=20_000) == 20_000
    assert retry.next_delay_ms(policy, 1, retry_after_ms=90_000) == 30_000
    assert retry.next_delay_ms(policy, 3, retry_after_ms=10) == 4000


policies = st.builds(
    retry.Policy,
    strategy=st.sampled_from(retry.STRATEGIES),
    base_delay_ms=st.integers(0, 10**7),
    max_delay_ms=st.integers(0, retry.MAX_DELAY_LIMIT_MS),
    max_retries=st.integers(0, retry.MAX_RETRIES_LIMIT),
    jitter=st.booleans(),
).filter(lambda p: p.max_delay_ms >= p.base_delay_ms)


@given(
    policy=policies,
    attempts=st.integers(1, 60),
    seed=st.integers(0, 2**32),
    retry_after=st.none() | st.integers(0, 10**9),
)
def test_every_delay_stays_within_the_policys_bounds(policy, attempts, seed, retry_after):
    delay = retry.next_delay_ms(policy, attempts, retry_after, random.Random(seed))
    if attempts > policy.max_retries:
        assert delay is None
        return
    assert delay is not None
    ceiling = retry.base_delay_ms(policy, attempts)
    floor = ceiling // 2 if policy.jitter else ceiling
    assert 0 <= delay <= policy.max_delay_ms
    if retry_after is None:
        assert floor <= delay <= ceiling
    else:
        assert delay >= min(retry_after, policy.max_delay_ms)


@given(policy=policies)
def test_schedule_preview_is_monotonic_and_as_long_as_max_retries(policy):
    rows = retry.schedule(policy)
    assert len(rows) == policy.max_retries
    for row in rows:
        assert 0 <= row["min_ms"] <= row["max_ms"] <= policy.max_delay_ms
    totals = [row["total_max_ms"] for row in rows]
    assert totals == sorted(totals)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"strategy": "random"}, "strategy", "is one of"),
        ({"base_delay_ms": -1}, "base_delay_ms", "cannot be negative"),
        ({"base_delay_ms": 5000, "max_delay_ms": 1000}, "max_delay_ms", "less than the base"),
        ({"max_retries": 51}, "max_retries", "at most 50"),
        ({"max_retries": "many"}, "max_retries", "whole number"),
        ({"jitter": "perhaps"}, "jitter", "true or false"),
        ({"max_delay_ms": 10**12}, "max_delay_ms", "at most 7 days"),
        ({"backoff": 2}, "retry_policy", "unknown field backoff"),
    ],
)
def test_impossible_policies_are_refused_with_a_message_per_field(data, field, message):
    with pytest.raises(retry.PolicyError) as error:
        retry.parse_policy(data)
    assert message in error.value.errors[field]


def test_a_form_with_strings_parses_to_the_same_policy():
    form = {"strategy": "linear", "base_delay_ms": "500", "max_delay_ms": "9000", "max_retries": "4", "jitter": "on"}
    assert retry.parse_policy(form) == retry.Policy("linear", 500, 9000, 4, True)
