"""Fixtures for the delivery tests: workspaces whose relay is the scripted SMTP server
(`smtp_server`, in tests/conftest.py), and a self-signed certificate for its TLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer, self_signed_certificate

Opener = Callable[..., Workspace]


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for localhost and 127.0.0.1; the certificate is its own CA."""
    return self_signed_certificate(tmp_path)


@pytest.fixture
def open_workspace(project: Path, environ: dict[str, str], clock: FrozenClock,
                   smtp_server: ScriptedSmtpServer) -> Iterator[Opener]:  # fmt: skip
    """Workspaces over the test project whose relay is the scripted server; keyword
    arguments are more settings overrides (MAILER_ variables without the prefix)."""
    opened: list[Workspace] = []

    def open_(**overrides: str) -> Workspace:
        variables = {"SMTP__PORT": str(smtp_server.port), "DELIVERY__RENDER_PROCESSES": "0",
                     **overrides}  # fmt: skip
        settings = load_settings(
            project / "settings.toml",
            environ={**environ, **{f"MAILER_{k}": v for k, v in variables.items()}},
        )
        opened.append(Workspace(settings, clock))
        return opened[-1]

    yield open_
    for workspace in opened:
        workspace.close()
