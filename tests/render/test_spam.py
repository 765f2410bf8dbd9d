"""SpamAssassin's local rules judge every example message, and `mailer check --spam` fails on
a spammy template naming the rule. These run Debian's real spamassassin (make test installs
it); without it they are skipped, saying so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.check import check_project
from mailer.cli import cli
from mailer.config import load_settings
from mailer.render.spam import spamassassin
from tests.conftest import NOW, SECRET

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.skipif(
    spamassassin() is None, reason="spamassassin is not installed (make test installs it)"
)


def test_every_example_message_scores_under_one() -> None:
    settings = load_settings(ROOT / "settings.toml", environ={})
    report = check_project(settings, NOW, spam_threshold=1.0)
    scores = {where: (score.score, score.worst_rules()) for where, score in report.spam}
    assert report.messages == 18  # every step and variant of every campaign
    # ... and the sign-up form's confirmation email of the one double opt-in list
    assert len(scores) == 19 and "the confirmation email of list newsletter" in scores
    assert {where: scored for where, scored in scores.items() if scored[0] >= 1.0} == {}
    assert report.errors == []


@pytest.fixture
def check(project: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(project)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["check", *args], env={"MAILER_SECRET_KEY": SECRET},
                                    catch_exceptions=False)  # fmt: skip
        return result.exit_code, result.output

    return run


def _image_only_tips(project: Path) -> None:
    """What spam looks like: the whole message is one picture, a line and the footer."""
    (project / "templates" / "welcome" / "2.html").write_text(
        '<p><a href="https://acme.example/sale"><img src="https://acme.example/sale.png" '
        'width="600" height="800" alt="SALE"></a></p>'
        '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    )


def test_check_spam_fails_on_an_image_only_message_naming_the_rule(check, project: Path) -> None:  # type: ignore[no-untyped-def]
    _image_only_tips(project)
    code, output = check("--spam")
    assert code == 1
    tips = [line for line in output.splitlines() if "campaigns.welcome step tips:" in line]
    assert tips, output
    assert "SpamAssassin scores" in tips[0]
    assert "HTML_SHORT_LINK_IMG_1" in tips[0]  # a linked image and little else
    assert "check failed" in output


def test_check_spam_json_lists_each_score_and_the_threshold_is_an_option(
    check, project: Path
) -> None:  # type: ignore[no-untyped-def]
    _image_only_tips(project)
    code, output = check("--spam", "--spam-threshold", "50", "--json")
    assert code == 0, output
    found = json.loads(output)
    scored = {entry["message"]: entry for entry in found["spam"]}
    assert set(scored) == {"campaigns.welcome step hello", "campaigns.welcome step tips",
                           "campaigns.welcome step tips variant B",
                           "the confirmation email of list newsletter"}  # fmt: skip
    assert scored["campaigns.welcome step tips"]["rules"]["HTML_SHORT_LINK_IMG_1"] > 1.0
    assert found["ok"] is True


def test_check_spam_scores_the_confirmation_email_too(check, project: Path) -> None:  # type: ignore[no-untyped-def]
    (project / "templates" / "confirm.html").write_text(
        '<p><a href="{{ confirm_url }}"><img src="https://acme.example/yes.png" width="600" '
        'height="800" alt="YES"></a></p><p>{{ sender.postal_address }}</p>'
    )
    code, output = check("--spam")
    assert code == 1
    [line] = [line for line in output.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the confirmation email of list newsletter: SpamAssassin "
                           "scores ")  # fmt: skip
    assert "HTML_SHORT_LINK_IMG_1" in line
