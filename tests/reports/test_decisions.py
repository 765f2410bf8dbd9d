"""The broadcast A/B auto-winner's decisions and the resends in `mailer report`: the `spring`
broadcast of tests/campaigns/test_ab_broadcast.py run through the real engine, a real SMTP
server and the real recording of opens and clicks, then reported as JSON, tables and HTML."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import tests.campaigns.test_ab_broadcast as spring
from mailer.cli import cli
from mailer.reports.html import render_report
from mailer.reports.metrics import build_report
from tests.campaigns.test_ab_broadcast import AB_TEST, RESEND, SEND_AT, Shop, ShopOpener
from tests.reports.sample_report import sample_report

open_spring = spring.open_spring  # the fixture: a shop with the spring broadcast
DECIDED = SEND_AT + timedelta(hours=4)


def report(shop: Shop, *args: str, at: Any = DECIDED) -> Any:
    environment = {"MAILER_NOW": at.isoformat()}
    result = CliRunner().invoke(cli, ["--config", str(shop.workspace.settings.source), "report",
                                      *args], env=environment)  # fmt: skip
    assert result.exit_code == 0, result.output
    return result


def test_the_auto_winner_s_decision_is_in_the_report_json_tables_and_page(
    open_spring: ShopOpener, tmp_path: Path
) -> None:
    shop = open_spring(AB_TEST.format(decide_by="clicks", default="B"))
    shop.tick(SEND_AT)
    shop.deliver(SEND_AT)
    sent = shop.messages()
    a_messages = [m for m in sent if m["variant"] is None]
    b_messages = [m for m in sent if m["variant"] == "B"]
    for number, message in enumerate(a_messages[:20]):  # 20 of A's people click, 1 of B's
        at = SEND_AT + timedelta(hours=1, minutes=number)
        shop.hit("click", message, at, link="https://acme.example/spring")
    shop.hit("click", b_messages[0], SEND_AT + timedelta(hours=2),
             link="https://acme.example/spring", ip="81.2.69.161")  # fmt: skip
    before = json.loads(report(shop, "spring", "--json", at=DECIDED - timedelta(minutes=1)).output)
    assert before["campaigns"][0]["ab_decisions"] == []
    rest = shop.tick(DECIDED)
    decision = shop.decision()
    assert decision is not None and decision["winner"] == "A"

    found = json.loads(report(shop, "--json").output)
    by_name = {campaign["name"]: campaign for campaign in found["campaigns"]}
    assert by_name["welcome"]["ab_decisions"] is None  # a sequence has none
    a, b = len(a_messages), len(b_messages)
    assert by_name["spring"]["ab_decisions"] == [{
        "send_at": "2026-11-24T09:00:00+00:00", "decide_by": "clicks", "winner": "A",
        "reason": decision["reason"], "decided_at": DECIDED.isoformat(), "rest_queued": rest,
        "numbers": {"A": {"successes": 20, "trials": a}, "B": {"successes": 1, "trials": b}},
    }]  # fmt: skip
    assert str(decision["reason"]).startswith("A wins")

    words = " ".join(report(shop, "spring").output.split())  # rich may wrap on a narrow terminal
    assert (f"spring (2026-11-24T09:00Z): winner A by clicks — {decision['reason']}; "
            f"A 20/{a}, B 1/{b}") in words  # fmt: skip

    page = tmp_path / "report.html"
    report(shop, "spring", "--html", str(page))
    html = page.read_text()
    assert '<table class="ab-decisions">' in html
    assert 'data-campaign="spring" data-send-at="2026-11-24T09:00:00+00:00"' in html
    assert f"<td>{decision['reason']}</td>" in html and f"<td>A 20 / {a}, B 1 / {b}</td>" in html

    since = json.loads(report(shop, "spring", "--json", "--since",
                              (DECIDED + timedelta(seconds=1)).isoformat()).output)  # fmt: skip
    assert since["campaigns"][0]["ab_decisions"] == []  # decided before the period


def test_decisions_in_the_page_are_text_whatever_they_say() -> None:
    found = sample_report()
    broadcast = next(c for c in found["campaigns"] if c["kind"] == "broadcast")
    broadcast["ab_decisions"] = [{
        "send_at": "2026-11-24T09:00:00+00:00", "decide_by": "opens", "winner": "<b>B</b>",
        "reason": "<script>alert(1)</script>", "decided_at": "2026-11-24T13:00:00+00:00",
        "rest_queued": 3, "numbers": {"<b>B</b>": {"successes": 1, "trials": 2}},
    }]  # fmt: skip
    html = render_report(found)
    assert "<script>" not in html and "<b>B</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_resend_is_its_own_step_after_the_one_it_resends(open_spring: ShopOpener) -> None:
    shop = open_spring(RESEND)
    shop.tick(SEND_AT)
    shop.deliver(SEND_AT)
    for message in shop.messages()[:50]:  # people opened these: no resend
        shop.hit("open", message, SEND_AT + timedelta(hours=2))
    later = SEND_AT + timedelta(days=3)
    assert shop.tick(later) == spring.PEOPLE - 50
    assert shop.deliver(later) == spring.PEOPLE - 50
    with shop.workspace.engine.connect() as connection:
        found = build_report(connection, shop.workspace.settings, campaign="spring", now=later)
    [campaign] = found["campaigns"]
    steps = {step["name"]: step["totals"] for step in campaign["steps"]}
    assert list(steps) == ["broadcast", "broadcast.resend"]
    assert (steps["broadcast"]["sent"], steps["broadcast"]["unique_opens"]) == (spring.PEOPLE, 50)
    assert (steps["broadcast.resend"]["sent"], steps["broadcast.resend"]["unique_opens"]) == (
        spring.PEOPLE - 50, 0)  # fmt: skip
    assert campaign["totals"]["sent"] == 2 * spring.PEOPLE - 50
    assert "broadcast.resend" in report(shop, "spring", at=later).output


def test_a_sequence_step_s_resend_is_shown_after_its_step_before_anything_is_sent(
    project: Path, environ: dict[str, str]
) -> None:
    settings = project / "settings.toml"
    settings.write_text(settings.read_text().replace(
        'subject = "Welcome, {{ contact.first_name }}"\n',
        'subject = "Welcome, {{ contact.first_name }}"\n'
        'resend = { after = "3 days", subject = "In case you missed it" }\n'))  # fmt: skip
    result = CliRunner().invoke(cli, ["--config", str(settings), "report", "welcome", "--json"],
                                env={**environ, "MAILER_NOW": SEND_AT.isoformat()})  # fmt: skip
    assert result.exit_code == 0, result.output
    [welcome] = json.loads(result.output)["campaigns"]
    assert [step["name"] for step in welcome["steps"]] == ["hello", "hello.resend", "tips"]
