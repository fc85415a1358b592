"""The token vault: client secrets and tokens are sealed with the key ring (app.core.crypto) and leave
the database readable only through here.

Each value is sealed under a context naming its row and kind, so a sealed access token copied into
another row, or into the refresh column, does not open: a database leak or a confused query cannot
hand one connection's token to another. Key rotation (app.core.keyrotation) re-seals under the same
contexts.
"""

from __future__ import annotations

import uuid

from app.core.crypto import DecryptionError, get_keyring
from app.oauth.errors import TokenUnavailable

# Token writes must survive a database crash, unlike the workers' other writes (tasks/broker.py): a
# rotated refresh token lost after the provider retired the old one cannot be recovered.
DURABLE = "SET LOCAL synchronous_commit = on"


def client_context(client_id: uuid.UUID) -> str:
    return f"oauth-client:{client_id}"


def token_context(connection_id: uuid.UUID, kind: str) -> str:
    return f"oauth-connection:{connection_id}:{kind}"


def seal_client_secret(client_id: uuid.UUID, secret: str) -> str:
    return get_keyring().seal(secret, client_context(client_id))


def open_client_secret(client_id: uuid.UUID, sealed: str) -> str:
    """Raises DecryptionError when it was sealed with a key that is no longer configured."""
    return get_keyring().open(sealed, client_context(client_id))


def seal_token(connection_id: uuid.UUID, kind: str, token: str) -> str:
    """`kind` is "access" or "refresh"."""
    return get_keyring().seal(token, token_context(connection_id, kind))


def open_token(connection_id: uuid.UUID, kind: str, sealed: str) -> str:
    """Raises DecryptionError when the key is gone or the value belongs to another row or kind."""
    return get_keyring().open(sealed, token_context(connection_id, kind))


def open_access(connection_id: uuid.UUID, sealed: str) -> str:
    """The access token for a caller, who can only act on "reconnect it", not on a crypto error."""
    try:
        return open_token(connection_id, "access", sealed)
    except DecryptionError as error:
        raise TokenUnavailable(f"the stored access token cannot be read ({error}): reconnect it") from None
