"""STARTTLS, implicit TLS and AUTH against a real TLS relay with its own certificate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailer.workspace import Workspace
from tests.delivery.helpers import deliver, queue_welcome, rows
from tests.delivery.smtp_server import ScriptedSmtpServer, server_tls_context

Opener = Callable[..., Workspace]


def test_starttls_and_auth_with_the_password_from_the_environment(
    open_workspace: Opener, project: Path, tls_files: tuple[Path, Path]
) -> None:
    certificate, key = tls_files
    context = server_tls_context(certificate, key)
    with ScriptedSmtpServer(tls=context, auth={"mailer": "s3cret"}) as relay:
        workspace = open_workspace(SMTP__PORT=str(relay.port), SMTP__TLS="starttls",
                                   SMTP__CA_FILE=str(certificate), SMTP__USERNAME="mailer",
                                   SMTP__PASSWORD="s3cret")  # fmt: skip
        queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
        assert deliver(workspace).sent == 2
    assert len(relay.received) == 2


def test_implicit_tls(open_workspace: Opener, project: Path,
                      tls_files: tuple[Path, Path]) -> None:  # fmt: skip
    certificate, key = tls_files
    with ScriptedSmtpServer(implicit_tls=server_tls_context(certificate, key)) as relay:
        workspace = open_workspace(SMTP__PORT=str(relay.port), SMTP__TLS="implicit",
                                   SMTP__CA_FILE=str(certificate))  # fmt: skip
        queue_welcome(workspace, project, "ada@example.com,Ada")
        assert deliver(workspace).sent == 1


def test_a_relay_whose_certificate_is_not_trusted_gets_nothing(
    open_workspace: Opener, project: Path, tls_files: tuple[Path, Path]
) -> None:
    certificate, key = tls_files
    with ScriptedSmtpServer(tls=server_tls_context(certificate, key)) as relay:
        workspace = open_workspace(SMTP__PORT=str(relay.port), SMTP__TLS="starttls")
        queue_welcome(workspace, project, "ada@example.com,Ada")
        assert deliver(workspace).deferred == 1
    row = rows(workspace)["ada@example.com"]
    assert "CERTIFICATE_VERIFY_FAILED" in str(row["reply"])
    assert relay.received == []
