"""`python -m devtools`: the development commands (`./task dev`, `./task services`, demo and synthetic
data). Output and errors follow the admin CLI's rules (app.cli)."""

from __future__ import annotations

import argparse
import json
import uuid

from app import cli


async def seed(_: argparse.Namespace) -> str:
    from devtools import demo

    await demo.seed_demo()
    return ""


async def seed_deliveries(args: argparse.Namespace) -> str:
    from devtools import seed as seeding

    try:
        webhook_id = uuid.UUID(args.webhook)
    except ValueError:
        raise cli.CliError(f"--webhook {args.webhook!r} is not a webhook id") from None
    if not 1 <= args.count <= 50_000_000:
        raise cli.CliError("--count is between 1 and 50,000,000")
    try:
        return str(await seeding.seed_deliveries(webhook_id, args.count, days=args.days))
    except ValueError as error:
        raise cli.CliError(str(error)) from None


def services(args: argparse.Namespace) -> str:
    from app.core.settings import ROOT
    from devtools import embedded

    data_dir = ROOT / ".data"
    if args.action == "up":
        started = embedded.up(data_dir)
        return json.dumps({"database_url": started.database_url, "redis_url": started.redis_url})
    if args.action == "down":
        embedded.down(data_dir)
        return ""
    return json.dumps(embedded.status(data_dir))


def dev(args: argparse.Namespace) -> str:
    from devtools import devserver

    devserver.main(with_scheduler=not args.no_scheduler)
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools", description="InTime Integrations development tools")
    sub = parser.add_subparsers(dest="group", required=True)

    seed_parser = sub.add_parser("seed", help="create the demo organisation, users and integration (idempotent)")
    seed_parser.set_defaults(run=seed)
    seed_sub = seed_parser.add_subparsers(dest="what")
    p = seed_sub.add_parser(
        "deliveries", help="synthetic delivery history for a webhook (load tests); prints the count"
    )
    p.add_argument("--webhook", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--days", type=float, default=7.0)
    p.set_defaults(run=seed_deliveries)

    p = sub.add_parser("services", help="the embedded PostgreSQL and Redis under .data/")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(run=services, sync=True)

    p = sub.add_parser("dev", help="web + worker + scheduler, supervised (what ./task dev runs)")
    p.add_argument("--no-scheduler", action="store_true")
    p.set_defaults(run=dev, sync=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, build_parser())
