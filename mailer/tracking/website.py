"""The website's events API: `POST /events`, where the shop reports what a contact did (signed
up, viewed a product, abandoned a cart, purchased). Events trigger sequences, reach goals,
add to the lead score and shape segments, exactly as `mailer event` does.

    POST /events HTTP/1.1
    Authorization: Bearer <MAILER_TRACKING__EVENTS_TOKEN>
    Content-Type: application/json

    [{"email": "ada@example.com", "event": "cart_abandoned",
      "properties": {"value": 24.5, "items": [{"sku": "ESP-250"}]},
      "at": "2026-11-23T09:58:00+01:00"},
     {"contact_id": 42, "event": "purchased"}]

    200 {"recorded": 2, "unknown": []}

A property that settings compare with a number (`event "purchased" where total > 50`) sent as
text (`"total": "50"`) is stored as given, but no numeric comparison ever matches it: the
answer then carries `"warnings": [{"item": 0, "property": "total", "warning": "..."}]`, naming
the place in settings, and the log says so.

The body is one event object or a list of at most 1,000 of them (1 MiB at most). Each names
its contact by `email` or by `contact_id` (exactly one), and has an `event` name (lowercase
letters, digits, `_`, `.`, `-`, starting with a letter, at most 100 characters), optional
`properties` (any JSON object, stored as given) and an optional `at` (ISO 8601 with an offset,
`Z` or `+01:00`; default: when the request arrives; at most a day ahead, for clock skew).

A request is validated whole before anything is written: one bad item refuses the request
(400, naming the item and the field) and nothing is recorded, so the website fixes it and
sends it again. The events of one request are written in one transaction.

An unknown contact is not an error: a shop reports every purchase, and most buyers are not on
a mailing list (or have been erased). Such items are skipped, the others are recorded, and the
answer lists the skipped ones, `"unknown": [{"item": 1, "email": "bob@example.com"}]`, still
with status 200; retrying them changes nothing until the contact is imported.

A request may carry an `Idempotency-Key` header (1 to 255 printable ASCII characters): sent
again with the same key and body, because its answer was lost, it gets the first answer back
(with `Idempotent-Replayed: true`) and records nothing; the same key with another body is a 422
(tracking/request_keys.py, store/once.py). Keys are kept a day.

Every refusal is JSON `{"error": "..."}` (plus `item` and `field` for a bad item):
401 missing or wrong token (`WWW-Authenticate: Bearer`), 503 the API is off (no token is set)
or the database is busy (retry), 415 not `application/json`, 413 over 1 MiB or 1,000 events,
400 not JSON, not the schema above or a malformed `Idempotency-Key`.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailer.campaigns.activity import record_activity
from mailer.campaigns.expressions import numeric_properties
from mailer.contacts.addresses import InvalidAddress, normalise_address
from mailer.contacts.events import EVENT_NAME
from mailer.errors import MailerError, UnknownContactError
from mailer.logs import logger
from mailer.store.bulk import one_of
from mailer.store.locking import lock_in_order, retried
from mailer.store.once import KeyReused, Once, done_once
from mailer.store.tables import contacts
from mailer.tracking.request_keys import request_key
from mailer.workspace import Workspace

MAX_BODY = 1024 * 1024
MAX_EVENTS = 1000
FUTURE_SLACK = timedelta(days=1)  # the website's clock may run ahead of ours
MAX_DEPTH = 32  # nesting of properties


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _iso_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PydanticCustomError("iso_time", "an ISO 8601 time is written as a string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "iso_time", "'{value}' is not an ISO 8601 time (e.g. 2026-11-23T10:00:00+01:00)",
            {"value": _shown(value)}) from None  # fmt: skip
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PydanticCustomError(
            "iso_time", "'{value}' has no offset: add Z for UTC or the local one, e.g. +01:00",
            {"value": _shown(value)})  # fmt: skip
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("iso_time", "'{value}' is out of range",
                                  {"value": _shown(value)}) from None  # fmt: skip


def _storable(text: str) -> bool:
    """PostgreSQL refuses NUL and unpaired surrogates (which JSON's \\u escapes can carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


class WebsiteEvent(BaseModel):
    """One event as the website sends it; after validation, `email` is in mailer's normal form
    and `at` is in UTC."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    email: str | None = None
    contact_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    event: str
    properties: dict[str, Any] | None = None
    at: Annotated[datetime | None, BeforeValidator(_iso_time)] = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _storable(value):
            raise PydanticCustomError("email", "not an email address (unprintable characters)")
        try:
            return normalise_address(value)
        except (InvalidAddress, UnicodeError) as error:
            raise PydanticCustomError("email", "{reason}", {"reason": str(error)}) from None

    @field_validator("event")
    @classmethod
    def _event(cls, value: str) -> str:
        if not EVENT_NAME.fullmatch(value):
            raise PydanticCustomError(
                "event_name", "'{value}' is not an event name: lowercase letters, digits, '_', "
                "'.' or '-', starting with a letter, at most 100 characters",
                {"value": _shown(value)})  # fmt: skip
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        waiting: list[tuple[Any, int]] = [(value, 1)]
        while waiting:
            item, depth = waiting.pop()
            if depth > MAX_DEPTH:
                raise PydanticCustomError("properties", f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                if not all(_storable(key) for key in item):
                    raise PydanticCustomError("properties", "a key holds NUL or a lone surrogate")
                waiting += [(inner, depth + 1) for inner in item.values()]
            elif isinstance(item, list):
                waiting += [(inner, depth + 1) for inner in item]
            elif isinstance(item, str) and not _storable(item):
                raise PydanticCustomError("properties", "a text holds NUL or a lone surrogate")
        return value


class Refusal(Exception):
    """A request the API answers with an error: its status, and the JSON body."""

    def __init__(self, status: int, error: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details or {}
        self.headers = headers or {}

    def response(self) -> Response:
        return _json({"error": self.error, **self.details}, self.status, self.headers)


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
          ) -> Response:  # fmt: skip
    # ensure_ascii: an echoed lone surrogate stays an escape instead of failing to encode.
    return Response(json.dumps(body), status, headers, media_type="application/json")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range for a JSON number")
    return number


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_events(body: bytes, now: datetime) -> list[WebsiteEvent]:
    """The events of a request body, each with its time; Refusal for the first problem."""
    try:
        document = json.loads(body, parse_float=_finite, parse_constant=_not_a_number)
    except (ValueError, RecursionError) as error:
        raise Refusal(400, f"body is not JSON: {error}") from None
    items = document if isinstance(document, list) else [document]
    if len(items) > MAX_EVENTS:
        raise Refusal(413, f"at most {MAX_EVENTS} events per request (got {len(items)}): "
                           "send them in smaller batches")  # fmt: skip
    return [_parse_item(index, item, now) for index, item in enumerate(items)]


def _parse_item(index: int, item: Any, now: datetime) -> WebsiteEvent:
    if not isinstance(item, dict):
        kind = type(item).__name__
        raise Refusal(400, f"item {index}: an event is a JSON object, not {kind}",
                      {"item": index, "field": None})  # fmt: skip
    try:
        event = WebsiteEvent.model_validate(item)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"]
        if first["type"] == "extra_forbidden":  # a typo would otherwise be dropped silently
            message = f"not a field of an event ({', '.join(WebsiteEvent.model_fields)})"
        raise _item_refusal(index, ".".join(map(str, first["loc"])), message) from None
    if event.email is None and event.contact_id is None:
        raise _item_refusal(index, "email", "give email or contact_id (neither is given)")
    if event.email is not None and event.contact_id is not None:
        raise _item_refusal(index, "contact_id", "give email or contact_id, not both")
    if event.at is None:
        return event.model_copy(update={"at": now})
    if event.at > now + FUTURE_SLACK:
        ahead = f"{event.at:%Y-%m-%dT%H:%M:%SZ} is more than a day ahead of now"
        raise _item_refusal(index, "at", f"{ahead} ({now:%Y-%m-%dT%H:%M:%SZ})")
    return event


def _item_refusal(index: int, field_name: str, message: str) -> Refusal:
    return Refusal(400, f"item {index}, {field_name}: {message}",
                   {"item": index, "field": field_name})  # fmt: skip


def record_events(workspace: Workspace, events: list[WebsiteEvent],
                  key: Once | None = None) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Record the events of known contacts in one transaction; the answer's body, and whether
    it is the answer given before to the request `key` names (then nothing is recorded). A
    transaction PostgreSQL picked as a deadlock's victim is run again (store/locking.py)."""
    named = {event.email or event.contact_id for event in events}
    work = partial(_record_once, workspace, events, key)
    try:
        return retried(workspace.engine, work, "events", len(named))
    except IntegrityError:
        if key is None:
            raise
        # The same key stored meanwhile by the same request sent twice at once: its answer.
        return retried(workspace.engine, work, "events", len(named))


def _record_once(workspace: Workspace, events: list[WebsiteEvent], key: Once | None,
                 connection: Connection) -> tuple[dict[str, Any], bool]:  # fmt: skip
    if key is None:
        return _record_events(workspace, events, connection), False
    return done_once(connection, key, partial(_record_events, workspace, events, connection),
                     workspace.clock.now())  # fmt: skip


def text_for_numbers(events: list[WebsiteEvent],
                     numeric: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:  # fmt: skip
    """A warning for each property that settings compare with a number (`numeric`: event ->
    property -> where) and an item sends as text: stored as given, it never matches there."""
    warnings = []
    for index, event in enumerate(events):
        compared = numeric.get(event.event, {})
        for name, value in (event.properties or {}).items():
            if name in compared and isinstance(value, str):
                said = (f"{json.dumps(_shown(value))} is text, and {compared[name]} compares "
                        f"{name} with a number: it never matches there; send a JSON number "
                        "(no quotes)")  # fmt: skip
                warnings.append({"item": index, "property": name, "warning": said})
    return warnings


def _record_events(workspace: Workspace, events: list[WebsiteEvent],
                   connection: Connection) -> dict[str, Any]:  # fmt: skip
    recorded, unknown = 0, []
    # Another instance may be writing the same contacts' scores in another order.
    emails = [event.email for event in events if event.email]
    ids = [event.contact_id for event in events if event.contact_id]
    lock_in_order(connection, contacts, or_(one_of(connection, contacts.c.email, emails),
                                            one_of(connection, contacts.c.id, ids)))  # fmt: skip
    for index, event in enumerate(events):
        email = event.email
        if email is None:
            email = connection.scalar(select(contacts.c.email)
                                      .where(contacts.c.id == event.contact_id))  # fmt: skip
        named = {"email": event.email} if event.email else {"contact_id": event.contact_id}
        if email is None:
            unknown.append({"item": index, **named})
            continue
        assert event.at is not None
        try:
            record_activity(connection, workspace.settings, email, event.event, event.at,
                            event.properties)  # fmt: skip
        except UnknownContactError:
            unknown.append({"item": index, **named})
        except MailerError as error:  # validated above; kept so that it stays a 400
            raise _item_refusal(index, "event", str(error)) from None
        else:
            recorded += 1
    return {"recorded": recorded, "unknown": unknown}


def _authorised(request: Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    # Starlette decodes headers as latin-1: back to the bytes that were sent.
    given = credentials.strip().encode("latin-1")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode())


async def read_body(request: Request, limit: int, advice: str = "") -> bytes:
    """The request's body, or a 413 Refusal (`advice` after its reason) as soon as the body is
    declared or found to be over `limit` bytes: never more than that held in memory."""
    declared = request.headers.get("content-length", "")
    too_big = Refusal(413, f"the body is over {limit} bytes{advice}")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def website_routes(workspace: Workspace) -> list[BaseRoute]:
    numeric = numeric_properties(workspace.settings)  # settings are read once per process

    async def post_events(request: Request) -> Response:
        secret = workspace.settings.tracking.events_token
        token = secret.get_secret_value().strip() if secret is not None else ""
        try:
            if not token:  # an empty token would let an empty Authorization header in
                raise Refusal(503, "the events API is off: set MAILER_TRACKING__EVENTS_TOKEN")
            if not _authorised(request, token):
                sent = "authorization" in request.headers
                raise Refusal(401, "wrong token" if sent else "no token: send Authorization: "
                              "Bearer <token>", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            media_type = request.headers.get("content-type", "").partition(";")[0]
            if media_type.strip().lower() != "application/json":
                raise Refusal(415, "send the events as Content-Type: application/json")
            body = await read_body(request, MAX_BODY, ": send smaller batches")
            events = parse_events(body, workspace.clock.now())
            try:
                key = request_key(request.headers.get("idempotency-key"), body)
            except ValueError as error:
                raise Refusal(400, str(error)) from None
            answer, replayed = await run_in_threadpool(record_events, workspace, events, key)
            if warnings := text_for_numbers(events, numeric):
                answer = {**answer, "warnings": warnings}
                logger.warning("events API: %d properties compared with numbers came as text; "
                               "first: %s", len(warnings), warnings[0]["warning"])  # fmt: skip
            return _json(answer, headers={"Idempotent-Replayed": "true"} if replayed else None)
        except KeyReused:
            return Refusal(422, "this Idempotency-Key was sent with another body: give each "
                           "new request a key of its own").response()  # fmt: skip
        except Refusal as refusal:
            return refusal.response()
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except OperationalError as error:  # the deadlock retries ran out, or no database
            logger.warning("events refused (503)", extra={"error": str(error.orig).partition(
                "\n")[0]})  # fmt: skip
            return Refusal(503, "the database is busy or unreachable: retry later",
                           headers={"Retry-After": "5"}).response()  # fmt: skip

    return [Route("/events", post_events, methods=["POST"])]
