"""Dramatiq actors. `dramatiq tasks` imports this package: the broker first, then every actor module."""

from tasks import broker  # noqa: F401, I001  (must come first: it sets the global broker)
from tasks import integrations, oauth, system, webhooks  # noqa: F401
