"""`mailer new DIR`: a starter project that checks clean, plans messages at once and delivers
them into a real SMTP server; `mailer init` where there is no project says how to make one."""

from __future__ import annotations

import email
import json
import shutil
from collections import Counter
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.cli import cli
from tests.conftest import NOW
from tests.delivery.smtp_server import ScriptedSmtpServer

FILES = [
    ".gitignore", "lists/newsletter.csv", "settings.toml", "templates/layout.html",
    "templates/layout.txt", "templates/news.html", "templates/news.txt",
    "templates/welcome.html", "templates/welcome.txt",
]  # fmt: skip


def iso(minutes: int) -> str:
    return (NOW + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%MZ")


@pytest.fixture
def mailer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`mailer ARGS` in tmp_path, on the test's clock, with no settings from the environment."""
    monkeypatch.chdir(tmp_path)
    for variable in ("MAILER_CONFIG", "MAILER_SECRET_KEY", "MAILER_DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)

    def run(*args: str, **extra: str) -> Result:
        environment = {"MAILER_NOW": iso(0), "MAILER_DELIVERY__RENDER_PROCESSES": "0"} | extra
        return CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)

    return run


def written(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_new_writes_the_starter_and_says_what_to_run_next(mailer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = mailer("new", "shop")
    assert result.exit_code == 0, result.output
    assert written(tmp_path / "shop") == FILES
    commands = [line.split("#")[0].strip() for line in result.stdout.splitlines()[2:]]
    assert commands == ["cd shop", "mailer init", "mailer check",
                        "mailer import lists/newsletter.csv --list newsletter", "mailer plan",
                        "mailer sink &", "mailer tick"]  # fmt: skip
    settings = (tmp_path / "shop" / "settings.toml").read_text()
    assert f'send_at = "{iso(0)}"' in settings  # the broadcast is due as soon as there is a list
    assert ".mailer/" in (tmp_path / "shop" / ".gitignore").read_text().splitlines()
    contacts = (tmp_path / "shop" / "lists" / "newsletter.csv").read_text().splitlines()[1:]
    assert 3 <= len(contacts) <= 5
    assert all(row.split(",")[0].endswith(("@example.com", "@example.org")) for row in contacts)


def test_new_in_the_current_folder(mailer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = mailer("new", ".")
    assert result.exit_code == 0
    assert written(tmp_path) == FILES
    assert "cd " not in result.stdout


def test_new_refuses_to_overwrite_any_file_unless_forced(mailer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "shop" / "templates").mkdir(parents=True)
    (tmp_path / "shop" / "settings.toml").write_text("# mine\n")
    (tmp_path / "shop" / "templates" / "layout.html").write_text("mine")
    refused = mailer("new", "shop")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "mailer: shop: settings.toml and templates/layout.html exist already; nothing was "
        "written (`mailer new shop --force` replaces them)\n"
    )
    assert written(tmp_path / "shop") == ["settings.toml", "templates/layout.html"]
    assert mailer("new", "shop", "--force").exit_code == 0
    assert written(tmp_path / "shop") == FILES
    assert (tmp_path / "shop" / "settings.toml").read_text() != "# mine\n"


def test_new_refuses_a_file_in_place_of_the_folder(mailer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "shop").write_text("")
    result = mailer("new", "shop")
    assert result.exit_code == 1
    assert result.stderr == "mailer: shop: is a file, not a folder\n"


def test_the_starter_checks_plans_and_delivers_at_once(mailer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    assert mailer("new", "shop").exit_code == 0
    monkeypatch.chdir(tmp_path / "shop")
    initialised = mailer("init")
    assert initialised.exit_code == 0, initialised.output
    assert "DKIM key written to" in initialised.stdout
    checked = mailer("check")
    assert (checked.exit_code, checked.stderr) == (0, "")
    assert checked.stdout.startswith("ok: 2 campaigns, 1 lists, 6 templates, 2 messages")
    imported = mailer("import", "lists/newsletter.csv", "--list", "newsletter", "--json",
                      MAILER_NOW=iso(2))  # fmt: skip
    contacts = json.loads(imported.stdout)["imported"]
    assert contacts >= 3
    planned = json.loads(mailer("plan", "--now", iso(3), "--json").stdout)
    assert [(row["campaign"], row["step"], row["total"], row["first"])
            for row in planned["queued"]] == [
        ("news", "broadcast", contacts, (NOW + timedelta(minutes=3)).isoformat()),
        ("welcome", "hello", contacts, (NOW + timedelta(minutes=3)).isoformat()),
    ]  # fmt: skip
    assert planned["held_back"] == []
    with ScriptedSmtpServer() as sink:
        sent = mailer("tick", "--now", iso(3), "--json", MAILER_SMTP__PORT=str(sink.port))
    assert json.loads(sent.stdout)["sent"] == 2 * contacts
    assert set(Counter(message.recipient for message in sink.received).values()) == {2}
    assert all(b"DKIM-Signature:" in message.data for message in sink.received)


def test_new_fills_the_sender_and_the_starter_still_checks_and_delivers(
    mailer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    made = mailer("new", "cafe", "--name", 'Zoë\'s "Blue" Café', "--email", "News@Cafe.Example",
                  "--address", "Café Bleu SARL, 3 rue des Lilas, 75011 Paris, France")  # fmt: skip
    assert made.exit_code == 0, made.output
    monkeypatch.chdir(tmp_path / "cafe")
    settings = (tmp_path / "cafe" / "settings.toml").read_text()
    assert 'name = "Zoë\'s \\"Blue\\" Café"' in settings  # TOML-escaped
    assert 'email = "news@cafe.example"' in settings and 'domain = "cafe.example"' in settings
    assert 'reply_to = "hello@cafe.example"' in settings
    assert mailer("init").exit_code == 0
    checked = mailer("check")
    assert (checked.exit_code, checked.stderr) == (0, "")
    mailer("import", "lists/newsletter.csv", "--list", "newsletter", MAILER_NOW=iso(2))
    with ScriptedSmtpServer() as sink:
        sent = mailer("tick", "--now", iso(3), "--json", MAILER_SMTP__PORT=str(sink.port))
    assert json.loads(sent.stdout)["sent"] >= 3
    message = email.message_from_bytes(sink.received[0].data, policy=default_policy)
    assert message["From"].addresses[0].display_name == 'Zoë\'s "Blue" Café'
    assert message["From"].addresses[0].addr_spec == "news@cafe.example"
    assert "3 rue des Lilas" in str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert "d=cafe.example" in message["DKIM-Signature"]


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--email", "not an address", "--email: "),
    ("--name", "Two\nlines", "--name: one line of text"),
])  # fmt: skip
def test_new_refuses_a_sender_that_cannot_be_one(mailer, tmp_path: Path, option: str, value: str,
                                                 said: str) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    refused = mailer("new", "shop", option, value)
    assert refused.exit_code == 1 and said in refused.output
    assert not (tmp_path / "shop").exists()


@pytest.mark.skipif(shutil.which("spamassassin") is None,
                    reason="spamassassin is not installed (`make spamassassin`)")  # fmt: skip
def test_the_starter_passes_the_spam_check(mailer, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    assert mailer("new", "shop").exit_code == 0
    monkeypatch.chdir(tmp_path / "shop")
    assert mailer("init").exit_code == 0
    checked = mailer("check", "--spam")
    assert checked.exit_code == 0, checked.output


def test_init_without_a_project_says_how_to_make_one(mailer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = mailer("init")
    assert result.exit_code == 1
    assert result.stderr == (
        f"mailer: no settings.toml in {tmp_path}: create a project here with `mailer new .`, "
        "or pass --config PATH (or set MAILER_CONFIG)\n"
    )
    assert written(tmp_path) == []  # nothing created, nothing asked
    assert mailer("check").stderr == result.stderr  # every command that needs the project


def test_init_with_a_config_that_does_not_exist_names_it(mailer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = mailer("--config", "elsewhere/settings.toml", "init")
    assert result.exit_code == 1
    assert result.stderr == (
        "mailer: elsewhere/settings.toml: no such settings file (check the path, or create a "
        "project there with `mailer new elsewhere`)\n"
    )
