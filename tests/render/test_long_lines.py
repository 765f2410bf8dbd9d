"""No line of a message passes 998 octets (RFC 5321 4.5.3.1.6), and every line ends in CRLF,
whatever the template: a relay refuses the whole message otherwise ("500 Line too long"), and
a bare LF is refused by relays that guard against SMTP smuggling."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.model import Contact
from mailer.render.message import MessageRenderer
from mailer.render.mime import alternative
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.render.conftest import ADA

SURVEY = (
    "<p>Hello {{ contact.first_name }}</p><p>How likely are you to recommend us?</p>"
    '{{ survey("nps", "nps") }}'
    '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)


def assert_short_crlf_lines(data: bytes) -> None:
    assert data.endswith(b"\r\n")
    for number, line in enumerate(data.split(b"\r\n"), 1):
        assert len(line) <= 998, f"line {number} is {len(line)} octets: {line[:80]!r}"
        assert b"\n" not in line and b"\r" not in line, f"line {number}: a bare CR or LF"


def test_a_survey_template_without_a_text_part_reaches_the_relay(
    project: Path, environ: dict[str, str], clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> None:
    """Found by the report's tests: the relay refused it with "500 Line too long"."""
    (project / "templates" / "welcome" / "1.html").write_text(SURVEY)  # one line, no .txt
    variables = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
                 "MAILER_DELIVERY__RENDER_PROCESSES": "0"}  # fmt: skip
    workspace = Workspace(load_settings(project / "settings.toml", environ=variables), clock)
    try:
        queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
        report = deliver(workspace)
    finally:
        workspace.close()
    assert report.sent == 2 and report.failed == 0
    [ada, _] = sorted(smtp_server.received, key=lambda received: received.recipient)
    assert_short_crlf_lines(ada.data)
    message = email.message_from_bytes(ada.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",))
    assert html is not None and html.get_content().count("/s/") == 11  # 0..10, each a link


unbroken = st.builds(lambda piece, times: piece * times,
                     st.text(st.characters(exclude_categories=["Cs"]), min_size=1,
                             max_size=8),
                     st.integers(1, 3000))  # fmt: skip


FIXTURES_ARE_REUSED = [HealthCheck.function_scoped_fixture]  # the renderer holds no state


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES_ARE_REUSED)
@given(first_name=unbroken, last_name=unbroken)
def test_no_line_passes_998_octets_whatever_the_contact_data(
    renderer: MessageRenderer, first_name: str, last_name: str
) -> None:
    """Long unbroken contact data lands in the subject, the To header, the HTML and the text
    made from it (welcome/1 has no .txt part)."""
    step = renderer.settings.campaigns["welcome"].steps[0]
    contact = Contact(email="ada@example.com", first_name=first_name, last_name=last_name)
    assert_short_crlf_lines(renderer.render("welcome", step, contact, "42").data)


@settings(max_examples=200)
@given(text=unbroken, html=unbroken)
def test_bodies_without_a_line_break_are_written_in_crlf_lines(text: str, html: str) -> None:
    headers = [("Subject", "x")]
    assert_short_crlf_lines(alternative(headers, text, html, boundary="=_0123456789abcdef"))


def test_a_survey_message_with_a_text_template_has_short_lines(
    renderer: MessageRenderer, templates: Path
) -> None:
    (templates / "welcome" / "1.html").write_text(SURVEY)
    (templates / "welcome" / "1.txt").write_text('{{ survey("nps", "nps", plain=true) }}')
    step = renderer.settings.campaigns["welcome"].steps[0]
    assert_short_crlf_lines(renderer.render("welcome", step, ADA, "42").data)
