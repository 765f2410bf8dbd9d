"""Writing a batch of opens and clicks: each names its message (the outbox row), is told human
or machine (tracking/bots.py), and becomes an event row; a person's open or click scores and
may move the contact's lifecycle stage, as website events do."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from mailer.campaigns.activity import update_stages
from mailer.config import Settings
from mailer.consent.evidence import truncated_ip
from mailer.contacts.scoring import add_points_many
from mailer.delivery.claims import outbox_id
from mailer.render.links import HONEYPOT
from mailer.store.bulk import execute_many, one_of
from mailer.store.tables import events, outbox
from mailer.tracking.bots import (
    AROUND_HONEYPOT,
    HONEYPOT_CLICKED,
    classify,
    near_honeypot_reason,
)
from mailer.tracking.hits import Hit

POINTS = {"open": "opened", "click": "clicked"}  # the names [scoring] points use
EVENT_COLUMNS = ("contact_id", "kind", "name", "step", "properties", "occurred_at", "outbox_id")


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
    """Write the hits whose message exists; return how many were written."""
    ids = {hit.message_key: outbox_id(hit.message_key) for hit in hits}
    found = {row.id: row for row in connection.execute(
        select(outbox.c.id, outbox.c.contact_id, outbox.c.campaign, outbox.c.step,
               outbox.c.sent_at, outbox.c.links)
        .where(one_of(connection, outbox.c.id, [i for i in ids.values() if i is not None]))
    )}  # fmt: skip
    # An erased person's message stays (pseudonymised, contact NULL): their hits are not kept.
    found = {id_: row for id_, row in found.items() if row.contact_id is not None}
    known = [hit for hit in hits if ids[hit.message_key] in found]
    sent_at = {key_: found[i].sent_at for key_, i in ids.items() if i in found and found[i].sent_at}
    clicked = {hit.message_key for hit in known if hit.kind == "click"}
    targets = {key_: json.loads(found[ids[key_]].links or "[]") for key_ in clicked}
    honeypot = {key_: links.index(HONEYPOT) for key_, links in targets.items() if HONEYPOT in links}
    verdicts = classify(known, sent_at, honeypot)
    rows: list[dict[str, Any]] = []
    for hit, verdict in zip(known, verdicts, strict=True):
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
    if rows:
        # Compiled once per batch, JSON written here: SQLAlchemy's per-row path cost more than
        # the database (bench/tracking_bench.py).
        execute_many(connection, events.insert(),
                     [(row["contact_id"], row["kind"], row["name"], row["step"],
                       json.dumps(row["properties"], ensure_ascii=False), row["occurred_at"],
                       row["outbox_id"])
                      for row in rows],
                     ready=("properties",), columns=EVENT_COLUMNS)  # fmt: skip
        traps = [row for row in rows if row["properties"].get("machine") == HONEYPOT_CLICKED]
        _around_honeypots(connection, traps)
    _score(connection, settings, [row for row in rows if not row["kind"].startswith("machine_")])
    return len(rows)


def _score(connection: Connection, settings: Settings, rows: Sequence[dict[str, Any]]) -> None:
    """A person's opens and clicks score ([scoring] points "opened", "clicked") and may move
    the lifecycle stage: once per contact per batch."""
    if not rows:
        return
    scoring, latest = settings.scoring, max(row["occurred_at"] for row in rows)
    points: dict[int, float] = {}
    for row in rows:
        points[row["contact_id"]] = (points.get(row["contact_id"], 0.0)
                                     + scoring.points.get(POINTS[row["kind"]], 0.0))  # fmt: skip
    add_points_many(connection, points, latest, scoring.half_life)
    update_stages(connection, settings, points, latest)


def _around_honeypots(connection: Connection, traps: Sequence[dict[str, Any]]) -> None:
    """Clicks of the same message written in earlier batches within AROUND_HONEYPOT of a
    honeypot click become the machine's too. (Their points stay: scores only ever grow.)"""
    for trap in traps:
        at = trap["occurred_at"]
        earlier = connection.execute(
            select(events.c.id, events.c.properties, events.c.occurred_at).where(
                events.c.contact_id == trap["contact_id"], events.c.kind == "click",
                events.c.name == trap["name"], events.c.step == trap["step"],
                events.c.occurred_at.between(at - AROUND_HONEYPOT, at + AROUND_HONEYPOT))
        ).all()  # fmt: skip
        for row in earlier:
            reason = near_honeypot_reason(row.occurred_at, at)
            properties = {**row.properties, "machine": reason}
            connection.execute(update(events).where(events.c.id == row.id)
                               .values(kind="machine_click", properties=properties))  # fmt: skip
