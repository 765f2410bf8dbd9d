"""`GET /reports`: the campaign report (reports/html.py) for a marketer's browser, behind HTTP
basic auth with the credentials of `[reports]`. Without a username and a password in settings
the page does not exist (404): it is never served open.

Query: `campaign`, `since`, `until` (ISO times, UTC unless given) and `include_machine`, as
`mailer report` takes them. The report is counted per request, in a worker thread (it reads the
database and draws charts), and is never cached on the way (`Cache-Control: no-store`). An IP
that sends wrong credentials too often is answered 429 for a while, right ones included: counted
in the token buckets every instance shares (store/limits.py), IPv6 by its /64.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from mailer.clock import parse_moment
from mailer.config import Settings
from mailer.logs import logger
from mailer.reports.html import render_report
from mailer.reports.metrics import UnknownCampaignError, build_report
from mailer.store.engine import reading
from mailer.store.limits import Limit, SharedLimits
from mailer.tracking.per_ip import bucket_of
from mailer.workspace import Workspace

FAILURES_ALLOWED = 10  # wrong credentials from one IP within FAILURE_WINDOW, then 429
FAILURE_WINDOW = timedelta(minutes=5)  # and blocked this long from the one that was too many
# FAILURES_ALLOWED saved up, one more every FAILURE_WINDOW / FAILURES_ALLOWED (30 s).
FAILURES = Limit(FAILURES_ALLOWED / FAILURE_WINDOW.total_seconds(), FAILURES_ALLOWED)
BLOCK = Limit(1 / FAILURE_WINDOW.total_seconds(), 1)  # taken: blocked until it is back
CHALLENGE = {"WWW-Authenticate": 'Basic realm="mailer reports", charset="UTF-8"'}
NOT_STORED = {"Cache-Control": "no-store"}
# The page has no script and fetches nothing: a browser may run and fetch nothing either.
PAGE_HEADERS = {
    **NOT_STORED,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
YES, NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class PageProblem(Exception):
    """A request /reports answers with an error: its status and a sentence saying why."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}

    def response(self) -> Response:
        return PlainTextResponse(self.text + "\n", self.status, {**NOT_STORED, **self.headers})


@dataclass(frozen=True)
class ReportQuery:
    campaign: str | None
    since: datetime | None
    until: datetime | None
    include_machine: bool


def credentials(settings: Settings) -> bytes | None:
    """`username:password` as basic auth sends it, or None when settings give no username or
    no password (the page is then not served)."""
    reports = settings.reports
    password = reports.password.get_secret_value().strip() if reports.password else ""
    if not password and reports.password_file is not None:
        file = settings.path(reports.password_file)
        try:
            password = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise PageProblem(
                503,
                f"cannot read {file} (reports.password_file): make it a "
                "readable text file, or set MAILER_REPORTS__PASSWORD",
            ) from None
    if not reports.username or not password:
        return None
    return f"{reports.username}:{password}".encode()


def sent_credentials(authorization: str) -> bytes:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        return b""


def parse_query(params: Any) -> ReportQuery:
    """The query string as `mailer report`'s options; 400 naming the parameter when wrong."""
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        text = (params.get(name) or "").strip()
        try:
            moments[name] = parse_moment(text) if text else None
        except ValueError:
            raise PageProblem(
                400,
                f"{name}={text!r} is not an ISO time: write e.g. 2026-11-01 or 2026-11-01T09:00Z",
            ) from None
    machine = (params.get("include_machine") or "").strip().lower()
    if machine not in YES + NO:
        raise PageProblem(400, f"include_machine={machine!r}: write 1 or 0")
    return ReportQuery((params.get("campaign") or "").strip() or None, moments["since"],
                       moments["until"], machine in YES)  # fmt: skip


class FailedLogins:
    """Wrong credentials by client, in two token buckets of the database shared by every
    instance: FAILURES counts them; the failure that empties it takes BLOCK, and the client
    is answered 429 until BLOCK is back (FAILURE_WINDOW). A bucket expires by time only, so
    no number of other failing addresses clears a block. Times: the workspace's clock."""

    def __init__(self, engine: Engine) -> None:
        self.limits = SharedLimits(engine)

    def blocked_for(self, ip: str, now: datetime) -> int:
        """Whole seconds `ip` is still blocked (0: not blocked); one read."""
        try:
            wait = self.limits.waiting(bucket_of(ip, "reports-block"), BLOCK, now.timestamp())
        except SQLAlchemyError as error:  # the report cannot be read either: it says so
            logger.warning(f"/reports: the wrong-password limit could not be read: {error}"[:300])
            return 0
        return math.ceil(round(wait, 6))

    def failed(self, ip: str, now: datetime) -> None:
        counted = bucket_of(ip, "reports-ip")
        moment = now.timestamp()
        if self.limits.take({counted: (FAILURES, 1)}, moment)[counted].wait > 0:
            block = bucket_of(ip, "reports-block")  # that one emptied it: blocked from now
            self.limits.take({block: (BLOCK, 1)}, moment)


def report_page(workspace: Workspace, query: ReportQuery) -> str:
    """The page, counted from the database now (run in a worker thread)."""
    with reading(workspace.engine) as connection:
        report = build_report(connection, workspace.settings, campaign=query.campaign,
                              since=query.since, until=query.until,
                              include_machine=query.include_machine,
                              now=workspace.clock.now())  # fmt: skip
    return render_report(report)


def report_routes(workspace: Workspace) -> list[BaseRoute]:
    failures = FailedLogins(workspace.engine)

    async def reports(request: Request) -> Response:
        try:
            expected = credentials(workspace.settings)
            if expected is None:
                raise PageProblem(404, "Not Found")
            ip, now = request.client.host if request.client else "", workspace.clock.now()
            if blocked := await run_in_threadpool(failures.blocked_for, ip, now):
                wait = {"Retry-After": str(blocked)}
                raise PageProblem(429, "too many wrong credentials: try again later", wait)
            given = sent_credentials(request.headers.get("authorization", ""))
            if not hmac.compare_digest(given, expected):
                if "authorization" in request.headers:
                    await run_in_threadpool(failures.failed, ip, now)
                raise PageProblem(401, "the report needs the username and password of "
                                  "[reports] in settings", CHALLENGE)  # fmt: skip
            query = parse_query(request.query_params)
            try:
                page = await run_in_threadpool(report_page, workspace, query)
            except UnknownCampaignError as error:
                raise PageProblem(404, str(error)) from None
        except PageProblem as problem:
            return problem.response()
        return HTMLResponse(page, headers=PAGE_HEADERS)

    return [Route("/reports", reports, methods=["GET"])]
