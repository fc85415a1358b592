"""The OAuth domain's failures, shared by the connect flow, refresh, disconnect and their callers
(pages, the API, integration calls), so each can tell "fix the settings" from "reconnect" from "gone"."""

from __future__ import annotations

import uuid

from app.core import fields, problems

NotFound = problems.NotFound


class OAuthInvalid(fields.Invalid):
    """Client settings that cannot be saved."""


class ConnectFailed(Exception):
    """The connect flow stopped; the message is for the admin: what happened and what to do."""

    def __init__(self, message: str, org_id: uuid.UUID | None = None) -> None:
        super().__init__(message)
        self.org_id = org_id


class TokenUnavailable(Exception):
    """No usable access token: the connection needs reconnecting, was disconnected, or refreshing failed."""
