"""Organisations, users, passwords and sign-in. No HTTP here: pages, API and CLI all call these."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from asyncpg import UniqueViolationError

from app.accounts import ratelimit
from app.accounts.tables import Organization, Role, User
from app.core.settings import get_settings

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()
# Argon2 is slow on purpose (tens of ms of CPU and 64 MiB per check). On the event loop, a few dozen
# sign-ins a second would stall every page and API call of the process; so checks and hashes run in a
# pool of their own (argon2 releases the GIL), one core short of the machine so the loop keeps one,
# which also caps the memory a burst of sign-ins can take. Extra sign-ins wait in its queue.
_HASHING = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="argon2")
# Verifying against this when the account does not exist keeps the answer time the same, so timing
# does not tell an attacker which e-mail addresses have accounts.
_DUMMY_HASH = _hasher.hash("not a real password, only here to spend the same time")


class AccountError(ValueError):
    """Bad input for an account operation; `field` names the form field it belongs to."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TooManyAttempts(AccountError):
    def __init__(self, retry_after: int) -> None:
        minutes = max(1, round(retry_after / 60))
        super().__init__(
            f"Too many failed sign-in attempts. Try again in about {minutes} minute{'s' if minutes > 1 else ''}."
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user (pages) or an API token (JSON API), always within one organisation."""

    org_id: uuid.UUID
    org_slug: str
    org_name: str
    role: str
    user_id: uuid.UUID | None = None
    email: str | None = None
    token_id: uuid.UUID | None = None
    scopes: frozenset[str] = frozenset()

    @property
    def actor(self) -> str:
        """Who did it, for audit rows: the user's email, or the API token."""
        return self.email or f"API token {self.token_id}"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin.value


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_HASHING, _hasher.hash, password)


async def _password_matches(stored_hash: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.get_running_loop().run_in_executor(_HASHING, check)


async def create_organization(slug: str, name: str) -> Organization:
    slug = slug.strip().lower()
    if not SLUG_RE.match(slug):
        raise AccountError("A slug is 1-63 lower-case letters, digits and inner hyphens (e.g. acme-staffing).", "slug")
    if not name.strip():
        raise AccountError("The organisation needs a name.", "name")
    org = Organization(slug=slug, name=name.strip())
    try:
        await org.save()
    except UniqueViolationError:
        raise AccountError(f"An organisation with the slug {slug!r} already exists.", "slug") from None
    return org


async def get_organization(slug: str) -> Organization:
    org = await Organization.objects().where(Organization.slug == slug.strip().lower()).first()
    if org is None:
        raise AccountError(f"No organisation has the slug {slug!r}.", "org")
    return org


async def create_user(org: Organization, email: str, password: str, role: str, name: str = "") -> User:
    email = email.strip().lower()
    if not EMAIL_RE.match(email):
        raise AccountError(f"{email!r} is not an e-mail address.", "email")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.", "password")
    if role not in {r.value for r in Role}:
        raise AccountError("The role is admin or viewer.", "role")
    user = User(org=org.id, email=email, name=name.strip(), password_hash=await hash_password(password), role=role)
    try:
        await user.save()
    except UniqueViolationError:
        raise AccountError(f"A user with the e-mail {email} already exists.", "email") from None
    return user


async def authenticate(email: str, password: str, client_ip: str) -> User:
    """Check a sign-in; failures count per account and per client address, and past the limit the
    password is not even checked, so guessing cannot go on quietly."""
    security = get_settings().security
    email = email.strip().lower()
    limit, window = security.login_max_failures, security.login_window_seconds
    for key in (f"login-fail:acct:{email}", f"login-fail:ip:{client_ip}"):
        state = await ratelimit.recent_events(key, limit, window)
        if state.count >= limit:
            raise TooManyAttempts(state.reset_in)

    user = await User.objects().where(User.email == email).first() if email else None
    matches = await _password_matches(user.password_hash if user else _DUMMY_HASH, password)
    ok = matches and user is not None and user.is_active
    if not ok or user is None:
        await ratelimit.record_event(f"login-fail:acct:{email}", window)
        await ratelimit.record_event(f"login-fail:ip:{client_ip}", window)
        raise AccountError("The e-mail or password is not right.")

    await ratelimit.forget(f"login-fail:acct:{email}")
    updates: dict = {User.last_login_at: datetime.now(UTC)}
    if _hasher.check_needs_rehash(user.password_hash):
        updates[User.password_hash] = await hash_password(password)
    await User.update(updates).where(User.id == user.id)
    return user


async def principal_for_user(user_id: uuid.UUID | str) -> Principal | None:
    """Re-read on every request, so a deactivated user or a changed role takes effect at once."""
    row = (
        await User.select(
            User.id,
            User.email,
            User.role,
            User.is_active,
            User.org.as_alias("org_id"),
            User.org.slug.as_alias("org_slug"),
            User.org.name.as_alias("org_name"),
        )
        .where(User.id == user_id)
        .first()
    )
    if row is None or not row["is_active"]:
        return None
    return Principal(
        org_id=row["org_id"],
        org_slug=row["org_slug"],
        org_name=row["org_name"],
        role=row["role"],
        user_id=row["id"],
        email=row["email"],
    )
