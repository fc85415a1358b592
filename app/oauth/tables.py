"""OAuth clients (an organisation's app credentials per provider), connections (the tokens an
organisation granted us) and the connections' history, which outlives a disconnect for audit."""

from __future__ import annotations

import enum

from piccolo.columns import JSONB, UUID, ForeignKey, Integer, OnDelete, Text, Timestamptz, Varchar
from piccolo.table import Table

from app.accounts.tables import Organization, User


class ConnectionStatus(enum.StrEnum):
    active = "active"
    refreshing = "refreshing"
    needs_reauth = "needs_reauth"  # the provider refused the refresh token (invalid_grant): reconnect
    revoked = "revoked"  # disconnected: tokens deleted, the row kept for its history
    error = "error"  # refreshing keeps failing for a transient reason; retried with backoff


class OAuthClient(Table, tablename="oauth_clients"):
    """The organisation's own client id and secret at one provider (one row per provider)."""

    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    provider = Varchar(length=40)
    client_id = Text()
    # Sealed (app.core.crypto) with context "oauth-client:<id>"; never shown again after saving.
    client_secret = Text()
    # Requested scopes, space-separated; empty: the provider's defaults.
    scopes = Text(default="")
    # The generic provider's endpoints (authorize_url, token_url, revoke_url, userinfo_url, issuer,
    # jwks_url); empty for the built-in providers, whose endpoints are in providers.toml.
    endpoints = JSONB(default="{}")
    created_at = Timestamptz()
    updated_at = Timestamptz()


class OAuthConnection(Table, tablename="oauth_connections"):
    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    provider = Varchar(length=40)
    # The account at the provider (OIDC `sub`, or the provider's user id) and how to show it.
    account_id = Text()
    account_label = Text(default="")
    scopes_requested = Text(default="")
    scopes_granted = Text(default="")
    # Sealed with context "oauth-connection:<id>:access" / ":refresh"; null once disconnected.
    access_token = Text(null=True, default=None)
    refresh_token = Text(null=True, default=None)
    token_type = Varchar(length=20, default="Bearer")
    expires_at = Timestamptz(null=True, default=None)  # null: the provider gave no expiry
    status = Varchar(length=16, default=ConnectionStatus.active)
    last_refreshed_at = Timestamptz(null=True, default=None)
    # When the scheduler will next refresh it (expiry minus the margin, or later after a failure).
    next_refresh_at = Timestamptz(null=True, default=None)
    refresh_enqueued_at = Timestamptz(null=True, default=None)
    refresh_failures = Integer(default=0)
    # Bumped by every write of tokens (connect, refresh, disconnect): a refresh saves its result only if
    # nothing else wrote tokens since it read them, and a refused refresh token only counts as
    # needs_reauth if it is still the stored one.
    token_generation = Integer(default=0)
    last_error = Text(null=True, default=None)
    connected_by = ForeignKey(User, db_column_name="connected_by", on_delete=OnDelete.set_null, null=True)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    revoked_at = Timestamptz(null=True, default=None)


class OAuthConnectionEvent(Table, tablename="oauth_connection_events"):
    """What happened to a connection: connected, refreshed, refresh_failed, needs_reauth, disconnected."""

    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    connection = ForeignKey(OAuthConnection, db_column_name="connection_id", on_delete=OnDelete.cascade, null=False)
    kind = Varchar(length=24)
    detail = Text(default="")
    actor = Text(default="system")  # the admin's email, "api token <name>", or "system"
    at = Timestamptz()
