"""The command line: exit statuses, JSON output, one-line errors on stderr."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from mailer.cli import cli
from tests.conftest import SECRET, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer


@pytest.fixture
def mailer(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    environment = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)

    run.environment = environment  # type: ignore[attr-defined]
    return run


@pytest.fixture
def leads(project: Path) -> Path:
    return write_csv(
        project / "leads.csv",
        """
        Email Address,first_name,consent_at,consent_ip
        ada@example.com,Ada,2026-03-01,203.0.113.1
        bob@,Bob,,
        cy@example.com,Cy,,
    """,
    )


def test_help_works_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["--help"], ["import", "--help"], ["consent", "erase", "--help"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, args
        assert "Usage: " in result.output


def test_import_prints_a_json_summary_and_reports_bad_rows(mailer, leads: Path) -> None:  # type: ignore[no-untyped-def]
    result = mailer("import", str(leads), "--list", "leads", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "imported": 2, "updated": 0, "rejected": 1, "warnings": 0, "suppressed": 0,
        "consent_recorded": 1,
        "rejects_file": str(leads.with_name("leads.rejects.csv")),
        # PostgreSQL: 2 rows are more than a tenth of an empty table's, so it ends with ANALYZE
        "analyzed": mailer.environment["MAILER_DATABASE_URL"].startswith("postgresql"),
    }  # fmt: skip
    assert f"{leads}:3: 'bob@' is not an email address" in result.stderr


def test_import_errors_exit_1_with_one_line(mailer, project: Path) -> None:  # type: ignore[no-untyped-def]
    result = mailer("import", "nope.csv", "--list", "leads")
    assert (result.exit_code, result.stderr) == (1, "mailer: nope.csv: no such file\n")
    write_csv(project / "x.csv", "name\nAda\n")
    result = mailer("import", "x.csv", "--list", "leads")
    assert result.exit_code == 1 and "x.csv:1: no email column" in result.stderr
    result = mailer("import", "x.csv", "--list", "customers")
    assert result.exit_code == 1 and "list 'customers' is not defined" in result.stderr


def test_usage_errors_exit_2(mailer) -> None:  # type: ignore[no-untyped-def]
    assert mailer("import", "x.csv").exit_code == 2
    assert mailer("import", "x.csv", "--list", "leads", "--map", "nonsense").exit_code == 2
    assert mailer("frobnicate").exit_code == 2


def test_consent_show_history_and_verify(mailer, leads: Path, database_url: str) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "leads")
    shown = json.loads(mailer("consent", "show", "ada@example.com", "--json").stdout)
    assert shown["lists"][1] == {
        "list": "leads", "status": "granted", "since": "2026-03-01T00:00:00+00:00", "entry_id": 1,
    }  # fmt: skip
    table = mailer("consent", "show", "ada@example.com").stdout
    assert "leads" in table and "granted" in table and "not suppressed" in table
    assert "ip=203.0.113.1" in mailer("consent", "history", "ada@example.com").stdout
    verified = mailer("consent", "verify")
    assert verified.exit_code == 0 and "ledger intact: 1 entries" in verified.stdout
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE consent_entries SET purpose = 'newsletter'"))
    engine.dispose()
    broken = mailer("consent", "verify")
    assert broken.exit_code == 1
    assert broken.stderr.startswith(  # then each derived row the edit no longer explains
        "ledger broken: entry 1 was altered: its contents no longer match its hash\n"
    )
    assert mailer("consent", "show", "nobody@example.com").exit_code == 1


def test_withdraw_export_and_erase(mailer, leads: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "leads")
    assert mailer("consent", "withdraw", "ada@example.com", "--list", "leads").exit_code == 0
    exported = json.loads(mailer("consent", "export", "ada@example.com").stdout)
    assert [entry["action"] for entry in exported["consent"]] == ["granted", "withdrawn"]
    refused = mailer("consent", "erase", "ada@example.com")
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert mailer("consent", "erase", "ada@example.com", "--yes").exit_code == 0
    again = json.loads(mailer("import", str(leads), "--list", "leads", "--json").stdout)
    assert again["suppressed"] == 1
    assert mailer("consent", "verify").exit_code == 0


def test_contacts_export_to_a_file(mailer, leads: Path, project: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "leads")
    result = mailer("contacts", "export", "--list", "leads", "--out", "out.csv")
    assert result.exit_code == 0
    assert (project / "out.csv").read_text().splitlines()[1:] == [
        "ada@example.com,Ada,,,,lead", "cy@example.com,Cy,,,,lead",
    ]  # fmt: skip


def test_check_names_file_and_line_of_a_broken_template(mailer, project: Path) -> None:  # type: ignore[no-untyped-def]
    result = mailer("check")
    assert result.exit_code == 0 and result.stdout.startswith("ok: 1 campaigns, 2 lists")
    (project / "templates" / "welcome" / "2.html").write_text("<p>\n{% if %}\n</p>")
    result = mailer("check")
    assert result.exit_code == 1
    assert "error: templates/welcome/2.html:2: Expected an expression" in result.stderr
    (project / "templates" / "welcome" / "2.html").unlink()
    result = mailer("check", "--json")
    problems = json.loads(result.stdout)["problems"]
    assert any("templates/welcome/2.html does not exist" in p["message"] for p in problems)


def test_init_creates_the_key_once(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.delenv("MAILER_SECRET_KEY", raising=False)
    env = {"MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'init.db'}"}
    first = CliRunner().invoke(cli, ["init"], env=env)
    assert first.exit_code == 0 and "secret key written to" in first.stdout
    key = (project / ".mailer" / "secret.key").read_text()
    second = CliRunner().invoke(cli, ["init"], env=env)
    assert second.exit_code == 0 and "secret key  present" in second.stdout
    assert (project / ".mailer" / "secret.key").read_text() == key


def test_check_renders_every_message_and_requires_the_footer(mailer, project: Path) -> None:  # type: ignore[no-untyped-def]
    assert "3 messages rendered" in mailer("check").stdout  # tips has a variant B
    (project / "templates" / "welcome" / "2.html").write_text("<p>Tips, no footer</p>")
    result = mailer("check")
    assert result.exit_code == 1
    assert "error: campaigns.welcome step tips: HTML lacks an unsubscribe link" in result.stderr
    assert "error: campaigns.welcome step tips: HTML lacks the postal address" in result.stderr
    (project / "templates" / "welcome" / "2.html").write_text("<p>{{ contact.shoe_size }}</p>")
    result = mailer("check")
    assert "error: templates/welcome/2.html:1: 'contact.shoe_size' is undefined" in result.stderr


def test_preview_renders_what_would_be_sent(mailer, leads: Path, project: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "newsletter")
    result = mailer("preview", "welcome", "hello", "--contact", "ADA@example.com")
    assert result.exit_code == 0
    assert "Subject: Welcome, Ada" in result.stdout and "List-Unsubscribe-Post" in result.stdout
    assert "Subject: Welcome, Ada" in result.stderr and "tracked links" in result.stderr
    assert mailer("preview", "welcome", "hello", "--contact", "ada@example.com",
                  "--out", "ada.eml").exit_code == 0  # fmt: skip
    assert (project / "ada.eml").read_bytes().startswith(b"From: Acme Coffee")
    mailer("preview", "welcome", "tips", "--contact", "ada@example.com", "--html", "ada.html",
           "--no-track")  # fmt: skip
    assert "<p>Tips</p>" in (project / "ada.html").read_text()


def test_preview_errors_say_what_exists(mailer, leads: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "newsletter")
    nope = mailer("preview", "welcome", "nope", "--contact", "ada@example.com")
    assert nope.exit_code == 1 and "no step 'nope' (steps: hello, tips)" in nope.stderr
    nobody = mailer("preview", "welcome", "hello", "--contact", "nobody@example.com")
    assert nobody.exit_code == 1 and "no such contact" in nobody.stderr
    variant = mailer("preview", "welcome", "hello", "--contact", "ada@example.com",
                     "--variant", "B")  # fmt: skip
    assert variant.exit_code == 1 and "has no variant 'B' (variants: none)" in variant.stderr
    both = mailer("preview", "welcome", "hello", "--contact", "ada@example.com", "--out", "a",
                  "--html", "b")  # fmt: skip
    assert both.exit_code == 2


def test_segment_count_and_show(mailer, leads: Path, project: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "leads")
    settings = project / "settings.toml"
    settings.write_text(settings.read_text() + "\n[segments]\nleads = 'in list \"leads\"'\n")
    assert mailer("segment", "count", "leads").stdout == "2 contacts\n"
    data = json.loads(mailer("segment", "show", "--where", 'email contains "ada"', "--json").stdout)
    assert data["count"] == 1 and data["contacts"][0]["email"] == "ada@example.com"
    bad = mailer("segment", "count", "--where", "orders >")
    assert bad.exit_code == 1 and "--where: col 9: expected a value" in bad.stderr
    assert mailer("segment", "count").exit_code == 2
    assert "no segment 'nope'" in mailer("segment", "count", "nope").stderr


def test_check_reports_a_broken_segment_with_its_column(mailer, project: Path) -> None:  # type: ignore[no-untyped-def]
    settings = project / "settings.toml"
    settings.write_text(
        settings.read_text() + "\n[segments]\nsilent = 'not opened any within 90 days'\n"
    )
    result = mailer("check")
    assert result.exit_code == 1
    assert "segments.silent: col 23: expected a duration" in result.stderr


def test_tick_plan_and_outbox_from_the_command_line(  # type: ignore[no-untyped-def]
    mailer, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(
        project / "news.csv",
        """
        email,first_name,consent_at,consent_confirmed_at
        ada@example.com,Ada,2026-01-01,2026-01-01
    """,
    )
    mailer("import", "news.csv", "--list", "newsletter")  # joins the list now (the real clock)
    start = datetime.now(UTC) + timedelta(minutes=1)
    iso = lambda moment: moment.strftime("%Y-%m-%dT%H:%MZ")  # noqa: E731
    planned = json.loads(mailer("plan", "--now", iso(start), "--horizon", "3d", "--json").stdout)
    assert [(row["step"], row["total"]) for row in planned["queued"]] == [("hello", 1), ("tips", 1)]
    with ScriptedSmtpServer() as relay:
        monkeypatch.setenv("MAILER_SMTP__PORT", str(relay.port))
        monkeypatch.setenv("MAILER_DELIVERY__RENDER_PROCESSES", "0")
        first = json.loads(mailer("tick", "--now", iso(start), "--json").stdout)
        assert (first["enrolled"], first["queued"], first["sent"]) == (1, 1, 1)
        later = mailer("tick", "--now", iso(start + timedelta(hours=1)),
                       "--until", iso(start + timedelta(days=3))).stdout  # fmt: skip
    days = [{name: int(count) for count, name in (part.split(" ", 1) for part in
                                                   line.split("  ", 1)[1].split(", "))}
            for line in later.splitlines()]  # "DAY  1 enrolled, 0 queued, ..." by name
    assert sum(day["queued"] for day in days) == 1
    assert sum(day["completed"] for day in days) == 1
    assert [message.recipient for message in relay.received] == ["ada@example.com"] * 2
    rows = json.loads(mailer("outbox", "--contact", "ada@example.com", "--json").stdout)
    assert [(row["step"], row["status"]) for row in rows] == [("hello", "sent"), ("tips", "sent")]
    assert mailer("tick", "--now", "yesterday").exit_code == 2


def test_events_recorded_from_the_command_line_shape_segments(mailer, leads: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "leads")
    recorded = mailer("event", "ADA@example.com", "viewed_product", "--prop", "category=espresso")
    assert recorded.exit_code == 0 and "viewed_product for ADA@example.com" in recorded.stdout
    where = 'event "viewed_product" where category = "espresso" within 1d'
    assert mailer("segment", "count", "--where", where).stdout == "1 contacts\n"
    assert mailer("event", "nobody@example.com", "purchased").exit_code == 1
    assert mailer("event", "ada@example.com", "Bad Name").exit_code == 1
    assert mailer("event", "ada@example.com", "purchased", "--prop", "oops").exit_code == 2


def test_every_command_reads_the_clock_that_mailer_now_starts(mailer, leads: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "leads")
    result = CliRunner().invoke(
        cli, ["event", "ada@example.com", "purchased"],
        env={**mailer.environment, "MAILER_NOW": "2031-05-04T10:00Z"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "at 2031-05-04 10:00 UTC" in result.stdout
    broken = CliRunner().invoke(cli, ["event", "ada@example.com", "purchased"],
                                env={**mailer.environment, "MAILER_NOW": "soon"})  # fmt: skip
    assert broken.exit_code == 1
    assert "MAILER_NOW='soon' is not an ISO time" in broken.stderr


def test_check_names_broken_triggers_goals_and_conditions(mailer, project: Path) -> None:  # type: ignore[no-untyped-def]
    settings = project / "settings.toml"
    text = (
        settings.read_text()
        .replace("""trigger = 'joins list "newsletter"'""", """trigger = 'joins "newsletter"'""")
        .replace('delay = "2 days"', 'delay = "2 days"\ncondition = "not opened previos"')
    )
    settings.write_text(text)
    result = mailer("check")
    assert result.exit_code == 1
    assert "campaigns.welcome.trigger: trigger 'joins \"newsletter\"': write" in result.stderr
    assert (
        "campaigns.welcome.steps[1].condition: col 12: expected a quoted campaign" in result.stderr
    )


def test_campaign_pause_list_and_resume_from_the_command_line(mailer) -> None:  # type: ignore[no-untyped-def]
    paused = mailer("campaign", "pause", "welcome", "--reason", "new prices")
    assert paused.exit_code == 0 and "welcome: paused (new prices)" in paused.stdout
    states = json.loads(mailer("campaign", "list", "--json").stdout)
    assert [(s["campaign"], s["paused"]) for s in states] == [("welcome", "new prices")]
    resumed = "welcome: resumed; 0 deferred messages due now\n"
    assert mailer("campaign", "resume", "welcome").stdout == resumed
    again = "welcome: was not paused; 0 deferred messages due now\n"
    assert mailer("campaign", "resume", "welcome").stdout == again
    unknown = mailer("campaign", "pause", "nope")
    assert unknown.exit_code == 1 and "no campaign 'nope'" in unknown.stderr


def test_event_properties_that_read_as_numbers_are_numbers_in_segments(mailer, leads: Path) -> None:  # type: ignore[no-untyped-def]
    mailer("import", str(leads), "--list", "leads")
    for value in ("4", "high", '"5"', "1e999"):
        assert mailer("event", "ada@example.com", "survey_answer", "--prop", f"value={value}",
                      "--prop", "question=nps").exit_code == 0  # fmt: skip
    count = lambda where: mailer("segment", "count", "--where", where).stdout  # noqa: E731
    assert count('event "survey_answer" where value <= 6 count = 1') == "1 contacts\n"  # 4 only
    assert count('event "survey_answer" where value = "5" count = 1') == "1 contacts\n"
    assert count('event "survey_answer" where value = "1e999"') == "1 contacts\n"  # kept as text
