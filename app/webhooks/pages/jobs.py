"""A bulk job's progress bar: a self-replacing widget that polls while the job runs."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate

from app.accounts.auth import principal_of
from app.webhooks import bulk

# htmx's "stop polling" status: a finished job's widget answers it, and the browser stops asking.
HX_STOP_POLLING = 286


class JobPages(Controller):
    path = "/jobs"
    include_in_schema = False

    @get("/{job_id:uuid}", name="jobs:progress")
    async def job(self, request: HTMXRequest, job_id: FromPath[uuid.UUID]) -> Response:
        job = await bulk.get_job(principal_of(request).org_id, job_id)
        if job is None:
            raise NotFoundException("No such job.")
        # Finished, the widget renders without its polling trigger and answers 286, htmx's "stop polling".
        status = HX_STOP_POLLING if job.status in ("done", "failed") else 200
        return HTMXTemplate(
            template_name="webhooks/partials/job_progress.html", context={"job": job}, status_code=status
        )
