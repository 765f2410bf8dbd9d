"""A broadcast's A/B test with an auto-winner, and resends to who did not open: through the real
engine with the injected clock, real SQLite and PostgreSQL, delivery into a real SMTP server,
opens and clicks through the real recording path (tracking/recording.py, machine rules too)."""

from __future__ import annotations

import email
import json
import logging
import os
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.campaigns.ab_tests import in_test
from mailer.campaigns.engine import tick
from mailer.campaigns.timing import pick_variant
from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.consent.person import withdraw
from mailer.delivery.claims import message_key
from mailer.delivery.worker import Deliverer
from mailer.errors import SettingsError
from mailer.render.links import HONEYPOT
from mailer.store.tables import (
    ab_decisions,
    broadcast_zones,
    contacts,
    enrollments,
    events,
    outbox,
)
from mailer.tracking.hits import Hit
from mailer.tracking.recording import record_hits
from mailer.workspace import Workspace
from tests.conftest import SETTINGS, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import

SEND_AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")  # fmt: skip
PEOPLE = 200

SPRING = """
[segments]
everyone = 'email contains "@"'

[campaigns.spring]
kind = "broadcast"
list = "newsletter"
segment = "everyone"
template = "spring"
subject = "Spring is here"
send_at = "2026-11-24T09:00Z"
variants.B.subject = "Fresh beans for spring"
variants.B.from_name = "Maya at Acme"
{more}
"""

AB_TEST = """
[campaigns.spring.ab]
test_fraction = 0.5
wait = "4h"
decide_by = "{decide_by}"
default = "{default}"
"""

RESEND = """
[campaigns.spring.resend]
after = "3 days"
subject = "Last chance: spring beans"
unless = "opened"
"""


class Shop:
    """A project with the `spring` broadcast, its list, and a relay that is a real SMTP server."""

    def __init__(self, workspace: Workspace, smtp_server: ScriptedSmtpServer) -> None:
        self.workspace, self.smtp_server = workspace, smtp_server

    def tick(self, moment: datetime) -> int:
        return tick(self.workspace.engine, self.workspace.settings, moment).queued

    def deliver(self, moment: datetime) -> int:
        deliverer = Deliverer(self.workspace)
        try:
            return deliverer.deliver(moment).sent
        finally:
            deliverer.close()

    def messages(self, step: str = "broadcast") -> list[dict[str, object]]:
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(
                select(outbox, contacts.c.email)
                .join(contacts, contacts.c.id == outbox.c.contact_id)
                .where(outbox.c.campaign == "spring", outbox.c.step == step).order_by(outbox.c.id)
            )  # fmt: skip
            return [dict(row._mapping) for row in rows]

    def hit(self, kind: str, message: dict[str, object], at: datetime, user_agent: str = CHROME,
            link: str | None = None, ip: str = "81.2.69.160") -> None:  # fmt: skip
        index = None
        if link is not None:
            links = json.loads(str(message["links"]))
            index = links.index(link)
        hit = Hit(kind, message_key(int(str(message["id"]))), index, at, user_agent, ip, "GET")  # type: ignore[arg-type]
        with self.workspace.engine.begin() as connection:
            assert record_hits(connection, self.workspace.settings, self.workspace.key, [hit]) == 1

    def decision(self) -> dict[str, object] | None:
        with self.workspace.engine.connect() as connection:
            row = connection.execute(select(ab_decisions)).one_or_none()
            return None if row is None else dict(row._mapping)

    def state(self, moment: datetime) -> dict[str, str]:
        environment = {"MAILER_NOW": moment.isoformat()}
        result = CliRunner().invoke(cli, ["--config", str(self.workspace.settings.source),
                                          "campaign", "list", "--json"],
                                    env=environment)  # fmt: skip
        assert result.exit_code == 0, result.output
        states: dict[str, dict[str, str]] = {
            row["campaign"]: row["broadcast"] for row in json.loads(result.stdout)
        }
        return states["spring"]


ShopOpener = Callable[[str], Shop]


@pytest.fixture
def open_spring(project: Path, environ: dict[str, str], smtp_server: ScriptedSmtpServer,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[ShopOpener]:  # fmt: skip
    opened: list[Workspace] = []

    def open_(more: str) -> Shop:
        settings = project / "settings.toml"
        settings.write_text(textwrap.dedent(SETTINGS) + textwrap.dedent(SPRING.format(more=more)))
        footer = ('<p>{{ sender.postal_address }} '
                  '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')  # fmt: skip
        (project / "templates" / "spring.html").write_text(
            '<p>New beans. <a href="https://acme.example/spring">Shop now</a></p>' + footer
        )
        variables = {"MAILER_SMTP__PORT": str(smtp_server.port),
                     "MAILER_DELIVERY__RENDER_PROCESSES": "0"}  # fmt: skip
        for variable, value in {**environ, **variables}.items():
            monkeypatch.setenv(variable, value)  # for the CLI too
        workspace = Workspace(load_settings(settings, environ={**environ, **variables}),
                              FrozenClock(SEND_AT - timedelta(days=1)))  # fmt: skip
        opened.append(workspace)
        rows = "".join(f"p{i:03}@example.com,2026-01-01,2026-01-02\n" for i in range(PEOPLE))
        run_import(workspace, write_csv(project / "people.csv",
                                        "email,consent_at,consent_confirmed_at\n" + rows),
                   "newsletter")  # fmt: skip
        tick(workspace.engine, workspace.settings, SEND_AT - timedelta(days=1))  # welcome mail
        with workspace.engine.begin() as connection:  # out of the way: only spring is counted
            connection.execute(outbox.update().values(status="sent", sent_at=SEND_AT))
            connection.execute(enrollments.update().values(status="completed", due_at=None))
        return Shop(workspace, smtp_server)

    yield open_
    for workspace in opened:
        workspace.close()


def test_the_test_fraction_goes_first_and_the_winner_by_people_s_clicks_goes_to_the_rest(
    open_spring: ShopOpener,
) -> None:
    shop = open_spring(AB_TEST.format(decide_by="clicks", default="B"))
    queued = shop.tick(SEND_AT)
    test = shop.messages()
    ids = {int(str(m["contact_id"])) for m in test}
    assert queued == len(test) and 70 < len(test) < 130  # about half of 200
    assert all(in_test(contact, "spring", 0.5) for contact in ids)  # Python agrees with SQL
    weights = {"A": 1, "B": 1}
    for message in test:  # SQL agrees with Python on the variant too
        contact = int(str(message["contact_id"]))
        assert (message["variant"] or "A") == pick_variant(contact, "spring", "broadcast", weights)
    assert {m["variant"] for m in test} == {None, "B"}
    state = shop.state(SEND_AT)
    assert state["state"] == "testing"
    assert state["why"].startswith("decides at 2026-11-24 13:00 UTC by people's clicks: ")

    assert shop.deliver(SEND_AT) == len(test)
    senders = {email.message_from_bytes(m.data, policy=default_policy)["From"]
               for m in shop.smtp_server.received}  # fmt: skip
    assert senders == {"Acme Coffee <news@acme.example>", "Maya at Acme <news@acme.example>"}
    sent = shop.messages()
    a_messages = [m for m in sent if m["variant"] is None]
    b_messages = [m for m in sent if m["variant"] == "B"]
    # A scanner clicks every link of every B message, the hidden one first: machine clicks.
    for number, message in enumerate(b_messages):
        at = SEND_AT + timedelta(minutes=30, seconds=number * 5)
        shop.hit("click", message, at, link=HONEYPOT, ip="52.1.1.1")
        shop.hit("click", message, at + timedelta(seconds=1), link="https://acme.example/spring",
                 ip="52.1.1.1")  # fmt: skip
    # People: 20 of A's recipients click (and open); one of B's.
    for number, message in enumerate(a_messages[:20]):
        at = SEND_AT + timedelta(hours=1, minutes=number)
        shop.hit("open", message, at)
        shop.hit("click", message, at + timedelta(seconds=40), link="https://acme.example/spring")
    shop.hit("click", b_messages[0], SEND_AT + timedelta(hours=2),
             link="https://acme.example/spring", ip="81.2.69.161")  # fmt: skip

    assert shop.tick(SEND_AT + timedelta(hours=3, minutes=59)) == 0  # not yet
    assert shop.decision() is None
    rest = shop.tick(SEND_AT + timedelta(hours=4))
    assert rest == PEOPLE - len(test)
    decision = shop.decision()
    assert decision is not None and decision["winner"] == "A"
    assert decision["numbers"] == {
        "A": {"successes": 20, "trials": len(a_messages)},
        "B": {"successes": 1, "trials": len(b_messages)},
    }
    assert decision["rest_queued"] == rest and decision["decide_by"] == "clicks"
    everyone = shop.messages()
    assert len(everyone) == PEOPLE
    assert all(m["variant"] is None for m in everyone if int(str(m["contact_id"])) not in ids)
    assert shop.tick(SEND_AT + timedelta(hours=5)) == 0  # decided once, queued once
    state = shop.state(SEND_AT + timedelta(hours=5))
    assert state["state"] == "sending" and state["why"].startswith("winner A by clicks (")


def test_a_test_without_a_clear_winner_sends_the_default_to_the_rest(
    open_spring: ShopOpener,
) -> None:
    shop = open_spring(AB_TEST.format(decide_by="opens", default="B"))
    test = shop.tick(SEND_AT)
    shop.deliver(SEND_AT)
    for message in shop.messages():  # Apple MPP loads every pixel: no person opened anything
        shop.hit("open", message, SEND_AT + timedelta(minutes=5), user_agent="Mozilla/5.0")
    rest = shop.tick(SEND_AT + timedelta(hours=4))
    decision = shop.decision()
    assert decision is not None and decision["winner"] == "B"
    assert "default B" in str(decision["reason"])
    numbers = decision["numbers"]
    assert isinstance(numbers, dict) and all(n["successes"] == 0 for n in numbers.values())
    later = [m for m in shop.messages()[test:]]
    assert len(later) == rest and {m["variant"] for m in later} == {"B"}


def test_a_resend_goes_once_to_who_no_person_opened_and_not_to_who_left_meanwhile(
    open_spring: ShopOpener,
) -> None:
    shop = open_spring(RESEND)
    assert shop.tick(SEND_AT) == PEOPLE
    assert shop.deliver(SEND_AT) == PEOPLE
    sent = shop.messages()
    for message in sent[:50]:  # people opened
        shop.hit("open", message, SEND_AT + timedelta(hours=2))
    for message in sent[50:60]:  # a person clicked with images off: read, too
        shop.hit("click", message, SEND_AT + timedelta(hours=2), link="https://acme.example/spring")
    for message in sent[60:100]:  # only Apple's proxy: not a person's open
        shop.hit("open", message, SEND_AT + timedelta(minutes=1), user_agent="Mozilla/5.0")
    with shop.workspace.engine.begin() as connection:  # one unsubscribes meanwhile
        withdraw(connection, shop.workspace.key, str(sent[100]["email"]),
                 shop.workspace.double_opt_in, SEND_AT + timedelta(days=1), "newsletter",
                 source="unsubscribe")  # fmt: skip
    assert shop.tick(SEND_AT + timedelta(days=2, hours=23)) == 0  # not yet
    assert shop.tick(SEND_AT + timedelta(days=3)) == PEOPLE - 60 - 1
    resent = shop.messages("broadcast.resend")
    assert {m["email"] for m in resent} == {m["email"] for m in sent[60:100] + sent[101:]}
    assert shop.tick(SEND_AT + timedelta(days=3, hours=1)) == 0  # never twice
    shop.smtp_server.received.clear()
    assert shop.deliver(SEND_AT + timedelta(days=3)) == PEOPLE - 61
    subjects = {email.message_from_bytes(m.data, policy=default_policy)["Subject"]
                for m in shop.smtp_server.received}  # fmt: skip
    assert subjects == {"Last chance: spring beans"}


def test_a_resend_found_more_than_a_day_late_is_not_sent(open_spring: ShopOpener) -> None:
    shop = open_spring(RESEND)
    shop.tick(SEND_AT)
    shop.deliver(SEND_AT)
    assert shop.tick(SEND_AT + timedelta(days=4, minutes=1)) == 0
    assert shop.messages("broadcast.resend") == []


@pytest.mark.parametrize(("more", "expected"), [
    (AB_TEST.format(decide_by="opens", default="C"),
     "campaigns.spring.ab.default: 'C' is not a variant of this broadcast (A, B)"),
    (AB_TEST.format(decide_by="opens", default="A").replace("0.5", "1.5"),
     "campaigns.spring.ab.test_fraction: "),
    (AB_TEST.format(decide_by="opens", default="A").replace('"4h"', '"0s"'),
     "campaigns.spring.ab.wait: must be longer than 0"),
    (AB_TEST.format(decide_by="conversions", default="A"),
     'campaigns.spring.goal: decide_by = "conversions" counts who reaches the goal'),
    (AB_TEST.format(decide_by="opens", default="A")
     + "[campaigns.spring.variants.C]\nsubject = 'C'\n[campaigns.spring.variants.D]\n"
       "subject = 'D'\n",
     "campaigns.spring.variants: an auto-winner test takes at most 3 variants (A and 2 more), "
     "not 4"),
    (RESEND.replace('"3 days"', '"0s"'), "campaigns.spring.resend.after: must be longer than 0"),
])  # fmt: skip
def test_check_refuses_auto_winner_and_resend_settings_that_cannot_work(
    project: Path, more: str, expected: str
) -> None:
    settings = project / "settings.toml"
    settings.write_text(textwrap.dedent(SETTINGS) + textwrap.dedent(SPRING.format(more=more)))
    with pytest.raises(SettingsError) as error:
        load_settings(settings, environ={})
    assert expected in str(error.value)
    result = CliRunner().invoke(cli, ["--config", str(settings), "check"])
    assert result.exit_code == 1 and expected in result.output


def test_check_refuses_an_auto_winner_on_a_local_time_broadcast(project: Path) -> None:
    settings = project / "settings.toml"
    text = SPRING.format(more=AB_TEST.format(decide_by="opens", default="A"))
    settings.write_text(textwrap.dedent(SETTINGS)
                        + textwrap.dedent(text).replace("09:00Z", "09:00 local"))  # fmt: skip
    with pytest.raises(SettingsError, match="an auto-winner test needs an absolute send_at"):
        load_settings(settings, environ={})


def test_a_sequence_step_resend_is_its_own_step_and_not_sent_after_the_run_converted(
    project: Path, environ: dict[str, str], smtp_server: ScriptedSmtpServer
) -> None:
    settings = project / "settings.toml"
    text = textwrap.dedent(SETTINGS).replace(
        'subject = "Welcome, {{ contact.first_name }}"\n',
        'subject = "Welcome, {{ contact.first_name }}"\n'
        'resend = { after = "3 days", subject = "In case you missed it", unless = "clicked" }\n',
    )
    settings.write_text(text)
    variables = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
                 "MAILER_DELIVERY__RENDER_PROCESSES": "0"}  # fmt: skip
    workspace = Workspace(load_settings(settings, environ=variables), FrozenClock(SEND_AT))
    try:
        run_import(workspace, write_csv(project / "people.csv", """
            email,first_name,consent_at,consent_confirmed_at
            ada@example.com,Ada,2026-01-01,2026-01-02
            ken@example.com,Ken,2026-01-01,2026-01-02
        """), "newsletter")  # fmt: skip
        shop = Shop(workspace, smtp_server)
        assert shop.tick(SEND_AT) == 2
        assert shop.deliver(SEND_AT) == 2
        with workspace.engine.begin() as connection:  # ada's run ends before the resend is due
            connection.execute(enrollments.update()
                               .where(enrollments.c.contact_id == select(contacts.c.id)
                                      .where(contacts.c.email == "ada@example.com")
                                      .scalar_subquery())
                               .values(status="converted", due_at=None))  # fmt: skip
        tick(workspace.engine, workspace.settings, SEND_AT + timedelta(days=3))
        with workspace.engine.connect() as connection:
            resent = connection.execute(
                select(contacts.c.email, outbox.c.cycle, outbox.c.enrollment_id)
                .join(contacts, contacts.c.id == outbox.c.contact_id)
                .where(outbox.c.step == "hello.resend")
            ).all()  # fmt: skip
        assert [row.email for row in resent] == ["ken@example.com"]
        smtp_server.received.clear()
        assert shop.deliver(SEND_AT + timedelta(days=3)) >= 1
        subjects = {email.message_from_bytes(m.data, policy=default_policy)["Subject"]
                    for m in smtp_server.received}  # fmt: skip
        assert "In case you missed it" in subjects
    finally:
        workspace.close()


def test_conversions_decide_by_the_goal_reached_after_the_test_went(
    open_spring: ShopOpener,
) -> None:
    shop = open_spring(
        "goal = 'event \"purchased\"'\n" + AB_TEST.format(decide_by="conversions", default="A")
    )
    shop.tick(SEND_AT)
    shop.deliver(SEND_AT)
    b_buyers = [m for m in shop.messages() if m["variant"] == "B"][:30]
    a_buyer, before = [m for m in shop.messages() if m["variant"] is None][:2]
    with shop.workspace.engine.begin() as connection:
        for message in [*b_buyers, a_buyer]:
            connection.execute(events.insert().values(
                contact_id=message["contact_id"], kind="website", name="purchased",
                properties={}, occurred_at=SEND_AT + timedelta(hours=1)))  # fmt: skip
        connection.execute(events.insert().values(  # bought before the test: not a conversion
            contact_id=before["contact_id"], kind="website", name="purchased", properties={},
            occurred_at=SEND_AT - timedelta(hours=1)))  # fmt: skip
    shop.tick(SEND_AT + timedelta(hours=4))
    decision = shop.decision()
    assert decision is not None and decision["winner"] == "B"
    numbers = decision["numbers"]
    assert isinstance(numbers, dict)
    assert (numbers["A"]["successes"], numbers["B"]["successes"]) == (1, 30)


def test_an_edit_while_the_test_waits_for_its_winner_holds_the_broadcast(
    open_spring: ShopOpener,
) -> None:
    shop = open_spring(AB_TEST.format(decide_by="opens", default="A"))
    scheduled = shop.state(SEND_AT - timedelta(hours=1))
    assert scheduled == {"state": "scheduled", "why": "goes out at 2026-11-24 09:00 UTC; "
                         "A/B test: 50% first, the winner 4h later"}  # fmt: skip
    test = shop.tick(SEND_AT)
    shop.deliver(SEND_AT)  # every test message delivered: only the winner is still to send
    source = shop.workspace.settings.source
    source.write_text(source.read_text().replace("Fresh beans for spring", "Edited"))
    shop.workspace.settings = load_settings(source, environ=dict(os.environ))
    held = shop.state(SEND_AT + timedelta(hours=1))
    assert held["state"] == "held" and "the A/B test's winner still to send" in held["why"]
    assert shop.tick(SEND_AT + timedelta(hours=4)) == 0
    assert shop.decision() is None and len(shop.messages()) == test


SEND_TIME_TEST = """
variants.B.send_at = "2026-11-24T18:00Z"
variants.C.subject = "Spring, early"

[campaigns.spring.ab]
wait = "4h"
decide_by = "opens"
default = "A"
"""
EVENING = SEND_AT + timedelta(hours=9)  # variants.B.send_at


def _groups(shop: Shop) -> dict[str, set[int]]:
    """Each variant's contacts as Python picks them (timing.pick_variant)."""
    with shop.workspace.engine.connect() as connection:
        ids = connection.scalars(select(contacts.c.id)).all()
    groups: dict[str, set[int]] = {"A": set(), "B": set(), "C": set()}
    for contact in ids:
        groups[pick_variant(contact, "spring", "broadcast", {"A": 1, "B": 1, "C": 1})].add(contact)
    return groups


def test_a_send_time_test_sends_each_variant_at_its_time_to_everyone_and_decides_after_the_last(
    open_spring: ShopOpener, caplog: pytest.LogCaptureFixture
) -> None:
    shop = open_spring(SEND_TIME_TEST)
    groups = _groups(shop)
    scheduled = shop.state(SEND_AT - timedelta(hours=1))
    assert scheduled == {"state": "scheduled", "why": (
        "goes out at 2026-11-24 09:00 UTC; send-time test: A and C at Tue 2026-11-24 09:00 UTC, "
        "B at Tue 2026-11-24 18:00 UTC, everyone in it; the winner by people's opens 4h after "
        "the last")}  # fmt: skip

    first = shop.tick(SEND_AT)  # A and C (no send_at of its own) go at the broadcast's time
    morning = shop.messages()
    assert first == len(morning) == len(groups["A"]) + len(groups["C"])
    for message in morning:  # SQL picks the variant Python picks
        contact = int(str(message["contact_id"]))
        assert contact in (groups["C"] if message["variant"] == "C" else groups["A"])
        assert message["queued_at"] == SEND_AT
    state = shop.state(SEND_AT + timedelta(hours=1))
    assert state == {"state": "testing", "why": (
        f"send-time test: A and C queued at 2026-11-24 09:00 UTC ({first} messages); B goes at "
        "2026-11-24 18:00 UTC; decides by people's opens 4h after the last")}  # fmt: skip
    assert shop.deliver(SEND_AT) == first
    for message in morning[:10]:  # a few people open A and C
        shop.hit("open", message, SEND_AT + timedelta(hours=2))

    assert shop.tick(EVENING - timedelta(minutes=1)) == 0
    assert shop.tick(EVENING) == len(groups["B"])  # B at its own time, to everyone in B
    evening = [m for m in shop.messages() if m["variant"] == "B"]
    assert {int(str(m["contact_id"])) for m in evening} == groups["B"]
    assert {m["queued_at"] for m in evening} == {EVENING}
    assert len(shop.messages()) == PEOPLE  # everyone is in the test
    assert shop.deliver(EVENING) == len(evening)
    for number, message in enumerate(evening[:40]):  # many open B
        shop.hit("open", message, EVENING + timedelta(minutes=30 + number))
    for message in evening[40:]:  # Apple's proxy: not a person
        shop.hit("open", message, EVENING + timedelta(minutes=1), user_agent="Mozilla/5.0")

    assert shop.tick(EVENING + timedelta(hours=3, minutes=59)) == 0
    assert shop.decision() is None  # `wait` counts from the last group
    with caplog.at_level(logging.INFO, logger="mailer"):
        assert shop.tick(EVENING + timedelta(hours=4)) == 0  # nothing left to send
    decision = shop.decision()
    assert decision is not None and decision["winner"] == "B"
    assert decision["rest_queued"] == 0 and decision["decide_by"] == "opens"
    numbers = decision["numbers"]
    assert isinstance(numbers, dict) and numbers["B"] == {"successes": 40,
                                                          "trials": len(evening)}  # fmt: skip
    assert numbers["A"]["successes"] + numbers["C"]["successes"] == 10
    assert str(decision["reason"]).startswith("B wins")
    assert str(decision["reason"]).endswith(
        "; send-time test: B at Tue 2026-11-24 18:00 UTC, everyone got theirs, nothing left "
        "to send")  # fmt: skip
    assert "send-time test decided: B (Tue 18:00 UTC) wins on opens" in caplog.text
    assert shop.tick(EVENING + timedelta(hours=5)) == 0 and len(shop.messages()) == PEOPLE
    state = shop.state(EVENING + timedelta(hours=5))
    assert state["state"] == "sent"
    assert state["why"].startswith("send-time test: winner B (Tue 18:00 UTC) by opens (B wins")
    assert state["why"].endswith(f"); {PEOPLE} messages queued by 2026-11-24 18:00 UTC, all "
                                 "delivered or settled")  # fmt: skip
    later = {"MAILER_NOW": (EVENING + timedelta(hours=5)).isoformat()}
    result = CliRunner().invoke(cli, ["--config", str(shop.workspace.settings.source), "report",
                                      "spring", "--json"], env=later)  # fmt: skip
    assert result.exit_code == 0, result.output
    [reported] = json.loads(result.stdout)["campaigns"][0]["ab_decisions"]
    assert reported["winner"] == "B" and reported["rest_queued"] == 0


def test_a_send_time_group_found_more_than_a_day_late_is_not_sent(
    open_spring: ShopOpener, caplog: pytest.LogCaptureFixture
) -> None:
    shop = open_spring(SEND_TIME_TEST)
    groups = _groups(shop)
    shop.tick(SEND_AT)
    with caplog.at_level(logging.INFO, logger="mailer"):
        assert shop.tick(EVENING + timedelta(days=1, minutes=1)) == 0  # the daemon was down
    assert [m for m in shop.messages() if m["variant"] == "B"] == []
    assert len(shop.messages()) == len(groups["A"]) + len(groups["C"])
    with shop.workspace.engine.connect() as connection:
        row = connection.execute(select(broadcast_zones).where(
            broadcast_zones.c.zone == "variant B")).one()  # fmt: skip
    assert (row.state, row.messages) == ("stale", 0)
    [warning] = [r for r in caplog.records if r.getMessage() == "send-time group not sent"]
    assert vars(warning)["variant"] == "B" and vars(warning)["reason"].startswith("found 24h late")
    decision = shop.decision()  # decided with what went: B has no trials, the default is sent
    assert decision is not None and decision["winner"] == "A"
    numbers = decision["numbers"]
    assert isinstance(numbers, dict) and numbers["B"] == {"successes": 0, "trials": 0}
    assert "B not sent: its group was found 24h late" in str(decision["reason"])


@pytest.mark.parametrize(("more", "expected"), [
    (SEND_TIME_TEST.replace('wait = "4h"', 'test_fraction = 0.5\nwait = "4h"'),
     "campaigns.spring.ab.test_fraction: a send-time test sends every recipient their variant "
     "at its time: leave test_fraction out (or write 1)"),
    (SEND_TIME_TEST.replace("18:00Z", "08:00Z"),
     "campaigns.spring.variants.B.send_at: 2026-11-24T08:00Z is before the broadcast's send_at "
     "(2026-11-24T09:00Z)"),
    (SEND_TIME_TEST.replace("2026-11-24T18:00Z", "2026-12-01T09:01Z"),
     "campaigns.spring.variants.B.send_at: 2026-12-01T09:01Z is more than 7 days after the "
     "broadcast's send_at"),
    (SEND_TIME_TEST.replace("2026-11-24T18:00Z", "next week"),
     "campaigns.spring.variants.B.send_at: 'next week' is not a time"),
    (SEND_TIME_TEST.replace("2026-11-24T18:00Z", "2026-11-24T18:00 local"),
     "campaigns.spring.variants.B.send_at: a send-time test needs absolute times"),
    ('variants.C.send_at = "2026-11-24T15:00Z"',
     "campaigns.spring.variants.C.send_at: a send-time variant is an A/B test: add "
     "[campaigns.spring.ab] with wait and decide_by"),
    (AB_TEST.format(decide_by="opens", default="A").replace("test_fraction = 0.5\n", ""),
     "campaigns.spring.ab.test_fraction: write the share of the list that gets the test "
     "(e.g. 0.2)"),
    (AB_TEST.format(decide_by="opens", default="A").replace("0.5", "1"),
     "campaigns.spring.ab.test_fraction: 1 leaves nobody for the winner"),
])  # fmt: skip
def test_check_refuses_send_time_tests_that_cannot_work(
    project: Path, more: str, expected: str
) -> None:
    settings = project / "settings.toml"
    settings.write_text(textwrap.dedent(SETTINGS) + textwrap.dedent(SPRING.format(more=more)))
    with pytest.raises(SettingsError) as error:
        load_settings(settings, environ={})
    assert expected in str(error.value)


def test_check_refuses_a_send_time_test_on_a_local_time_broadcast_and_says_why(
    project: Path,
) -> None:
    settings = project / "settings.toml"
    text = textwrap.dedent(SPRING.format(more=SEND_TIME_TEST)).replace("09:00Z", "09:00 local")
    settings.write_text(textwrap.dedent(SETTINGS) + text.replace("18:00Z", "18:00 local"))
    with pytest.raises(SettingsError) as error:
        load_settings(settings, environ={})
    assert ("campaigns.spring.variants.B.send_at: a send-time test needs absolute times "
            "(e.g. \"2026-03-20T18:00Z\")") in str(error.value)  # fmt: skip
    assert "zone by zone" in str(error.value)


def test_moving_a_send_time_while_the_test_runs_holds_the_broadcast(
    open_spring: ShopOpener,
) -> None:
    shop = open_spring(SEND_TIME_TEST)
    first = shop.tick(SEND_AT)
    shop.deliver(SEND_AT)
    source = shop.workspace.settings.source
    source.write_text(source.read_text().replace("2026-11-24T18:00Z", "2026-11-24T20:00Z"))
    shop.workspace.settings = load_settings(source, environ=dict(os.environ))
    held = shop.state(SEND_AT + timedelta(hours=1))
    assert held["state"] == "held"
    assert "variants edited after sending began" in held["why"]
    assert "the send-time test's groups or decision still to come" in held["why"]
    assert shop.tick(EVENING + timedelta(hours=2)) == 0 and len(shop.messages()) == first
