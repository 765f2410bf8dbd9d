"""The tracking endpoint as one ASGI app (Starlette): recipient routes (pixel, clicks,
unsubscribe), the website's routes (events API), health and metrics. Opens and clicks go
through a buffer written in batches; its last batch is written when the app shuts down."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import func, select, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mailer.store.tables import outbox
from mailer.tracking.buffer import HitBuffer
from mailer.tracking.forms import form_routes
from mailer.tracking.hits import Hit
from mailer.tracking.recipient import PixelShortcut, RecipientRoutes
from mailer.tracking.surveys import survey_routes
from mailer.tracking.website import website_routes
from mailer.tracking.writer import HitWriter
from mailer.workspace import Workspace


def hit_buffer(workspace: Workspace) -> tuple[HitBuffer, HitWriter]:
    """The buffer, and the process that writes its batches."""
    tracking = workspace.settings.tracking
    writer = HitWriter(workspace.settings)

    async def write(hits: Sequence[Hit]) -> int:
        return await asyncio.wrap_future(writer.submit(hits))

    return HitBuffer(write, tracking.flush_size, tracking.flush_every.total_seconds()), writer


class Counting:
    """Counts requests per route family (the first path segment) for /metrics."""

    def __init__(self, app: ASGIApp, counts: Counter[str]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.counts[scope["path"].split("/", 2)[1] or "root"] += 1
        await self.app(scope, receive, send)


def create_app(workspace: Workspace) -> Starlette:
    hits, writer = hit_buffer(workspace)
    requests: Counter[str] = Counter()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        writing = asyncio.create_task(hits.run())
        try:
            yield
        finally:
            await hits.close()  # what is waiting is written before the process ends
            writing.cancel()
            writer.close()

    async def healthz(_request: Request) -> Response:
        def ping() -> None:
            with workspace.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as error:
            return JSONResponse({"status": "database unreachable", "error": str(error)}, 503)
        return JSONResponse({"status": "ok", "buffered": len(hits.waiting)})

    async def metrics(_request: Request) -> Response:
        def sends() -> dict[str, int]:
            with workspace.engine.connect() as connection:
                rows = connection.execute(select(outbox.c.status, func.count())
                                          .group_by(outbox.c.status))  # fmt: skip
                return {status: count for status, count in rows}

        lines = ["# TYPE mailer_requests_total counter"]
        lines += [f'mailer_requests_total{{route="{route}"}} {count}'
                  for route, count in sorted(requests.items())]  # fmt: skip
        lines += ["# TYPE mailer_events_recorded_total counter",
                  f"mailer_events_recorded_total {hits.recorded}",
                  "# TYPE mailer_event_buffer_depth gauge",
                  f"mailer_event_buffer_depth {len(hits.waiting)}",
                  "# TYPE mailer_event_flush_seconds gauge",
                  f"mailer_event_flush_seconds {hits.last_flush_seconds:.6f}",
                  "# TYPE mailer_messages gauge"]  # fmt: skip
        by_status = await run_in_threadpool(sends)
        lines += [f'mailer_messages{{status="{status}"}} {count}'
                  for status, count in sorted(by_status.items())]  # fmt: skip
        return PlainTextResponse("\n".join(lines) + "\n",
                                 media_type="text/plain; version=0.0.4")  # fmt: skip

    recipient = RecipientRoutes(workspace, hits)
    routes = [*recipient.routes(), *website_routes(workspace), *form_routes(workspace),
              *survey_routes(workspace), Route("/healthz", healthz),
              Route("/metrics", metrics)]  # fmt: skip
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.buffer = hits
    app.add_middleware(PixelShortcut, routes=recipient)
    app.add_middleware(Counting, counts=requests)  # outermost: counts the pixel too
    return app
