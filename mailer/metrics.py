"""What an operator watches at /metrics: this process's counters on a registry of mailer's own,
and the outbox's queues, counted in the database when scraped (never kept in memory).

Every label value comes from a closed set: route templates, campaign names of settings, result
and stage names. A request can neither add a series nor inject a sample, whatever its path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import wraps
from typing import Literal, ParamSpec, TypeVar, cast, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from mailer.config import Settings
from mailer.errors import MailerError
from mailer.listening import cannot_listen
from mailer.store.engine import reading
from mailer.store.tables import campaign_pauses, outbox

MessageResult = Literal["sent", "deferred", "failed", "bounced", "skipped", "released"]
RelayErrorKind = Literal["no_answer", "refused"]
OTHER = "other"  # a campaign no longer in settings (rows queued before it was removed)
QUEUES = ("queued", "deferred", "sending")  # outbox statuses counted at scrape time

# A `_created` sample beside every counter doubles the text for a timestamp Prometheus ignores.
# (prometheus_client leaves this one function unannotated.)
cast(Callable[[], None], disable_created_metrics)()
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "mailer_requests",
    "Requests to the tracking endpoint, by route template and status class",
    ["route", "code"],
    registry=REGISTRY,
)
MESSAGES = Counter(
    "mailer_messages",
    "Delivery results by campaign: sent, deferred (4xx, retried), failed, "
    "bounced (hard bounce, suppressed), skipped (consent gate 2), released (given back)",
    ["campaign", "result"],
    registry=REGISTRY,
)
RELAY_ERRORS = Counter(
    "mailer_relay_errors",
    "Relay attempts that got no answer or a refusal of the sender "
    "(not of one recipient), by SMTP stage",
    ["stage", "kind"],
    registry=REGISTRY,
)
RATE_HOLDS = Counter(
    "mailer_rate_holds",
    "Messages given back to the outbox for later because a rate limit had no token for them "
    "within a second, by limit: send (the overall [delivery] rate) or send:DOMAIN",
    ["limit"],
    registry=REGISTRY,
)
RATE_HELD = Gauge(
    "mailer_rate_limit_per_second",
    "The rate a limit held at this process's last take of its tokens: its own setting, or "
    "lower while another process on the database is set lower (send, or send:DOMAIN)",
    ["limit"],
    registry=REGISTRY,
)
INBOUND = Counter(
    "mailer_inbound_messages",
    "Messages `mailer inbound` stored and processed: processed (classified and acted on), "
    "unparseable (kept in its unparseable/ folder), failed (left in new/, tried at next start)",
    ["result"],
    registry=REGISTRY,
)
RATE_WAITED = Counter(
    "mailer_rate_wait_seconds",
    "Seconds messages waited in line for a rate limit's token (waits under a second; a longer "
    "one gives the message back: mailer_rate_holds), by limit: send or send:DOMAIN",
    ["limit"],
    registry=REGISTRY,
)
TICK_RESULTS = Counter(
    "mailer_tick_results",
    "What this process's ticks did, by kind: enrolled (new runs: this process held the "
    "enroller lock), queued, postponed, skipped, converted, exited, completed, expired "
    "(consents that lapsed), errors (due steps that failed)",
    ["kind"],
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "mailer_tick_seconds",
    "Duration of the scheduler's ticks (enroll and advance)",
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def campaign_label(settings: Settings, campaign: str | None) -> str:
    return campaign if campaign is not None and campaign in settings.campaigns else OTHER


def count_result(settings: Settings, campaign: str | None, ending: str, bounced: bool) -> None:
    """One message's result (`ending` of delivery.claims.Result)."""
    result = "bounced" if bounced else ending
    if result in get_args(MessageResult):
        MESSAGES.labels(campaign_label(settings, campaign), result).inc()


def expect_campaigns(settings: Settings) -> None:
    """Every campaign's results at 0 from the start, so rates work before the first send."""
    for campaign in settings.campaigns:
        for result in get_args(MessageResult):
            MESSAGES.labels(campaign, result)


P = ParamSpec("P")
T = TypeVar("T")


def count_tick(report: Mapping[str, int]) -> None:
    """One tick's report (campaigns.engine.TickReport.as_dict) added to mailer_tick_results."""
    for kind, count in report.items():
        TICK_RESULTS.labels(kind).inc(count)


def timed_tick(tick_job: Callable[P, T]) -> Callable[P, T]:
    """`tick_job`, its duration observed in mailer_tick_seconds."""

    @wraps(tick_job)
    def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return tick_job(*args, **kwargs)
        finally:
            TICK_SECONDS.observe(time.perf_counter() - started)

    return timed


DEPTH_HELP = "Messages in the outbox waiting to be sent (queued, deferred) or being sent"
PAUSED_HELP = "1 while a campaign's delivery is paused (mailer campaign resume NAME)"


class OutboxQueues(Collector):
    """Messages waiting in the outbox by status (index on status: one range each), and the
    paused campaigns, read from the database at each scrape."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        with reading(self.engine) as connection:
            query = select(outbox.c.status, func.count()).where(outbox.c.status.in_(QUEUES))
            rows = connection.execute(query.group_by(outbox.c.status))
            counts: dict[str, int] = {status: count for status, count in rows}
            paused = set(connection.scalars(select(campaign_pauses.c.campaign)))
        depth = GaugeMetricFamily("mailer_outbox_messages", DEPTH_HELP, labels=["status"])
        for status in QUEUES:
            depth.add_metric([status], counts.get(status, 0))
        held = GaugeMetricFamily("mailer_campaign_paused", PAUSED_HELP, labels=["campaign"])
        for campaign in self.settings.campaigns:
            held.add_metric([campaign], int(campaign in paused))
        yield depth
        yield held


class Exposition(Collector):
    """The process's registry and the collectors of one app, exposed together."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = [REGISTRY, *collectors]

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()

    def text(self) -> bytes:
        return generate_latest(self)


def serve_metrics(host: str, port: int, fix: str) -> WSGIServer:
    """This process's registry at http://host:port/metrics, served by prometheus_client's own
    server in a thread of its own (for a process without the tracking endpoint: `mailer
    inbound`); MailerError saying `fix` when the port cannot be had."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as error:
        raise MailerError(
            cannot_listen(host, port, error, "another mailer inbound?", fix)
        ) from None
    return server
