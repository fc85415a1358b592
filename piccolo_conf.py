"""Piccolo's entry point: the engine and the registry of domain apps (each with its migrations)."""

from piccolo.conf.apps import AppRegistry

from app.core.db import make_engine

DB = make_engine()

APP_REGISTRY = AppRegistry(
    apps=[
        "app.accounts.piccolo_app",
        "app.events.piccolo_app",
        "app.webhooks.piccolo_app",
        "app.oauth.piccolo_app",
        "app.integrations.piccolo_app",
        "app.lifecycle.piccolo_app",
    ]
)
