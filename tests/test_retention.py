"""Retention: old opens and clicks rolled up and deleted, website events by choice, click
targets of old messages cleared; `mailer report` the same before and after, the ledger
untouched, a second run a no-op. Seeded through the real paths (tests/reports/test_metrics.py:
the welcome sequence sent into a real SMTP server, opens and clicks over HTTP)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select

from mailer import retention
from mailer.campaigns.engine import tick
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import parse_segment
from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import Retention, Settings, load_settings
from mailer.consent.audit import Period
from mailer.consent.expiry import expire_consent
from mailer.contacts.events import record_event
from mailer.daemon import retention_job
from mailer.errors import SettingsError
from mailer.retention import run_retention
from mailer.returns.effects import STALE_BOUNCE
from mailer.returns.ingest import process
from mailer.returns.rates import period_rates
from mailer.store.tables import (
    consent_entries,
    contacts,
    event_rollups,
    events,
    outbox,
    returned_messages,
    returned_rollups,
    trigger_cursors,
    webhook_deliveries,
    website_contact_rollups,
    website_rollups,
)
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import queue_welcome
from tests.reports import test_metrics
from tests.reports.test_metrics import TIPS_AT, Story, report_of

story = test_metrics.story  # the fixture: six people through the real paths

YEAR_AND_A_DAY = timedelta(days=401)  # past the default 400 days for Monday, not Wednesday


def _settings(story: Story, **retention: Any) -> Settings:
    return story.workspace.settings.model_copy(update={"retention": Retention(**retention)})


def _reports(story: Story) -> list[dict[str, Any]]:
    return [report_of(story), report_of(story, include_machine=True),
            report_of(story, since=NOW + timedelta(days=1)),
            report_of(story, until=NOW + timedelta(days=1))]  # fmt: skip


def _tables(story: Story) -> dict[str, Any]:
    with story.workspace.engine.connect() as connection:
        return {
            "events": sorted((row.kind, row.name, row.step or "")
                             for row in connection.execute(select(events))),
            "rollups": sorted(tuple(row) for row in connection.execute(select(event_rollups))),
            "website": sorted(tuple(row) for row in connection.execute(select(website_rollups))),
            "links": {(row.step, row.links is not None) for row in connection.execute(
                select(outbox.c.step, outbox.c.links).where(outbox.c.status == "sent"))},
            "ledger": connection.scalar(select(func.count()).select_from(consent_entries)),
        }  # fmt: skip


def _verify(story: Story) -> Any:
    environment = {**story.environ, "MAILER_CONFIG": str(story.project / "settings.toml")}
    return CliRunner().invoke(cli, ["consent", "verify"], env=environment)


def test_the_report_counts_the_same_before_and_after_a_roll_up(story: Story) -> None:
    before, tables = _reports(story), _tables(story)
    assert ("open", "welcome", "hello") in tables["events"] and tables["rollups"] == []
    settings = _settings(story, website_events_after="400 days")
    pruned = run_retention(story.workspace.engine, settings, NOW + YEAR_AND_A_DAY)
    # Monday: ada's 2 opens and click, dee's open, eve's machine open and click; her purchase
    assert (pruned.opens_and_clicks, pruned.unmatched, pruned.website_events) == (6, 0, 1)
    assert pruned.links_cleared == 6 and not pruned.busy  # hello's six, not tips' two
    assert _reports(story) == before
    after = _tables(story)
    # Wednesday's open is a day too young; the survey answer is kept whatever its age
    assert after["events"] == [("open", "welcome", "tips"), ("website", "survey_answer", "")]
    assert sorted((kind, day, n) for _, kind, day, n, _ in after["rollups"]) == [
        ("click", "2026-11-23", 1), ("machine_click", "2026-11-23", 1),
        ("machine_open", "2026-11-23", 1), ("open", "2026-11-23", 1),
        ("open", "2026-11-23", 2)]  # ada's two opens are one row  # fmt: skip
    assert after["website"] == [("2026-11-23", "purchased", 1)]
    assert after["links"] == {("hello", False), ("tips", True)}
    assert after["ledger"] == tables["ledger"]
    assert _verify(story).exit_code == 0

    again = run_retention(story.workspace.engine, settings, NOW + YEAR_AND_A_DAY)
    assert (again.opens_and_clicks, again.website_events, again.links_cleared) == (0, 0, 0)
    assert _tables(story) == after and _reports(story) == before

    # Wednesday's open waits for the score rules' next tick to read it (an unread event stays)
    waiting = run_retention(story.workspace.engine, settings, NOW + 2 * YEAR_AND_A_DAY)
    assert (waiting.opens_and_clicks, waiting.links_cleared) == (0, 2)
    tick(story.workspace.engine, story.workspace.settings, NOW + TIPS_AT + timedelta(hours=1))
    later = run_retention(story.workspace.engine, settings, NOW + 2 * YEAR_AND_A_DAY)
    assert (later.opens_and_clicks, later.links_cleared) == (1, 0)
    assert _reports(story) == before
    assert _tables(story)["events"] == [("website", "survey_answer", "")]
    assert _tables(story)["ledger"] == tables["ledger"] and _verify(story).exit_code == 0


def test_a_dry_run_counts_and_changes_nothing(story: Story) -> None:
    tables = _tables(story)
    pruned = run_retention(story.workspace.engine, story.workspace.settings,
                           NOW + YEAR_AND_A_DAY, dry_run=True)  # fmt: skip
    assert pruned.dry_run and (pruned.opens_and_clicks, pruned.links_cleared) == (6, 6)
    assert pruned.website_events == 0  # website events are kept unless settings say otherwise
    assert _tables(story) == tables


def test_never_keeps_everything(story: Story) -> None:
    tables = _tables(story)
    settings = _settings(story, events_after="never", rendered_after="never")
    pruned = run_retention(story.workspace.engine, settings, NOW + 10 * YEAR_AND_A_DAY)
    assert (pruned.opens_and_clicks, pruned.website_events, pruned.links_cleared) == (0, 0, 0)
    assert pruned.events_before is None and _tables(story) == tables


def test_events_a_trigger_has_not_read_are_kept_whatever_their_age(
    workspace: Workspace, project: Path
) -> None:
    queue_welcome(workspace, project, "ada@example.com,Ada")  # a contact to record events of
    with workspace.engine.begin() as connection:
        ids = [record_event(connection, "ada@example.com", "viewed", NOW - timedelta(days=900))[0]
               for _ in range(3)]  # fmt: skip
        # an event trigger read up to the first; the other two (posted late) wait for it
        connection.execute(delete(trigger_cursors))
        connection.execute(trigger_cursors.insert().values(
            campaign="welcome", seen_until=NOW, events_from=ids[0], events_to=ids[0]))  # fmt: skip
        connection.execute(trigger_cursors.insert().values(
            campaign="gone", seen_until=NOW, events_from=0, events_to=0))  # fmt: skip
    retention = Retention(website_events_after="30 days")  # "gone": not in settings
    settings = workspace.settings.model_copy(update={"retention": retention})
    pruned = run_retention(workspace.engine, settings, NOW)
    assert pruned.website_events == 1
    with workspace.engine.connect() as connection:
        assert list(connection.scalars(select(events.c.id).where(events.c.name == "viewed"))) == \
            ids[1:]  # fmt: skip


@pytest.mark.parametrize("value", ["0 days", "0m", "-1 day", 30, "soon"])
def test_a_retention_period_is_over_zero_or_never(value: Any) -> None:
    with pytest.raises(ValidationError, match="events_after"):
        Retention(events_after=value)
    assert Retention(events_after="never").events_after is None
    assert Retention().events_after == timedelta(days=400)
    assert Retention().website_events_after is None


def test_a_bad_period_in_settings_names_the_setting(workspace: Workspace) -> None:
    path = workspace.settings.source
    path.write_text(path.read_text() + '\n[retention]\nrendered_after = "0 days"\n')
    with pytest.raises(Exception, match="rendered_after"):
        load_settings(path, environ={})


def test_the_command_and_the_daemon_job(story: Story) -> None:
    environment = {**story.environ, "MAILER_CONFIG": str(story.project / "settings.toml"),
                   "MAILER_NOW": (NOW + YEAR_AND_A_DAY).isoformat()}  # fmt: skip
    dry = CliRunner().invoke(cli, ["retention", "run", "--dry-run", "--json"], env=environment)
    assert dry.exit_code == 0, dry.output
    said = json.loads(dry.output)
    assert said["links_before"].startswith("2026-11-24T10:00")  # the clock runs from MAILER_NOW
    a_day_before = (NOW + YEAR_AND_A_DAY - timedelta(days=1)).isoformat()[:16]
    assert said["webhook_calls_before"].startswith(a_day_before)
    assert said["returns_before"] == said["events_before"]  # both 400 days by default
    moments = ("events_before", "links_before", "webhook_calls_before", "returns_before")
    assert said | dict.fromkeys(moments) == {
        "dry_run": True, "events_before": None, "website_events_before": None,
        "links_before": None, "webhook_calls_before": None, "returns_before": None,
        "opens_and_clicks": 6, "unmatched": 0, "website_events": 0, "links_cleared": 6,
        "webhook_calls": 0, "returned": 3, "busy": False}  # fmt: skip
    shown = CliRunner().invoke(cli, ["retention", "run"], env=environment)
    assert shown.exit_code == 0, shown.output
    assert "6 opens and clicks rolled up" in shown.output
    assert "click targets of 6 sent messages cleared" in shown.output
    assert "3 returned messages (bounces, complaints, replies) rolled up" in shown.output
    story.workspace.clock.advance(2 * YEAR_AND_A_DAY)  # type: ignore[attr-defined]
    done = retention_job(story.workspace)
    # tips' links; its open waits for the score rules' next tick
    assert done is not None and (done.opens_and_clicks, done.links_cleared) == (0, 2)


def test_an_open_rolled_up_still_holds_consent_from_expiring(
    project: Path, environ: dict[str, str], clock: FrozenClock
) -> None:
    lapsing = {**environ, "MAILER_LISTS__NEWSLETTER__EXPIRES_AFTER": "730d"}
    workspace = Workspace(load_settings(project / "settings.toml", environ=lapsing), clock)
    queue_welcome(workspace, project, "ada@example.com,Ada")  # consent of 2026-01-02
    with workspace.engine.begin() as connection:
        message = connection.execute(select(outbox.c.id, outbox.c.contact_id)).one()
        connection.execute(events.insert().values(
            contact_id=message.contact_id, kind="open", name="welcome", step="hello",
            properties={}, occurred_at=NOW, outbox_id=message.id))  # fmt: skip
    tick(workspace.engine, workspace.settings, NOW + timedelta(minutes=1))  # score rules read it
    pruned = run_retention(workspace.engine, workspace.settings, NOW + YEAR_AND_A_DAY)
    assert pruned.opens_and_clicks == 1
    # 730 days after the grant, not yet 730 after the open (2028-11-22)
    with workspace.engine.begin() as connection:
        assert expire_consent(connection, workspace.settings, NOW + timedelta(days=600)) == 0
        assert expire_consent(connection, workspace.settings, NOW + timedelta(days=731)) == 1
    workspace.close()


SEGMENTS = ('opened step "welcome.hello"', 'clicked "welcome"',
            'opened step "welcome.hello" including machines', "clicked any including machines",
            "opened any within 400d")  # fmt: skip


def _segments(story: Story, now: Any) -> dict[str, set[str]]:
    """Who each of SEGMENTS selects at `now` (first names)."""
    compiler = SegmentCompiler.for_settings(story.workspace.settings, now)
    with story.workspace.engine.connect() as connection:
        return {source: set(connection.scalars(select(contacts.c.first_name)
                                               .where(compiler.where(parse_segment(source)))))
                for source in SEGMENTS}  # fmt: skip


def test_opened_and_clicked_segments_read_what_was_rolled_up(story: Story) -> None:
    """Without `within` (or with one longer than `events_after`), "opened" and "clicked" still
    see the opens and clicks whose rows a roll-up deleted: a reader does not become a
    non-reader after a year."""
    later = NOW + YEAR_AND_A_DAY
    before = _segments(story, later)
    assert before == {
        'opened step "welcome.hello"': {"Ada", "Dee"},
        'clicked "welcome"': {"Ada"},
        'opened step "welcome.hello" including machines': {"Ada", "Dee", "Eve"},
        "clicked any including machines": {"Ada", "Eve"},
        "opened any within 400d": {"Dee"},  # Wednesday's open of tips; Monday's is 401 days old
    }
    pruned = run_retention(story.workspace.engine, story.workspace.settings, later)
    assert pruned.opens_and_clicks == 6
    assert _segments(story, later) == before


WEBSITE_SEGMENTS = ('event "purchased"', 'event "purchased" count >= 2',
                    'not event "purchased"', 'event "purchased" within 500d',
                    'event "purchased" within 100d')  # fmt: skip


def test_event_segments_and_goals_read_the_website_events_rolled_up(story: Story) -> None:
    """With website_events_after set, `event "..."` without a property filter still counts
    each contact's events whose rows a roll-up deleted: a buyer does not become a non-buyer,
    nor a repeat buyer a one-time buyer."""
    later = NOW + YEAR_AND_A_DAY
    with story.workspace.engine.begin() as connection:  # ada bought at +30 min already
        record_event(connection, "ada@example.com", "purchased", NOW + timedelta(minutes=40))
        record_event(connection, "dee@example.com", "purchased", NOW + timedelta(days=350))
    tick(story.workspace.engine, story.workspace.settings, later)  # the score rules read them
    settings = _settings(story, website_events_after="400 days")

    def chosen() -> dict[str, set[str]]:
        compiler = SegmentCompiler.for_settings(settings, later)
        with story.workspace.engine.connect() as connection:
            found = {source: set(connection.scalars(
                select(contacts.c.first_name).where(compiler.where(parse_segment(source)))))
                for source in WEBSITE_SEGMENTS}  # fmt: skip
            for entered in (NOW - timedelta(days=1), NOW + timedelta(days=1)):  # a goal's run
                goal = SegmentCompiler.for_settings(settings, later, entered=entered, goal=True)
                found[f"goal, run entered {entered:%m-%d}"] = set(connection.scalars(
                    select(contacts.c.first_name)
                    .where(goal.where(parse_segment('event "purchased"')))))  # fmt: skip
        return found

    before = chosen()
    assert before == {
        'event "purchased"': {"Ada", "Dee"}, 'event "purchased" count >= 2': {"Ada"},
        'not event "purchased"': {"Bob", "Cy", "Eve", "Fay"},
        'event "purchased" within 500d': {"Ada", "Dee"}, 'event "purchased" within 100d': {"Dee"},
        "goal, run entered 11-22": {"Ada", "Dee"}, "goal, run entered 11-24": {"Dee"},
    }  # fmt: skip
    pruned = run_retention(story.workspace.engine, settings, later)
    assert pruned.website_events == 2  # ada's two; dee's is 51 days old
    with story.workspace.engine.connect() as connection:
        rolled = connection.execute(select(website_contact_rollups)).all()
    assert [(row.name, row.day, row.events) for row in rolled] == [("purchased", "2026-11-23", 2)]
    assert chosen() == before


def test_provider_webhook_calls_are_forgotten_after_a_day(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webhook_deliveries only refuses replays: a signed call older than max_age is refused as
    stale anyway, so a day on (or max_age, if longer) its row goes, BATCH at a time."""
    monkeypatch.setattr(retention, "BATCH", 2)
    now = workspace.clock.now()
    ages = {"old-1": timedelta(days=3), "old-2": timedelta(days=2), "old-3": timedelta(hours=25),
            "new": timedelta(hours=23)}  # fmt: skip
    with workspace.engine.begin() as connection:
        connection.execute(insert(webhook_deliveries), [
            {"provider": "ses", "delivery": name, "received_at": now - age}
            for name, age in ages.items()])  # fmt: skip

    def kept() -> set[str]:
        with workspace.engine.connect() as connection:
            return set(connection.scalars(select(webhook_deliveries.c.delivery)))

    assert run_retention(workspace.engine, workspace.settings, now, dry_run=True).webhook_calls == 3
    assert kept() == set(ages)
    webhooks = workspace.settings.webhooks.model_copy(update={"max_age": timedelta(days=2.5)})
    longer = workspace.settings.model_copy(update={"webhooks": webhooks})
    assert run_retention(workspace.engine, longer, now).webhook_calls == 1
    assert kept() == {"old-2", "old-3", "new"}
    done = run_retention(workspace.engine, workspace.settings, now)
    assert done.webhook_calls == 2 and kept() == {"new"}
    assert run_retention(workspace.engine, workspace.settings, now).webhook_calls == 0


def _returns(story: Story) -> dict[str, Any]:
    """What the sender's rates count over whole UTC days, and the rows retention keeps."""
    monday = NOW.replace(hour=0, minute=0)
    periods = [Period(), Period(since=monday), Period(until=monday + timedelta(days=1)),
               Period(since=monday + timedelta(days=1)), Period(until=monday)]  # fmt: skip
    with story.workspace.engine.connect() as connection:
        return {
            "rates": [period_rates(connection, period) for period in periods],
            "raw": sorted(connection.scalars(select(returned_messages.c.classification))),
            "rolled": sorted((row.day, row.classification, row.events) for row in
                             connection.execute(select(returned_rollups))),
        }  # fmt: skip


def test_returned_messages_roll_up_and_count_the_same(story: Story) -> None:
    """bob's hard bounce, cy's soft one and eve's complaint (Monday 10:10-10:12): rolled up a
    year and a day on, the report (each message's worst return) and the compliance rates over
    whole days count the same; their digests and recipient hashes are gone."""
    before, reports = _returns(story), _reports(story)
    assert before["raw"] == ["complaint", "hard", "soft"] and before["rolled"] == []
    assert [(r.sent, r.hard_bounces, r.complaints) for r in before["rates"]] == [
        (8, 1, 1), (8, 1, 1), (6, 1, 1), (2, 0, 0), (0, 0, 0)]  # fmt: skip
    # A reply not yet forwarded (the relay was down) stays until it is.
    with story.workspace.engine.begin() as connection:
        connection.execute(insert(returned_messages).values(
            digest="r" * 64, received_at=NOW, classification="reply",
            action="replied (welcome.hello)"))  # fmt: skip
    pruned = run_retention(story.workspace.engine, story.workspace.settings,
                           NOW + YEAR_AND_A_DAY)  # fmt: skip
    assert pruned.returned == 3 and pruned.returns_before == NOW + YEAR_AND_A_DAY - timedelta(
        days=400)
    after = _returns(story)
    assert after["raw"] == ["reply"]
    assert after["rolled"] == [("2026-11-23", "complaint", 1), ("2026-11-23", "hard", 1),
                               ("2026-11-23", "soft", 1)]  # fmt: skip
    assert after["rates"] == before["rates"] and _reports(story) == reports
    again = run_retention(story.workspace.engine, story.workspace.settings, NOW + YEAR_AND_A_DAY)
    assert again.returned == 0 and _returns(story) == after

    # bob's bounce read again, its digest forgotten: too old to act on, and counted nowhere
    ids = test_metrics._message_ids(story.workspace)
    with story.workspace.engine.connect() as connection:
        ledger = connection.scalar(select(func.count()).select_from(consent_entries))
    bounce = test_metrics.DSN.format(recipient="bob@example.com", status="5.1.1",
                                     diagnostic="550 5.1.1 user unknown",
                                     message_id=ids["bob@example.com", "hello"])  # fmt: skip
    replayed = process(story.workspace, bounce.encode(), "old.eml", NOW + YEAR_AND_A_DAY)
    assert replayed.action_taken == STALE_BOUNCE
    assert _returns(story)["rates"] == before["rates"] and _reports(story) == reports
    with story.workspace.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(consent_entries)) == ledger
        assert connection.scalar(select(returned_messages.c.classification).where(
            returned_messages.c.received_at == NOW + YEAR_AND_A_DAY)) == "stale"  # fmt: skip


def test_returns_are_kept_longer_than_the_windows_that_count_them(workspace: Workspace) -> None:
    path = workspace.settings.source
    path.write_text(path.read_text() + '\n[retention]\nreturns_after = "7 days"\n')
    with pytest.raises(SettingsError, match=r"retention.returns_after: 1w is not longer than "
                                            r"returns.soft_window \(1w\)"):  # fmt: skip
        load_settings(path, environ={})
