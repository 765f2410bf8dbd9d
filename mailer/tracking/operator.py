"""The operator's side of the tracking endpoint: /healthz, /metrics, and every request counted
by its route template (a path that matches no route is `unmatched`: junk adds no series)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.config import PRIMARY_RELAY
from mailer.delivery import relay_watch
from mailer.delivery.pauses import paused_campaigns
from mailer.delivery.relay_board import RelayGauges, downs_by_name
from mailer.delivery.relays import Down, down_news
from mailer.metrics import REQUESTS, Exposition, OutboxQueues, expect_campaigns
from mailer.returns.breakers import Reading, ReturnGauges
from mailer.returns.breakers import readings as breaker_readings
from mailer.store.engine import reading
from mailer.tracking.buffer import HitBuffer
from mailer.tracking.health import EventBacklog, Reason, health_body, reasons
from mailer.workspace import Workspace

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that answered (`/c/{token}`), never the path itself."""
    route = scope.get("route")
    return UNMATCHED if route is None else str(getattr(route, "path", UNMATCHED))


class RequestCounting:
    """mailer_requests_total by route template and status class (2xx, 4xx, ...)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what Starlette answers when the app raised before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            REQUESTS.labels(route_template(scope), f"{status // 100}xx").inc()


class EventBufferMetrics(Collector):
    """The buffer of opens and clicks, read when scraped."""

    def __init__(self, hits: HitBuffer) -> None:
        self.hits = hits

    def collect(self) -> Iterator[Metric]:
        hits = self.hits
        yield CounterMetricFamily(
            "mailer_events_recorded",
            "Opens and clicks written to the database",
            value=hits.recorded,
        )
        yield CounterMetricFamily(
            "mailer_event_write_failures",
            "Batches of opens and clicks the database refused (kept for the next try)",
            value=hits.failed_writes,
        )
        yield GaugeMetricFamily(
            "mailer_event_buffer_depth",
            "Opens and clicks waiting in memory for the event writer",
            value=len(hits.waiting),
        )
        yield GaugeMetricFamily(
            "mailer_event_flush_seconds",
            "Duration of the last write of opens and clicks",
            value=hits.last_flush_seconds,
        )


def backlog(workspace: Workspace, hits: HitBuffer) -> EventBacklog:
    """What is answered but not written: the hits waiting and the batch being written (a
    write that hangs, the database locked, leaves few waiting but ages its batch)."""
    return EventBacklog(
        len(hits.waiting) + hits.writing,
        hits.high_water,
        hits.oldest_unwritten(),
        workspace.settings.tracking.flush_every,
        hits.last_failure,
    )


def operator_routes(workspace: Workspace, hits: HitBuffer) -> list[BaseRoute]:
    exposition = Exposition(
        [
            OutboxQueues(workspace.engine, workspace.settings),
            EventBufferMetrics(hits),
            RelayGauges(workspace.engine, workspace.settings),
            ReturnGauges(workspace.engine, workspace.settings, workspace.clock),
        ]
    )
    expect_campaigns(workspace.settings)

    def paused() -> tuple[dict[str, str], list[Reading], dict[str, Down]]:
        with reading(workspace.engine) as connection:
            rates = breaker_readings(connection, workspace.settings, workspace.clock.now())
            downs = downs_by_name(connection, workspace.settings)
            return paused_campaigns(connection), rates, downs

    async def healthz(_request: Request) -> Response:
        """200 while the endpoint can do its job, `degraded` with the reasons in the body;
        503 only when the database is unreachable (unsubscribes cannot be recorded)."""
        events = backlog(workspace, hits)
        relay = relay_watch.standing(workspace.settings.smtp)
        try:
            campaigns, rates, downs = await run_in_threadpool(paused)
        except Exception as error:
            down = Reason("database_unreachable", f"{type(error).__name__}: {error}"[:300])
            body = health_body([down], events, relay) | {"status": "down"}
            return JSONResponse(body, 503)
        now = workspace.clock.now()
        relay = relay_watch.recorded_down(relay, downs.get(PRIMARY_RELAY))  # any process's
        found = reasons(relay, campaigns, events, now, rates, down_news(workspace.settings, downs))
        return JSONResponse(health_body(found, events, relay))

    async def metrics(_request: Request) -> Response:
        text = await run_in_threadpool(exposition.text)  # the queues are counted in SQL
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz), Route("/metrics", metrics)]
