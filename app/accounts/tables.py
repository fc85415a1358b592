"""Organisations, their users and their API tokens."""

from __future__ import annotations

import enum

from piccolo.columns import (
    UUID,
    Array,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table


class Role(enum.StrEnum):
    admin = "admin"
    viewer = "viewer"


class Organization(Table, tablename="organizations"):
    id = UUID(primary_key=True)
    slug = Varchar(length=63, unique=True)
    name = Varchar(length=200)
    created_at = Timestamptz()


class User(Table, tablename="users"):
    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, index=True, null=False)
    # Stored lower-cased; unique across organisations because it is the sign-in name.
    email = Varchar(length=320, unique=True)
    name = Varchar(length=200, default="")
    password_hash = Text()
    role = Varchar(length=16, choices=Role, default=Role.viewer)
    is_active = Boolean(default=True)
    created_at = Timestamptz()
    last_login_at = Timestamptz(null=True, default=None)


class ApiToken(Table, tablename="api_tokens"):
    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, index=True, null=False)
    name = Varchar(length=100)
    # The first characters of the token, kept in clear so an admin can tell tokens apart.
    token_prefix = Varchar(length=16)
    # SHA-256 of the whole token: the token itself is shown once and never stored.
    token_hash = Varchar(length=64, unique=True)
    scopes = Array(base_column=Varchar(length=64))
    expires_at = Timestamptz(null=True, default=None)
    last_used_at = Timestamptz(null=True, default=None)
    rate_limit_per_hour = Integer(default=1000)
    created_by = ForeignKey(User, on_delete=OnDelete.set_null, null=True, default=None)
    created_at = Timestamptz()
    revoked_at = Timestamptz(null=True, default=None)
