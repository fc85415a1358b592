"""The integrations API documents the kinds and modes the services accept (no servers needed)."""

from __future__ import annotations

from typing import get_args

from app.integrations import failover, schemas, setup


def test_the_documented_kinds_and_modes_are_the_ones_the_services_accept():
    assert set(get_args(schemas.Kind)) == set(setup.KINDS)
    assert all(set(get_args(schemas.Mode)) == set(allowed) for allowed in failover.MODES.values())
    assert set(schemas.FailoverConfig.__struct_fields__) == set(failover.MODES) | set(failover.FAILOVER_LIMITS)
