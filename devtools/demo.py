"""The demo data of `./task dev`: the organisation `demo` with an admin and a viewer, the Sandbox OAuth
provider's client, and an email integration on two simulated providers. Safe to run again."""

from __future__ import annotations

import os

DEMO_ORG = ("demo", "Demo Staffing")
DEMO_ADMIN = ("admin@demo.test", "demo-admin-pass")
DEMO_VIEWER = ("viewer@demo.test", "demo-viewer-pass")


async def seed_demo() -> None:
    """The demo organisation with an admin and a viewer; safe to run again."""
    from app.accounts import services
    from app.accounts.tables import Organization, User

    org = await Organization.objects().where(Organization.slug == DEMO_ORG[0]).first()
    if org is None:
        org = await services.create_organization(*DEMO_ORG)
    for (email, password), role in ((DEMO_ADMIN, "admin"), (DEMO_VIEWER, "viewer")):
        if not await User.exists().where(User.email == email):
            await services.create_user(org, email, password, role, name=f"Demo {role}")
    await seed_sandbox_client(org.id)
    await seed_demo_integration(org.id)


async def seed_demo_integration(org_id) -> None:
    """An email integration on two simulated providers of the dev receiver (devtools/receiver.py), tuned to
    fail over within seconds: break the primary at http://127.0.0.1:8001/providers and watch."""
    from app.core import db
    from app.integrations import failover, setup

    async with db.connection() as conn:
        if await conn.fetchval("SELECT 1 FROM integrations WHERE org_id = $1", org_id):
            return
    base = f"http://127.0.0.1:{os.environ.get('INTIME_DEV_RECEIVER_PORT', '8001')}/providers"
    # Made the way an admin makes one (app.integrations.setup), so the demo passes the same checks.
    integration = await setup.create_integration(org_id, {"name": "Email delivery", "kind": "email"})
    fast = {
        "health_interval_seconds": 5,
        "breaker_failure_threshold": 2,
        "breaker_cooldown_seconds": 10,
        "breaker_probe_successes": 2,
        "failback_after_seconds": 20,
    }
    await failover.update_failover(org_id, integration, fast)
    for priority, name in ((1, "primary"), (2, "backup")):
        provider = {
            "name": f"{name.capitalize()} mail (simulated)",
            "endpoint_url": f"{base}/{name}",
            "health_url": f"{base}/{name}/health",
            "priority": priority,
            "kind": "simulated",
            "rate_limit_per_hour": 3600,
        }
        await setup.create_provider(org_id, integration, provider)


async def seed_sandbox_client(org_id) -> None:
    """The Sandbox provider of `./task dev` (devtools/sandbox.py), ready to connect."""
    from app.core.settings import get_settings
    from app.oauth import clients as oauth

    if get_settings().oauth.sandbox_url is None or "sandbox" in await oauth.clients(org_id):
        return
    secret = os.environ.get("INTIME_SANDBOX_CLIENT_SECRET", "sandbox-dev-secret")
    await oauth.save_client(org_id, "sandbox", {"client_id": "intime-dev", "client_secret": secret})
