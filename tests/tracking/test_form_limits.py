"""The form's limits hold across `mailer serve` instances (issue 16): two apps over one
database, real HTTP (uvicorn), real SMTP, on SQLite and PostgreSQL. The per-IP limit counts an
IPv6 client by its /64, and no number of other addresses resets it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, func, select
from starlette.types import ASGIApp

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.store.limits import SharedLimits, take
from mailer.store.tables import shared_limits
from mailer.tracking.app import create_app
from mailer.tracking.per_ip import PER_IP, bucket_of
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.tracking.test_forms import REPOSITORY, subscribe

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
Instance = tuple[Workspace, ASGIApp]


@pytest.fixture
def instances(project: Path, environ: dict[str, str], clock: FrozenClock,
              smtp_server: ScriptedSmtpServer) -> Iterator[list[Instance]]:  # fmt: skip
    """Two tracking endpoints as two `mailer serve` processes would be: each its own
    workspace and engine, over one database, on the same (frozen) clock."""
    for name in ("confirm.html", "confirm.txt"):
        shutil.copy(REPOSITORY / "templates" / name, project / "templates" / name)
    relay = {**environ, "MAILER_SMTP__PORT": str(smtp_server.port),
             "MAILER_LISTS__NEWSLETTER__FORMS": "true"}  # fmt: skip
    made = [Workspace(load_settings(project / "settings.toml", environ=relay), clock)
            for _ in range(2)]  # fmt: skip
    yield [(workspace, create_app(workspace)) for workspace in made]
    for workspace in made:
        workspace.close()


def post(base: str, client: str | None = None) -> int:
    """A form post with the box not ticked (a 400 that still counts), from `client` (as a
    proxy in front of `mailer serve` names it)."""
    headers = {"X-Forwarded-For": client} if client else {}
    form = {"email": "ada@example.com", "list": "newsletter", "consent_text_version": "1"}
    return httpx.post(f"{base}/subscribe", data=form, headers=headers).status_code


def test_the_per_ip_limit_holds_across_two_instances(instances: list[Instance],
                                                      serve: Serve) -> None:  # fmt: skip
    (_, first), (_, second) = instances
    with serve(first) as one, serve(second) as two:
        answers = [post(one), post(two), post(one), post(two), post(one)]
        assert answers == [400] * 5  # 5 a minute from one address, wherever they land
        assert post(one) == 429 and post(two) == 429


def test_an_ipv6_client_is_counted_by_its_64(instances: list[Instance], serve: Serve) -> None:
    (_, first), (_, second) = instances
    with serve(first) as one, serve(second) as two:
        assert [post(one, f"2001:db8:1:2::{n}") for n in range(1, 6)] == [400] * 5
        assert post(two, "2001:db8:1:2:ffff:ffff:ffff:fffe") == 429  # the same /64
        assert post(two, "::ffff:203.0.113.7") == 400  # an IPv4 client, its own budget
        assert post(one, "2001:db8:1:3::1") == 400  # the next /64
        assert [post(two, "203.0.113.8") for _ in range(6)] == [400] * 5 + [429]
        assert post(one, "203.0.113.9") == 400  # IPv4: by address


def test_many_other_addresses_do_not_reset_the_limit_of_the_first(
    instances: list[Instance], serve: Serve, clock: FrozenClock
) -> None:
    (workspace, first), (_, second) = instances
    with serve(first) as one, serve(second) as two:
        assert [post(one, "198.51.100.1") for _ in range(6)] == [400] * 5 + [429]
        buckets = SharedLimits(workspace.engine).engine  # on SQLite: the file beside it
        with buckets.begin() as connection:  # 10,000 strangers, one post each
            for n in range(10_000):
                ip = f"10.{n >> 8 & 255}.{n & 255}.{n >> 16 & 255}"
                take(connection, bucket_of(ip), PER_IP, 1, clock.now().timestamp())
        assert post(two, "198.51.100.1") == 429
        clock.advance(timedelta(seconds=60))  # every bucket full again: swept, not evicted
        assert post(one, "198.51.100.1") == 400 and post(two, "198.51.100.1") == 400
    with buckets.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(shared_limits)) == 1


def test_the_confirmation_email_goes_once_per_10_minutes_across_instances(
    instances: list[Instance], serve: Serve, clock: FrozenClock, smtp_server: ScriptedSmtpServer
) -> None:
    (_, first), (_, second) = instances
    with serve(first) as one:
        assert subscribe(one).status_code == 200
    with serve(second) as two:  # pending: the other instance remembers the email went
        assert subscribe(two).status_code == 200
    assert [item.recipient for item in smtp_server.received] == ["ada@example.com"]
    clock.advance(timedelta(minutes=10))
    with serve(second) as two:
        assert subscribe(two).status_code == 200
    assert [item.recipient for item in smtp_server.received] == ["ada@example.com"] * 2


def test_the_limit_check_is_one_statement_a_request(instances: list[Instance],
                                                     serve: Serve) -> None:  # fmt: skip
    (workspace, first), _ = instances
    statements: list[str] = []

    def seen(*args: object) -> None:
        statement = str(args[2]).lstrip().split(None, 1)[0].upper()
        if statement not in ("BEGIN", "COMMIT", "ROLLBACK"):
            statements.append(statement)

    buckets = SharedLimits(workspace.engine).engine
    event.listen(buckets, "before_cursor_execute", seen)
    try:
        with serve(first) as one:
            assert post(one) == 400  # the first also sweeps full buckets (once a minute)
            statements.clear()
            assert [post(one) for _ in range(3)] == [400] * 3  # a 400: no work queued
    finally:
        event.remove(buckets, "before_cursor_execute", seen)
    assert statements == ["INSERT"] * 3
