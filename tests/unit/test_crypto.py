"""Secrets at rest: unreadable without the key, readable after a new key is put in front."""

from __future__ import annotations

import os

import pytest

from app.core.crypto import DecryptionError, KeyRing


def test_sealed_value_opens_with_the_key_and_hides_the_plaintext():
    ring = KeyRing((os.urandom(32),))
    sealed = ring.seal("whsec_topsecret", context="webhook:1")
    assert "topsecret" not in sealed
    assert ring.open(sealed, context="webhook:1") == "whsec_topsecret"


def test_value_copied_to_another_row_does_not_open():
    ring = KeyRing((os.urandom(32),))
    sealed = ring.seal("secret", context="webhook:1")
    with pytest.raises(DecryptionError):
        ring.open(sealed, context="webhook:2")


def test_rotation_keeps_old_values_readable_and_marks_them_for_re_encryption():
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = KeyRing((old,)).seal("token")
    rotated = KeyRing((new, old))
    assert rotated.open(sealed_old) == "token"
    assert rotated.needs_rotation(sealed_old)
    assert not rotated.needs_rotation(rotated.seal("token"))


def test_without_the_key_or_after_tampering_nothing_opens():
    sealed = KeyRing((os.urandom(32),)).seal("token")
    with pytest.raises(DecryptionError, match="unknown key"):
        KeyRing((os.urandom(32),)).open(sealed)
    ring = KeyRing((os.urandom(32),))
    good = ring.seal("token")
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with pytest.raises(DecryptionError):
        ring.open(tampered)
