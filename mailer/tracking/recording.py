"""Writing a batch of opens and clicks: each names its message (the outbox row), is told human
or machine (tracking/bots.py), and becomes an event row; a person's open or click scores and
may move the contact's lifecycle stage, as website events do."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, update
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import custom_op

from mailer.campaigns.activity import update_stages
from mailer.config import Settings
from mailer.consent.evidence import truncated_ip
from mailer.contacts.scoring import add_points_many
from mailer.delivery.claims import outbox_id
from mailer.render.links import HONEYPOT
from mailer.store.bulk import execute_many, one_of
from mailer.store.locking import lock_in_order
from mailer.store.tables import contacts, events, outbox
from mailer.tracking import apple
from mailer.tracking.bots import REFETCH, REFETCHED, SAME_SECOND_LINKS, WINDOW, judge
from mailer.tracking.hits import Hit, StoredHit
from mailer.webhooks_out.events import enqueue_hits

POINTS = {"open": "opened", "click": "clicked"}  # the names [scoring] points use
KINDS = ("open", "click", "machine_open", "machine_click")
EVENT_COLUMNS = ("contact_id", "kind", "name", "step", "properties", "occurred_at", "outbox_id")


@functools.lru_cache(maxsize=65_536)  # a mail client's address comes back hit after hit
def private_ip(ip: str, key: bytes) -> str:
    """What is kept of an address: the network (/24 for IPv4, /48 for IPv6), enough to tell a
    data centre from a home line, and a keyed hash of the whole, to tell two hits apart."""
    network = truncated_ip(ip)
    if not network:
        return ""
    tag = hmac.digest(key, ipaddress.ip_address(ip).packed, hashlib.sha256)[:6].hex()
    return f"{network}#{tag}"


def record_hits(connection: Connection, settings: Settings, key: bytes,
                hits: Sequence[Hit]) -> int:  # fmt: skip
    """Write the hits whose message exists; return how many were written. The message's hits
    already stored take part in the machine rules, and those the batch shows to be a
    machine's are turned into one (their points stay: scores only grow)."""
    ids = {hit.message_key: outbox_id(hit.message_key) for hit in hits}
    found = {row.id: row for row in connection.execute(
        select(outbox.c.id, outbox.c.contact_id, outbox.c.campaign, outbox.c.step,
               outbox.c.sent_at, outbox.c.links)
        .where(one_of(connection, outbox.c.id, [i for i in ids.values() if i is not None]))
    )}  # fmt: skip
    # An erased person's message stays (pseudonymised, contact NULL): their hits are not kept.
    found = {id_: row for id_, row in found.items() if row.contact_id is not None}
    known = [hit for hit in hits if ids[hit.message_key] in found]
    if not known:
        return 0
    keys = {found[ids[hit.message_key]].id: hit.message_key for hit in known}  # id -> key
    sent_at = {key_: found[i].sent_at for key_, i in ids.items() if i in found and found[i].sent_at}
    targets = {key_: json.loads(found[id_].links or "[]") for id_, key_ in keys.items()}
    honeypot = {key_: links.index(HONEYPOT) for key_, links in targets.items() if HONEYPOT in links}
    stored, relabelled, last_opens = _stored_hits(connection, keys, known, sent_at, honeypot)
    scored = _scored(connection, list(keys)) | relabelled
    judged = judge(known, sent_at, honeypot, stored,
                   apple.load(settings.path(settings.tracking.apple_proxy_ranges_file)
                              if settings.tracking.apple_proxy_ranges_file else None),
                   last_opens)  # fmt: skip
    rows: list[dict[str, Any]] = []
    for hit, verdict in zip(known, judged.verdicts, strict=True):
        message = found[ids[hit.message_key]]
        properties: dict[str, Any] = {"user_agent": hit.user_agent[:300],
                                      "ip": private_ip(hit.ip, key)}  # fmt: skip
        if hit.link is not None:
            links = targets[hit.message_key]
            properties |= {"link": hit.link,
                           "url": links[hit.link] if hit.link < len(links) else None}  # fmt: skip
        if verdict.machine:
            properties["machine"] = verdict.reason
        rows.append({"contact_id": message.contact_id,
                     "kind": f"machine_{hit.kind}" if verdict.machine else hit.kind,
                     "name": message.campaign, "step": message.step,
                     "properties": properties, "occurred_at": hit.at,
                     "outbox_id": message.id})  # fmt: skip
    # Compiled once per batch, JSON written here: SQLAlchemy's per-row path cost more than
    # the database (bench/tracking_bench.py).
    execute_many(connection, events.insert(),
                 [(row["contact_id"], row["kind"], row["name"], row["step"],
                   json.dumps(row["properties"], ensure_ascii=False), row["occurred_at"],
                   row["outbox_id"])
                  for row in rows],
                 ready=("properties",), columns=EVENT_COLUMNS)  # fmt: skip
    _relabel(connection, judged.relabel)
    people = [row for row in rows if not row["kind"].startswith("machine_")]
    _score(connection, settings, people, scored)
    enqueue_hits(connection, settings, people)  # outgoing webhooks: opened, clicked
    return len(rows)


def _stored_hits(connection: Connection, keys: dict[int, str], hits: Sequence[Hit],
                 sent_at: dict[str, datetime], honeypot: dict[str, int]
                 ) -> tuple[dict[str, list[StoredHit]], set[tuple[int, int | None]],
                            dict[str, datetime]]:  # fmt: skip
    """The opens and clicks of the batch's messages already stored that the rules can need;
    of those once a person's (`was_person`), what scored, as `_scored` says it; and the last
    open that counts (`bots.judge`'s `last_opens`) of the messages whose earlier opens are
    left unread. A pixel fetched every second makes hundreds of opens a message in the
    rules' reach: only a message whose opens can meet a machine's click (rule 7) has all of
    them read; rule 8 needs only the last before the batch."""
    earliest, latest = min(hit.at for hit in hits), max(hit.at for hit in hits)
    reach = (earliest - WINDOW, latest + WINDOW)
    stored, relabelled = _read_stored(connection, keys, list(keys), CLICKS, *reach)
    # Rule 7 can touch the opens of a message clicked in the batch, or with a machine's click
    # stored, or one that rules 5 and 6 make a machine's (judge: a later look may see more).
    # (A stored honeypot click is a machine's already: only rule 5 can be new, from 3 links.)
    bursts = {key: rows for key, rows in stored.items()
              if len({row.link for row in rows}) >= SAME_SECOND_LINKS}  # fmt: skip
    machine = judge([], sent_at, honeypot, bursts).relabel if bursts else {}
    clicked = {hit.message_key for hit in hits if hit.kind == "click"} | {
        key for key, rows in stored.items()
        if any(row.machine is not None or row.id in machine for row in rows)}  # fmt: skip
    ids = {key: id_ for id_, key in keys.items()}
    every = sorted(ids[key] for key in clicked)
    rest = sorted(id_ for id_, key in keys.items() if key not in clicked)
    for messages, window in ((every, reach), (rest, (earliest, latest))):
        if messages:
            opens, more = _read_stored(connection, keys, messages, OPENS, *window)
            relabelled |= more
            for key, rows in opens.items():
                stored.setdefault(key, []).extend(rows)
    return stored, relabelled, _last_opens(connection, keys, rest, earliest)


CLICKS, OPENS = ("click", "machine_click"), ("open", "machine_open")


def _read_stored(connection: Connection, keys: dict[int, str], messages: list[int],
                 kinds: tuple[str, str], since: datetime, until: datetime
                 ) -> tuple[dict[str, list[StoredHit]], set[tuple[int, int | None]]]:  # fmt: skip
    """The stored hits of `kinds` of `messages` between `since` and `until`; and what those
    once a person's scored. Only the properties the rules read, taken out in SQL."""
    properties = events.c.properties
    rows = connection.execute(
        select(events.c.id, events.c.kind, events.c.occurred_at, events.c.outbox_id,
               properties["machine"].as_string(), properties["link"].as_integer(),
               properties["was_person"].as_boolean())
        .where(one_of(connection, events.c.outbox_id, messages),
               _kind(connection).in_(kinds), events.c.occurred_at.between(since, until))
    )  # fmt: skip
    stored: dict[str, list[StoredHit]] = {}
    relabelled: set[tuple[int, int | None]] = set()
    for id_, kind, at, message, reason, link, was_person in rows:
        person = kind in ("open", "click")
        machine = None if person else (reason or "machine")
        link = link if kind in CLICKS else None
        stored.setdefault(keys[message], []).append(
            StoredHit(id_, "click" if kind in CLICKS else "open", link, at, machine))  # fmt: skip
        if was_person:
            relabelled.add((message, link))
    return stored, relabelled


def _last_opens(connection: Connection, keys: dict[int, str], messages: list[int],
                before: datetime) -> dict[str, datetime]:  # fmt: skip
    """Of each of `messages`, its last open before `before` that counts for rule 8 (a
    person's, or a pixel fetched again), when within `REFETCH` of `before`."""
    if not messages:
        return {}
    reason, kind = events.c.properties["machine"].as_string(), _kind(connection)
    counts = or_(kind == "open", and_(kind == "machine_open", reason.startswith(REFETCHED)))
    rows = connection.execute(
        select(events.c.outbox_id, func.max(events.c.occurred_at))
        .where(one_of(connection, events.c.outbox_id, messages), counts,
               events.c.occurred_at >= before - REFETCH, events.c.occurred_at < before)
        .group_by(events.c.outbox_id)
    )  # fmt: skip
    return {keys[message]: at for message, at in rows}


def _kind(connection: Connection) -> ColumnElement[str]:
    """events.kind for the queries of a batch's messages, kept out of SQLite's choice of
    index (a unary +): without statistics SQLite would walk every open of every message by
    ix_events_kind_name_id instead of the batch's messages' by ix_events_outbox_id_occurred_at
    (PostgreSQL's planner has statistics)."""
    if connection.dialect.name != "sqlite":
        return events.c.kind
    return UnaryExpression(events.c.kind, operator=custom_op("+"), type_=events.c.kind.type)


def _relabel(connection: Connection, reasons: dict[int, str]) -> None:
    """Stored people's opens and clicks the batch showed to be a machine's become one; they
    keep `was_person`, since their points were given and stay (scores only grow)."""
    for id_, reason in sorted(reasons.items()):  # in id order, as another batch would
        row = connection.execute(select(events.c.kind, events.c.properties)
                                 .where(events.c.id == id_)).one()  # fmt: skip
        properties = {**row.properties, "machine": reason, "was_person": True}
        connection.execute(update(events).where(events.c.id == id_)
                           .values(kind=f"machine_{row.kind}", properties=properties))  # fmt: skip


def _scored(connection: Connection, messages: list[int]) -> set[tuple[int, int | None]]:
    """(message, None) for a message whose open already scored, (message, link) for a link
    whose click did: a person's stored open or click."""
    rows = connection.execute(
        select(events.c.outbox_id, events.c.kind, events.c.properties["link"].as_integer())
        .where(one_of(connection, events.c.outbox_id, messages),
               _kind(connection).in_(("open", "click")))
    )  # fmt: skip
    return {(message, link if kind == "click" else None) for message, kind, link in rows}


def _score(connection: Connection, settings: Settings, rows: Sequence[dict[str, Any]],
           scored: set[tuple[int, int | None]]) -> None:  # fmt: skip
    """A person's first open of a message and first click of each of its links score
    ([scoring] points "opened", "clicked"); any of them may move the lifecycle stage."""
    if not rows:
        return
    scoring, latest = settings.scoring, max(row["occurred_at"] for row in rows)
    points: dict[int, float] = {}
    for row in sorted(rows, key=lambda row: row["occurred_at"]):
        what = (row["outbox_id"], row["properties"].get("link") if row["kind"] == "click" else None)
        earned = 0.0 if what in scored else scoring.points.get(POINTS[row["kind"]], 0.0)
        scored.add(what)
        points[row["contact_id"]] = points.get(row["contact_id"], 0.0) + earned
    # Another instance may be scoring the same contacts: their rows are locked in one order.
    lock_in_order(connection, contacts, one_of(connection, contacts.c.id, sorted(points)))
    add_points_many(connection, points, latest, scoring.half_life)
    update_stages(connection, settings, points, latest)
