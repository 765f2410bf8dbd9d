"""Fixtures that start real things: a project folder with settings, a SQLite file or a fresh
PostgreSQL schema, a workspace over them, and a frozen clock."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer

# No per-example deadline: a loaded CI machine must not turn a slow example into a failure.
# Runs by hand explore new examples each time; CI (CI=true) replays the same ones, so that what
# decides whether a change lands is the change, not the draw (a failure found by hand becomes
# an @example).
hypothesis_settings.register_profile("mailer", deadline=None)
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "mailer")

POSTGRES_URL = os.environ.get("MAILER_TEST_DATABASE_URL")
SECRET = "test-secret-key-that-is-long-enough-0123456789"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

SETTINGS = """
database_url = "sqlite:///.mailer/mailer.db"
secret_key_file = ".mailer/secret.key"

[sender]
name = "Acme Coffee"
email = "news@acme.example"
postal_address = "Acme Coffee Ltd, 1 Roast Street, Bristol BS1 4DJ, UK"

[attributes]
orders = "integer"
signed_up_at = "date"

[lists.newsletter]
title = "Newsletter"
double_opt_in = true
forms = true

[lists.leads]
title = "Leads"
columns = { "Email Address" = "email", "Notes" = "-" }
tags = ["lead"]

[campaigns.welcome]
kind = "sequence"
list = "newsletter"
trigger = 'joins list "newsletter"'
enroll_existing = true

[[campaigns.welcome.steps]]
name = "hello"
template = "welcome/1"
subject = "Welcome, {{ contact.first_name }}"

[[campaigns.welcome.steps]]
name = "tips"
template = "welcome/2"
subject = "Brewing tips"
delay = "2 days"
variants.B.subject = "Psst, {{ contact.first_name | default('you') }}: better coffee"
"""


@pytest.fixture
def smtp_server() -> Iterator[ScriptedSmtpServer]:
    """A real SMTP server on a free loopback port (aiosmtpd) whose answers a test scripts
    per recipient: `smtp_server.script("ada@example.com", "451 4.3.0 Try again later")`."""
    with ScriptedSmtpServer() as server:
        yield server


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: settings.toml and templates/, as a marketer would have it."""
    root = tmp_path / "project"
    (root / "templates" / "welcome").mkdir(parents=True)
    (root / "settings.toml").write_text(textwrap.dedent(SETTINGS))
    footer = '<p>{{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    (root / "templates" / "welcome" / "1.html").write_text(
        "<p>Hello {{ contact.first_name }}</p>" + footer
    )
    (root / "templates" / "welcome" / "2.html").write_text("<p>Tips</p>" + footer)
    (root / "templates" / "confirm.html").write_text(  # the double opt-in confirmation email
        '<p>Please confirm {{ list.title }}: <a href="{{ confirm_url }}">yes</a></p>'
        "<p>{{ sender.postal_address }}</p>"
    )
    return root


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each engine: a SQLite file, or a fresh schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailer.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need MAILER_TEST_DATABASE_URL (set by .ci/run)")
    with fresh_schema() as url:
        yield url


@contextmanager
def fresh_schema() -> Iterator[str]:
    """The URL of a new, empty schema on the PostgreSQL test server, dropped afterwards."""
    assert POSTGRES_URL is not None
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def environ(database_url: str) -> dict[str, str]:
    return {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url}


@pytest.fixture
def workspace(project: Path, environ: dict[str, str], clock: FrozenClock) -> Iterator[Workspace]:
    settings = load_settings(project / "settings.toml", environ=environ)
    opened = Workspace(settings, clock)
    yield opened
    opened.close()


def write_csv(path: Path, text_: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(textwrap.dedent(text_).lstrip("\n").encode(encoding))
    return path
