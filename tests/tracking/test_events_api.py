"""POST /events over real HTTP: the website reports what contacts did, with a bearer token."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.types import ASGIApp

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.once import KEPT, Once, answered_before, forget_old, remember
from mailer.store.tables import contacts, enrollments, events
from mailer.tracking.request_keys import request_key
from mailer.tracking.website import WebsiteEvent, record_events, website_routes
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.helpers import run_import

TOKEN = "shop-events-token-0123456789abcdef"
Serve = Callable[[ASGIApp], AbstractContextManager[str]]

SHOP_SETTINGS = """
[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[lists.shop]
title = "Customers"

[campaigns.cart]
kind = "sequence"
list = "shop"
trigger = 'event "cart_abandoned"'
enroll_existing = true

[[campaigns.cart.steps]]
name = "reminder"
template = "cart/1"
subject = "You left something"
delay = "1h"
"""


def open_shop(root: Path, environ: dict[str, str]) -> Workspace:
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(SHOP_SETTINGS))
    settings = load_settings(root / "settings.toml", environ=environ)
    return Workspace(settings, FrozenClock(NOW))


@pytest.fixture
def shop(tmp_path: Path, environ: dict[str, str]) -> Iterator[Workspace]:
    """A shop with the events API on and two customers, Ada and Ken."""
    workspace = open_shop(tmp_path / "shop", {**environ, "MAILER_TRACKING__EVENTS_TOKEN": TOKEN})
    run_import(workspace, write_csv(tmp_path / "shop.csv", """
        email,first_name,consent_at,consent_confirmed_at
        ada@example.com,Ada,2026-11-01T09:00Z,
        ken@example.com,Ken,2026-11-01T09:00Z,
    """), "shop")  # fmt: skip
    yield workspace
    workspace.close()


@pytest.fixture
def api(shop: Workspace, serve: Serve) -> Iterator[httpx.Client]:
    """A client of the shop's events API, with the right token."""
    # 30 s, not httpx's 5: a request of 1,000 events takes about 1 s alone on PostgreSQL, and
    # more than 5 once while the whole suite shared the two cores (these tests time nothing).
    with serve(Starlette(routes=website_routes(shop))) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:  # fmt: skip
        yield client


def recorded(workspace: Workspace) -> list[tuple[str, str, str, Any, datetime]]:
    with workspace.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            select(contacts.c.email, events.c.kind, events.c.name, events.c.properties,
                   events.c.occurred_at)
            .join(contacts, contacts.c.id == events.c.contact_id).order_by(events.c.id)
        )]  # fmt: skip


def contact_id(workspace: Workspace, email: str) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.scalar(select(contacts.c.id).where(contacts.c.email == email)))


# -- recording --------------------------------------------------------------------------------


def test_one_event_is_recorded_with_its_properties_at_its_time(
    api: httpx.Client, shop: Workspace
) -> None:
    properties = {"value": 24.5, "currency": "EUR", "items": [{"sku": "ESP-250", "qty": 2}],
                  "gift": False, "note": None}  # fmt: skip
    answer = api.post("/events", json={"email": "Ada@Example.com", "event": "cart_abandoned",
                                       "properties": properties,
                                       "at": "2026-11-23T09:30:00+01:00"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"recorded": 1, "unknown": []}
    assert recorded(shop) == [("ada@example.com", "website", "cart_abandoned", properties,
                               datetime(2026, 11, 23, 8, 30, tzinfo=UTC))]  # fmt: skip


def test_a_batch_is_recorded_and_a_missing_time_is_now(api: httpx.Client, shop: Workspace) -> None:
    answer = api.post("/events", json=[
        {"email": "ada@example.com", "event": "viewed_product", "properties": {"sku": "ESP-250"},
         "at": "2026-11-22T18:00:00Z"},
        {"email": "ken@example.com", "event": "purchased"},
        {"email": "ada@example.com", "event": "purchased", "properties": None},
    ])  # fmt: skip
    assert answer.json() == {"recorded": 3, "unknown": []}
    assert recorded(shop) == [
        ("ada@example.com", "website", "viewed_product", {"sku": "ESP-250"},
         datetime(2026, 11, 22, 18, 0, tzinfo=UTC)),
        ("ken@example.com", "website", "purchased", {}, NOW),
        ("ada@example.com", "website", "purchased", {}, NOW),
    ]  # fmt: skip


def test_contact_id_names_the_contact(api: httpx.Client, shop: Workspace) -> None:
    ken = contact_id(shop, "ken@example.com")
    answer = api.post("/events", json={"contact_id": ken, "event": "signed.up-v2"})
    assert answer.json() == {"recorded": 1, "unknown": []}
    assert recorded(shop) == [("ken@example.com", "website", "signed.up-v2", {}, NOW)]


def test_unknown_contacts_are_skipped_and_listed_and_the_others_recorded(
    api: httpx.Client, shop: Workspace
) -> None:
    answer = api.post("/events", json=[
        {"email": "walk-in@example.com", "event": "purchased"},
        {"email": "ada@example.com", "event": "purchased"},
        {"contact_id": 987654, "event": "purchased"},
    ])  # fmt: skip
    assert answer.status_code == 200
    unknown = [{"item": 0, "email": "walk-in@example.com"}, {"item": 2, "contact_id": 987654}]
    assert answer.json() == {"recorded": 1, "unknown": unknown}
    assert [row[0] for row in recorded(shop)] == ["ada@example.com"]


def test_an_abandoned_cart_starts_the_cart_sequence(api: httpx.Client, shop: Workspace) -> None:
    api.post("/events", json={"email": "ada@example.com", "event": "cart_abandoned"})
    tick(shop.engine, shop.settings, NOW)
    with shop.engine.connect() as connection:
        enrolled = connection.execute(
            select(contacts.c.email, enrollments.c.campaign)
            .join(contacts, contacts.c.id == enrollments.c.contact_id)
        ).all()  # fmt: skip
    assert [tuple(row) for row in enrolled] == [("ada@example.com", "cart")]


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [
    None, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", f"Basic {TOKEN}", TOKEN,
    b"Bearer \xff\xfe",
])  # fmt: skip
def test_a_missing_or_wrong_token_is_401(
    api: httpx.Client, shop: Workspace, authorization: str | bytes | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    api.headers.pop("Authorization")
    answer = api.post("/events", json={"email": "ada@example.com", "event": "purchased"},
                      headers=headers)  # fmt: skip
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in answer.json()["error"]
    assert recorded(shop) == []


def test_the_bearer_scheme_is_case_insensitive(api: httpx.Client) -> None:
    answer = api.post("/events", json={"email": "ada@example.com", "event": "purchased"},
                      headers={"Authorization": f"bearer {TOKEN}"})  # fmt: skip
    assert answer.status_code == 200


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_token_in_settings_the_api_is_off(
    tmp_path: Path, environ: dict[str, str], serve: Serve, token: str | None
) -> None:
    if token is not None:
        environ = {**environ, "MAILER_TRACKING__EVENTS_TOKEN": token}
    workspace = open_shop(tmp_path / "shop", environ)
    try:
        with serve(Starlette(routes=website_routes(workspace))) as base_url:
            answer = httpx.post(f"{base_url}/events", headers={"Authorization": "Bearer"},
                                json={"email": "ada@example.com", "event": "x"})  # fmt: skip
    finally:
        workspace.close()
    assert answer.status_code == 503
    assert answer.json() == {
        "error": "the events API is off: set MAILER_TRACKING__EVENTS_TOKEN"}  # fmt: skip


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"email": "ada@example.com", "event": ', "body is not JSON: Expecting value"),
    (b"", "body is not JSON: Expecting value"),
    (b'{"email": "ada@example.com", "event": "x", "properties": {"v": NaN}}', "NaN"),
    (b'{"email": "ada@example.com", "event": "x", "properties": {"v": 1e999}}', "1e999"),
    (b"\xff\xfe{}", "body is not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "body is not JSON"),
])  # fmt: skip
def test_a_body_that_is_not_json_is_400_with_the_reason(
    api: httpx.Client, body: bytes, reason: str
) -> None:
    answer = api.post("/events", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("body is not JSON: ")
    assert reason in answer.json()["error"]


BAD_ITEMS = [
    ({"email": "ada@example.com", "event": "Cart Abandoned"}, "event", "not an event name"),
    ({"email": "ada@example.com", "event": "cart\n"}, "event", "not an event name"),
    ({"email": "ada@example.com", "event": "x" * 101}, "event", "at most 100 characters"),
    ({"email": "ada@example.com"}, "event", "Field required"),
    ({"email": "ada@example.com", "event": 7}, "event", "valid string"),
    ({"event": "purchased"}, "email", "neither is given"),
    ({"email": "ada@example.com", "contact_id": 1, "event": "purchased"}, "contact_id",
     "not both"),
    ({"email": "bob@", "event": "purchased"}, "email", "not an email address"),
    ({"email": "ada\x00@example.com", "event": "purchased"}, "email", "not an email address"),
    ({"contact_id": "12", "event": "purchased"}, "contact_id", "valid integer"),
    ({"contact_id": True, "event": "purchased"}, "contact_id", "valid integer"),
    ({"contact_id": 2**64, "event": "purchased"}, "contact_id", "less than or equal"),
    ({"contact_id": 0, "event": "purchased"}, "contact_id", "greater than or equal"),
    ({"email": "ada@example.com", "event": "purchased", "at": "2026-11-23T10:00:00"}, "at",
     "no offset"),
    ({"email": "ada@example.com", "event": "purchased", "at": "2026-11-23"}, "at", "no offset"),
    ({"email": "ada@example.com", "event": "purchased", "at": "yesterday"}, "at",
     "not an ISO 8601 time"),
    ({"email": "ada@example.com", "event": "purchased", "at": 1795000000}, "at", "string"),
    ({"email": "ada@example.com", "event": "purchased", "at": "2026-11-24T10:00:01Z"}, "at",
     "more than a day ahead"),
    ({"email": "ada@example.com", "event": "purchased", "at": "0001-01-01T00:00:00+05:00"},
     "at", "out of range"),
    ({"email": "ada@example.com", "event": "purchased", "properties": [1, 2]}, "properties",
     "valid dictionary"),
    ({"email": "ada@example.com", "event": "purchased", "properties": {"n": "a\x00b"}},
     "properties", "NUL"),
    ({"email": "ada@example.com", "event": "purchased", "properties": {"\x00": 1}},
     "properties", "NUL"),
    ({"email": "ada@example.com", "event": "purchased", "properties": {"n": "\ud800"}},
     "properties", "lone surrogate"),
    ({"email": "ada@example.com", "event": "purchased", "properties": {"n": [[[[[[[[[[[[[[[[
        [[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}, "properties", "deeper"),
    ({"email": "ada@example.com", "event": "purchased", "timestamp": "2026-11-23T09:00:00Z"},
     "timestamp", "not a field of an event (email, contact_id, event, properties, at)"),
]  # fmt: skip


@pytest.mark.parametrize(("item", "field", "reason"), BAD_ITEMS)
def test_a_schema_error_is_400_naming_the_item_and_field_and_nothing_is_recorded(
    api: httpx.Client, shop: Workspace, item: dict[str, Any], field: str, reason: str
) -> None:
    good = {"email": "ken@example.com", "event": "purchased"}
    answer = api.post("/events", content=json.dumps([good, item]),
                      headers={"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert (body["item"], body["field"]) == (1, field)
    assert body["error"].startswith(f"item 1, {field}: ")
    assert reason in body["error"]
    assert recorded(shop) == []  # the good one waits for the request to be fixed


@pytest.mark.parametrize("item", [[], "purchased", 7, None])
def test_an_item_that_is_not_an_object_is_400(api: httpx.Client, item: Any) -> None:
    answer = api.post("/events", json=[item])
    assert answer.status_code == 400
    assert answer.json()["item"] == 0
    assert "an event is a JSON object" in answer.json()["error"]


def test_an_empty_list_records_nothing(api: httpx.Client) -> None:
    assert api.post("/events", json=[]).json() == {"recorded": 0, "unknown": []}


def test_more_than_1000_events_is_413(api: httpx.Client, shop: Workspace) -> None:
    item = {"email": "ada@example.com", "event": "viewed_product"}
    answer = api.post("/events", json=[item] * 1001)
    assert answer.status_code == 413
    assert "at most 1000 events" in answer.json()["error"]
    assert api.post("/events", json=[item] * 1000).json()["recorded"] == 1000


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_1_mib_is_413(api: httpx.Client, shop: Workspace, chunked: bool) -> None:
    item = {"email": "ada@example.com", "event": "viewed_product",
            "properties": {"padding": "x" * (1024 * 1024)}}  # fmt: skip
    body = json.dumps(item).encode()
    content: Any = iter([body[:4096], body[4096:]]) if chunked else body
    answer = api.post("/events", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert "over 1048576 bytes" in answer.json()["error"]
    assert recorded(shop) == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonp"])  # fmt: skip
def test_a_body_that_is_not_declared_json_is_415(
    api: httpx.Client, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = api.post("/events", content=b'{"email": "ada@example.com", "event": "purchased"}',
                      headers=headers)  # fmt: skip
    assert answer.status_code == 415
    assert "application/json" in answer.json()["error"]


def test_a_charset_parameter_is_accepted(api: httpx.Client) -> None:
    answer = api.post("/events", content=b'{"email": "ada@example.com", "event": "purchased"}',
                      headers={"Content-Type": "Application/JSON; charset=utf-8"})  # fmt: skip
    assert answer.json() == {"recorded": 1, "unknown": []}


def test_only_post_is_answered(api: httpx.Client) -> None:
    assert api.get("/events").status_code == 405


# -- Idempotency-Key ---------------------------------------------------------------------------

PURCHASE = {"email": "ada@example.com", "event": "purchased", "properties": {"order": "A-1"}}


def test_a_request_sent_again_with_its_key_gets_the_first_answer_and_records_nothing(
    api: httpx.Client, shop: Workspace
) -> None:
    body = json.dumps([PURCHASE, {"email": "bob@example.com", "event": "purchased"}])
    headers = {"Content-Type": "application/json", "Idempotency-Key": "order-A-1"}
    first = api.post("/events", content=body, headers=headers)
    again = api.post("/events", content=body, headers=headers)  # its answer was lost
    assert first.status_code == again.status_code == 200
    unknown = [{"item": 1, "email": "bob@example.com"}]
    assert first.json() == again.json() == {"recorded": 1, "unknown": unknown}
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert len(recorded(shop)) == 1
    other = api.post("/events", content=body, headers={**headers, "Idempotency-Key": "order-A-2"})
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers
    assert len(recorded(shop)) == 2  # another key: another request, recorded
    api.post("/events", content=body, headers={"Content-Type": "application/json"})
    assert len(recorded(shop)) == 3  # without a key every request is recorded


def test_a_key_sent_with_another_body_is_422_and_a_malformed_key_400(
    api: httpx.Client, shop: Workspace
) -> None:
    assert api.post("/events", json=PURCHASE, headers={"Idempotency-Key": "k1"}).status_code == 200
    changed = api.post("/events", json={**PURCHASE, "event": "refunded"},
                       headers={"Idempotency-Key": "k1"})  # fmt: skip
    assert changed.status_code == 422
    assert "another body" in changed.json()["error"]
    for bad in ("", "two words", "x" * 256, "caf\u00e9"):
        answer = api.post("/events", json=PURCHASE, headers={"Idempotency-Key": bad.encode()})
        assert answer.status_code == 400, bad
        assert "Idempotency-Key" in answer.json()["error"]
    assert [row[2] for row in recorded(shop)] == ["purchased"]


def test_the_same_request_twice_at_once_is_recorded_once(shop: Workspace) -> None:
    """The second arrives while the first is still in its transaction: it waits for the key,
    then answers with the first's answer (PostgreSQL: the key's INSERT fails, and the request
    is run again; SQLite: its transaction starts after the first's)."""
    events_ = [WebsiteEvent.model_validate({**PURCHASE, "at": NOW.isoformat()})]
    key = request_key("order-A-1", b"the body")
    assert key is not None
    result: list[tuple[dict[str, Any], bool]] = []
    with shop.engine.begin() as connection:  # the first request, not yet committed
        remember(connection, key, {"recorded": 1, "unknown": []}, NOW)
        second = threading.Thread(target=lambda: result.append(record_events(shop, events_, key)))
        second.start()
        time.sleep(0.5)  # not a measurement: either way the second must find the first's answer
    second.join(30)
    assert result == [({"recorded": 1, "unknown": []}, True)]
    assert recorded(shop) == []  # the first stood for the events (here: remembered only)


def test_keys_are_kept_a_day(shop: Workspace) -> None:
    """Those of the events API and the tracking writer's batches alike (store/once.py)."""
    old, recent = Once("hits:old"), request_key("recent", b"b")
    assert recent is not None
    with shop.engine.begin() as connection:
        remember(connection, old, {}, NOW - KEPT - timedelta(seconds=1))
        remember(connection, recent, {}, NOW - KEPT + timedelta(seconds=1))
        assert forget_old(connection, NOW) == 1
        assert answered_before(connection, recent) == {}
        assert answered_before(connection, old) is None


def test_a_property_settings_compare_with_a_number_sent_as_text_is_warned_of(
    tmp_path: Path, environ: dict[str, str], serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "settings.toml").write_text(textwrap.dedent(SHOP_SETTINGS) + textwrap.dedent("""
        [segments]
        big_spenders = 'event "purchased" where total > 50'
        gifts = 'event "purchased" where note = "gift"'
    """))  # fmt: skip
    variables = {**environ, "MAILER_TRACKING__EVENTS_TOKEN": TOKEN}
    workspace = Workspace(load_settings(root / "settings.toml", environ=variables),
                          FrozenClock(NOW))  # fmt: skip
    try:
        run_import(workspace, write_csv(tmp_path / "shop.csv", """
            email,consent_at
            ada@example.com,2026-11-01T09:00Z
        """), "shop")  # fmt: skip
        with serve(Starlette(routes=website_routes(workspace))) as base, httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:  # fmt: skip
            answer = client.post("/events", json=[
                {"email": "ada@example.com", "event": "purchased",
                 "properties": {"total": "60", "note": "gift"}},
                {"email": "ada@example.com", "event": "purchased", "properties": {"total": 60}},
                {"email": "ada@example.com", "event": "viewed", "properties": {"total": "60"}},
            ])  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"recorded": 3, "unknown": [], "warnings": [{
            "item": 0, "property": "total",
            "warning": '"60" is text, and segments.big_spenders compares total with a number: '
                       "it never matches there; send a JSON number (no quotes)",
        }]}  # fmt: skip
        assert "1 properties compared with numbers came as text" in caplog.text
    finally:
        workspace.close()
