"""A broadcast's send-time test (`variants.B.send_at` with `[campaigns.NAME.ab]`), as Mailchimp
runs one: every recipient is in the test and gets their variant (the split of timing.py, in SQL
as in Python) at the variant's own time: A, and any variant without a send_at of its own, at
the broadcast's send_at (the run's zone `*`), B at variants.B.send_at (its row `variant B` in
broadcast_zones). Each group is decided once: queued to who is in the list and segment then,
or stale when found more than a day late. `wait` after the last group the winner is decided
as for any A/B test (ab_tests.decide_when_due), and nothing is left to send."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, select

from mailer.campaigns.broadcast_state import EVERY_ZONE, LATE_LIMIT, BroadcastState, ZoneDecision
from mailer.config import Campaign
from mailer.durations import format_duration
from mailer.logs import logger
from mailer.send_times import parse_send_at
from mailer.store.tables import broadcast_zones

GROUP = "variant "  # a later group's zone in broadcast_zones: `variant B` (no zone has a space)


def send_times(campaign: Campaign) -> dict[str, datetime]:
    """When each variant's group goes, A first, for a send-time test; empty for any other
    broadcast (mailer check makes every send_at absolute, none before the broadcast's)."""
    if campaign.ab is None or campaign.send_at is None:
        return {}
    if all(variant.send_at is None for variant in campaign.variants.values()):
        return {}
    start = parse_send_at(campaign.send_at)[0]
    return {"A": start, **{label: start if variant.send_at is None
                           else parse_send_at(variant.send_at)[0]
                           for label, variant in campaign.variants.items()}}  # fmt: skip


def first_group(campaign: Campaign) -> list[str]:
    """The variants queued at the broadcast's send_at (with the run's zone `*`)."""
    times = send_times(campaign)
    return [label for label, moment in times.items() if moment == times["A"]]


def later_groups(campaign: Campaign) -> dict[str, datetime]:
    """The variants queued later, each at its own time (as the zone `variant B`)."""
    times = send_times(campaign)
    return {label: moment for label, moment in times.items() if moment != times["A"]}


def group_decisions(connection: Connection, campaign: Campaign, name: str,
                    key: str) -> dict[str, ZoneDecision]:  # fmt: skip
    """Each variant whose group was decided (queued, or found stale), with that decision."""
    rows = {row.zone: ZoneDecision(row.zone, row.state, row.decided_at, row.messages)
            for row in connection.execute(
                select(broadcast_zones).where(broadcast_zones.c.campaign == name,
                                              broadcast_zones.c.send_at == key))}  # fmt: skip
    found = {label: rows[EVERY_ZONE] for label in first_group(campaign) if EVERY_ZONE in rows}
    for label in later_groups(campaign):
        if GROUP + label in rows:
            found[label] = rows[GROUP + label]
    return found


def groups_due(connection: Connection, campaign: Campaign, name: str, key: str,
               now: datetime) -> dict[str, str]:  # fmt: skip
    """The later groups a tick at `now` decides: `queued` once their time has come, `stale`
    (logged, not sent) when it came more than LATE_LIMIT ago, as a broadcast's zone."""
    decided = group_decisions(connection, campaign, name, key)
    due = {}
    for label, moment in later_groups(campaign).items():
        if label in decided or moment > now:
            continue
        due[label] = "stale" if moment + LATE_LIMIT < now else "queued"
        if due[label] == "stale":
            logger.warning("send-time group not sent", extra={
                "campaign": name, "variant": label, "send_at": moment.isoformat(),
                "reason": f"found {_hours_late(moment, now)}h late (more than "
                          f"{format_duration(LATE_LIMIT)})"})  # fmt: skip
    return due


def test_went(connection: Connection, campaign: Campaign, name: str,
              key: str) -> datetime | None:  # fmt: skip
    """When the last group was queued, once every group is decided and one was queued."""
    decided = group_decisions(connection, campaign, name, key)
    if len(decided) < len(send_times(campaign)):
        return None
    queued = [decision.decided_at for decision in decided.values() if decision.state == "queued"]
    return max(queued, default=None)


def since(connection: Connection, campaign: Campaign, name: str,
          key: str) -> dict[str, datetime]:  # fmt: skip
    """When each variant's group was queued: its conversions count from then."""
    return {label: decision.decided_at for label, decision
            in group_decisions(connection, campaign, name, key).items()
            if decision.state == "queued"}  # fmt: skip


def decided_note(connection: Connection, campaign: Campaign, name: str, key: str,
                 winner: str) -> str:  # fmt: skip
    """What the decision's reason adds: when the winner went, that nothing is left to send,
    and the groups not sent: `; send-time test: B at Tue 2026-11-24 18:00 UTC, everyone got
    theirs, nothing left to send`."""
    times = send_times(campaign)
    stale = {label: decision for label, decision
             in group_decisions(connection, campaign, name, key).items()
             if decision.state == "stale"}  # fmt: skip
    everyone = "" if stale else ", everyone got theirs"
    note = f"; send-time test: {winner} at {_day_at(times[winner])}{everyone}, nothing left to send"
    for label, decision in stale.items():
        late = _hours_late(times[label], decision.decided_at)
        note += f"; {label} not sent: its group was found {late}h late"
    return note


def decided_log(campaign: Campaign, winner: str, reason: str) -> str:
    """`send-time test decided: B (Tue 18:00 UTC) wins on opens`."""
    assert campaign.ab is not None
    when = f"{send_times(campaign)[winner]:%a %H:%M} UTC"
    if "sending the default" in reason:
        return (f"send-time test decided: {winner} ({when}), the default: no clear winner on "
                f"{campaign.ab.decide_by}")  # fmt: skip
    return f"send-time test decided: {winner} ({when}) wins on {campaign.ab.decide_by}"


def testing_state(connection: Connection, campaign: Campaign, name: str, key: str,
                  state: BroadcastState, test_messages: int) -> BroadcastState:  # fmt: skip
    """Where a send-time test stands before its decision: scheduled (its groups' times), then
    testing (the groups queued and to come, then when it decides)."""
    test, times = campaign.ab, send_times(campaign)
    assert test is not None
    decided = group_decisions(connection, campaign, name, key)
    deciding = f"by people's {test.decide_by} {format_duration(test.wait)} after the last"
    if not decided:
        if state.state != "scheduled":
            return state
        groups = ", ".join(f"{labels} at {_day_at(moment)}" for moment, labels in _by_time(times))
        return BroadcastState(state.state, f"{state.why}; send-time test: {groups}, everyone "
                              f"in it; the winner {deciding}")  # fmt: skip
    went = test_went(connection, campaign, name, key)
    if went is not None:
        return BroadcastState("testing", f"decides at {_at(went + test.wait)} by people's "
                              f"{test.decide_by}: {test_messages} test messages, the last "
                              f"group queued at {_at(went)}")  # fmt: skip
    if len(decided) == len(times):
        return state  # every group found stale: nothing to decide
    parts = []
    for moment, labels in _by_time(times):
        decision = decided.get(labels.split(" and ")[0])
        if decision is None:
            parts.append(f"{labels} {'go' if ' and ' in labels else 'goes'} at {_at(moment)}")
        elif decision.state == "queued":
            parts.append(f"{labels} queued at {_at(decision.decided_at)} "
                         f"({decision.messages} messages)")  # fmt: skip
        else:
            parts.append(f"{labels} not sent (found "
                         f"{_hours_late(moment, decision.decided_at)}h late)")  # fmt: skip
    return BroadcastState("testing", f"send-time test: {'; '.join(parts)}; decides {deciding}")


def _by_time(times: dict[str, datetime]) -> list[tuple[datetime, str]]:
    """The groups in time order, each as its variants: `A and C`."""
    moments = sorted(set(times.values()))
    return [(moment, " and ".join(label for label, at in times.items() if at == moment))
            for moment in moments]  # fmt: skip


def _hours_late(moment: datetime, found: datetime) -> int:
    return int((found - moment).total_seconds() // 3600)


def _day_at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a %Y-%m-%d %H:%M UTC")


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
