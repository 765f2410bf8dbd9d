"""A broadcast's A/B test with an auto-winner (`[campaigns.NAME.ab]`), as Mailchimp and Mautic
run one: at send_at only the test fraction of the recipients is queued, each with its variant;
`wait` later the winner by people's opens, clicks or conversions is decided once (machine
events never count), stored in `ab_decisions` and logged, and the rest of the list is queued
with it. A tie, an underpowered test or no data sends the declared `default`.

Who is in the test is a deterministic function of the contact and the broadcast, computed with
the variant arithmetic (timing.variant_point) under its own key, so the same in SQL (queueing)
and in Python, and independent of which variant the contact gets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailer.campaigns import send_time_tests
from mailer.campaigns.broadcast_state import EVERY_ZONE, BroadcastState
from mailer.campaigns.goals import compiled
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.timing import POINTS, N, variant_key, variant_point
from mailer.config import AbTest, Campaign, Settings
from mailer.durations import format_duration
from mailer.logs import logger
from mailer.reports.ab import decide
from mailer.store.tables import ab_decisions, broadcast_zones, contacts, events, outbox

TEST_SPLIT = "broadcast.test"  # the split's own key: in the test or not, whatever the variant
# What counts as a person's success per decide_by: a click is an open with images off.
PEOPLE_EVENTS = {"opens": ("open", "click"), "clicks": ("click",)}


def test_cutoff(fraction: float) -> int:
    """Contacts whose point on the test split is below this are in the test."""
    return max(1, round(fraction * POINTS))


def test_point(contact_id: N, name: str) -> N:
    """Where a contact falls on the broadcast's test split (an int, or an SQL expression)."""
    return variant_point(contact_id, variant_key(name, TEST_SPLIT))


def in_test(contact_id: int, name: str, fraction: float) -> bool:
    """Whether the contact is in the test fraction of broadcast `name` (queued at send_at)."""
    return test_point(contact_id, name) < test_cutoff(fraction)


@dataclass(frozen=True)
class Decision:
    winner: str
    reason: str
    decide_by: str
    numbers: dict[str, dict[str, int]]  # variant -> {"successes": n, "trials": n}
    decided_at: datetime
    rest_queued: int


def find_decision(connection: Connection, name: str, key: str) -> Decision | None:
    row = connection.execute(
        select(ab_decisions).where(ab_decisions.c.campaign == name, ab_decisions.c.send_at == key)
    ).one_or_none()
    if row is None:
        return None
    return Decision(row.winner, row.reason, row.decide_by, row.numbers, row.decided_at,
                    row.rest_queued)  # fmt: skip


def test_went(connection: Connection, campaign: Campaign, name: str,
              key: str) -> datetime | None:  # fmt: skip
    """When the test of the run of (name, key) was queued, or None (not yet): its fraction, or
    a send-time test's last group."""
    if send_time_tests.send_times(campaign):
        return send_time_tests.test_went(connection, campaign, name, key)
    return _first_went(connection, name, key)


def _first_went(connection: Connection, name: str, key: str) -> datetime | None:
    return connection.scalar(
        select(broadcast_zones.c.decided_at).where(
            broadcast_zones.c.campaign == name, broadcast_zones.c.send_at == key,
            broadcast_zones.c.zone == EVERY_ZONE, broadcast_zones.c.state == "queued")
    )  # fmt: skip


def awaiting_winner(connection: Connection, campaign: Campaign, name: str, key: str) -> bool:
    """The test began (its first group, for a send-time test) and the winner is not decided
    yet: the run is not done."""
    began = _first_went(connection, name, key) or send_time_tests.since(connection, campaign,
                                                                        name, key)  # fmt: skip
    return campaign.ab is not None and bool(began) and find_decision(connection, name, key) is None


def decide_when_due(connection: Connection, settings: Settings, name: str, campaign: Campaign,
                    key: str, cycle: int, now: datetime,
                    queue_rest: Callable[[str, datetime], int]) -> int:  # fmt: skip
    """Once `wait` has passed since the test went: decide the winner, store and log it, and
    queue the rest with it (`queue_rest(winner, test_went)`); return how many were queued.
    A send-time test sent every group already: nothing is left, the reason says so."""
    test = campaign.ab
    went = test_went(connection, campaign, name, key) if test is not None else None
    if test is None or went is None or now < went + test.wait:
        return 0
    if find_decision(connection, name, key) is not None:
        return 0
    send_time = bool(send_time_tests.send_times(campaign))
    starts = send_time_tests.since(connection, campaign, name, key) if send_time else {}
    numbers = results(connection, settings, name, campaign, test, cycle, starts or {"*": went},
                      now)  # fmt: skip
    arms = [(label, counts["successes"], counts["trials"]) for label, counts in numbers.items()]
    winner, reason = decide(arms, test.default, test.confidence)
    if send_time:
        reason += send_time_tests.decided_note(connection, campaign, name, key, winner)
    row = {"campaign": name, "send_at": key, "decide_by": test.decide_by, "winner": winner,
           "reason": reason, "numbers": numbers, "decided_at": now, "rest_queued": 0}  # fmt: skip
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    claimed = connection.execute(dialect.insert(ab_decisions).values(**row)
                                 .on_conflict_do_nothing()).rowcount  # fmt: skip
    if not claimed:
        return 0  # another tick decided it first
    if send_time:
        logger.info(send_time_tests.decided_log(campaign, winner, reason), extra={
            "campaign": name, "winner": winner, "decide_by": test.decide_by, "reason": reason,
            "numbers": numbers, "rest_queued": 0})  # fmt: skip
        return 0
    rest = queue_rest(winner, went)
    connection.execute(
        update(ab_decisions)
        .where(ab_decisions.c.campaign == name, ab_decisions.c.send_at == key)
        .values(rest_queued=rest)
    )  # fmt: skip
    logger.info("A/B test decided", extra={
        "campaign": name, "winner": winner, "decide_by": test.decide_by, "reason": reason,
        "numbers": numbers, "rest_queued": rest})  # fmt: skip
    return rest


def results(connection: Connection, settings: Settings, name: str, campaign: Campaign,
            test: AbTest, cycle: int, went: dict[str, datetime],
            now: datetime) -> dict[str, dict[str, int]]:  # fmt: skip
    """Per variant: the test messages sent (trials) and those whose person opened or clicked
    them, or reached the goal since the test went (successes). People's events only. `went`:
    when each variant's group went (a send-time test), or `{"*": when the test went}`."""
    label = func.coalesce(outbox.c.variant, "A")
    sent = and_(outbox.c.campaign == name, outbox.c.step == "broadcast", outbox.c.cycle == cycle,
                outbox.c.status == "sent")  # fmt: skip
    numbers = {variant: {"successes": 0, "trials": 0} for variant in ["A", *campaign.variants]}
    trials = connection.execute(
        select(label.label("variant"), func.count().label("messages")).where(sent)
        .group_by(label)
    )  # fmt: skip
    for row in trials:
        numbers.setdefault(row.variant, {"successes": 0, "trials": 0})["trials"] = row.messages
    for variant, count in _successes(connection, settings, campaign, test, sent, went, now):
        numbers[variant]["successes"] = count
    return numbers


def _successes(connection: Connection, settings: Settings, campaign: Campaign, test: AbTest,
               sent: Any, went: dict[str, datetime],
               now: datetime) -> list[tuple[str, int]]:  # fmt: skip
    label = func.coalesce(outbox.c.variant, "A")
    if test.decide_by != "conversions":
        query = (select(label.label("variant"), func.count().label("people"))
                 .where(sent, people_engaged(test.decide_by, now)).group_by(label))  # fmt: skip
        return [(row.variant, row.people) for row in connection.execute(query)]
    assert campaign.goal is not None  # mailer check: conversions need a goal
    found = []
    for variant, entered in went.items():  # the goal reached after the variant went
        compiler = SegmentCompiler.for_settings(settings, now, entered=entered, goal=True)
        which = [] if variant == "*" else [label == variant]
        query = (select(label.label("variant"), func.count().label("people"))
                 .join(contacts, contacts.c.id == outbox.c.contact_id)
                 .where(sent, compiled(compiler, campaign.goal), *which)
                 .group_by(label))  # fmt: skip
        found += [(row.variant, row.people) for row in connection.execute(query)]
    return found


def people_engaged(decide_by: str, now: datetime, message: Any = outbox.c.id) -> Any:
    """SQL: the message (an outbox id column) has a person's open or click (per `decide_by`,
    "opens" or "clicks") by `now`; machine_open and machine_click never count."""
    return exists().where(events.c.outbox_id == message,
                          events.c.kind.in_(PEOPLE_EVENTS[decide_by]),
                          events.c.occurred_at <= now)  # fmt: skip


def test_state(connection: Connection, campaign: Campaign, name: str, key: str,
               state: BroadcastState, test_messages: int) -> BroadcastState:  # fmt: skip
    """Where a broadcast with an auto-winner test stands: as any broadcast before its test
    went; `testing` until the winner is decided; then as any broadcast, the winner first."""
    test, decision = campaign.ab, find_decision(connection, name, key)
    assert test is not None
    times = send_time_tests.send_times(campaign)
    if decision is not None:
        sent_at = f" ({times[decision.winner]:%a %H:%M} UTC)" if decision.winner in times else ""
        why = state.why
        last = send_time_tests.test_went(connection, campaign, name, key) if times else None
        if state.state == "sent" and last is not None:  # the run's zone is only the first group
            why = f"{test_messages} messages queued by {_at(last)}, all delivered or settled"
        return BroadcastState(state.state, f"{'send-time test: ' if times else ''}winner "
                              f"{decision.winner}{sent_at} by {decision.decide_by} "
                              f"({decision.reason}); {why}")  # fmt: skip
    if times:
        return send_time_tests.testing_state(connection, campaign, name, key, state,
                                             test_messages)  # fmt: skip
    went = test_went(connection, campaign, name, key)
    if went is None:
        if state.state != "scheduled":
            return state
        return BroadcastState(state.state, f"{state.why}; A/B test: {test.test_fraction:.0%} "
                              f"first, the winner {format_duration(test.wait)} later")  # fmt: skip
    decides = went + test.wait
    return BroadcastState("testing", f"decides at {_at(decides)} by people's {test.decide_by}: "
                          f"{test_messages} test messages queued at {_at(went)}")  # fmt: skip


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
