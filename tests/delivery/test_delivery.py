"""Delivery through a real SMTP server (aiosmtpd), on SQLite and PostgreSQL: what the relay
answers decides what becomes of each outbox row."""

from __future__ import annotations

import email
import json
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailer.consent.audit import Period
from mailer.consent.ledger import verify
from mailer.consent.person import withdraw
from mailer.delivery.claims import claim
from mailer.delivery.pauses import paused_campaigns, resume
from mailer.delivery.rendering import Rendered, RenderPool
from mailer.delivery.worker import GATED_AT_MOST, Deliverer
from mailer.returns.rates import period_rates
from mailer.returns.refusals import record_refusals
from mailer.store.tables import campaign_pauses, consent_entries, returned_messages, suppressions
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer

Opener = Callable[..., Workspace]


def test_a_queued_message_is_sent_and_keeps_its_message_id_reply_links_and_consent(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace()
    queue_welcome(workspace, project, "ada@example.com,Ada")
    report = deliver(workspace)
    assert report.counts() == {"sent": 1, "deferred": 0, "failed": 0, "skipped": 0}
    [received] = smtp_server.received
    message = email.message_from_bytes(received.data, policy=default_policy)
    row = rows(workspace)["ada@example.com"]
    assert row["status"] == "sent" and row["sent_at"] == NOW and row["attempts"] == 1
    assert row["message_id"] == message["Message-ID"]
    assert str(row["reply"]).startswith("250 ")
    assert received.recipient == "ada@example.com"
    assert received.envelope_from.startswith("bounces+")
    assert json.loads(str(row["links"])) == ["honeypot:"]  # no link but the hidden one
    with workspace.engine.connect() as connection:
        entry = connection.execute(
            select(consent_entries).where(consent_entries.c.id == row["consent_entry_id"])
        ).one()
    assert entry.purpose == "newsletter" and entry.action == "confirmed"
    assert deliver(workspace).counts()["sent"] == 0  # nothing is sent twice


def test_a_451_is_deferred_with_backoff_then_delivered(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace()
    queue_welcome(workspace, project, "ada@example.com,Ada")
    smtp_server.script("ada@example.com", "451 4.3.0 Try again later")
    assert deliver(workspace).deferred == 1
    row = rows(workspace)["ada@example.com"]
    assert row["status"] == "deferred" and "451 4.3.0" in str(row["reply"])
    retry = row["send_after"]
    assert isinstance(retry, type(NOW))
    assert NOW + timedelta(minutes=2, seconds=29) < retry <= NOW + timedelta(minutes=5)
    assert deliver(workspace, timedelta(minutes=1)).counts()["sent"] == 0  # not yet due
    assert deliver(workspace, timedelta(minutes=6)).sent == 1
    row = rows(workspace)["ada@example.com"]
    assert row["status"] == "sent" and row["attempts"] == 2
    assert len(smtp_server.received) == 1


def test_a_message_deferred_past_the_give_up_age_fails(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace(DELIVERY__GIVE_UP_AFTER='"1h"')
    queue_welcome(workspace, project, "ada@example.com,Ada")
    smtp_server.script("ada@example.com", *["421 4.7.0 Busy"] * 10)
    later = timedelta(0)
    for _ in range(10):
        report = deliver(workspace, later)
        if report.failed:
            break
        later += timedelta(hours=1)
    row = rows(workspace)["ada@example.com"]
    assert row["status"] == "failed" and "gave up after" in str(row["reason"])
    assert smtp_server.received == []


def test_a_550_5_1_1_fails_and_suppresses_the_address_with_a_ledger_entry(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace()
    queue_welcome(workspace, project, "gone@example.com,Gone", "ada@example.com,Ada")
    smtp_server.script("gone@example.com", "550 5.1.1 <gone@example.com>: no such user")
    report = deliver(workspace)
    assert (report.sent, report.failed, report.bounced) == (1, 1, 1)
    row = rows(workspace)["gone@example.com"]
    assert row["status"] == "failed" and "5.1.1" in str(row["reply"])
    with workspace.engine.connect() as connection:
        suppression = connection.execute(
            select(suppressions).where(suppressions.c.email == "gone@example.com")
        ).one()
        bounce = connection.execute(
            select(consent_entries).where(consent_entries.c.id == suppression.entry_id)
        ).one()
        assert verify(connection).intact
    assert suppression.reason == "hard_bounce" and "5.1.1" in suppression.detail
    assert (bounce.purpose, bounce.action, bounce.source) == ("*", "withdrawn", "bounce")


def test_hard_bounces_at_the_relay_count_in_the_rates_and_stop_the_campaign(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    """Sent straight to the receivers, a list's dead addresses are refused at RCPT, not bounced
    later: each is recorded once as a return (`refused`), counted as a message sent and
    hard-bounced by the rates and the breakers, which pause the campaign as a DSN would."""
    workspace = open_workspace(RETURNS__BREAKER_MINIMUM="10", RETURNS__HARD_BOUNCE_WARN="3%",
                               RETURNS__HARD_BOUNCE_STOP="5%")  # fmt: skip
    people = [f"p{n}@example.com" for n in range(40)]
    dead = people[9::10]  # 4 of 40: 10%
    for address in dead:
        smtp_server.script(address, f"550 5.1.1 <{address}>: Recipient address rejected")
    queue_welcome(workspace, project, *(f"{address},Pat" for address in people))
    report = deliver(workspace)
    assert (report.sent, report.failed, report.bounced) == (36, 4, 4)
    with workspace.engine.connect() as connection:
        refused = connection.execute(select(returned_messages).order_by(
            returned_messages.c.outbox_id)).all()  # fmt: skip
        rates = period_rates(connection, Period())
        paused = paused_campaigns(connection)
    assert [(r.classification, r.status_code, r.campaign, r.action) for r in refused] == [
        ("refused", "5.1.1", "welcome", "suppressed (hard bounce at the relay)")] * 4
    assert (rates.sent, rates.hard_bounces) == (40, 4)
    assert "hard bounce rate" in paused["welcome"]  # the sender's, its only campaign's
    # The same refusal written again (a row taken over after a lost lease) is recorded once.
    with workspace.engine.begin() as connection:
        record_refusals(connection, workspace.settings, workspace.key,
                        [(refused[0].outbox_id, dead[0], "550 5.1.1 gone", "again")], NOW)
    with workspace.engine.connect() as connection:
        assert period_rates(connection, Period()) == rates


def test_a_policy_refusal_fails_without_suppressing(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace()
    queue_welcome(workspace, project, "ada@example.com,Ada")
    smtp_server.script("ada@example.com", "data 554 5.6.0 message content rejected")
    assert deliver(workspace).failed == 1
    assert rows(workspace)["ada@example.com"]["status"] == "failed"
    with workspace.engine.connect() as connection:
        assert connection.execute(select(suppressions)).first() is None


def test_a_connection_dropped_mid_data_is_retried_on_a_new_connection(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace(SMTP__POOL_SIZE="1")
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    smtp_server.script("ada@example.com", "drop")
    report = deliver(workspace)
    assert (report.sent, report.deferred) == (1, 1)  # Bob went out on a new connection
    assert rows(workspace)["ada@example.com"]["status"] == "deferred"
    assert deliver(workspace, timedelta(minutes=6)).sent == 1
    assert sorted(r.recipient for r in smtp_server.received) == ["ada@example.com",
                                                                 "bob@example.com"]  # fmt: skip
    assert smtp_server.connections == 3  # dropped, then reopened for Bob, then the retry


def test_withdrawn_consent_between_queue_and_send_is_not_sent(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace()
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    with workspace.engine.begin() as connection:
        withdraw(connection, workspace.key, "ada@example.com", workspace.double_opt_in, NOW,
                 list_name="newsletter")  # fmt: skip
    report = deliver(workspace)
    assert (report.sent, report.skipped) == (1, 1)
    row = rows(workspace)["ada@example.com"]
    assert row["status"] == "skipped"
    assert row["reason"] == "at sending: no consent (withdrawn)"
    assert [r.recipient for r in smtp_server.received] == ["bob@example.com"]


def test_a_template_error_fails_that_message_only(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace()
    # The welcome subject says "Welcome, {{ contact.first_name }}": Bob has no first name.
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com")
    report = deliver(workspace)
    assert (report.sent, report.failed) == (1, 1)
    row = rows(workspace)["bob@example.com"]
    assert row["status"] == "failed"
    assert str(row["reason"]).startswith("render: ")
    assert str(row["reason"]).endswith(
        "settings.toml: campaigns.welcome.steps[0].subject: 'contact.first_name' is undefined"
    )


def test_a_blocked_relay_pauses_the_campaign_after_refusals_in_a_row(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace(DELIVERY__PAUSE_AFTER_REFUSALS="3", SMTP__POOL_SIZE="1")
    people = [f"p{n}@example.com,P{n}" for n in range(8)]
    queue_welcome(workspace, project, *people)
    for person in people:
        smtp_server.script(person.split(",")[0], "554 5.7.1 Service unavailable; client blocked")
    report = deliver(workspace)
    assert report.paused == ["welcome"]
    assert report.failed == 3 and report.sent == 0  # three burned, not eight
    with workspace.engine.connect() as connection:
        pause = connection.execute(select(campaign_pauses)).one()
        assert claim(connection, "someone", NOW + timedelta(hours=1), timedelta(minutes=5),
                     100) == []  # fmt: skip
    assert "refused 3 messages in a row" in pause.reason and "5.7.1" in pause.reason
    statuses = sorted(str(row["status"]) for row in rows(workspace).values())
    assert statuses == ["failed"] * 3 + ["queued"] * 5


def test_broken_authentication_pauses_the_campaign_and_loses_no_message(
    open_workspace: Opener, project: Path
) -> None:
    with ScriptedSmtpServer(auth={"mailer": "right password"}) as relay:
        settings = {"SMTP__PORT": str(relay.port), "SMTP__USERNAME": "mailer",
                    "DELIVERY__PAUSE_AFTER_REFUSALS": "3", "SMTP__POOL_SIZE": "1"}  # fmt: skip
        workspace = open_workspace(**settings, SMTP__PASSWORD="wrong password")
        people = [f"p{n}@example.com,P{n}" for n in range(8)]
        queue_welcome(workspace, project, *people)
        report = deliver(workspace)
        assert report.paused == ["welcome"] and report.failed == 0
        assert report.deferred == 3  # each waits for the relay to be fixed
        with workspace.engine.begin() as connection:
            assert "535" in connection.execute(select(campaign_pauses.c.reason)).scalar_one()
            assert resume(connection, workspace.settings, "welcome")
        fixed = open_workspace(**settings, SMTP__PASSWORD="right password")
        assert deliver(fixed, timedelta(hours=1)).sent == 8
        assert len(relay.received) == 8


def test_a_domain_over_its_rate_waits_in_the_outbox(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace(DELIVERY__DOMAIN_RATES='{"slow.example" = "10/h"}')
    queue_welcome(workspace, project, "a@slow.example,A", "b@slow.example,B",
                  "c@fast.example,C")  # fmt: skip
    report = deliver(workspace)
    assert report.sent == 2  # one for slow.example, and fast.example
    waiting = [row for row in rows(workspace).values() if row["status"] != "sent"]
    assert len(waiting) == 1 and waiting[0]["status"] == "queued"
    assert waiting[0]["reason"] == "rate limit for slow.example"
    assert waiting[0]["attempts"] == 0  # a throttled message has not been attempted
    assert NOW + timedelta(minutes=5) < waiting[0]["send_after"] <= NOW + timedelta(minutes=7)


def test_a_crashed_workers_rows_come_back_when_its_lease_ends(
    open_workspace: Opener,
    project: Path,
    smtp_server: ScriptedSmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    workspace = open_workspace()
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    with workspace.engine.begin() as connection:  # a worker claims, then dies
        assert len(claim(connection, "dead", NOW, timedelta(minutes=5), 10)) == 2
    assert deliver(workspace, timedelta(minutes=4)).sent == 0  # still leased
    assert deliver(workspace, timedelta(minutes=5, seconds=1)).sent == 2
    assert "2 messages taken over from a worker whose lease ended" in caplog.text
    assert {str(row["status"]) for row in rows(workspace).values()} == {"sent"}
    assert {row["attempts"] for row in rows(workspace).values()} == {2}


def test_chunks_rendered_ahead_pass_the_gate_together_and_each_message_is_still_checked(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of one claimed batch already rendered go through consent gate 2 in one call (up
    to GATED_AT_MOST messages): a withdrawal in any of them still stops its message."""
    workspace = open_workspace()
    people = [f"p{n}@example.com,P{n}" for n in range(130)]  # chunks of 40, 40, 40 and 10
    queue_welcome(workspace, project, *people)
    withdrawn = {f"p{n}@example.com" for n in (5, 45, 85, 125)}  # one in each chunk
    with workspace.engine.begin() as connection:
        for address in withdrawn:
            withdraw(connection, workspace.key, address, workspace.double_opt_in, NOW,
                     list_name="newsletter")  # fmt: skip
    submitted: list[Future[Any]] = []
    submit = RenderPool.submit

    def submitting(pool: RenderPool, jobs: Any, now: Any) -> Future[Any]:
        submitted.append(submit(pool, jobs, now))
        return submitted[-1]

    gated: list[list[int]] = []
    gate = Deliverer._gate

    def gating(deliverer: Deliverer, rendered: list[Rendered], *args: Any) -> Any:
        if not gated:  # the first call waits until every chunk is rendered: the rest go together
            futures.wait(submitted)
        gated.append([item.outbox_id for item in rendered])
        return gate(deliverer, rendered, *args)

    monkeypatch.setattr(RenderPool, "submit", submitting)
    monkeypatch.setattr(Deliverer, "_gate", gating)
    report = deliver(workspace)
    assert (report.sent, report.skipped) == (126, 4)
    assert len(gated) <= 2 and all(len(ids) <= GATED_AT_MOST for ids in gated)
    assert sorted(id_ for ids in gated for id_ in ids) == sorted(
        int(row["id"]) for row in rows(workspace).values())  # every message, once  # fmt: skip
    found = rows(workspace)
    assert {address for address, row in found.items() if row["status"] == "skipped"} == withdrawn
    assert {found[address]["reason"] for address in withdrawn} == {
        "at sending: no consent (withdrawn)"}  # fmt: skip
    received = Counter(message.recipient for message in smtp_server.received)
    assert set(received) == {p.split(",")[0] for p in people} - withdrawn
    assert set(received.values()) == {1}


def test_rendering_in_worker_processes_sends_the_same_message(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace(DELIVERY__RENDER_PROCESSES="1")
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com")
    report = deliver(workspace)
    assert (report.sent, report.failed) == (1, 1)  # a render error crosses the process line
    message = email.message_from_bytes(smtp_server.received[0].data, policy=default_policy)
    assert message["Subject"] == "Welcome, Ada"
    assert message["Date"] == "Mon, 23 Nov 2026 10:00:00 +0000"  # the run's clock, not the OS's


def test_a_relay_that_does_not_answer_in_time_is_retried_on_a_new_connection(
    open_workspace: Opener, project: Path
) -> None:
    with ScriptedSmtpServer(delay=3.0) as relay:
        workspace = open_workspace(SMTP__PORT=str(relay.port), SMTP__TIMEOUT='"1s"')
        queue_welcome(workspace, project, "ada@example.com,Ada")
        assert deliver(workspace).deferred == 1
        row = rows(workspace)["ada@example.com"]
        assert str(row["reply"]) == "no answer within 1 s"
        relay.delay = 0.0
        assert deliver(workspace, timedelta(minutes=6)).sent == 1
        assert relay.connections == 2
