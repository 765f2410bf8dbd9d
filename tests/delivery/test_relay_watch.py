"""Whether the relay is failing: pure decisions over its replies, then a real relay that refuses
the sender (counted in mailer_relay_errors_total, results counted per campaign)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailer.delivery import relay_watch
from mailer.delivery.relay_watch import RelayStanding, relay_failure, standing_after
from mailer.delivery.replies import SmtpReply
from mailer.metrics import REGISTRY
from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome
from tests.delivery.smtp_server import ScriptedSmtpServer

Opener = Callable[..., Workspace]
BLOCKED = SmtpReply(554, "5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org", "rcpt")
REFUSED = SmtpReply(None, "ConnectionRefusedError: [Errno 111] Connect call failed", "connect")
NO_MAILBOX = SmtpReply(550, "5.1.1 <bob@example.com>: Recipient address rejected", "rcpt")
GREYLISTED = SmtpReply(451, "4.7.1 Greylisted, try again in 5 minutes", "rcpt")
ACCEPTED = SmtpReply(250, "2.0.0 Ok: queued as 4F2", "data")


def test_no_answer_and_a_refusal_of_the_sender_are_relay_failures() -> None:
    assert relay_failure(REFUSED) == "no_answer"
    assert relay_failure(BLOCKED) == "refused"
    assert relay_failure(SmtpReply(535, "5.7.8 Authentication failed", "connect")) == "refused"


def test_a_refused_recipient_or_greylisting_is_the_relay_doing_its_job() -> None:
    assert relay_failure(NO_MAILBOX) is None
    assert relay_failure(GREYLISTED) is None
    assert relay_failure(ACCEPTED) is None


def test_the_relay_is_failing_after_three_failures_in_a_row_and_fine_after_one_success() -> None:
    standing = RelayStanding()
    for _ in range(2):
        standing = standing_after(standing, REFUSED)
    assert not standing.failing
    standing = standing_after(standing, BLOCKED)
    assert standing.failing and standing.failures_in_row == 3
    assert standing.last_failure is not None and "5.7.1" in standing.last_failure
    assert standing_after(standing, NO_MAILBOX) == RelayStanding()


def test_a_relay_refusing_every_message_is_failing_and_counted(
    open_workspace: Opener, project: Path, smtp_server: ScriptedSmtpServer
) -> None:
    workspace = open_workspace()
    people = ["ada@example.com", "bob@example.com", "cy@example.com"]
    queue_welcome(workspace, project, *(f"{person},Ada" for person in people))
    for person in people:
        smtp_server.script(person, f"{BLOCKED.code} {BLOCKED.text}")
    errors = REGISTRY.get_sample_value(
        "mailer_relay_errors_total", {"stage": "rcpt", "kind": "refused"}
    )
    failed = REGISTRY.get_sample_value(
        "mailer_messages_total", {"campaign": "welcome", "result": "failed"}
    )
    assert relay_watch.standing(workspace.settings.smtp) is None  # a relay not tried yet

    assert deliver(workspace).failed == 3

    standing = relay_watch.standing(workspace.settings.smtp)
    assert standing is not None and standing.failing
    assert (
        REGISTRY.get_sample_value("mailer_relay_errors_total", {"stage": "rcpt", "kind": "refused"})
        == (errors or 0) + 3
    )
    assert (
        REGISTRY.get_sample_value(
            "mailer_messages_total", {"campaign": "welcome", "result": "failed"}
        )
        == (failed or 0) + 3
    )
