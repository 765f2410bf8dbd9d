"""The landing page's lead form and its double opt-in: `POST /subscribe` and `GET /confirm/...`.

    POST /subscribe                       (application/x-www-form-urlencoded, multipart or JSON)
    email=ada@example.com&first_name=Ada&list=newsletter&consent=yes
        &consent_text_version=2026-11&form_id=footer&website=

    200  the same answer for every address on that list: "Check your inbox to confirm" on a
         double opt-in list, "Thank you" on the others (JSON `{"result": "check_inbox" |
         "thank_you", "message": ...}` when the request was JSON)
    400  a field is wrong, named in the page (JSON `{"error": ..., "field": ...}`)
    413  over 16 KiB · 415 another content type · 429 over 5 requests a minute from one IP
         (`Retry-After`) · 503 the database is busy or unreachable (`Retry-After: 5`)

`consent` is the ticked box ("yes", "on" or "true"); `consent_text_version` names the wording
the person agreed to; `website` is a honeypot that people never see: when it holds anything,
the answer is the usual one and nothing is recorded. The answer never tells whether the
address was known, subscribed or suppressed (no enumeration); the confirmation email goes out
after it, in the background, so the time taken tells nothing either.

A grant is appended to the ledger (source "form", evidence: at, ip, user agent, consent text
version, form id) where the address has no consent on the list or withdrew it: filling the form
again is a new opt-in, `pending` on a double opt-in list until confirmed. A suppressed address
(hard bounce, complaint, erasure, opt-out of everything) is never re-subscribed from a form:
nothing is recorded. A form never overwrites a name already held (anyone can type anyone's
address); it only fills in missing ones.

    GET /confirm/<token>    token = sign(keys, "confirm", contact_id, list, expires_epoch)

    200  "You're subscribed": a pending grant is confirmed (entry `confirmed`, source "form",
         evidence at, ip, user agent), or was already; a second visit appends nothing
    410  the link is older than 7 days, or there is nothing pending to confirm (withdrawn since)
    404  a forged or malformed token, or a contact erased since

The link confirms on GET, as most senders' links do: one click is what people expect, and a
page with a second button loses real confirmations. Mail scanners that fetch every link may
confirm instead of the person; they fetch only links of mail that reached the mailbox, so the
address did receive our request, and the confirmation's evidence keeps the user agent, so an
auditor can tell. HEAD requests (what many scanners send first) never confirm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any, Literal
from urllib.parse import parse_qsl

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import OperationalError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailer.consent.ledger import NewEntry, canonical_evidence
from mailer.consent.records import current_statuses, record
from mailer.consent.state import SENDABLE, Status, status_after
from mailer.consent.suppressions import suppressed
from mailer.contacts.addresses import InvalidAddress, address_hash, normalise_address
from mailer.delivery.throttle import TokenBucket
from mailer.store.tables import contacts, ledger_head, lists, memberships
from mailer.store.upsert import upsert
from mailer.tokens import TokenError, verify
from mailer.tracking.confirmation import CONFIRM_VALID, ConfirmationMail
from mailer.tracking.pages import not_found_page, page
from mailer.workspace import Workspace

MAX_BODY = 16 * 1024
TICKED = frozenset({"yes", "on", "true"})
PER_IP_RATE, PER_IP_BURST = 5 / 60, 5  # form posts per second and saved up, per client IP
RATE_LIMITED_IPS = 10_000  # buckets kept in memory before they are dropped


class FormProblem(Exception):
    """A request the form refuses: its status, the field at fault (if one) and why."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Lead:
    """One form submission, validated: the address in mailer's normal form."""

    email: str
    list_name: str
    consent_text_version: str
    first_name: str | None = None
    last_name: str | None = None
    form_id: str | None = None


def _text(fields: Mapping[str, Any], name: str, limit: int, required: bool = False) -> str:
    value = fields.get(name)
    if isinstance(value, bool):
        value = "true" if value else "false"
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FormProblem(400, f"{name}: must be text", name)
    value = value.strip()
    if required and not value:
        raise FormProblem(400, f"{name}: is required", name)
    if len(value) > limit:
        raise FormProblem(400, f"{name}: at most {limit} characters", name)
    # Control characters (NUL, line breaks) have no place in a name or a label.
    if any(ord(char) < 32 or 0x7F <= ord(char) < 0xA0 for char in value):
        raise FormProblem(400, f"{name}: contains control characters", name)
    return value


def parse_lead(fields: Mapping[str, Any], known_lists: Collection[str]) -> Lead:
    """The lead a form carries; FormProblem (400, naming the field) for the first thing wrong."""
    address = _text(fields, "email", 320, required=True)
    try:
        email = normalise_address(address)
    except (InvalidAddress, UnicodeError) as error:
        raise FormProblem(400, f"email: {error}", "email") from None
    list_name = _text(fields, "list", 100, required=True)
    if list_name not in known_lists:
        raise FormProblem(400, f"list: '{list_name}' is not a list of ours", "list")
    if _text(fields, "consent", 10).lower() not in TICKED:
        raise FormProblem(400, "consent: tick the box to agree to receive our emails", "consent")
    version = _text(fields, "consent_text_version", 100, required=True)
    return Lead(email, list_name, version, _text(fields, "first_name", 200) or None,
                _text(fields, "last_name", 200) or None,
                _text(fields, "form_id", 100) or None)  # fmt: skip


@dataclass(frozen=True)
class Subscriber:
    contact_id: int
    email: str
    first_name: str | None
    last_name: str | None
    status: Status  # on the lead's list, after the submission


def _lock_ledger(connection: Connection) -> None:
    """Serialise with every other ledger writer before reading a status that decides an
    append, so two requests at once cannot both append (SQLite: BEGIN IMMEDIATE did)."""
    connection.execute(select(ledger_head.c.last_id).where(ledger_head.c.id == 1)
                       .with_for_update())  # fmt: skip


def store_lead(workspace: Workspace, lead: Lead, evidence: dict[str, Any],
               now: datetime) -> Subscriber | None:  # fmt: skip
    """Contact, membership and grant of one lead, committed; None for a suppressed address
    (nothing recorded)."""
    hashed = address_hash(workspace.key, lead.email)
    with workspace.engine.begin() as connection:
        _lock_ledger(connection)
        if suppressed(connection, [hashed]):
            return None
        contact_id, first_name, last_name = _saved_contact(connection, lead, now)
        list_id = connection.scalar(select(lists.c.id).where(lists.c.name == lead.list_name))
        source = f"form:{lead.form_id}" if lead.form_id else "form"
        upsert(connection, memberships, [{"list_id": list_id, "contact_id": contact_id,
                                          "joined_at": now, "source": source}],
               keys=("list_id", "contact_id"))  # fmt: skip
        status = current_statuses(connection, lead.list_name, [contact_id]).get(contact_id, "none")
        if status in ("none", "withdrawn"):  # a grant on record is not repeated
            entry = NewEntry(hashed, contact_id, lead.list_name, "granted", "form", now,
                             canonical_evidence(evidence))  # fmt: skip
            record(connection, [entry], workspace.double_opt_in, now)
            status = status_after(status, "granted", workspace.double_opt_in[lead.list_name])
    return Subscriber(contact_id, lead.email, first_name, last_name, status)


def _saved_contact(connection: Connection, lead: Lead,
                   now: datetime) -> tuple[int, str | None, str | None]:  # fmt: skip
    query = select(contacts.c.id, contacts.c.first_name, contacts.c.last_name).where(
        contacts.c.email == lead.email
    )
    row = connection.execute(query).first()
    if row is None:
        upsert(connection, contacts, [{"email": lead.email, "first_name": lead.first_name,
                                       "last_name": lead.last_name, "attributes": {},
                                       "created_at": now, "updated_at": now}],
               keys=("email",))  # fmt: skip
        row = connection.execute(query).one()
    missing = {name: given for name, given in (("first_name", lead.first_name),
                                               ("last_name", lead.last_name))
               if given and not getattr(row, name)}  # fmt: skip
    if missing:
        connection.execute(update(contacts).where(contacts.c.id == row.id)
                           .values(**missing, updated_at=now))  # fmt: skip
    names = {"first_name": row.first_name, "last_name": row.last_name} | missing
    return row.id, names["first_name"], names["last_name"]


Confirmation = Literal["confirmed", "already", "lapsed", "unknown"]


def confirm_subscription(workspace: Workspace, contact_id: int, list_name: str,
                         evidence: dict[str, Any], now: datetime) -> Confirmation:  # fmt: skip
    """Confirm a pending grant, committed. "already": subscribed before, nothing appended;
    "lapsed": nothing pending (withdrawn since); "unknown": erased or suppressed since."""
    with workspace.engine.begin() as connection:
        _lock_ledger(connection)
        email = connection.scalar(select(contacts.c.email).where(contacts.c.id == contact_id))
        if email is None:
            return "unknown"
        hashed = address_hash(workspace.key, email)
        if suppressed(connection, [hashed]):
            return "unknown"
        status = current_statuses(connection, list_name, [contact_id]).get(contact_id, "none")
        if status in SENDABLE:
            return "already"
        if status != "pending":
            return "lapsed"
        entry = NewEntry(hashed, contact_id, list_name, "confirmed", "form", now,
                         canonical_evidence(evidence))  # fmt: skip
        record(connection, [entry], workspace.double_opt_in, now)
    return "confirmed"


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


class FormRoutes:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.mail = ConfirmationMail(workspace)
        self.buckets: dict[str, TokenBucket] = {}

    def routes(self) -> list[BaseRoute]:
        return [Route("/subscribe", self.subscribe, methods=["POST"]),
                Route("/confirm/{token}", self.confirm, methods=["GET"])]  # fmt: skip

    def _over_limit(self, ip: str) -> float:
        """Seconds until this IP may post again (0: now, and a token is taken)."""
        now = self.workspace.clock.now().timestamp()
        if ip not in self.buckets and len(self.buckets) >= RATE_LIMITED_IPS:
            self.buckets.clear()
        bucket = self.buckets.setdefault(ip, TokenBucket(PER_IP_RATE, PER_IP_BURST))
        wait = bucket.wait(now)
        if wait == 0:
            bucket.take(now)
        return wait

    async def subscribe(self, request: Request) -> Response:
        is_json = _media_type(request) == "application/json"
        wait = self._over_limit(_client(request))
        if wait > 0:
            return _problem(FormProblem(429, "too many requests: try again in a minute"),
                            is_json, {"Retry-After": str(math.ceil(wait))})  # fmt: skip
        try:
            fields = await _fields(request)
            if str(fields.get("website") or "").strip():  # the honeypot: a bot filled it in
                list_name = fields.get("list")
                known = isinstance(list_name, str) and list_name in self.workspace.settings.lists
                return self._answer(list_name if known else None, is_json)
            lead = parse_lead(fields, self.workspace.settings.lists)
        except FormProblem as problem:
            return _problem(problem, is_json)
        except ClientDisconnect:
            return Response(status_code=400)
        now = self.workspace.clock.now()
        evidence = {"at": now.isoformat(), "ip": _client(request),
                    "user_agent": request.headers.get("user-agent", ""),
                    "consent_text_version": lead.consent_text_version,
                    "form_id": lead.form_id, "source": "form"}  # fmt: skip
        try:
            subscriber = await run_in_threadpool(store_lead, self.workspace, lead, evidence, now)
        except OperationalError:
            return _problem(FormProblem(503, "we cannot take your subscription right now: "
                                             "try again in a minute"), is_json,
                            {"Retry-After": "5"})  # fmt: skip
        response = self._answer(lead.list_name, is_json)
        if (subscriber is not None and subscriber.status == "pending"
                and self.mail.due(subscriber, lead.list_name, now)):  # fmt: skip
            response.background = BackgroundTask(self.mail.send, subscriber, lead.list_name, now)
        return response

    def _answer(self, list_name: str | None, is_json: bool) -> Response:
        """The one answer for every address on the list; it depends on nothing else."""
        spec = self.workspace.settings.lists.get(list_name or "")
        title = spec.title if spec else "our emails"
        if spec is None or spec.double_opt_in:
            result, heading = "check_inbox", "Check your inbox to confirm"
            said = (f"To finish subscribing to {title}, open the email we have just sent and "
                    f"click its link (it works for {CONFIRM_VALID.days} days). Nothing after a "
                    "few minutes? Look in the spam folder. If you were already subscribed, "
                    "there is nothing more to do.")  # fmt: skip
        else:
            result, heading = "thank_you", "Thank you"
            said = f"Thank you for subscribing to {title}."
        if is_json:
            return JSONResponse({"result": result, "message": said})
        return page(heading, f"<h1>{escape(heading)}</h1>\n<p>{escape(said)}</p>")

    async def confirm(self, request: Request) -> Response:
        lists_ = self.workspace.settings.lists
        try:
            contact_text, list_name, expires_text = verify(
                self.workspace.renderer.keys, "confirm", request.path_params["token"]
            )
            contact_id, expires = int(contact_text), int(expires_text)
        except (TokenError, ValueError):
            return not_found_page()
        if list_name not in lists_:
            return not_found_page()
        now = self.workspace.clock.now()
        if now.timestamp() > expires:
            return _expired_page()
        title = lists_[list_name].title
        if request.method == "HEAD":  # scanners look before they fetch: never a confirmation
            return _subscribed_page(title)
        evidence = {"at": now.isoformat(), "ip": _client(request),
                    "user_agent": request.headers.get("user-agent", "")}  # fmt: skip
        outcome = await run_in_threadpool(confirm_subscription, self.workspace, contact_id,
                                          list_name, evidence, now)  # fmt: skip
        if outcome == "unknown":
            return not_found_page()
        if outcome == "lapsed":
            return _expired_page()
        return _subscribed_page(title)


def _subscribed_page(title: str) -> Response:
    return page("You're subscribed", "<h1>You're subscribed</h1>\n<p>Thank you: your "
                f"subscription to {escape(title)} is confirmed.</p>")  # fmt: skip


def _expired_page() -> Response:
    return page("Link expired", "<h1>This link has expired: subscribe again</h1>\n<p>Nothing "
                "was changed. Fill in the form again and we will send you a new link.</p>",
                status_code=410)  # fmt: skip


def _problem(problem: FormProblem, is_json: bool,
             headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    if is_json:
        body = {"error": problem.message, "field": problem.field}
        return JSONResponse(body, problem.status, headers)
    response = page("Please check the form", "<h1>Please check the form</h1>\n<p role=alert>"
                    f"{escape(problem.message)}</p>\n<p>Go back to the form, correct it and "
                    "send it again.</p>", problem.status)  # fmt: skip
    response.headers.update(headers or {})
    return response


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def _fields(request: Request) -> dict[str, Any]:
    """The submitted fields: form-encoded, multipart (no files) or a JSON object."""
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        try:
            form = await request.form(max_files=0, max_fields=20, max_part_size=MAX_BODY)
        except MultiPartException as error:
            raise FormProblem(400, f"the form cannot be read: {error.message}") from None
        return {name: value for name, value in form.items() if isinstance(value, str)}
    if media_type not in ("application/x-www-form-urlencoded", "application/json", ""):
        raise FormProblem(415, "send the form as application/x-www-form-urlencoded, "
                               "multipart/form-data or application/json")  # fmt: skip
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise FormProblem(413, f"the form is over {MAX_BODY // 1024} KiB")
    try:
        text = body.decode("utf-8")
        if media_type != "application/json":
            return dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormProblem(400, "the form cannot be read (not UTF-8, or not JSON)") from None
    if not isinstance(document, dict):
        raise FormProblem(400, "send one JSON object of fields")
    return document


def form_routes(workspace: Workspace) -> list[BaseRoute]:
    return FormRoutes(workspace).routes()
