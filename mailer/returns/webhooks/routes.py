"""The webhook routes of the tracking app: `POST /webhooks/{ses,postmark,sendgrid,mailgun}`,
only for the providers [webhooks] enables (another answers 404).

Every refusal is JSON `{"error": "..."}`: 401 wrong or missing basic auth (Postmark), 403 a
signature that does not verify, 409 a replay (a call already received, or signed longer ago
than [webhooks] max_age), 400 not the provider's format, 413 over 5 MiB, 503 no key configured
or the database busy. A refused call changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailer.logs import logger
from mailer.returns.webhooks import ses
from mailer.returns.webhooks.mailgun import mailgun_call
from mailer.returns.webhooks.postmark import postmark_call
from mailer.returns.webhooks.receiving import MAX_BODY, Call, act_on
from mailer.returns.webhooks.sendgrid import sendgrid_call
from mailer.tracking.website import Refusal, read_body
from mailer.workspace import Workspace

Receive = Callable[[Request, bytes, datetime], Awaitable[dict[str, Any]]]


def webhook_routes(workspace: Workspace) -> list[BaseRoute]:
    settings = workspace.settings

    async def act(call: Call, now: datetime) -> dict[str, Any]:
        return await run_in_threadpool(act_on, workspace, call, now)

    async def receive_ses(request: Request, body: bytes, now: datetime) -> dict[str, Any]:
        message = ses.verified_message(settings, body, now)
        if message["Type"] == "Notification":
            return await act(ses.notification_call(message), now)
        await act(Call("ses", message["MessageId"], []), now)  # a replayed one is refused too
        if message["Type"] == "UnsubscribeConfirmation":
            logger.warning(f"SNS: topic {message.get('TopicArn')} unsubscribed this endpoint")
            return {"subscription": "unsubscribed"}
        return {"subscription": await run_in_threadpool(_confirm, workspace, message)}

    async def receive_postmark(request: Request, body: bytes, now: datetime) -> dict[str, Any]:
        return await act(postmark_call(settings, request.headers, body), now)

    async def receive_sendgrid(request: Request, body: bytes, now: datetime) -> dict[str, Any]:
        return await act(sendgrid_call(settings, request.headers, body, now), now)

    async def receive_mailgun(request: Request, body: bytes, now: datetime) -> dict[str, Any]:
        return await act(mailgun_call(settings, body, now), now)

    providers: dict[str, Receive] = {
        "ses": receive_ses, "postmark": receive_postmark,
        "sendgrid": receive_sendgrid, "mailgun": receive_mailgun,
    }  # fmt: skip
    hooks = settings.webhooks
    enabled = [name for name in providers if getattr(hooks, name).enabled]
    return [Route(f"/webhooks/{name}", _endpoint(workspace, providers[name]), methods=["POST"])
            for name in enabled]  # fmt: skip


def _endpoint(workspace: Workspace, receive: Receive) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_BODY)
            return JSONResponse(await receive(request, body, workspace.clock.now()))
        except Refusal as refusal:
            return refusal.response()
        except ClientDisconnect:
            return Response(status_code=400)
        except OperationalError:
            return Refusal(503, "the database is busy or unreachable: retry later",
                           headers={"Retry-After": "5"}).response()  # fmt: skip

    return endpoint


def _confirm(workspace: Workspace, message: dict[str, str]) -> str:
    """Visit the SubscribeURL when settings allow and it is AWS's; else log it for the
    operator to open (an SNS topic sends nothing until the subscription is confirmed)."""
    url = message.get("SubscribeURL", "")
    topic = message.get("TopicArn")
    if workspace.settings.webhooks.ses.confirm_subscriptions and ses.may_confirm(url):
        try:
            httpx.get(url, timeout=10).raise_for_status()
        except httpx.HTTPError as error:
            logger.warning(f"SNS: confirming {topic} failed ({error}); open {url}")
            return "not confirmed (logged)"
        logger.info(f"SNS: confirmed the subscription to {topic}")
        return "confirmed"
    logger.warning(f"SNS: to receive {topic}, confirm the subscription by opening {url}")
    return "logged"
