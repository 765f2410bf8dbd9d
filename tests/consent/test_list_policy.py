"""A list switched between single and double opt-in in settings: the people on it keep their
status, grants after the switch follow the new policy, the switch is a ledger entry, and
`mailer consent verify` replays every grant under the policy of its time."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from tests.conftest import write_csv
from tests.consent.test_ledger_tamper import assert_caught

# The database is read and edited with plain SQL here: a Workspace opened before settings
# changed would record their old policy again when it first connects (as a process started
# with old settings does: every process must run the same settings).


def mailer(project: Path, environ: dict[str, str], *args: str) -> Result:
    from mailer.cli import cli

    return CliRunner().invoke(cli, ["--config", str(project / "settings.toml"), *args], env=environ)


def set_leads_double_opt_in(project: Path, double: bool) -> None:
    settings = project / "settings.toml"
    line = f"double_opt_in = {str(double).lower()}\n"
    settings.write_text(re.sub(r"(\[lists\.leads\]\n)(double_opt_in = \w+\n)?", rf"\1{line}",
                               settings.read_text()))  # fmt: skip


def import_leads(project: Path, environ: dict[str, str], tmp_path: Path, *emails: str) -> None:
    rows = "\n".join(f"{email},2026-03-01,203.0.113.9" for email in emails)
    path = write_csv(tmp_path / f"{emails[0]}.csv", "email,consent_at,consent_ip\n" + rows)
    result = mailer(project, environ, "import", str(path), "--list", "leads")
    assert result.exit_code == 0, result.output


def sql(environ: dict[str, str], *statements: str) -> list[tuple[object, ...]]:
    """The rows of the last statement, all run in one transaction."""
    engine = create_engine(environ["MAILER_DATABASE_URL"])
    try:
        with engine.begin() as connection:
            for statement in statements:
                result = connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def statuses(environ: dict[str, str]) -> dict[str, str]:
    return dict(sql(environ,  # type: ignore[arg-type]
        "SELECT c.email, s.status FROM consent_status s JOIN contacts c ON c.id = s.contact_id"
        " WHERE s.purpose = 'leads'"))  # fmt: skip


def verified(project: Path, environ: dict[str, str]) -> dict[str, object]:
    result = mailer(project, environ, "consent", "verify", "--json")
    assert result.exit_code == 0, result.output
    found: dict[str, object] = json.loads(result.output)
    return found


def test_a_list_switched_to_double_opt_in_and_back_verifies_and_keeps_its_people(
    project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    import_leads(project, environ, tmp_path, "ada@example.com", "bob@example.com")
    assert statuses(environ) == {"ada@example.com": "granted", "bob@example.com": "granted"}
    assert verified(project, environ)["entries"] == 2

    set_leads_double_opt_in(project, True)
    import_leads(project, environ, tmp_path, "cy@example.com")
    # ada and bob stay sendable (granted under single opt-in); cy waits for a confirmation.
    assert statuses(environ) == {"ada@example.com": "granted", "bob@example.com": "granted",
                                   "cy@example.com": "pending"}  # fmt: skip
    report = verified(project, environ)
    assert report["entries"] == 4 and report["findings"] == []
    switches = sql(environ, "SELECT id, subject_hash, contact_id, purpose, action, source "
                            "FROM consent_entries WHERE subject_hash = 'list'")  # fmt: skip
    assert switches == [(3, "list", None, "leads", "double_opt_in", "admin")]

    set_leads_double_opt_in(project, False)
    import_leads(project, environ, tmp_path, "dee@example.com")
    assert statuses(environ)["dee@example.com"] == "granted"
    assert statuses(environ)["cy@example.com"] == "pending"  # never confirmed: still not sent
    report = verified(project, environ)
    assert report["entries"] == 6 and report["findings"] == []
    # Opening the database again with the same settings records nothing more.
    assert verified(project, environ)["entries"] == 6


def ada_then_the_switch_then_cy(project: Path, environ: dict[str, str], tmp_path: Path) -> None:
    """Entries 1-3: ada granted on single opt-in, the switch to double, cy granted (pending)."""
    import_leads(project, environ, tmp_path, "ada@example.com")
    set_leads_double_opt_in(project, True)
    import_leads(project, environ, tmp_path, "cy@example.com")


def test_a_status_edited_under_a_switched_policy_is_still_caught(
    project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    ada_then_the_switch_then_cy(project, environ, tmp_path)
    [(cy,)] = sql(environ, "SELECT id FROM contacts WHERE email = 'cy@example.com'")
    sql(environ, f"UPDATE consent_status SET status = 'granted' WHERE contact_id = {cy}")
    assert_caught(project, environ, f"contact {cy}", "pending", "granted")


def test_the_switch_is_chained_and_the_tables_flag_is_never_trusted_over_it(
    project: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    ada_then_the_switch_then_cy(project, environ, tmp_path)
    # The lists table's flag is a copy of settings: flipped by SQL, it is written again at the
    # next start; the replay follows the ledger, and no switch is invented.
    sql(environ, "UPDATE lists SET double_opt_in = false WHERE name = 'leads'")
    report = verified(project, environ)
    assert report["entries"] == 3 and report["findings"] == []
    # The switch itself is chained: rewriting it breaks the chain.
    sql(environ, "UPDATE consent_entries SET action = 'single_opt_in' WHERE id = 2")
    assert_caught(project, environ, "entry 2")
