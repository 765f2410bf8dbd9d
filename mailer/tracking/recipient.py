"""The routes a recipient's mail program and browser reach: the open pixel, click redirects,
and the unsubscribe page with its preference centre (RFC 8058 one-click included).

Every token is checked before anything else; one that is malformed, forged, signed with a
retired key or names no message gets a plain 404 page: never a redirect, never a 500.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from prometheus_client import Counter
from sqlalchemy import bindparam, select
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope, Send

from mailer.consent.evidence import SentMessage, request_evidence
from mailer.consent.person import consent_overview, withdraw
from mailer.delivery.claims import outbox_id, token_outbox_id
from mailer.metrics import REQUESTS
from mailer.render.links import HONEYPOT
from mailer.store.engine import reading
from mailer.store.tables import contacts, outbox
from mailer.tokens import TokenError, verify
from mailer.tracking.buffer import HitBuffer
from mailer.tracking.confirmation import ConfirmationMail
from mailer.tracking.forms import Lead, store_lead
from mailer.tracking.hits import Hit
from mailer.tracking.pages import done_page, not_found_page, preferences_page
from mailer.webhooks_out import WebhookEvent, enqueue
from mailer.workspace import Workspace

# The smallest transparent GIF (43 bytes).
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
            "Pragma": "no-cache", "Expires": "0"}  # fmt: skip
PIXEL_HEADERS = [(b"content-type", b"image/gif"), (b"content-length", b"43"),
                 *((k.lower().encode(), v.encode()) for k, v in NO_CACHE.items())]  # fmt: skip
LINK_CACHE = 10_000  # messages whose click targets are kept in memory
# Pixel tokens verified, and user agents decoded, kept: an image proxy or a mail client
# fetches the same pixel again and again (bench/tracking_bench.py: 9 requests in 10). Only
# genuine tokens, and agents up to AGENT_KEPT_BYTES, so that forged or huge requests cannot
# fill the memory (at most ~25 MB in all).
TOKENS_KEPT, AGENTS_KEPT, AGENT_KEPT_BYTES = 65_536, 4_096, 512
NOT_UNSUBSCRIBE = ("not an unsubscribe request: a one-click POST carries "
                   "List-Unsubscribe=One-Click (RFC 8058)")  # fmt: skip


PIXEL_ROUTE = "/o/{token}.gif"
PIXEL_METHODS = ("GET", "HEAD")
# The pixel's answer as ASGI messages, built once (uvicorn reads them, never changes them).
PIXEL_START = {"type": "http.response.start", "status": 200, "headers": PIXEL_HEADERS}
PIXEL_BODY = {"type": "http.response.body", "body": PIXEL}
NO_BODY = {"type": "http.response.body", "body": b""}  # HEAD
# Built once: a message's first click reads its links, and building the statement each time
# cost as much as the rest of the read (bench/tracking_bench.py's clicks, most of them first).
LINKS_OF = select(outbox.c.links).where(outbox.c.id == bindparam("message"))


def is_pixel(scope: Scope) -> bool:
    """`GET /o/TOKEN.gif` (or HEAD): the open pixel, which `RecipientRoutes.pixel` answers."""
    path: str = scope["path"]
    return path[:3] == "/o/" and path[-4:] == ".gif" and scope["method"] in PIXEL_METHODS


@functools.cache
def _pixels_answered(status: str) -> Counter:
    """The pixel's series of mailer_requests_total, made at its first request (as
    operator.RequestCounting's are) and looked up once."""
    return REQUESTS.labels(PIXEL_ROUTE, status)


class RecipientRoutes:
    def __init__(self, workspace: Workspace, buffer: HitBuffer) -> None:
        self.workspace = workspace
        self.buffer = buffer
        self.keys = workspace.renderer.keys
        self.links: dict[int, list[str] | None] = {}
        self.confirmations = ConfirmationMail(workspace)
        self.opened: dict[str, str] = {}  # genuine pixel token -> its message key
        self.agents: dict[bytes, str] = {}
        self.answered: Counter | None = None  # the pixel's 2xx series, once made

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/c/{token}", self.click, methods=["GET", "HEAD"]),
            Route("/u/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/u/{token}", self.unsubscribe, methods=["POST"]),
            # The footer's "Manage your preferences": the same token, the same buttons.
            Route("/p/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/p/{token}", self.unsubscribe, methods=["POST"]),
        ]

    async def pixel(self, scope: Scope, send: Send) -> None:
        """`GET /o/TOKEN.gif`, answered before Starlette's middleware and routing (app.py): the
        hottest route, kept lean, counted in mailer_requests_total here. The GIF whatever the
        token (a broken image helps nobody); only a genuine token records an open. When the
        buffer is far behind the database, the answer waits for it to catch up rather than
        the buffer growing without end."""
        try:
            method = scope["method"]
            token = scope["path"][3:-4]
            key = self.opened.get(token)
            if key is None:
                key = self._verified(token)
            if key is not None:
                buffer = self.buffer
                if buffer.full():
                    await buffer.room()
                header = b""
                for name, value in scope["headers"]:
                    if name == b"user-agent":
                        header = value
                        break
                agent = self.agents.get(header)
                if agent is None:
                    agent = self._decoded(header)
                client = scope.get("client") or ("", 0)
                buffer.add(Hit("open", key, None, self.workspace.clock.now(), agent, client[0],
                               method))  # fmt: skip
        except BaseException:  # as Starlette counts a request that raised before answering
            _pixels_answered("5xx").inc()
            raise
        (self.answered or self._first_answer()).inc()
        await send(PIXEL_START)
        await send(PIXEL_BODY if method == "GET" else NO_BODY)

    def _first_answer(self) -> Counter:
        self.answered = _pixels_answered("2xx")
        return self.answered

    def _verified(self, token: str) -> str | None:
        """The message key of a genuine pixel token, or None. A genuine token's answer never
        changes (its keys are the process's), so it is kept in `opened`; a forged one is
        checked every time (kept, a flood of them would fill the memory)."""
        try:
            [key] = verify(self.keys, "open", token)
        except (TokenError, ValueError):
            return None
        if len(self.opened) >= TOKENS_KEPT:
            self.opened.clear()
        self.opened[token] = key
        return key

    def _decoded(self, header: bytes) -> str:
        """The user agent as text, kept in `agents`: one object per distinct agent, which the
        batch sent to the writer pickles once, however many of its hits carry it."""
        if len(header) > AGENT_KEPT_BYTES:
            return header.decode("latin-1")
        if len(self.agents) >= AGENTS_KEPT:
            self.agents.clear()
        agent = self.agents[header] = header.decode("latin-1")
        return agent

    async def click(self, request: Request) -> Response:
        try:
            key, index_text = verify(self.keys, "click", request.path_params["token"])
            index = int(index_text)
        except (TokenError, ValueError):
            return not_found_page()
        message = outbox_id(key)
        links = await self._links(message) if message is not None else None
        if not links or not 0 <= index < len(links):
            return not_found_page()
        client = request.client.host if request.client else ""
        agent = request.headers.get("user-agent", "")
        await self.buffer.room()  # as a pixel does: what a SIGKILL can lose stays bounded
        self.buffer.add(Hit("click", key, index, self.workspace.clock.now(), agent, client,
                            request.method))  # fmt: skip
        if links[index] == HONEYPOT:  # a machine followed the hidden link: nowhere to go
            return PlainTextResponse("", headers=NO_CACHE)
        # Only to a URL that was in the sent message: the token says which, never the request.
        return RedirectResponse(links[index], status_code=302, headers=NO_CACHE)

    async def _links(self, message: int) -> list[str] | None:
        if message not in self.links:
            if len(self.links) >= LINK_CACHE:
                self.links.clear()
            self.links[message] = await run_in_threadpool(self._read_links, message)
        return self.links[message]

    def _read_links(self, message: int) -> list[str] | None:
        with reading(self.workspace.engine) as connection:
            stored = connection.scalar(LINKS_OF, {"message": message})
        return list(json.loads(stored)) if stored else None

    # -- unsubscribe and preferences: never buffered, committed before the answer ------------

    async def unsubscribe_page(self, request: Request) -> Response:
        """No action on GET: mail scanners fetch links. A page with one button (on /u/), and
        the contact's lists, each to leave or join."""
        subscriber = await self._subscriber(request)
        if subscriber is None:
            return not_found_page()
        return preferences_page(request.url.path, subscriber, self._list_titles())

    async def unsubscribe(self, request: Request) -> Response:
        subscriber = await self._subscriber(request)
        if subscriber is None:
            return not_found_page()
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"  # RFC 8058 section 3.2
        action = "unsubscribe" if one_click else str(form.get("action", ""))
        lists = [name for name, _ in subscriber["lists"]]
        if action == "unsubscribe":
            targets: list[str] | None = [subscriber["list"]] if subscriber["list"] else None
        elif action == "all":
            targets = None
        elif action.startswith("leave:") and action[6:] in lists:
            targets = [action[6:]]
        elif action.startswith("join:") and action[5:] in lists and not subscriber["suppressed"]:
            return await self._join(request, subscriber, action[5:])
        else:
            return PlainTextResponse(NOT_UNSUBSCRIBE, status_code=400)
        page = "preferences" if request.url.path.startswith("/p/") else "unsubscribe-page"
        via = "one-click" if one_click else page
        said = request_evidence(request, subscriber["message"], self.workspace.clock.now(), via)
        await run_in_threadpool(self._withdraw, subscriber, targets, said, via)
        if one_click:
            return PlainTextResponse("unsubscribed")
        updated = await self._subscriber(request)
        assert updated is not None
        return done_page(request.url.path, updated, self._list_titles(), targets)

    async def _join(self, request: Request, subscriber: dict[str, Any],
                    list_name: str) -> Response:  # fmt: skip
        """(Re)join a list from the page, as the lead form does: a grant with its evidence,
        pending on a double opt-in list until the emailed link is clicked."""
        now = self.workspace.clock.now()
        evidence = json.loads(request_evidence(request, subscriber["message"], now, "preferences"))
        evidence |= {"consent_text_version": "preference-page", "form_id": "preferences",
                     "source": "form"}  # fmt: skip
        lead = Lead(subscriber["email"], list_name, "preference-page", form_id="preferences")
        joined = await run_in_threadpool(store_lead, self.workspace, lead, evidence, now)
        title = self._list_titles()[list_name]
        task = None
        if joined is not None:  # pending, or left before: only the emailed link lifts that
            said = f"We emailed you a link: click it to confirm {title}."
            if self.confirmations.due(joined, list_name, now):
                task = BackgroundTask(self.confirmations.send, joined, lead, now)
        else:
            said = f"You are subscribed to {title}."
        updated = await self._subscriber(request)
        assert updated is not None
        response = preferences_page(request.url.path, updated, self._list_titles(), said)
        response.background = task
        return response

    def _withdraw(self, subscriber: dict[str, Any], targets: list[str] | None,
                  evidence: str, via: str) -> None:  # fmt: skip
        """Withdraw `targets` (None: every list, and suppress); a list already left appends
        nothing (and queues no `unsubscribed` webhook), so a repeated request is harmless,
        even one at the same moment."""
        workspace = self.workspace
        now = workspace.clock.now()
        with workspace.engine.begin() as connection:
            # withdraw reads the status under the ledger's lock, not the page's earlier read:
            # two POSTs at once would otherwise both see the list still held and both append.
            lists: list[str | None] = list(targets) if targets is not None else [None]
            left = [name for name in lists
                    if withdraw(connection, workspace.key, subscriber["email"],
                                workspace.double_opt_in, now, list_name=name,
                                source="unsubscribe", evidence=evidence)]  # fmt: skip
            enqueue(connection, workspace.settings, "unsubscribed",
                    (WebhookEvent(now, outbox_id=subscriber["message"].outbox_id,
                                  data={"list": name, "via": via}) for name in left))  # fmt: skip

    async def _subscriber(self, request: Request) -> dict[str, Any] | None:
        message = token_outbox_id(self.keys, "unsubscribe", request.path_params["token"])
        return None if message is None else await run_in_threadpool(self._read_subscriber, message)

    def _read_subscriber(self, message: int) -> dict[str, Any] | None:
        settings = self.workspace.settings
        with reading(self.workspace.engine) as connection:
            row = connection.execute(
                select(outbox.c.campaign, outbox.c.step, contacts.c.email)
                .join(contacts, contacts.c.id == outbox.c.contact_id)
                .where(outbox.c.id == message)
            ).first()  # fmt: skip
            if row is None:
                return None
            overview = consent_overview(connection, self.workspace.key, row.email,
                                        list(settings.lists))  # fmt: skip
        campaign = settings.campaigns.get(row.campaign)
        lists = [(held.list, held.status) for held in overview.lists if held.list in settings.lists]
        suppression = overview.suppression.reason if overview.suppression else None
        return {"email": row.email, "list": campaign.list_name if campaign else None,
                "lists": lists, "suppressed": suppression,
                "message": SentMessage(message, row.campaign, row.step)}  # fmt: skip

    def _list_titles(self) -> dict[str, str]:
        return {name: spec.title for name, spec in self.workspace.settings.lists.items()}
