"""A long subject and a long name go through a real SMTP server, which refuses any line over
998 characters (`500 Line too long`, as relays do), with `mailer tick` from the command line."""

from __future__ import annotations

import email
import json
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from tests.conftest import NOW, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer

PITCH = "Espresso" * 625  # 5,000 characters without a space, from a contact's attribute


def test_a_5000_character_subject_is_folded_and_delivered_by_mailer_tick(
    project: Path, environ: dict[str, str], smtp_server: ScriptedSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(project)
    settings = project / "settings.toml"
    subject = 'subject = "Welcome, {{ contact.first_name }}'
    settings.write_text(settings.read_text().replace(
        subject + '"', subject + ': {{ contact.attributes.pitch }}"'))  # fmt: skip
    first_name = "Ada\x1b[2J" + "a" * 300  # an ESC, and cut to 200 characters by the import
    write_csv(project / "news.csv", f"""
        email,first_name,last_name,pitch,consent_at,consent_confirmed_at
        ada@example.com,{first_name},Lovelace,{PITCH},2026-11-01,2026-11-01
    """)  # fmt: skip
    env = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
           "MAILER_DELIVERY__RENDER_PROCESSES": "0", "MAILER_NOW": NOW.isoformat()}  # fmt: skip
    runner = CliRunner()
    imported = runner.invoke(cli, ["import", "news.csv", "--list", "newsletter"], env=env)
    assert imported.exit_code == 0, imported.output
    later = (NOW + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%MZ")  # after the import
    ticked = runner.invoke(cli, ["tick", "--now", later, "--json"], env=env)
    assert ticked.exit_code == 0, ticked.output
    assert json.loads(ticked.stdout)["sent"] == 1, ticked.output
    (received,) = smtp_server.received
    head = received.data.split(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert b"\x1b" not in head
    message = email.message_from_bytes(received.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    subject = message["Subject"]
    assert subject.startswith("Welcome, Ada[2Jaaaa") and subject.endswith(f"a: {PITCH}")
    assert "\x1b" not in subject
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
