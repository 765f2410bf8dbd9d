"""Fixtures for the delivery tests: a scripted SMTP server on a free loopback port, and a
self-signed certificate for its TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery.smtp_server import ScriptedSmtpServer, self_signed_certificate


@pytest.fixture
def smtp_server() -> Iterator[ScriptedSmtpServer]:
    """Plain SMTP, no AUTH; script its answers with `smtp_server.script(...)`."""
    with ScriptedSmtpServer() as server:
        yield server


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for localhost and 127.0.0.1; the certificate is its own CA."""
    return self_signed_certificate(tmp_path)
