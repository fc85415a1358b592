"""Integration pages, one module per screen: the list with health at a glance (`listing`), the form
that creates or changes an integration (`forms`), each integration's failover panel (`panel`) and its
providers' form and actions (`providers`). The forms are checked by app.integrations.setup, as the
API is."""

from __future__ import annotations

from app.integrations.pages.forms import IntegrationFormPages
from app.integrations.pages.listing import IntegrationListPage
from app.integrations.pages.panel import FailoverPanelPage
from app.integrations.pages.providers import ProviderPages

ROUTES = [IntegrationListPage, IntegrationFormPages, FailoverPanelPage, ProviderPages]
