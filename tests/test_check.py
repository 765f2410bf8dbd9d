"""`mailer check` renders every message for the rows of the list files and for a contact with
only an email address, and names the template line and the row that broke it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.check import check_project
from mailer.cli import cli
from mailer.config import load_settings
from tests.conftest import NOW, SECRET, write_csv

FOOTER = '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
ROWS = """
    email,first_name,orders,last_visit,consent_at
    ada@example.com,Ada,3,2026-01-01,2026-01-01
    bob@example.com,Bob,0,01/03/2026,2026-01-01
    cy@example.com,Cy,0,,2026-01-01
"""


@pytest.fixture
def lists_file(project: Path) -> Path:
    """The newsletter list reads lists/news.csv; its first step divides by the orders."""
    settings = project / "settings.toml"
    settings.write_text(settings.read_text().replace(
        'title = "Newsletter"', 'title = "Newsletter"\nfile = "lists/news.csv"'))  # fmt: skip
    (project / "lists").mkdir()
    with_first_step(project, "<p>{{ 100 // (contact.attributes.orders | default(1) | int) }}</p>")
    return write_csv(project / "lists" / "news.csv", ROWS)


def with_first_step(project: Path, body: str) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(
        "<p>Hello {{ contact.first_name | default('you') }}</p>\n" + body + "\n" + FOOTER
    )


def messages(project: Path, severity: str, strict: bool = False, rows: int = 1000) -> list[str]:
    report = check_project(load_settings(project / "settings.toml", environ={}), NOW, strict,
                           rows)  # fmt: skip
    return [p.message for p in report.problems if p.severity == severity]


def test_a_template_that_fails_for_rows_is_an_error_naming_the_first_row_and_the_line(
    project: Path, lists_file: Path
) -> None:
    assert messages(project, "error") == [
        "templates/welcome/1.html:2: ZeroDivisionError: integer division or modulo by zero "
        "(contact bob@example.com from lists/news.csv:3, and 1 more contact; campaigns.welcome "
        "step hello)"
    ]


def test_only_the_first_rows_of_each_file_are_rendered(project: Path, lists_file: Path) -> None:
    assert messages(project, "error", rows=1) == []


def test_a_date_filter_on_a_missing_or_malformed_value_is_reported_not_raised(
    project: Path, lists_file: Path
) -> None:
    with_first_step(project, "<p>{{ contact.attributes.last_visit | date }}</p>")
    assert messages(project, "error") == [
        "templates/welcome/1.html:2: ValueError: '01/03/2026' is not an ISO date (like "
        "2026-03-01) (contact bob@example.com from lists/news.csv:3; campaigns.welcome step "
        "hello)",
        "templates/welcome/1.html:2: 'contact.attributes.last_visit' is undefined (contact "
        "cy@example.com from lists/news.csv:4; campaigns.welcome step hello)",
    ]


def test_a_message_failing_only_for_a_contact_with_just_an_email_is_a_warning(
    project: Path, lists_file: Path
) -> None:
    with_first_step(project, "<p>Welcome</p>")
    (project / "templates" / "welcome" / "2.html").write_text(
        "<p>Tips</p>\n<p>{{ contact.attributes.orders | number }}</p>" + FOOTER
    )
    # Every row has orders; a contact who came through a form with only an address has none.
    assert messages(project, "error") == []
    expected = ("templates/welcome/2.html:2: 'contact.attributes.orders' is undefined (contact "
                "email.only@example.com with only an email address, every optional field "
                "missing; campaigns.welcome step tips)")  # fmt: skip
    assert expected in messages(project, "warning")
    assert expected in messages(project, "error", strict=True)


def test_mailer_check_prints_file_line_and_row_never_a_traceback(
    project: Path, lists_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_first_step(project, "<p>{{ contact.attributes.last_visit | date }}</p>")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(cli, ["check"], env={"MAILER_SECRET_KEY": SECRET})
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert ("error: templates/welcome/1.html:2: 'contact.attributes.last_visit' is undefined "
            "(contact cy@example.com from lists/news.csv:4") in result.stderr  # fmt: skip
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["check", "--rows", "1"], env={"MAILER_SECRET_KEY": SECRET})
    assert "lists/news.csv" not in result.stderr


def test_a_cell_the_import_would_leave_out_is_a_warning_naming_file_line_and_column(
    project: Path, lists_file: Path
) -> None:
    write_csv(lists_file, "email,orders\nada@example.com,nan\n")
    assert (
        "lists/news.csv:2: column 'orders': 'nan' is not an integer; left out, the contact "
        "imports without it"
    ) in messages(project, "warning")


def test_a_login_in_clear_to_a_relay_across_the_network_fails_check(project: Path) -> None:
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_SMTP__HOST": "smtp.example.net",
               "MAILER_SMTP__USERNAME": "acme", "MAILER_SMTP__PASSWORD": "hunter2"}  # fmt: skip
    settings = load_settings(project / "settings.toml", environ=environ)
    report = check_project(settings, NOW)
    assert report.messages > 0  # the messages are still checked
    assert [problem.message for problem in report.errors] == [
        f'{settings.source}: smtp.tls: "none" would send the password of acme in clear to '
        'smtp.example.net; set tls = "starttls" (port 587) or "implicit" (port 465)'
    ]
    encrypted = load_settings(project / "settings.toml",
                              environ=environ | {"MAILER_SMTP__TLS": "starttls"})  # fmt: skip
    assert check_project(encrypted, NOW).errors == []


def test_a_send_window_inside_quiet_hours_fails_check(project: Path) -> None:
    path = project / "settings.toml"
    path.write_text(path.read_text().replace(
        'subject = "Brewing tips"', 'subject = "Brewing tips"\nsend_window = "22:00-23:00"')
        + '\n[engine]\nquiet_hours = "21:00-08:00"\n')  # fmt: skip
    settings = load_settings(path, environ={})
    report = check_project(settings, NOW)
    assert report.messages > 0  # the messages are still rendered and checked
    assert [problem.message for problem in report.errors] == [
        f'{settings.source}: campaigns.welcome.steps[1].send_window: "22:00-23:00" lies wholly '
        'inside engine.quiet_hours "21:00-08:00", so its messages would wait forever; widen the '
        "window or shorten the quiet hours"
    ]
    path.write_text(path.read_text().replace('"22:00-23:00"', '"20:00-23:00"'))
    assert messages(project, "error") == []


def test_a_send_window_that_does_not_parse_fails_check(project: Path) -> None:
    path = project / "settings.toml"
    path.write_text(path.read_text().replace(
        'subject = "Brewing tips"', 'subject = "Brewing tips"\nsend_window = "9-17"'))  # fmt: skip
    assert [m.split(": ", 1)[1] for m in messages(project, "error")] == [
        'campaigns.welcome.steps[1].send_window: "9-17" is not a send window '
        '(write e.g. "09:00-18:00 weekdays")'
    ]


def test_an_event_condition_reaching_past_the_website_events_kept_is_a_warning(
    project: Path,
) -> None:
    """With retention.website_events_after set, older website events are counted per contact
    and day without their properties: an `event` condition with a property filter that reaches
    further back says so (one without a filter reads the counts, a goal without `ever` reads
    its own run, survey answers are never rolled up)."""
    path = project / "settings.toml"
    path.write_text(path.read_text() + (
        '\n[retention]\nwebsite_events_after = "90 days"\n[segments]\n'
        'buyers = \'event "purchased" where total > 50 or not event "churned" where plan = '
        '"pro" within 120d\'\n'
        "counted = 'event \"purchased\" count >= 2 or event \"churned\" within 120d'\n"
        "recent = 'event \"purchased\" where total > 50 within 30d'\n"
        "answered = 'event \"survey_answer\" where value <= 6'\n"))  # fmt: skip
    warned = [message for message in messages(project, "warning") if "reaches further" in message]
    source = load_settings(path, environ={}).source
    assert warned == [
        f'{source}: segments.buyers: event "{name}" with `where` reaches further back than '
        'retention.website_events_after ("90 days"): older website events are counted per '
        "contact and day without their properties, so the filter sees only that window; add "
        "`within`, or keep website events longer" for name in ("purchased", "churned")]  # fmt: skip
    path.write_text(path.read_text().replace(
        "enroll_existing = true", "enroll_existing = true\ngoal = 'event \"purchased\" where "
        "total > 50'"))  # fmt: skip
    assert len([message for message in messages(project, "warning") if "reaches" in message]) == 2
    path.write_text(path.read_text().replace("goal = 'event \"purchased\" where total > 50'",
                                             "goal = 'event \"purchased\" where total > 50 "
                                             "ever'"))  # fmt: skip
    warned = [message for message in messages(project, "warning") if "reaches" in message]
    assert len(warned) == 3 and "campaigns.welcome.goal" in warned[-1]
    path.write_text(path.read_text().replace('website_events_after = "90 days"', ""))
    assert not [message for message in messages(project, "warning") if "reaches" in message]


def test_opened_clicked_and_sent_naming_what_settings_lack_are_warnings(project: Path) -> None:
    """A typo in a campaign, step or variant name matches nobody, silently: `mailer check`
    says which names settings have. (A warning: messages of one removed since still count.)"""
    path = project / "settings.toml"
    path.write_text(path.read_text() + (
        "\n[segments]\n"
        "typo = 'opened \"welcom\" or clicked step \"welcome.helo\"'\n"
        "letter = 'sent \"welcome\" variant \"C\"'\n"
        "fine = 'opened step \"welcome.tips\" variant \"B\" or clicked any variant \"B\" or "
        "sent \"welcome\" variant \"A\" or opened step \"welcome.tips.resend\"'\n"
        "base = 'opened step \"welcome.hello\" variant \"B\"'\n"))  # fmt: skip
    source = load_settings(path, environ={}).source
    campaigns = ", ".join(load_settings(path, environ={}).campaigns)
    warned = [message for message in messages(project, "warning") if "segments." in message]
    assert warned == [
        f'{source}: segments.typo: opened "welcom": no such campaign in settings, so it matches '
        f"only messages of one removed since; campaigns: {campaigns}",
        f'{source}: segments.typo: clicked step "welcome.helo": the campaign has no such step, '
        "so it matches only messages of one removed since; its steps: hello, tips",
        f'{source}: segments.letter: sent variant "C": no message of welcome has that variant '
        "in settings; its variants: A, B",
        f'{source}: segments.base: opened variant "B": no message of welcome.hello has that '
        "variant in settings; its variants: A",  # tips has B, hello none
    ]


def test_an_apple_ranges_file_missing_is_an_error_and_one_without_ranges_a_warning(
    project: Path,
) -> None:
    path = project / "settings.toml"
    ranges = project / "egress-ip-ranges.csv"
    path.write_text(path.read_text()
                    + f'\n[tracking]\napple_proxy_ranges_file = "{ranges.name}"\n')  # fmt: skip
    source = load_settings(path, environ={}).source
    assert [m for m in messages(project, "error") if "apple_proxy" in m] == [
        f"{source}: [tracking] apple_proxy_ranges_file: cannot read {ranges} (No such file or "
        "directory); download https://mask-api.icloud.com/egress-ip-ranges.csv there, or remove "
        "the setting to use the shipped ranges"]
    ranges.write_text("prefix,country,region,city\n")  # a header, no range
    assert [m for m in messages(project, "warning") if "apple_proxy" in m] == [
        f"{source}: [tracking] apple_proxy_ranges_file: {ranges.name} holds no address range, "
        "so no open is told Apple Mail Privacy Protection's by its address; download "
        "https://mask-api.icloud.com/egress-ip-ranges.csv there"]
    ranges.write_text("172.224.226.0/27,GB,GB-EN,London,\n")
    assert not [m for m in messages(project, "warning") + messages(project, "error")
                if "apple_proxy" in m]  # fmt: skip


def test_replies_tracked_without_a_listener_in_mailer_run_are_a_warning(project: Path) -> None:
    path = project / "settings.toml"
    text = path.read_text().replace("[sender]\n", "[sender]\nreply_tracking = true\n", 1)
    path.write_text(text + '\n[inbound]\nreplies_to = "hello@acme-coffee.example"\n')
    source = load_settings(path, environ={}).source
    assert [m for m in messages(project, "warning") if "reply_tracking" in m] == [
        f"{source}: [sender] reply_tracking: replies go to reply+...@acme.example, and "
        "`mailer run` does not listen for them ([inbound] enabled = false); run `mailer "
        "inbound` where the MX of acme.example points, or set [inbound] enabled = true"]
    path.write_text(path.read_text() + "enabled = true\n")
    assert not [m for m in messages(project, "warning") if "reply_tracking" in m]
