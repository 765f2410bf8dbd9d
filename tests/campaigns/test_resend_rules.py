"""A sequence step's resend keeps the rules of the step's own messages: the step's send window
and quiet hours in each contact's time zone, and the frequency cap, where it takes a slot last.
Through the real engine with the injected clock, real SQLite and PostgreSQL, and delivery into a
real SMTP server."""

from __future__ import annotations

import email
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.delivery.worker import Deliverer
from mailer.store.tables import contacts, outbox
from mailer.workspace import Workspace
from tests.conftest import SETTINGS, write_csv
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import run_import

SENT = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday: 16:00 in Rome, 10:00 in New York
HELLO = 'subject = "Welcome, {{ contact.first_name }}"\n'
AGAIN = "In case you missed it"


class Project:
    """The welcome sequence with a resend of its first step, and its people."""

    def __init__(self, workspace: Workspace, smtp_server: ScriptedSmtpServer) -> None:
        self.workspace, self.smtp_server = workspace, smtp_server

    def tick(self, moment: datetime) -> int:
        return tick(self.workspace.engine, self.workspace.settings, moment).queued

    def deliver(self, moment: datetime) -> list[str]:
        """The subjects sent at `moment`, by recipient."""
        self.smtp_server.received.clear()
        deliverer = Deliverer(self.workspace)
        try:
            deliverer.deliver(moment)
        finally:
            deliverer.close()
        return sorted(f"{message.recipient}: "
                      f"{email.message_from_bytes(message.data, policy=default_policy)['Subject']}"
                      for message in self.smtp_server.received)  # fmt: skip

    def queued(self, step: str) -> dict[str, datetime]:
        """When each contact's message of `step` may go (its send_after), by email."""
        with self.workspace.engine.connect() as connection:
            rows = connection.execute(
                select(contacts.c.email, outbox.c.send_after)
                .join(contacts, contacts.c.id == outbox.c.contact_id)
                .where(outbox.c.campaign == "welcome", outbox.c.step == step)
            ).all()  # fmt: skip
        return {row.email: row.send_after for row in rows}


Opener = Callable[[str, str, str], Project]  # (resend.after, the step's lines, [engine] lines)


@pytest.fixture
def open_project(project: Path, environ: dict[str, str],
                 smtp_server: ScriptedSmtpServer) -> Iterator[Opener]:  # fmt: skip
    opened: list[Workspace] = []

    def open_(after: str, step_lines: str, engine: str) -> Project:
        resend = f'resend = {{ after = "{after}", subject = "{AGAIN}", unless = "opened" }}\n'
        text = textwrap.dedent(SETTINGS).replace(HELLO, HELLO + resend + step_lines)
        settings = project / "settings.toml"
        settings.write_text(text + f"\n[engine]\n{engine}\n")
        variables = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
                     "MAILER_DELIVERY__RENDER_PROCESSES": "0"}  # fmt: skip
        workspace = Workspace(load_settings(settings, environ=variables), FrozenClock(SENT))
        opened.append(workspace)
        run_import(workspace, write_csv(project / "people.csv", """
            email,first_name,timezone,consent_at,consent_confirmed_at
            ada@example.com,Ada,Europe/Rome,2026-01-01,2026-01-02
            ken@example.com,Ken,America/New_York,2026-01-01,2026-01-02
        """), "newsletter")  # fmt: skip
        shop = Project(workspace, smtp_server)
        assert shop.tick(SENT) == 2
        assert shop.deliver(SENT) == ["ada@example.com: Welcome, Ada",
                                      "ken@example.com: Welcome, Ken"]  # fmt: skip
        return shop

    yield open_
    for workspace in opened:
        workspace.close()


@pytest.mark.parametrize(("step_lines", "rome", "new_york"), [
    ("", datetime(2026, 11, 26, 7, 0, tzinfo=UTC), datetime(2026, 11, 26, 13, 0, tzinfo=UTC)),
    ('send_window = "10:00-18:00"\n',
     datetime(2026, 11, 26, 9, 0, tzinfo=UTC), datetime(2026, 11, 26, 15, 0, tzinfo=UTC)),
], ids=["quiet hours", "quiet hours and the step's send window"])  # fmt: skip
def test_a_resend_due_in_the_night_waits_for_each_contacts_morning(
    open_project: Opener, step_lines: str, rome: datetime,
    new_york: datetime,
) -> None:  # fmt: skip
    shop = open_project("36 hours", step_lines, 'quiet_hours = "21:00-08:00"')
    night = SENT + timedelta(hours=36)  # 04:00 in Rome, 22:00 the evening before in New York
    assert shop.tick(night) == 2
    assert shop.queued("hello.resend") == {"ada@example.com": rome, "ken@example.com": new_york}
    assert shop.deliver(night) == []
    assert shop.deliver(rome) == [f"ada@example.com: {AGAIN}"]
    assert shop.deliver(new_york) == [f"ken@example.com: {AGAIN}"]


@pytest.mark.parametrize(("cap", "resent"), [("2 per 7d", False), ("3 per 7d", True)])
def test_a_resend_takes_a_slot_under_the_frequency_cap_last(
    open_project: Opener, cap: str, resent: bool
) -> None:
    # The resend and the next step (tips, 2 days after hello) are due at the same moment.
    shop = open_project("2 days", "", f'frequency_cap = "{cap}"')
    due = SENT + timedelta(days=2)
    assert shop.tick(due) == 2
    assert set(shop.queued("tips")) == {"ada@example.com", "ken@example.com"}
    assert shop.queued("hello.resend") == {}  # the step due first, the resend after
    assert len(shop.deliver(due)) == 2
    assert shop.tick(due + timedelta(minutes=5)) == (2 if resent else 0)
    assert shop.tick(due + timedelta(days=1, minutes=10)) == 0  # no room came within the day
    assert len(shop.queued("hello.resend")) == (2 if resent else 0)


def test_a_contact_whose_time_zone_is_unknown_misses_the_resend_alone(
    open_project: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    shop = open_project("36 hours", "", 'quiet_hours = "21:00-08:00"')
    with shop.workspace.engine.begin() as connection:  # an edit by SQL, past the import's check
        connection.execute(contacts.update().where(contacts.c.email == "ken@example.com")
                           .values(timezone="Mars/Olympus_Mons"))  # fmt: skip
    assert shop.tick(SENT + timedelta(hours=36)) == 1
    assert shop.queued("hello.resend") == {"ada@example.com": datetime(2026, 11, 26, 7, 0,
                                                                        tzinfo=UTC)}  # fmt: skip
    assert "resend of welcome.hello not queued for the contacts of time zone " \
           "'Mars/Olympus_Mons'" in caplog.text  # fmt: skip
