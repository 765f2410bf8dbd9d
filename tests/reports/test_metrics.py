"""`mailer report`'s numbers, seeded through the real paths: the welcome sequence queued by the
engine and sent into a real SMTP server, opens, clicks, a survey answer and a one-click
unsubscribe over real HTTP to the tracking app, a hard and a soft bounce and a complaint through
the returns processing, a goal reached by a website event; every number checked against what
the story below makes it by hand."""

from __future__ import annotations

import csv
import email
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.campaigns.engine import tick
from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.events import record_event
from mailer.reports.flat import read_rows, report_rows
from mailer.reports.html import render_report
from mailer.reports.metrics import build_report, metrics
from mailer.returns.ingest import process
from mailer.store.tables import contacts, outbox
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.conftest import BASE, at, running

CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
          "Gecko) Chrome/126.0.0.0 Safari/537.36")  # fmt: skip
PEOPLE = ["ada@example.com,Ada", "bob@example.com,Bob", "cy@example.com,Cy",
          "dee@example.com,Dee", "eve@example.com,Eve", "fay@example.com,Fay"]  # fmt: skip
TIPS_AT = timedelta(days=2, hours=1)  # the tick that queues and sends the second step

DSN = """\
From: MAILER-DAEMON@mx.example.com
To: news@acme.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Your message could not be delivered.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; {recipient}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--b
Content-Type: text/rfc822-headers

From: Acme Coffee <news@acme.example>
To: {recipient}
Subject: Welcome
Message-ID: {message_id}

--b--
"""
ARF = """\
From: feedback@arf.example.net
To: abuse@acme.example
Subject: FW: Welcome
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="f"

--f
Content-Type: text/plain

This is an email abuse report.

--f
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Example-FBL/1.0
Version: 1
Original-Rcpt-To: <{recipient}>

--f
Content-Type: message/rfc822

From: Acme Coffee <news@acme.example>
To: {recipient}
Subject: Welcome
Message-ID: {message_id}

Hello

--f--
"""


@dataclass
class Story:
    workspace: Workspace
    project: Path
    environ: dict[str, str]
    tips_variant: dict[str, str]  # the variant each of cy and dee got in step tips


def _links(smtp_server: ScriptedSmtpServer, recipient: str, step_subject: str) -> dict[str, str]:
    [received] = [r for r in smtp_server.received if r.recipient == recipient
                  and step_subject in r.data.decode(errors="replace")]  # fmt: skip
    message = email.message_from_bytes(received.data, policy=default_policy)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    honeypot = rf'href="({BASE}/c/[^"]+)" style="display:none"'
    found = {"open": re.search(rf'src="({BASE}/o/[^"]+)"', html),
             "shop": re.search(rf'href="({BASE}/c/[^"]+)">', html),
             "honeypot": re.search(honeypot, html),
             "unsubscribe": re.search(r"<(http[^>]+)>", message["List-Unsubscribe"])}  # fmt: skip
    answers = re.findall(rf'href="({BASE}/s/[^"]+)"', html)  # the NPS row: 0 to 10
    return {name: match.group(1) for name, match in found.items() if match is not None} | {
        f"nps {score}": url for score, url in enumerate(answers)}  # fmt: skip


def _message_ids(workspace: Workspace) -> dict[tuple[str, str], str]:
    with workspace.engine.connect() as connection:
        return {(row.email, row.step): row.message_id for row in connection.execute(
            select(contacts.c.email, outbox.c.step, outbox.c.message_id)
            .join(contacts, contacts.c.id == outbox.c.contact_id))}  # fmt: skip


def _returned(workspace: Workspace, raw: str, at_: timedelta) -> None:
    process(workspace, raw.encode(), "test.eml", NOW + at_)


@pytest.fixture
def story(project: Path, environ: dict[str, str], clock: FrozenClock,
          smtp_server: ScriptedSmtpServer) -> Iterator[Story]:  # fmt: skip
    """Six people get `hello`, Monday 10:00:
    - ada opens it twice, clicks the shop link and answers the NPS question (9), then buys
      (the engine sees it at the next step's tick, 49 hours after she entered);
    - bob's hard-bounces; cy's soft-bounces; dee opens it;
    - eve's is fetched with HEAD (a machine's open) and its hidden honeypot link followed (a
      machine's click); then she complains;
    - fay unsubscribes with one click.
    Wednesday 11:00 `tips` goes to those still in (cy and dee; ada converted, bob, eve and
    fay left), each on their variant; dee opens hers."""
    settings_path = project / "settings.toml"
    goal = "enroll_existing = true\ngoal = 'event \"purchased\"'"
    settings_path.write_text(settings_path.read_text().replace("enroll_existing = true", goal))
    footer = '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    (project / "templates" / "welcome" / "1.html").write_text(
        '<p>Hello {{ contact.first_name }}</p><p><a href="https://shop.example/beans">Shop</a>'
        '</p><p>Would you recommend us?</p>{{ survey("nps", "nps") }}' + footer)  # fmt: skip
    (project / "templates" / "welcome" / "2.html").write_text(
        '<p>Tips</p><p><a href="https://shop.example/guide">Guide</a></p>' + footer)  # fmt: skip
    environ = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
               "MAILER_DELIVERY__RENDER_PROCESSES": "0",
               "MAILER_TRACKING__FLUSH_SIZE": "1",
               "MAILER_REPORTS__FLAG_FROM": "1"}  # six people: flagged all the same  # fmt: skip
    workspace = Workspace(load_settings(settings_path, environ=environ), clock)
    queue_welcome(workspace, project, *PEOPLE)
    assert deliver(workspace).sent == 6
    hello = {person.split(",")[0]: _links(smtp_server, person.split(",")[0], "Welcome")
             for person in PEOPLE}  # fmt: skip
    clock.advance(timedelta(minutes=5))  # a person, not a scanner at delivery
    with running(create_app(workspace)) as base:
        browser = {"User-Agent": CHROME}
        for url in (hello["ada@example.com"]["open"], hello["ada@example.com"]["shop"],
                    hello["ada@example.com"]["nps 9"],
                    hello["dee@example.com"]["open"]):  # fmt: skip
            assert httpx.get(at(base, url), headers=browser).status_code in (200, 302)
        clock.advance(timedelta(minutes=2))  # a second reading, not a refetch of the pixel
        assert httpx.get(at(base, hello["ada@example.com"]["open"]),
                         headers=browser).status_code == 200  # fmt: skip
        assert httpx.get(at(base, hello["eve@example.com"]["honeypot"]),
                         headers=browser).status_code == 200  # fmt: skip
        assert httpx.head(at(base, hello["eve@example.com"]["open"]),
                          headers=browser).status_code == 200  # fmt: skip
        assert httpx.post(at(base, hello["fay@example.com"]["unsubscribe"]),
                          data={"List-Unsubscribe": "One-Click"}).status_code == 200  # fmt: skip
    ids = _message_ids(workspace)
    _returned(workspace, DSN.format(recipient="bob@example.com", status="5.1.1",
                                    diagnostic="550 5.1.1 user unknown",
                                    message_id=ids["bob@example.com", "hello"]),
              timedelta(minutes=10))  # fmt: skip
    _returned(workspace, DSN.format(recipient="cy@example.com", status="4.2.2",
                                    diagnostic="452 4.2.2 mailbox full",
                                    message_id=ids["cy@example.com", "hello"]),
              timedelta(minutes=11))  # fmt: skip
    _returned(workspace, ARF.format(recipient="eve@example.com",
                                    message_id=ids["eve@example.com", "hello"]),
              timedelta(minutes=12))  # fmt: skip
    with workspace.engine.begin() as connection:
        record_event(connection, "ada@example.com", "purchased", NOW + timedelta(minutes=30))
    tick(workspace.engine, workspace.settings, NOW + timedelta(hours=1))
    tick(workspace.engine, workspace.settings, NOW + TIPS_AT)
    assert deliver(workspace, TIPS_AT).sent == 2
    clock.advance(TIPS_AT)
    with running(create_app(workspace)) as base:
        tips = _links(smtp_server, "dee@example.com", "Brewing tips")
        assert httpx.get(at(base, tips["open"]), headers={"User-Agent": CHROME}).status_code == 200
    with workspace.engine.connect() as connection:
        variants = {row.email: row.variant or "A" for row in connection.execute(
            select(contacts.c.email, outbox.c.variant)
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .where(outbox.c.step == "tips"))}  # fmt: skip
    assert sorted(variants) == ["cy@example.com", "dee@example.com"]
    yield Story(workspace, project, environ, variants)
    workspace.close()


def report_of(story: Story, **options: Any) -> dict[str, Any]:
    with story.workspace.engine.connect() as connection:
        return build_report(connection, story.workspace.settings, campaign="welcome",
                            now=NOW, **options)  # fmt: skip


def rate(value: float | None, numerator: int, denominator: int,
         flag: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"value": value, "numerator": numerator, "denominator": denominator, "flag": flag}


ZERO = {"queued": 0, "sent": 0, "failed": 0, "skipped": 0, "delivered": 0, "hard_bounces": 0,
        "soft_bounces": 0, "unique_opens": 0, "total_opens": 0, "unique_clicks": 0,
        "total_clicks": 0, "machine_opens": 0, "machine_clicks": 0, "unsubscribes": 0,
        "complaints": 0, "conversions": 0, "survey_answers": 0}  # fmt: skip
NO_RATES = {name: rate(None, 0, 0) for name in ("delivery", "open", "click_through",
                                                "click_to_open", "unsubscribe", "complaint",
                                                "bounce")}  # fmt: skip
HELLO = ZERO | {
    "queued": 6, "sent": 6, "hard_bounces": 1, "soft_bounces": 1, "delivered": 4,
    "unique_opens": 2, "total_opens": 3, "unique_clicks": 1, "total_clicks": 1,
    "machine_opens": 1, "machine_clicks": 1, "unsubscribes": 1, "complaints": 1,
    "conversions": 1, "survey_answers": 1,
    "rates": {"delivery": rate(4 / 6, 4, 6, "low"), "open": rate(2 / 4, 2, 4),
              "click_through": rate(1 / 4, 1, 4), "click_to_open": rate(1 / 2, 1, 2),
              "unsubscribe": rate(1 / 4, 1, 4), "complaint": rate(1 / 4, 1, 4, "high"),
              "bounce": rate(2 / 6, 2, 6, "high")},
}  # fmt: skip


def test_an_empty_campaign_counts_zero_and_divides_by_nothing(workspace: Workspace) -> None:
    with workspace.engine.connect() as connection:
        report = build_report(connection, workspace.settings, now=NOW)
    [welcome] = report["campaigns"]
    assert welcome["totals"] == ZERO | {"rates": NO_RATES}
    assert [(s["name"], [v["name"] for v in s["variants"]]) for s in welcome["steps"]] == [
        ("hello", ["A"]), ("tips", ["A", "B"])]  # fmt: skip
    assert welcome["steps"][0]["ab"] is None
    assert welcome["steps"][1]["ab"]["clicks"]["winner"] is None
    assert welcome["funnel"] == {
        "entered": 0, "active": 0, "completed": 0, "converted": 0, "exited": 0,
        "steps": [{"name": "hello", "reached": 0, "median_hours_from_entry": None},
                  {"name": "tips", "reached": 0, "median_hours_from_entry": None}],
        "median_hours_to_convert": None,
    }  # fmt: skip
    assert welcome["timeline"] == []
    assert report["since"] is None and report["include_machine"] is False


def test_every_number_of_the_first_step_people_only(story: Story) -> None:
    [welcome] = report_of(story)["campaigns"]
    [hello, _] = welcome["steps"]
    assert hello["variants"] == [{"name": "A", **HELLO}]
    assert hello["totals"] == HELLO


def test_machines_opens_and_clicks_count_only_when_asked(story: Story) -> None:
    [welcome] = report_of(story, include_machine=True)["campaigns"]
    hello = welcome["steps"][0]["totals"]
    # eve's message is opened (HEAD) and clicked (the honeypot) by machines
    assert (hello["unique_opens"], hello["total_opens"]) == (3, 4)
    assert (hello["unique_clicks"], hello["total_clicks"]) == (2, 2)
    assert (hello["machine_opens"], hello["machine_clicks"]) == (1, 1)
    assert hello["rates"]["open"] == rate(3 / 4, 3, 4)


def test_the_variants_split_the_second_step(story: Story) -> None:
    [welcome] = report_of(story)["campaigns"]
    tips = welcome["steps"][1]
    by_variant = {v["name"]: v for v in tips["variants"]}
    assert list(by_variant) == ["A", "B"]
    for name, variant in by_variant.items():
        got = [person for person, v in story.tips_variant.items() if v == name]
        opened = int("dee@example.com" in got)
        assert (variant["sent"], variant["delivered"], variant["unique_opens"]) == (
            len(got), len(got), opened)  # fmt: skip
        assert variant["rates"]["open"]["value"] == (opened / len(got) if got else None)
    assert tips["totals"]["sent"] == 2 and tips["totals"]["unique_opens"] == 1
    assert set(tips["ab"]) == {"opens", "clicks", "conversions"}
    assert tips["ab"]["opens"]["baseline"] == "A"
    totals = welcome["totals"]
    assert (totals["sent"], totals["delivered"], totals["unique_opens"]) == (8, 6, 3)
    assert totals["rates"]["open"] == rate(3 / 6, 3, 6)


def test_the_funnel_and_the_timeline(story: Story) -> None:
    [welcome] = report_of(story)["campaigns"]
    assert welcome["funnel"] == {
        "entered": 6, "active": 0, "completed": 2, "converted": 1, "exited": 3,
        "steps": [{"name": "hello", "reached": 6, "median_hours_from_entry": 0.0},
                  {"name": "tips", "reached": 2, "median_hours_from_entry": 49.0}],
        "median_hours_to_convert": 49.0,
    }  # fmt: skip
    assert welcome["timeline"] == [
        {"date": "2026-11-23", "opens": 3, "clicks": 1, "machine_opens": 1, "machine_clicks": 1},
        {"date": "2026-11-25", "opens": 1, "clicks": 0, "machine_opens": 0, "machine_clicks": 0},
    ]


def test_since_and_until_choose_the_messages_queued_then(story: Story) -> None:
    [later] = report_of(story, since=NOW + timedelta(days=1))["campaigns"]
    assert later["steps"][0]["totals"] == HELLO | ZERO | {"rates": NO_RATES}
    assert later["steps"][1]["totals"]["sent"] == 2
    [earlier] = report_of(story, until=NOW + timedelta(days=1))["campaigns"]
    assert earlier["steps"][0]["totals"] == HELLO
    assert earlier["steps"][1]["totals"]["sent"] == 0
    assert earlier["funnel"]["entered"] == 6  # everyone entered on Monday


def run(story: Story, *args: str) -> Any:
    environment = {**story.environ, "MAILER_CONFIG": str(story.project / "settings.toml"),
                   "MAILER_NOW": NOW.isoformat()}  # fmt: skip
    return CliRunner().invoke(cli, ["report", *args], env=environment, catch_exceptions=False)


def test_the_command_prints_json_csv_that_reads_back_and_flagged_tables(story: Story) -> None:
    as_json = run(story, "welcome", "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert report | {"generated_at": None} == report_of(story) | {"generated_at": None}
    as_csv = run(story, "welcome", "--csv")
    assert as_csv.exit_code == 0, as_csv.output
    rows = read_rows(io.StringIO(as_csv.output))
    assert [(r["step"], r["variant"]) for r in rows] == [
        ("hello", "A"), ("hello", ""), ("tips", "A"), ("tips", "B"), ("tips", ""),
        ("", "")]  # fmt: skip
    expected = [{k: v for k, v in row.items()} for row in report_rows(report)]
    for got, want in zip(rows, expected, strict=True):
        assert got == {k: want[k] for k in got if k != "rates"} | {
            "rates": {name: {part: want[f"{name}_{part}"] for part in parts}
                      for name, parts in got["rates"].items()}}  # fmt: skip
    assert len(next(csv.reader(io.StringIO(as_csv.output)))) == 5 + 17 + 7 * 4
    table = run(story, "welcome")
    assert table.exit_code == 0
    words = table.output.split()  # rich may wrap a cell on a narrow terminal
    assert "66.7%" in words and "(low)" in words and "33.3%" in words and "(high)" in words
    assert "[reports]" in words  # the caption names the settings (not eaten as rich markup)
    assert "A/B tips, clicks: " in table.output


def test_a_rate_is_flagged_only_over_flag_from_messages(story: Story) -> None:
    ranges = story.workspace.settings.reports.model_copy(update={"flag_from": 100})
    opens = {"sent": 100, "unique_opens": 2}  # 2% opened, under open_min's 8%
    assert metrics(opens, ranges)["rates"]["open"]["flag"] == "low"
    assert metrics(opens | {"sent": 99}, ranges)["rates"]["open"]["flag"] is None
    complaints = {"sent": 99, "unique_opens": 20, "complaints": 5}
    assert metrics(complaints, ranges)["rates"]["complaint"]["flag"] is None
    assert metrics(complaints | {"sent": 100}, ranges)["rates"]["complaint"]["flag"] == "high"
    shown = run(story, "welcome")  # the six people's report says from how many it flags
    assert "ranges, from 1 message on" in " ".join(shown.output.split())


def test_an_unknown_campaign_names_the_known_ones(story: Story) -> None:
    result = run(story, "welcom")
    assert result.exit_code == 1
    assert "welcom: no such campaign in settings (known: welcome)" in result.output


def test_a_campaign_removed_from_settings_is_still_reported_as_counted(story: Story) -> None:
    [before] = report_of(story)["campaigns"]
    settings_path = story.project / "settings.toml"  # welcome renamed: welcome is gone
    settings_path.write_text(settings_path.read_text().replace("campaigns.welcome",
                                                               "campaigns.onboarding"))
    settings = load_settings(settings_path, environ=story.environ)
    with story.workspace.engine.connect() as connection:
        report = build_report(connection, settings, now=NOW)
    onboarding, welcome = report["campaigns"]
    assert "<h2>welcome <small>removed from settings</small></h2>" in render_report(report)
    assert (onboarding["name"], onboarding["totals"]["sent"]) == ("onboarding", 0)
    assert (welcome["name"], welcome["kind"], welcome["list"]) == (
        "welcome", "removed from settings", None)  # fmt: skip
    assert welcome["totals"] == before["totals"]
    assert welcome["timeline"] == before["timeline"]
    steps = {step["name"]: step["totals"] for step in welcome["steps"]}
    assert steps == {step["name"]: step["totals"] for step in before["steps"]}
    assert welcome["funnel"] is None and welcome["ab_decisions"] is None
    shown = run(story, "welcome")
    assert shown.exit_code == 0, shown.output
    assert "welcome (removed from settings): opens and clicks of people" in shown.output
    gone = run(story, "nothing")
    assert gone.exit_code == 1 and "nor messages of it in the outbox" in gone.output


def test_a_pixel_fetched_25_times_is_one_open_in_the_report(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> None:
    """A mail client that re-renders the message fetches the pixel over and over: one open for
    the report (the other fetches are machine opens, seen only with --include-machine), and a
    real second reading an hour later is a second open of the same message."""
    environ = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
               "MAILER_DELIVERY__RENDER_PROCESSES": "0",
               "MAILER_TRACKING__FLUSH_SIZE": "7"}  # the fetches straddle write batches
    workspace = Workspace(load_settings(project / "settings.toml", environ=environ), clock)
    queue_welcome(workspace, project, "ada@example.com,Ada")
    assert deliver(workspace).sent == 1
    pixel = _links(smtp_server, "ada@example.com", "Welcome")["open"]
    clock.advance(timedelta(minutes=5))
    with running(create_app(workspace)) as base:
        for _ in range(25):
            assert httpx.get(at(base, pixel), headers={"User-Agent": CHROME}).status_code == 200
            clock.advance(timedelta(seconds=1))
        clock.advance(timedelta(hours=1))
        assert httpx.get(at(base, pixel), headers={"User-Agent": CHROME}).status_code == 200
    with workspace.engine.connect() as connection:
        people = build_report(connection, workspace.settings, campaign="welcome", now=NOW)
        everyone = build_report(connection, workspace.settings, campaign="welcome", now=NOW,
                                include_machine=True)  # fmt: skip
    [hello] = [step for step in people["campaigns"][0]["steps"] if step["name"] == "hello"]
    counts = {name: hello["totals"][name]
              for name in ("unique_opens", "total_opens", "machine_opens")}  # fmt: skip
    assert counts == {"unique_opens": 1, "total_opens": 2, "machine_opens": 24}
    assert hello["totals"]["rates"]["open"] | {"flag": None} == rate(1.0, 1, 1)
    [hello_all] = [s for s in everyone["campaigns"][0]["steps"] if s["name"] == "hello"]
    assert (hello_all["totals"]["unique_opens"], hello_all["totals"]["total_opens"]) == (1, 26)
    workspace.close()
