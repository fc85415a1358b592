"""Secrets at rest: AES-256-GCM with a key ring, newest key first.

A sealed value is `v1.<key id>.<base64(nonce || ciphertext || tag)>`. The key id (first 8 hex digits of
the key's SHA-256) says which key opens it, so old rows stay readable after a new key is put in front,
and a re-encryption pass (`intime keys rotate`) can find the rows that still use an old key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.core.settings import get_settings

VERSION = "v1"


class DecryptionError(ValueError):
    """The value was sealed with a key we no longer hold, or was altered."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class KeyRing:
    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self._primary = keys[0]
        self._by_id = {key_id(key): AESGCM(key) for key in keys}
        self.primary_id = key_id(self._primary)

    def seal(self, plaintext: str, context: str = "") -> str:
        """Encrypt; `context` (e.g. "webhook:<id>") is bound as associated data, so a sealed value
        copied to another row does not open there."""
        nonce = os.urandom(12)
        sealed = self._by_id[self.primary_id].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{VERSION}.{self.primary_id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str = "") -> str:
        try:
            version, kid, payload = token.split(".", 2)
            raw = base64.urlsafe_b64decode(payload)
        except ValueError:
            raise DecryptionError("not a sealed value") from None
        if version != VERSION or kid not in self._by_id:
            raise DecryptionError(f"sealed with unknown key {kid!r}")
        try:
            return self._by_id[kid].decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise DecryptionError("sealed value does not authenticate") from None

    def needs_rotation(self, token: str) -> bool:
        return token.split(".", 2)[1:2] != [self.primary_id]


@lru_cache(maxsize=1)
def get_keyring() -> KeyRing:
    return KeyRing(get_settings().security.encryption_keys)
