"""`intime`: the admin CLI. Prints only the asked-for value on stdout, errors on stderr, exit 1 on error."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any


class CliError(Exception):
    pass


def _fail(message: str) -> None:
    raise CliError(message)


async def _with_db(work: Callable[[], Awaitable[Any]]) -> Any:
    from app.core import db
    from app.core.redis import close_redis

    await db.open_pool(max_size=2)
    try:
        return await work()
    finally:
        await db.close_pool()
        await close_redis()


# --- commands -----------------------------------------------------------------------------------------


async def org_create(args: argparse.Namespace) -> str:
    from app.accounts import services

    org = await services.create_organization(args.slug, args.name)
    return str(org.id)


async def user_create(args: argparse.Namespace) -> str:
    from app.accounts import services

    org = await services.get_organization(args.org)
    user = await services.create_user(org, args.email, args.password, args.role, args.name or "")
    return str(user.id)


async def token_create(args: argparse.Namespace) -> str:
    from app.accounts import services, tokens

    org = await services.get_organization(args.org)
    _, token = await tokens.create_token(
        org, args.name, args.scopes, expires_in_days=args.expires_in_days, rate_limit_per_hour=args.rate_limit
    )
    return token


async def events_publish(args: argparse.Namespace) -> str:
    from app.accounts import services as accounts
    from app.events import services

    def parse(raw: str | None, name: str) -> Any:
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as error:
            _fail(f"--{name} is not valid JSON: {error}")

    org = await accounts.get_organization(args.org)
    event_id = await services.publish(
        org.id,
        args.type,
        parse(args.payload, "payload"),
        aggregate_id=args.aggregate_id,
        metadata=parse(args.metadata, "metadata"),
    )
    return str(event_id)


async def events_erase(args: argparse.Namespace) -> str:
    """Erase the payload of one event or of every event of an aggregate; prints what was removed."""
    import uuid

    from app.accounts import services as accounts
    from app.core.problems import NotFound
    from app.lifecycle import erase

    option = "event-id" if args.event_id is not None else "aggregate-id"
    try:
        key = uuid.UUID(args.event_id if args.event_id is not None else args.aggregate_id)
    except ValueError:
        _fail(f"--{option} {args.event_id or args.aggregate_id!r} is not a UUID")
    org = await accounts.get_organization(args.org)
    named = {"event_id": key} if option == "event-id" else {"aggregate_id": key}
    try:
        done = await erase.erase(org.id, actor="cli", **named)
    except NotFound:
        _fail(f"no event {key} in the organisation {args.org!r}")
    return json.dumps(done.as_dict(), indent=2)


async def migrate(_: argparse.Namespace) -> str:
    """Every Piccolo migration, then the event catalog; Piccolo's report goes to stderr."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from app.events.catalog import sync_catalog

    with contextlib.redirect_stdout(sys.stderr):
        result = await run_forwards(app_name="all", migration_id="all", fake=False)
    if not result.success:
        _fail(f"migrations failed: {result.message}")
    synced = await sync_catalog()
    print(f"catalog: {synced['types']} event types, {synced['deprecated']} newly deprecated", file=sys.stderr)
    return ""


async def catalog_sync(_: argparse.Namespace) -> str:
    from app.events.catalog import sync_catalog

    return json.dumps(await sync_catalog())


async def stats_rebuild(args: argparse.Namespace) -> str:
    import uuid

    from app.webhooks import stats

    try:
        webhook_id = uuid.UUID(args.webhook)
    except ValueError:
        _fail(f"--webhook {args.webhook!r} is not a webhook id")
    return str(await stats.rebuild(webhook_id))


async def keys_rotate(_: argparse.Namespace) -> str:
    from app.core import keyrotation

    def progress(column: str, count: int) -> None:
        print(f"{column}: {count} re-sealed", file=sys.stderr, flush=True)

    done = await keyrotation.rotate(progress)
    return json.dumps(done)


async def prune(args: argparse.Namespace) -> str:
    """One pruning pass now (or, with --dry-run, what it would remove); the scheduler prunes on its own."""
    from app.lifecycle import prune as pruner

    report = await (pruner.would_remove() if args.dry_run else pruner.run_pass())
    return json.dumps(report, indent=2)


# --- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intime", description="InTime Integrations admin CLI")
    sub = parser.add_subparsers(dest="group", required=True)

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="action", required=True)
    p = org.add_parser("create", help="create an organisation; prints its id")
    p.add_argument("slug")
    p.add_argument("--name", required=True)
    p.set_defaults(run=org_create)

    user = sub.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    p = user.add_parser("create", help="create a user; prints its id")
    p.add_argument("--org", required=True, help="organisation slug")
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--role", required=True, choices=["admin", "viewer"])
    p.add_argument("--name")
    p.set_defaults(run=user_create)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    p = token.add_parser("create", help="create an API token; prints the token (shown only here)")
    p.add_argument("--org", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--scopes", required=True, help="comma-separated, e.g. events:write,webhooks:read")
    p.add_argument("--expires-in-days", type=int, default=None)
    p.add_argument("--rate-limit", type=int, default=1000, help="requests per hour (default 1000)")
    p.set_defaults(run=token_create)

    events = sub.add_parser("events", help="the event bus").add_subparsers(dest="action", required=True)
    p = events.add_parser("publish", help="publish an event; prints its id")
    p.add_argument("type")
    p.add_argument("--org", required=True)
    p.add_argument("--aggregate-id")
    p.add_argument("--payload", required=True, help="a JSON object")
    p.add_argument("--metadata", help="a JSON object")
    p.set_defaults(run=events_publish)
    p = events.add_parser(
        "erase", help="erase the payload of an event, or of all of an aggregate's events (GDPR); prints a summary"
    )
    p.add_argument("--org", required=True, help="organisation slug")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--aggregate-id", help="every event of this aggregate")
    which.add_argument("--event-id", help="this one event")
    p.set_defaults(run=events_erase)

    catalog = sub.add_parser("catalog", help="the event-type catalog").add_subparsers(dest="action", required=True)
    catalog.add_parser("sync", help="load catalog.toml into the database").set_defaults(run=catalog_sync)

    sub.add_parser("migrate", help="run every migration and sync the catalog").set_defaults(run=migrate)
    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(dest="action", required=True)
    keys.add_parser(
        "rotate", help="re-seal every secret with the newest key of INTIME_ENCRYPTION_KEYS (resumable)"
    ).set_defaults(run=keys_rotate)
    stats_parser = sub.add_parser("stats", help="delivery statistics").add_subparsers(dest="action", required=True)
    p = stats_parser.add_parser("rebuild", help="recompute a webhook's hourly stats from its attempts")
    p.add_argument("--webhook", required=True)
    p.set_defaults(run=stats_rebuild)

    p = sub.add_parser("prune", help="remove what is past its retention now (one pass); prints what went")
    p.add_argument("--dry-run", action="store_true", help="print what would go, remove nothing")
    p.set_defaults(run=prune)

    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Runs one command of `parser` (the admin CLI's unless given): output on stdout, errors on stderr."""
    args = (parser or build_parser()).parse_args(argv)
    from app.accounts.services import AccountError
    from app.core.crypto import DecryptionError
    from app.core.settings import SettingsError
    from app.events.services import EventError

    try:
        sync = getattr(args, "sync", False)
        output = args.run(args) if sync else asyncio.run(_with_db(lambda: args.run(args)))
    except (CliError, AccountError, EventError, SettingsError, DecryptionError) as error:
        print(f"intime: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"intime: cannot reach a service: {error}", file=sys.stderr)
        return 1
    if output:
        print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
