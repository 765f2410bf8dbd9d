"""The example campaign that ships with mailer loads, checks clean and imports as documented."""

from __future__ import annotations

from pathlib import Path

from mailer.check import check_project
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.workspace import Workspace
from tests.conftest import NOW
from tests.helpers import run_import

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_settings_check_clean() -> None:
    settings = load_settings(ROOT / "settings.toml", environ={})
    report = check_project(settings, NOW)
    assert report.errors == []
    assert [p.message for p in report.problems] == [
        "lists/leads.csv:5: 'bob@' is not an email address (There must be something after the "
        "@-sign.)",
        "lists/leads.csv:6: expected 9 columns, found 7",
    ]
    assert report.templates > 10


def test_the_shipped_lists_import(environ: dict[str, str], tmp_path: Path) -> None:
    settings = load_settings(ROOT / "settings.toml", environ=environ)
    workspace = Workspace(settings, FrozenClock(NOW))
    newsletter = run_import(workspace, ROOT / "lists/newsletter.csv", "newsletter",
                            rejects_path=tmp_path / "n.rejects.csv")  # fmt: skip
    leads = run_import(workspace, ROOT / "lists/leads.csv", "leads",
                       rejects_path=tmp_path / "l.rejects.csv")  # fmt: skip
    workspace.close()
    assert (newsletter.imported, newsletter.rejected) == (12, 0)
    assert (leads.imported, leads.updated, leads.rejected) == (7, 1, 2)


def test_check_names_a_missing_list_file_relative_to_the_project(project: Path) -> None:
    settings_path = project / "settings.toml"
    settings_path.write_text(settings_path.read_text().replace(
        'title = "Leads"', 'title = "Leads"\nfile = "lists/gone.csv"'))  # fmt: skip
    report = check_project(load_settings(settings_path, environ={}), NOW)
    assert [p.message for p in report.errors] == ["lists/gone.csv: no such file"]


def test_check_requires_the_confirmation_template_of_double_opt_in_lists(project: Path) -> None:
    (project / "templates" / "confirm.html").unlink()
    report = check_project(load_settings(project / "settings.toml", environ={}), NOW)
    assert [p.message for p in report.errors] == [
        "templates/confirm.html does not exist: double opt-in lists (newsletter) make their "
        "confirmation email from it (copy the example project's)"
    ]
