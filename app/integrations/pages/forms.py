"""The integration form: create an integration, rename or describe it, or delete it with its providers."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import flash, problems
from app.integrations import queries, setup


class IntegrationFormPages(Controller):
    path = "/integrations"
    include_in_schema = False
    guards = [admin_only]

    @get("/new", name="integrations:new")
    async def new_page(self) -> Template:
        return _integration_form({"name": "", "kind": "email", "description": ""}, {})

    @post("/new", name="integrations:create", status_code=200)
    async def create(self, request: Request) -> Template | Redirect:
        data = _integration_data(await request.form())
        try:
            integration_id = await setup.create_integration(principal_of(request).org_id, data)
        except problems.Problem as invalid:
            return _integration_form(data, field_errors(invalid), status_code=422)
        await flash.push(session_id_of(request), f"Created {data['name'].strip()}: now add its providers.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @get("/{integration_id:uuid}/edit", name="integrations:edit")
    async def edit_page(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template:
        [integration] = await queries.overview(principal_of(request).org_id, integration_id)
        return _integration_form(integration, {}, integration=integration)

    @post("/{integration_id:uuid}/edit", name="integrations:update", status_code=200)
    async def update(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template | Redirect:
        org_id = principal_of(request).org_id
        [integration] = await queries.overview(org_id, integration_id)
        data = _integration_data(await request.form())
        try:
            await setup.update_integration(org_id, integration_id, data)
        except problems.Problem as invalid:
            return _integration_form(data, field_errors(invalid), integration=integration, status_code=422)
        await flash.push(session_id_of(request), "Saved.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @post("/{integration_id:uuid}/delete", name="integrations:delete")
    async def remove(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Redirect:
        name = await setup.delete_integration(principal_of(request).org_id, integration_id)
        await flash.push(session_id_of(request), f"Deleted {name} with its providers and history.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:list"))


def field_errors(invalid: problems.Problem) -> dict[str, str]:
    """A refusal as the form shows it: each field's message beside it, or the detail above the form."""
    return {e["field"]: e["message"] for e in invalid.errors} or {"form": str(invalid.detail)}


def _integration_data(form: FormMultiDict) -> dict[str, Any]:
    return {name: str(form.get(name, "")) for name in setup.INTEGRATION_FIELDS}


def _integration_form(values: dict[str, Any], errors: dict[str, str], *, integration=None, status_code=200):
    context = {"values": values, "errors": errors, "integration": integration, "kinds": setup.KINDS}
    return Template("integrations/form.html", context=context, status_code=status_code)
