"""The admin CLI: only the asked-for value on stdout, errors on stderr, exit 1 on error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from app.accounts.tables import ApiToken, Organization, User
from app.accounts.tokens import hash_token
from app.events.tables import Event
from tests.conftest import ROOT


def intime(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )


async def test_org_user_token_and_event_from_the_command_line():
    org = intime("org", "create", "acme", "--name", "Acme Staffing")
    assert org.returncode == 0, org.stderr
    assert uuid.UUID(org.stdout.strip())
    assert (await Organization.objects().get(Organization.slug == "acme")).name == "Acme Staffing"

    user = intime(
        "user",
        "create",
        "--org",
        "acme",
        "--email",
        "Ops@Acme.test",
        "--password",
        "long-enough-pw",
        "--role",
        "viewer",
    )
    assert user.returncode == 0, user.stderr
    stored = await User.objects().get(User.id == user.stdout.strip())
    assert stored.email == "ops@acme.test" and stored.role == "viewer"
    assert "long-enough-pw" not in stored.password_hash

    token = intime("token", "create", "--org", "acme", "--name", "ci", "--scopes", "events:write,webhooks:read")
    assert token.returncode == 0, token.stderr
    value = token.stdout.strip()
    assert value.startswith("itk_") and "\n" not in value
    assert await ApiToken.exists().where(ApiToken.token_hash == hash_token(value))

    event = intime("events", "publish", "job.created", "--org", "acme", "--payload", json.dumps({"title": "RN"}))
    assert event.returncode == 0, event.stderr
    assert (await Event.objects().get(Event.id == event.stdout.strip())).event_type == "job.created"


async def test_cli_errors_go_to_stderr_with_exit_1(factory):
    await factory.org(slug="taken")
    cases = [
        (["org", "create", "taken", "--name", "Again"], "already exists"),
        (["org", "create", "Bad Slug", "--name", "X"], "slug"),
        (
            [
                "user",
                "create",
                "--org",
                "nowhere",
                "--email",
                "a@b.test",
                "--password",
                "long-enough-pw",
                "--role",
                "admin",
            ],
            "No organisation has the slug 'nowhere'",
        ),
        (
            [
                "user",
                "create",
                "--org",
                "taken",
                "--email",
                "a@b.test",
                "--password",
                "short",
                "--role",
                "admin",
            ],
            "at least 10 characters",
        ),
        (["token", "create", "--org", "taken", "--name", "x", "--scopes", "events:delete"], "Unknown scope"),
        (["events", "publish", "job.created", "--org", "taken", "--payload", "{not json"], "not valid JSON"),
        (["events", "publish", "job.created", "--org", "taken", "--payload", "[1]"], "must be a JSON object"),
        (["events", "publish", "job.nope", "--org", "taken", "--payload", "{}"], "Unknown event type"),
    ]
    for args, message in cases:
        result = intime(*args)
        assert result.returncode == 1, args
        assert result.stdout == "", args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
