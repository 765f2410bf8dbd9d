"""Writing a batch of opens and clicks: each names its message (the outbox row), is told human
or machine (tracking/bots.py), and becomes an event row, except a pixel fetched again (rule 8),
which is counted per message and UTC day in event_rollups (store/rollups.py); a person's open
or click scores and may move the contact's lifecycle stage, as website events do."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable, Container, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Dialect, case, func, or_, select, update
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import custom_op

from mailer.campaigns.activity import update_stages
from mailer.config import Settings
from mailer.consent.evidence import truncated_ip
from mailer.contacts.scoring import add_points_many
from mailer.delivery.claims import outbox_id
from mailer.render.links import HONEYPOT
from mailer.store.bulk import one_of
from mailer.store.locking import lock_in_order
from mailer.store.rollups import REFETCHES, add_counts, utc_day, utc_days
from mailer.store.tables import contacts, event_rollups, events, outbox
from mailer.tracking import apple
from mailer.tracking.bots import REFETCH, REFETCHED, SAME_SECOND_LINKS, WINDOW, Judgement, judge
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


Facts = tuple[str, str, datetime | None, str | None]  # a message's campaign, step, sent_at, links
MESSAGES_KEPT = 200_000  # sent messages' fixed facts kept by a writer (~40 MB at most)


class Memory:
    """What one writer wrote that rule 8 asks again for nearly every fetch: each message's
    last open that counts (a person's, or a pixel fetched again), by outbox id, as this
    writer committed it. The database stays the truth, since other instances write to it
    too; the memory only spares reads where what it holds decides the same:
    - it is used only for a message that only rule 8 can reach in the batch (no click in the
      batch, no machine's click stored in the rules' reach: `_stored_hits` still reads the
      stored clicks of every message), and only when it makes each of the message's fetches
      in the batch a refetch. Rule 8 is monotone: another instance's opens can only bring a
      last open closer, never make a refetch a new open, so the database would call those
      fetches a machine's too (a reason's seconds may then count from an earlier open). Any
      other outcome, and a message it holds nothing recent of, is read from the database;
    - it learns only what a committed transaction wrote (`keep` after the commit, `drop` after
      a failure), and forgets a message whose opens a click's rules may relabel;
    - entries older than `REFETCH` before the newest are pruned: it holds the last minute's."""

    def __init__(self) -> None:
        self.last_opens: dict[int, datetime] = {}
        # A sent message's campaign, step, send time and links (`_messages`): never changed.
        self.messages: dict[int, Facts] = {}
        self.staged: dict[int, datetime | None] = {}  # the transaction's: None to forget
        self._prune_at = 1_024

    def keep(self) -> None:
        """The transaction that staged was committed: remember what it wrote."""
        for id_, at in self.staged.items():
            if at is None:
                self.last_opens.pop(id_, None)
            elif id_ not in self.last_opens or self.last_opens[id_] < at:
                self.last_opens[id_] = at
        self.staged = {}
        if len(self.last_opens) >= self._prune_at:
            newest = max(self.last_opens.values())
            self.last_opens = {id_: at for id_, at in self.last_opens.items()
                               if newest - at < REFETCH}  # fmt: skip
            self._prune_at = max(1_024, 2 * len(self.last_opens))

    def remember_message(self, id_: int, facts: Facts) -> None:
        if len(self.messages) >= MESSAGES_KEPT:
            self.messages.clear()  # the next batches read them again
        self.messages[id_] = facts

    def drop(self) -> None:
        """The transaction that staged was rolled back."""
        self.staged = {}


def record_hits(connection: Connection, settings: Settings, key: bytes, hits: Sequence[Hit],
                memory: Memory | None = None, *, sparing: bool = True) -> int:  # fmt: skip
    """Write the hits whose message exists; return how many were written. The message's hits
    already stored take part in the machine rules, and those the batch shows to be a
    machine's are turned into one (their points stay: scores only grow). With `memory` (the
    writer's, see `Memory`), what the batch wrote is staged in it: call `memory.keep()` after
    the commit. `sparing=False` reads every stored click in the rules' reach, not only those
    that can change a verdict (`_clicks_to_read`): the plain reading the tests hold it to."""
    if memory is not None:
        memory.staged = {}
    named = {key_: _outbox_id(key_) for key_ in {hit.message_key for hit in hits}}
    found, facts = _messages(connection, sorted({i for i in named.values() if i is not None}),
                             memory)  # fmt: skip
    ids = {key_: id_ for key_, id_ in named.items() if id_ is not None and id_ in found}
    known = [hit for hit in hits if hit.message_key in ids]
    if not known:
        return 0
    keys = {id_: key_ for key_, id_ in ids.items()}  # id -> key
    sent_at = {key_: at for key_, id_ in ids.items() if (at := facts[id_][2]) is not None}
    targets = {key_: _links(facts[id_][3]) for id_, key_ in keys.items()}
    honeypot = {key_: links.index(HONEYPOT) for key_, links in targets.items() if HONEYPOT in links}
    proxies = apple.of_settings(settings)
    judged, relabelled = _judged(connection, keys, known, sent_at, honeypot, proxies, memory,
                                 sparing)  # fmt: skip
    insert, by_name, stamp = _events_insert(connection.dialect)
    people: list[dict[str, Any]] = []  # a person's hits as rows, for scoring and webhooks
    texts: list[tuple[Any, ...]] = []  # every other hit's row as the driver takes it
    refetches: dict[tuple[int, str], list[Any]] = {}  # (message, day) -> [fetches, the last]
    for hit, verdict in zip(known, judged.verdicts, strict=True):
        id_ = ids[hit.message_key]
        if verdict.machine and hit.kind == "open" and (verdict.reason or "").startswith(REFETCHED):
            counted = refetches.setdefault((id_, utc_day(hit.at)), [0, hit.at])
            counted[0] += 1
            counted[1] = max(counted[1], hit.at)
            continue
        contact, (campaign, step, _, _) = found[id_], facts[id_]
        link, url = hit.link, None
        if link is not None:
            links = targets[hit.message_key]
            url = links[link] if link < len(links) else None
        properties, text = _properties(hit.user_agent[:300], private_ip(hit.ip, key), link, url,
                                       verdict.reason if verdict.machine else None)  # fmt: skip
        kind = f"machine_{hit.kind}" if verdict.machine else hit.kind
        texts.append((contact, kind, campaign, step, text, stamp(hit.at), id_))
        if not verdict.machine:
            row = (contact, kind, campaign, step, properties, hit.at, id_)
            people.append(dict(zip(EVENT_COLUMNS, row, strict=True)))
    # What scored already (read before this batch's rows are in) matters only for a person's
    # hits: the messages of the batch's.
    scored = _scored(connection, sorted({row["outbox_id"] for row in people})) | relabelled
    if texts and by_name:
        connection.exec_driver_sql(insert, [dict(zip(EVENT_COLUMNS, row, strict=True))
                                            for row in texts])  # fmt: skip
    elif texts:
        connection.exec_driver_sql(insert, texts)
    add_counts(connection, event_rollups, ("outbox_id", "kind", "day"),
               [{"outbox_id": id_, "kind": REFETCHES, "day": day, "events": n, "last_at": last}
                for (id_, day), (n, last) in sorted(refetches.items())])  # fmt: skip
    _relabel(connection, judged.relabel)
    _score(connection, settings, people, scored)
    enqueue_hits(connection, settings, people)  # outgoing webhooks: opened, clicked
    return len(texts) + sum(int(n) for n, _ in refetches.values())


@functools.lru_cache(maxsize=8)  # an engine's dialect: its statement is compiled once
def _events_insert(dialect: Dialect) -> tuple[str, bool, Callable[[datetime], Any]]:
    """The events INSERT as the driver takes it, for rows of `EVENT_COLUMNS` whose properties
    are JSON text already: its SQL, whether its parameters are named (else positional, in
    `EVENT_COLUMNS` order), and how an occurred_at is written (the column type's own
    conversion). SQLAlchemy's per-row path cost more than the database (tracking_bench.py)."""
    columns = list(EVENT_COLUMNS)
    compiled = events.insert().compile(dialect=dialect, column_keys=columns)
    if compiled.positional and tuple(compiled.positiontup or ()) != EVENT_COLUMNS:
        raise AssertionError(f"events INSERT takes {compiled.positiontup}, not {EVENT_COLUMNS}")
    converted = {name for name, bind in compiled.binds.items()
                 if bind.type.dialect_impl(dialect).bind_processor(dialect)}  # fmt: skip
    if not converted <= {"properties", "occurred_at"}:
        raise AssertionError(f"events columns {converted} need a conversion rows do not make")
    occurred_at = events.c.occurred_at.type.dialect_impl(dialect).bind_processor(dialect)
    return compiled.string, not compiled.positional, occurred_at or _as_is


def _as_is(value: datetime) -> Any:
    return value


@functools.lru_cache(maxsize=65_536)  # a pixel fetched again names the same message
def _outbox_id(key: str) -> int | None:
    return outbox_id(key)


def _messages(connection: Connection, wanted: list[int], memory: Memory | None
              ) -> tuple[dict[int, int], dict[int, Facts]]:  # fmt: skip
    """Of the outbox rows of `wanted` that exist and whose person is not erased (an erased
    person's message stays, pseudonymised, contact NULL: their hits are not kept), each one's
    contact and its facts. A sent message's campaign, step, send time and links do not
    change: `memory` keeps them, and only the contact (NULL once erased) is read again."""
    known = memory.messages if memory is not None else {}
    found: dict[int, int] = {}
    facts: dict[int, Facts] = {}
    missing = wanted
    if known:
        contacts_ = dict(connection.execute(
            select(outbox.c.id, outbox.c.contact_id)
            .where(one_of(connection, outbox.c.id, wanted), outbox.c.contact_id.is_not(None))
        ).all())  # fmt: skip
        found = {id_: contact for id_, contact in contacts_.items() if id_ in known}
        facts = {id_: known[id_] for id_ in found}
        missing = [id_ for id_ in contacts_ if id_ not in known]  # found if still there below
    if missing:
        for id_, contact, *fixed in connection.execute(
            select(outbox.c.id, outbox.c.contact_id, outbox.c.campaign, outbox.c.step,
                   outbox.c.sent_at, outbox.c.links)
            .where(one_of(connection, outbox.c.id, missing), outbox.c.contact_id.is_not(None))
        ):  # fmt: skip
            found[id_], facts[id_] = contact, tuple(fixed)
            if memory is not None and fixed[2] is not None:
                memory.remember_message(id_, facts[id_])
    return found, facts


@functools.lru_cache(maxsize=4096)  # a campaign's messages share their links
def _links(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text or "[]"))


@functools.lru_cache(maxsize=65_536)  # a batch repeats a few agents, addresses and reasons
def _properties(user_agent: str, ip: str, link: int | None, url: str | None,
                machine: str | None) -> tuple[dict[str, Any], str]:  # fmt: skip
    """An event's properties, and as the JSON text stored (callers do not change them)."""
    properties: dict[str, Any] = {"user_agent": user_agent, "ip": ip}
    if link is not None:
        properties |= {"link": link, "url": url}
    if machine is not None:
        properties["machine"] = machine
    return properties, json.dumps(properties, ensure_ascii=False)


def _judged(connection: Connection, keys: dict[int, str], hits: Sequence[Hit],
            sent_at: dict[str, datetime], honeypot: dict[str, int], proxies: Container[str],
            memory: Memory | None, sparing: bool
            ) -> tuple[Judgement, set[tuple[int, int | None]]]:  # fmt: skip
    """The batch's verdicts and relabelled stored hits (`bots.judge`), and what of the stored
    hits read had scored (`_stored_hits`). A message `memory` was asked about but could not
    decide is judged again from the database (see `Memory`); what the batch wrote is staged
    in `memory`."""
    recalled = memory.last_opens if memory is not None else {}
    stored, relabelled, last_opens, used, clicked = _stored_hits(
        connection, keys, hits, sent_at, honeypot, recalled, sparing)  # fmt: skip
    judged = judge(hits, sent_at, honeypot, stored, proxies, last_opens)
    undecided = {hit.message_key for hit, verdict in zip(hits, judged.verdicts, strict=True)
                 if hit.message_key in used and not verdict.machine}  # fmt: skip
    if undecided:  # the memory could not decide them: the database's answer, as without it
        doubted = {id_: key for id_, key in keys.items() if key in undecided}
        positions = [n for n, hit in enumerate(hits) if hit.message_key in undecided]
        again = [hits[n] for n in positions]
        more, more_relabelled, more_last, _, _ = _stored_hits(
            connection, doubted, again, sent_at, honeypot, {}, sparing)  # fmt: skip
        verdicts = list(judged.verdicts)
        for n, verdict in zip(positions, judge(again, sent_at, honeypot, more, proxies,
                                               more_last).verdicts, strict=True):  # fmt: skip
            verdicts[n] = verdict
        judged, relabelled = Judgement(verdicts, judged.relabel), relabelled | more_relabelled
    if memory is not None:
        ids = {key: id_ for id_, key in keys.items()}
        for hit, verdict in zip(hits, judged.verdicts, strict=True):
            if hit.kind == "open" and (
                not verdict.machine or (verdict.reason or "").startswith(REFETCHED)
            ):
                id_ = ids[hit.message_key]
                at = memory.staged.get(id_)
                if at is None or at < hit.at:
                    memory.staged[id_] = hit.at
        # A click's rules may relabel the message's opens (a machine's click, a burst, a click
        # in the batch): they are read again next time. A person's click stored alone cannot.
        for key in clicked:
            memory.staged[ids[key]] = None
    return judged, relabelled


def _stored_hits(connection: Connection, keys: dict[int, str], hits: Sequence[Hit],
                 sent_at: dict[str, datetime], honeypot: dict[str, int],
                 recalled: dict[int, datetime], sparing: bool
                 ) -> tuple[dict[str, list[StoredHit]], set[tuple[int, int | None]],
                            dict[str, datetime], set[str], set[str]]:  # fmt: skip
    """The opens and clicks of the batch's messages already stored that the rules can need;
    of those once a person's (`was_person`), what scored, as `_scored` says it; the last
    open that counts (`bots.judge`'s `last_opens`) of the messages whose earlier opens are
    left unread; the messages whose last open came from `recalled` (a `Memory`'s) instead
    of the database; and those a click's rules can reach (all their opens in reach read).
    A pixel fetched every second makes hundreds of opens a message in the
    rules' reach: only a message whose opens can meet a machine's click (rule 7) has all of
    them read; rule 8 needs only the last before the batch."""
    earliest, latest = min(hit.at for hit in hits), max(hit.at for hit in hits)
    reach = (earliest - WINDOW, latest + WINDOW)
    clicks = _clicks_to_read(connection, keys, hits, honeypot, *reach) if sparing else list(keys)
    stored, relabelled = _read_stored(connection, keys, clicks, CLICKS, *reach)
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
    # Only rule 8 can reach the rest: a recent last open remembered stands in for the reads.
    first: dict[str, datetime] = {}
    for hit in hits:
        if hit.message_key not in first or hit.at < first[hit.message_key]:
            first[hit.message_key] = hit.at
    remembered = {keys[id_]: recalled[id_] for id_ in rest if id_ in recalled
                  and timedelta(0) <= first[keys[id_]] - recalled[id_] < REFETCH}  # fmt: skip
    rest = [id_ for id_ in rest if keys[id_] not in remembered]
    for messages, window in ((every, reach), (rest, (earliest, latest))):
        if messages:
            opens, more = _read_stored(connection, keys, messages, OPENS, *window)
            relabelled |= more
            for key, rows in opens.items():
                stored.setdefault(key, []).extend(rows)
    last_opens = _last_opens(connection, keys, rest, earliest)
    for key, at in _last_refetches(connection, keys, every + rest, first).items():
        if key not in last_opens or last_opens[key] < at:
            last_opens[key] = at
    return stored, relabelled, last_opens | remembered, set(remembered), clicked


CLICKS, OPENS = ("click", "machine_click"), ("open", "machine_open")


def _clicks_to_read(connection: Connection, keys: dict[int, str], hits: Sequence[Hit],
                    honeypot: dict[str, int], since: datetime, until: datetime
                    ) -> list[int]:  # fmt: skip
    """The batch's messages whose stored clicks between `since` and `until` the rules can
    use: those clicked in the batch, and those whose stored clicks hold a machine's, the
    honeypot link or `SAME_SECOND_LINKS` links. The others have only people's clicks of
    fewer links stored, which neither a batch of opens nor each other can turn (rules 5-7
    need a burst, the honeypot or a machine's click): their rows are not read (a message
    clicked a few times a minute would cost each open several rows' reading), and the
    database answers which messages those are, read from ix_events_clicks alone (kind and
    link are in it): not each click's row and JSON, nor every open's."""
    clicked = {hit.message_key for hit in hits if hit.kind == "click"}
    link, kind = events.c.link, events.c.kind
    # A link that is the honeypot of any of the batch's messages: more rows read at most (a
    # campaign's messages put the honeypot at the same place), the same verdicts.
    baits = sorted(set(honeypot.values()))
    messages = connection.scalars(
        select(events.c.outbox_id)
        .where(one_of(connection, events.c.outbox_id, list(keys)), link.is_not(None),
               events.c.occurred_at.between(since, until))
        .group_by(events.c.outbox_id)
        .having(or_(func.count(case((kind != "click", 1))) > 0,
                    func.count(link.distinct()) >= SAME_SECOND_LINKS,
                    *([func.count(case((link.in_(baits), 1))) > 0] if baits else [])))
    )  # fmt: skip
    wanted = clicked | {keys[message] for message in messages}
    return sorted(id_ for id_, key in keys.items() if key in wanted)


def _read_stored(connection: Connection, keys: dict[int, str], messages: list[int],
                 kinds: tuple[str, str], since: datetime, until: datetime
                 ) -> tuple[dict[str, list[StoredHit]], set[tuple[int, int | None]]]:  # fmt: skip
    """The stored hits of `kinds` of `messages` between `since` and `until`; and what those
    once a person's scored. Only the properties the rules read, taken out in SQL."""
    if not messages:
        return {}, set()
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
    """Of each of `messages`, its last person's open before `before`, when within `REFETCH`
    of `before` (a pixel fetched again is counted, not stored: `_last_refetches`)."""
    if not messages:
        return {}
    rows = connection.execute(
        select(events.c.outbox_id, func.max(events.c.occurred_at))
        .where(one_of(connection, events.c.outbox_id, messages), _kind(connection) == "open",
               events.c.occurred_at >= before - REFETCH, events.c.occurred_at < before)
        .group_by(events.c.outbox_id)
    )  # fmt: skip
    return {keys[message]: at for message, at in rows}


def _last_refetches(connection: Connection, keys: dict[int, str], messages: list[int],
                    first: dict[str, datetime]) -> dict[str, datetime]:  # fmt: skip
    """Of each of `messages`, the last pixel fetched again (counted in event_rollups), when
    within `REFETCH` before the message's `first` hit in the batch. One later than that hit
    (another instance's, written first) is taken at the hit: the fetches counted form a chain
    with less than `REFETCH` between any two, so the hit falls inside it."""
    if not messages:
        return {}
    earliest = min(first[keys[message]] for message in messages)
    latest = max(first[keys[message]] for message in messages)
    days = utc_days(earliest - REFETCH, latest + REFETCH)
    rows = connection.execute(
        select(event_rollups.c.outbox_id, func.max(event_rollups.c.last_at))
        .where(one_of(connection, event_rollups.c.outbox_id, messages),
               event_rollups.c.kind == REFETCHES, event_rollups.c.day.in_(days),
               event_rollups.c.last_at >= earliest - REFETCH)
        .group_by(event_rollups.c.outbox_id)
    )  # fmt: skip
    found = {}
    for message, at in rows:
        hit = first[keys[message]]
        if hit - at < REFETCH:
            found[keys[message]] = min(at, hit)
    return found


def _kind(connection: Connection) -> ColumnElement[str]:
    """events.kind for the queries of a batch's messages, kept out of SQLite's choice of
    index (a unary +): without statistics SQLite would walk every open of every message by
    ix_events_kind_name_occurred_at instead of the batch's messages' by
    ix_events_outbox_id_occurred_at (PostgreSQL's planner has statistics)."""
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
    if not messages:
        return set()
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
