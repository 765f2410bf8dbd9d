"""The landing page's lead form and its double opt-in: `POST /subscribe` and `GET /confirm/...`.

    POST /subscribe                       (application/x-www-form-urlencoded, multipart or JSON)
    email=ada@example.com&first_name=Ada&list=newsletter&consent=yes
        &consent_text_version=2026-11&form_id=footer&website=

    200  the same answer, body and headers, for every address on that list (new, known,
         subscribed, withdrawn, suppressed): "Check your inbox to confirm" on a double opt-in
         list, "Thank you" on the others (JSON `{"result": "check_inbox" | "thank_you",
         "message": ...}` when the request was JSON)
    400  a field is wrong, named in the page (JSON `{"error": ..., "field": ...}`); a list that
         settings do not open to forms (`forms = true`) is wrong, and nothing is written
    413  over 16 KiB · 415 another content type · 429 over 5 requests a minute from one IP
         (an IPv6 client: its /64), counted across every instance (`Retry-After`)
    503  the database did not take the post: nothing recorded, try again (`Retry-After`)

`consent` is the ticked box ("yes", "on" or "true"); `consent_text_version` names the wording
the person agreed to; `website` is a honeypot that people never see: when it holds anything,
the answer is the usual one and nothing is recorded. The answer is written before anything
about the address is looked up: the look-up, the writes and the confirmation email are queued
behind it (Starlette's background task), and the connection closes with the answer, so neither
the answer nor its timing tells whether the address is held. Before the answer the post is
written down (store/form_posts.py, a plain insert whatever the address): a process that dies before
its record leaves it to any serving process, which records it a minute later. A database that
does not take that insert gets `503` with `Retry-After`: nothing was recorded, and the person
is told to try again.

Anyone can type anyone's address, so a form only ever adds an opt-in where there was none:
- no consent on the list: a grant is appended (source "form", evidence: at, ip, user agent,
  consent text version, form id), `granted` at once on a single opt-in list, `pending` with a
  confirmation email on a double opt-in one;
- withdrawn (on any list, double opt-in or not) or still pending: nothing is written, and a
  confirmation email asks the mailbox; only its link lifts the opt-out;
- subscribed already: nothing; suppressed (hard bounce, complaint, erasure, opt-out of
  everything): nothing, and no email;
- a new contact's names are kept as data; an existing contact's data is never changed; no name
  from a form goes into the confirmation email (it is addressed to the bare address).

    GET /confirm/<token>    token = sign(keys, "confirm", contact_id, list, expires_epoch,
                                         basis, requested_epoch, consent_text_version, form_id)

    200  "You're subscribed": a pending grant is confirmed (entry `confirmed`, source "form",
         evidence at, ip, user agent), or was already; a second visit appends nothing. A
         withdrawal is lifted only while it is the `basis` the link was sent for: a grant
         (evidence: requested at, consent text version, form id) then the confirmation
    410  the link is older than 7 days, or there is nothing it may confirm (withdrawn since)
    404  a forged or malformed token, or a contact erased since

The link confirms on GET, as most senders' links do: one click is what people expect, and a
page with a second button loses real confirmations. Mail scanners that fetch every link may
confirm instead of the person; they fetch only links of mail that reached the mailbox, so the
address did receive our request, and the confirmation's evidence keeps the user agent, so an
auditor can tell. HEAD requests (what many scanners send first) never confirm.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from html import escape
from typing import Any, Literal, cast
from urllib.parse import parse_qsl

from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailer.consent.ledger import NewEntry, canonical_evidence
from mailer.consent.person import find_person
from mailer.consent.records import lock_ledger, record
from mailer.consent.standing import Standing, standings
from mailer.consent.state import SENDABLE, Action, Status
from mailer.consent.suppressions import suppressed
from mailer.contacts.addresses import InvalidAddress, address_hash, normalise_address
from mailer.errors import MailerError
from mailer.logs import logger
from mailer.store import form_posts
from mailer.store.tables import contacts, lists, memberships
from mailer.store.upsert import upsert
from mailer.tokens import TokenError, verify
from mailer.tracking.confirmation import CONFIRM_VALID, ConfirmationMail, ConfirmLink
from mailer.tracking.pages import not_found_page, page
from mailer.tracking.per_ip import PerIpLimit
from mailer.webhooks_out import WebhookEvent, enqueue
from mailer.workspace import Workspace

MAX_BODY = 16 * 1024
TICKED = frozenset({"yes", "on", "true"})


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


def parse_lead(fields: Mapping[str, Any], open_lists: Collection[str]) -> Lead:
    """The lead a form carries; FormProblem (400, naming the field) for the first thing wrong.
    `open_lists`: the lists settings open to forms (a closed one reads as an unknown one)."""
    address = _text(fields, "email", 320, required=True)
    try:
        email = normalise_address(address)
    except (InvalidAddress, UnicodeError) as error:
        raise FormProblem(400, f"email: {error}", "email") from None
    list_name = _text(fields, "list", 100, required=True)
    if list_name not in open_lists:
        raise FormProblem(400, f"list: '{list_name}' is not a list you can join here", "list")
    if _text(fields, "consent", 10).lower() not in TICKED:
        raise FormProblem(400, "consent: tick the box to agree to receive our emails", "consent")
    version = _text(fields, "consent_text_version", 100, required=True)
    return Lead(email, list_name, version, _text(fields, "first_name", 200) or None,
                _text(fields, "last_name", 200) or None,
                _text(fields, "form_id", 100) or None)  # fmt: skip


@dataclass(frozen=True)
class Subscriber:
    """Whose mailbox a confirmation email asks, and what its link may confirm."""

    contact_id: int
    email: str
    status: Status  # on the lead's list: pending, or withdrawn (only the mailbox may lift it)
    basis: int  # the ledger entry behind that status: the link confirms only while it stands


def store_lead(workspace: Workspace, lead: Lead, evidence: dict[str, Any],
               now: datetime) -> Subscriber | None:  # fmt: skip
    """Record one lead, committed. The subscriber whose mailbox must confirm, or None when
    there is nothing to ask (subscribed, granted at once, or suppressed: nothing recorded).
    Idempotent: the same lead again finds its grant, and writes nothing."""
    hashed = address_hash(workspace.key, lead.email)
    with workspace.engine.begin() as connection:
        lock_ledger(connection)
        if suppressed(connection, [hashed]):
            return None
        contact_id = _contact_id(connection, lead, now)
        standing = standings(connection, lead.list_name, [contact_id])[contact_id]
        if standing.status in SENDABLE:
            return None
        if (asked := _to_ask(contact_id, lead.email, standing)) is not None:
            return asked  # ask the mailbox; write nothing
        list_id = connection.scalar(select(lists.c.id).where(lists.c.name == lead.list_name))
        source = f"form:{lead.form_id}" if lead.form_id else "form"
        upsert(connection, memberships, [{"list_id": list_id, "contact_id": contact_id,
                                          "joined_at": now, "source": source}],
               keys=("list_id", "contact_id"))  # fmt: skip
        entry = NewEntry(hashed, contact_id, lead.list_name, "granted", "form", now,
                         canonical_evidence(evidence))  # fmt: skip
        [entry_id] = record(connection, [entry], workspace.double_opt_in, now)
    if not workspace.double_opt_in[lead.list_name]:
        return None
    return Subscriber(contact_id, lead.email, "pending", entry_id)


def asked_again(connection: Connection, key: bytes, email: str, list_name: str) -> Subscriber:
    """The person to send `list_name`'s confirmation email for an operator (`mailer consent
    lift --ask`): they left the list, or never confirmed it. Its link confirms only that state
    (the entry behind it), as the form's does; MailerError where there is nothing to confirm."""
    person = find_person(connection, key, email)
    if person.contact_id is None:
        raise MailerError(f"{person.email} is no contact: nothing to ask (they sign up on the "
                          "form)")  # fmt: skip
    standing = standings(connection, list_name, [person.contact_id])[person.contact_id]
    asked = _to_ask(person.contact_id, person.email, standing)
    if asked is None:
        held = ("has no consent" if standing.status == "none"
                else f"is {standing.status}")  # fmt: skip
        raise MailerError(f"{person.email} {held} on list {list_name}: --ask is for a list "
                          "they left or never confirmed")  # fmt: skip
    return asked


def _to_ask(contact_id: int, email: str, standing: Standing) -> Subscriber | None:
    """Whom a confirmation email asks, when the standing is one only the mailbox may settle
    (pending, or withdrawn): its link confirms only that standing's entry."""
    if standing.status not in ("pending", "withdrawn"):
        return None
    return Subscriber(contact_id, email, cast(Status, standing.status), standing.entry_id or 0)


def _contact_id(connection: Connection, lead: Lead, now: datetime) -> int:
    """The contact with the lead's address; a new one keeps the names given, an existing one
    is left as it is (anyone can type anyone's address)."""
    upsert(connection, contacts, [{"email": lead.email, "first_name": lead.first_name,
                                   "last_name": lead.last_name, "attributes": {},
                                   "created_at": now, "updated_at": now}],
           keys=("email",))  # fmt: skip
    query = select(contacts.c.id).where(contacts.c.email == lead.email)
    contact_id: int = connection.execute(query).scalar_one()
    return contact_id


Confirmation = Literal["confirmed", "already", "lapsed", "unknown"]


def confirm_subscription(workspace: Workspace, link: ConfirmLink, evidence: dict[str, Any],
                         now: datetime) -> Confirmation:  # fmt: skip
    """Confirm what the link asked, committed. "already": subscribed before, nothing appended;
    "lapsed": nothing the link may confirm (withdrawn since it was sent); "unknown": erased or
    suppressed since."""
    with workspace.engine.begin() as connection:
        lock_ledger(connection)
        email = connection.scalar(select(contacts.c.email).where(contacts.c.id == link.contact_id))
        if email is None:
            return "unknown"
        hashed = address_hash(workspace.key, email)
        if suppressed(connection, [hashed]):
            return "unknown"
        standing = standings(connection, link.list_name, [link.contact_id])[link.contact_id]
        if standing.status in SENDABLE:
            return "already"
        actions: list[tuple[Action, dict[str, Any]]] = [("confirmed", evidence)]
        if standing.status == "withdrawn" and link.basis == standing.entry_id:
            actions.insert(0, ("granted", link.request_evidence()))  # the mailbox lifts it
        elif standing.status != "pending":
            return "lapsed"
        entries = [NewEntry(hashed, link.contact_id, link.list_name, action, "form", now,
                            canonical_evidence(data)) for action, data in actions]  # fmt: skip
        record(connection, entries, workspace.double_opt_in, now)
        said = {"list": link.list_name, "form_id": link.form_id or None,
                "consent_text_version": link.consent_text_version or None}  # fmt: skip
        enqueue(connection, workspace.settings, "confirmed",
                [WebhookEvent(now, contact_id=link.contact_id, data=said)])  # fmt: skip
    return "confirmed"


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


class FormRoutes:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.mail = ConfirmationMail(workspace)
        self.open_lists = {name for name, spec in workspace.settings.lists.items() if spec.forms}
        self.per_ip = PerIpLimit(workspace.engine)  # shared with every instance

    def routes(self) -> list[BaseRoute]:
        return [Route("/subscribe", self.subscribe, methods=["POST"]),
                Route("/confirm/{token}", self.confirm, methods=["GET"])]  # fmt: skip

    async def _over_limit(self, ip: str) -> int:
        """Seconds until this IP may post again (0: now, and a token is taken): one round
        trip. A database that does not answer limits nothing (the post is lost anyway)."""
        try:
            return await run_in_threadpool(self.per_ip.wait, ip,
                                           self.workspace.clock.now().timestamp())  # fmt: skip
        except OperationalError:
            logger.exception("form post not rate limited: the database did not answer")
            return 0

    async def subscribe(self, request: Request) -> Response:
        is_json = _media_type(request) == "application/json"
        wait = await self._over_limit(_client(request))
        if wait > 0:
            return _problem(FormProblem(429, "too many requests: try again in a minute"),
                            is_json, {"Retry-After": str(wait)})  # fmt: skip
        try:
            fields = await _fields(request)
            if str(fields.get("website") or "").strip():  # the honeypot: a bot filled it in
                list_name = fields.get("list")
                known = isinstance(list_name, str) and list_name in self.open_lists
                return self._answer(list_name if known else None, is_json)
            lead = parse_lead(fields, self.open_lists)
        except FormProblem as problem:
            return _problem(problem, is_json)
        except ClientDisconnect:
            return Response(status_code=400)
        now = self.workspace.clock.now()
        evidence = {"at": now.isoformat(), "ip": _client(request),
                    "user_agent": request.headers.get("user-agent", ""),
                    "consent_text_version": lead.consent_text_version,
                    "form_id": lead.form_id, "source": "form"}  # fmt: skip
        try:  # written down whatever the address: the insert's timing tells nothing
            post = await run_in_threadpool(form_posts.keep, self.workspace.engine, asdict(lead),
                                           evidence, now)  # fmt: skip
        except DBAPIError:  # down, locked, or worse: nothing is recorded, and the person is told
            logger.exception("form post refused: the database did not take it",
                             extra={"list": lead.list_name, "form_id": lead.form_id})  # fmt: skip
            refused = FormProblem(503, "we could not take your sign-up just now: please try "
                                  "again in a minute")  # fmt: skip
            return _problem(refused, is_json, {"Retry-After": "60"})
        response = self._answer(lead.list_name, is_json)
        # Nothing about the address is looked up before the answer is written (timing).
        response.background = BackgroundTask(self._record, post, now)
        return response

    async def _record(self, post: form_posts.KeptPost, now: datetime) -> None:
        """Record a kept post as of its answer, then ask the mailbox if need be. A database
        that does not take it leaves it kept: a later pass (`record_leftovers`) records it."""
        lead = Lead(**post.lead)
        try:
            subscriber = await run_in_threadpool(store_lead, self.workspace, lead, post.evidence,
                                                 post.received_at)  # fmt: skip
            await run_in_threadpool(form_posts.forget, self.workspace.engine, post.id)
        except DBAPIError:
            logger.exception("form post not recorded yet: the database did not take it; it is "
                             "kept, and recorded again within minutes",
                             extra={"list": lead.list_name, "form_id": lead.form_id})  # fmt: skip
            return
        if subscriber is None:
            return
        if await run_in_threadpool(self.mail.due, subscriber, lead.list_name, now):
            await self.mail.send(subscriber, lead, now)

    async def record_leftovers(self) -> int:
        """Record the posts that a serving process answered and did not record (it died):
        those answered more than form_posts.LEFT_AFTER ago. How many were found."""
        now = self.workspace.clock.now()
        posts = await run_in_threadpool(form_posts.leftovers, self.workspace.engine, now)
        for post in posts:
            try:
                await self._record(post, now)
            except Exception:  # one post's failure is its own; given up on after a day
                logger.exception("form post answered at %s not recorded", post.received_at)
                if post.received_at < now - form_posts.GIVE_UP_AFTER:
                    logger.error("form post answered at %s dropped: it failed for a day",
                                 post.received_at)  # fmt: skip
                    await run_in_threadpool(form_posts.forget, self.workspace.engine, post.id)
        return len(posts)

    async def keep_recording_leftovers(self) -> None:
        """`record_leftovers` every LEFT_AFTER, for as long as the serving process runs."""
        while True:
            try:
                await self.record_leftovers()
            except Exception:  # the next minute's pass tries again; the serving goes on
                logger.exception("form posts left by another process not looked for; "
                                 "trying again in a minute")  # fmt: skip
            await asyncio.sleep(form_posts.LEFT_AFTER.total_seconds())

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
            response: Response = JSONResponse({"result": result, "message": said})
        else:
            response = page(heading, f"<h1>{escape(heading)}</h1>\n<p>{escape(said)}</p>")
        # The queued work runs on this connection after the answer: a next request on it
        # would wait for that work, and its timing would tell what the work found.
        response.headers["Connection"] = "close"
        return response

    async def confirm(self, request: Request) -> Response:
        lists_ = self.workspace.settings.lists
        try:
            link = ConfirmLink.parse(verify(self.workspace.renderer.keys, "confirm",
                                            request.path_params["token"]))  # fmt: skip
        except (TokenError, ValueError):
            return not_found_page()
        if link.list_name not in lists_:
            return not_found_page()
        now = self.workspace.clock.now()
        if now.timestamp() > link.expires:
            return _expired_page()
        title = lists_[link.list_name].title
        if request.method == "HEAD":  # scanners look before they fetch: never a confirmation
            return _subscribed_page(title)
        evidence = {"at": now.isoformat(), "ip": _client(request),
                    "user_agent": request.headers.get("user-agent", "")}  # fmt: skip
        outcome = await run_in_threadpool(confirm_subscription, self.workspace, link, evidence,
                                          now)  # fmt: skip
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
