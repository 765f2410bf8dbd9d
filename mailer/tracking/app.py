"""The tracking endpoint as one ASGI app (Starlette): recipient routes (pixel, clicks,
unsubscribe), the website's routes (events API), the operator's (health and metrics), the
providers' bounce and complaint webhooks (returns/webhooks/), the marketer's report (/reports).
Opens and clicks go through a buffer written in batches; its last batch is written when the app
shuts down."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from mailer.returns.webhooks.routes import webhook_routes
from mailer.tracking.buffer import HitBuffer
from mailer.tracking.forms import FormRoutes
from mailer.tracking.hits import Hit
from mailer.tracking.operator import RequestCounting, operator_routes
from mailer.tracking.recipient import RecipientRoutes, is_pixel
from mailer.tracking.reports_page import report_routes
from mailer.tracking.surveys import survey_routes
from mailer.tracking.website import website_routes
from mailer.tracking.writer import HitWriter
from mailer.workspace import Workspace


def hit_buffer(workspace: Workspace) -> tuple[HitBuffer, HitWriter]:
    """The buffer, and the process that writes its batches."""
    tracking = workspace.settings.tracking
    writer = HitWriter(workspace.settings)

    async def write(hits: Sequence[Hit], batch: str) -> int:
        return await asyncio.wrap_future(writer.submit(hits, batch))

    return HitBuffer(write, tracking.flush_size, tracking.flush_every.total_seconds()), writer


class TrackingApp(Starlette):
    """Starlette, but `GET /o/TOKEN.gif` is answered before its middleware and routing: the
    open pixel is most of the requests, and those layers cost it more than the token check
    (bench/tracking_bench.py). `RecipientRoutes.pixel` counts it in /metrics itself."""

    def __init__(self, recipient: RecipientRoutes, **options: Any) -> None:
        super().__init__(**options)
        self.recipient = recipient

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_pixel(scope):
            await self.recipient.pixel(scope, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(workspace: Workspace) -> Starlette:
    hits, writer = hit_buffer(workspace)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        writing = asyncio.create_task(hits.run())
        leftovers = asyncio.create_task(forms.keep_recording_leftovers())
        # What start-up made lives as long as the process: the collector's full passes skip
        # it instead of walking it again and again (pauses that every request waits behind).
        gc.freeze()
        try:
            yield
        finally:
            await hits.close()  # what is waiting is written before the process ends
            writing.cancel()
            leftovers.cancel()
            writer.close()

    recipient, forms = RecipientRoutes(workspace, hits), FormRoutes(workspace)
    routes = [*recipient.routes(), *website_routes(workspace), *forms.routes(),
              *survey_routes(workspace), *operator_routes(workspace, hits),
              *webhook_routes(workspace), *report_routes(workspace)]  # fmt: skip
    app = TrackingApp(recipient, routes=routes, lifespan=lifespan)
    app.state.buffer, app.state.writer = hits, writer
    app.add_middleware(RequestCounting)  # every route but the pixel, which counts itself
    return app
