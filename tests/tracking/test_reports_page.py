"""/reports over real HTTP: never served without credentials in settings, basic auth with a
challenge, a per-IP limit on wrong credentials, the query as `mailer report` takes it, and the
same numbers as `mailer report --json`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from mailer.cli import cli
from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.errors import SettingsError
from mailer.store.tables import shared_limits
from mailer.tracking.app import create_app
from mailer.tracking.per_ip import bucket_of
from mailer.tracking.reports_page import FAILURE_WINDOW, FAILURES_ALLOWED, FailedLogins
from mailer.workspace import Workspace
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.reports.page_numbers import page_numbers, report_numbers
from tests.tracking.report_seed import PASSWORD, REPORTS, seeded_workspace

Serve = Callable[..., AbstractContextManager[str]]
RIGHT = ("marketer", PASSWORD)


def opened(project: Path, environ: dict[str, str], clock: FrozenClock,
           reports: str = REPORTS) -> Workspace:  # fmt: skip
    settings = project / "settings.toml"
    settings.write_text(settings.read_text() + reports)
    return Workspace(load_settings(settings, environ=environ), clock)


@pytest.fixture
def guarded(project: Path, environ: dict[str, str], clock: FrozenClock) -> Iterator[Workspace]:
    """An empty project with /reports on: `marketer` and PASSWORD from the environment."""
    workspace = opened(project, {**environ, "MAILER_REPORTS__PASSWORD": PASSWORD}, clock)
    yield workspace
    workspace.close()


def cli_json(project: Path, environ: dict[str, str], clock: FrozenClock, *args: str) -> Any:
    environment = {**environ, "MAILER_CONFIG": str(project / "settings.toml"),
                   "MAILER_NOW": clock.now().isoformat()}  # fmt: skip
    result = CliRunner().invoke(cli, ["report", "--json", *args], env=environment,
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("reports", ["", '\n[reports]\nusername = "marketer"\n'])
def test_without_a_username_and_a_password_in_settings_there_is_no_page(
    project: Path, environ: dict[str, str], clock: FrozenClock, serve: Serve, reports: str
) -> None:
    workspace = opened(project, environ, clock, reports)
    with serve(create_app(workspace)) as base:
        bare = httpx.get(f"{base}/reports")
        guessed = httpx.get(f"{base}/reports", auth=("marketer", ""))
    workspace.close()
    assert (bare.status_code, guessed.status_code) == (404, 404)
    assert "www-authenticate" not in bare.headers and "<html" not in bare.text


def test_the_page_asks_for_credentials_and_refuses_wrong_ones(
    guarded: Workspace, serve: Serve
) -> None:
    with serve(create_app(guarded)) as base:
        missing = httpx.get(f"{base}/reports")
        wrong = httpx.get(f"{base}/reports", auth=("marketer", PASSWORD + "x"))
        other_user = httpx.get(f"{base}/reports", auth=("admin", PASSWORD))
        bearer = httpx.get(f"{base}/reports", headers={"Authorization": f"Bearer {PASSWORD}"})
        right = httpx.get(f"{base}/reports", auth=RIGHT)
    for refused in (missing, wrong, other_user, bearer):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Basic realm="mailer reports"')
        assert refused.headers["cache-control"] == "no-store"
        assert "data-metric" not in refused.text
    assert right.status_code == 200
    assert right.headers["content-type"].startswith("text/html")
    assert right.headers["cache-control"] == "no-store"
    assert "script-src" not in right.headers["content-security-policy"]  # default-src 'none'
    assert 'data-campaign="welcome"' in right.text


def test_the_password_may_come_from_a_file(
    project: Path, environ: dict[str, str], clock: FrozenClock, serve: Serve
) -> None:
    (project / "reports.password").write_text(PASSWORD + "\n")
    workspace = opened(project, environ, clock,
                       REPORTS + 'password_file = "reports.password"\n')  # fmt: skip
    with serve(create_app(workspace)) as base:
        right = httpx.get(f"{base}/reports", auth=RIGHT)
        wrong = httpx.get(f"{base}/reports", auth=("marketer", "reports.password"))
        (project / "reports.password").unlink()
        unreadable = httpx.get(f"{base}/reports", auth=RIGHT)
    workspace.close()
    assert (right.status_code, wrong.status_code, unreadable.status_code) == (200, 401, 503)
    assert "reports.password (reports.password_file)" in unreadable.text
    assert "MAILER_REPORTS__PASSWORD" in unreadable.text


def test_a_password_written_in_settings_is_refused(project: Path, environ: dict[str, str]) -> None:
    settings = project / "settings.toml"
    settings.write_text(settings.read_text() + REPORTS + 'password = "hunter2hunter2"\n')
    with pytest.raises(SettingsError) as error:
        load_settings(settings, environ=environ)
    assert "reports.password: secrets may not be written in settings; use " \
           "MAILER_REPORTS__PASSWORD or reports.password_file" in str(error.value)  # fmt: skip


def test_too_many_wrong_credentials_from_one_address_are_answered_429_for_a_while(
    guarded: Workspace, serve: Serve, clock: FrozenClock
) -> None:
    with serve(create_app(guarded)) as base:
        wrong = [httpx.get(f"{base}/reports", auth=("marketer", f"guess{n}")).status_code
                 for n in range(FAILURES_ALLOWED)]  # fmt: skip
        blocked = httpx.get(f"{base}/reports", auth=RIGHT)
        clock.advance(timedelta(minutes=4))
        still = httpx.get(f"{base}/reports", auth=RIGHT)
        clock.advance(timedelta(minutes=1, seconds=1))
        again = httpx.get(f"{base}/reports", auth=RIGHT)
    assert wrong == [401] * FAILURES_ALLOWED
    assert (blocked.status_code, still.status_code, again.status_code) == (429, 429, 200)
    assert int(blocked.headers["retry-after"]) > 0


def test_the_wrong_password_limit_holds_across_instances_on_one_database(
    project: Path, environ: dict[str, str], clock: FrozenClock, serve: Serve
) -> None:
    first = opened(project, {**environ, "MAILER_REPORTS__PASSWORD": PASSWORD}, clock)
    second = Workspace(first.settings, clock)  # another `mailer serve`: its own engine
    try:
        with serve(create_app(first)) as one, serve(create_app(second)) as other:
            wrong = [httpx.get(f"{one}/reports", auth=("marketer", f"guess{n}")).status_code
                     for n in range(FAILURES_ALLOWED)]  # fmt: skip
            blocked = httpx.get(f"{other}/reports", auth=RIGHT)
            clock.advance(FAILURE_WINDOW + timedelta(seconds=1))
            again = httpx.get(f"{other}/reports", auth=RIGHT)
    finally:
        second.close()
        first.close()
    assert wrong == [401] * FAILURES_ALLOWED
    assert (blocked.status_code, again.status_code) == (429, 200)
    assert int(blocked.headers["retry-after"]) == FAILURE_WINDOW.total_seconds()


def test_many_other_failing_addresses_do_not_clear_a_block(
    guarded: Workspace, serve: Serve, clock: FrozenClock
) -> None:
    with serve(create_app(guarded)) as base:
        for n in range(FAILURES_ALLOWED):
            httpx.get(f"{base}/reports", auth=("marketer", f"guess{n}"))
        # More failing addresses than the old per-process memory held, as other instances
        # write them (one statement here, not 10,001 requests).
        now = clock.now().timestamp()
        failing = [{"bucket": bucket_of(f"198.18.{n // 256}.{n % 256}", "reports-ip"),
                    "tokens": FAILURES_ALLOWED - 1.0, "refilled_at": now, "granted": 1,
                    "full_at": now + 30} for n in range(10_001)]  # fmt: skip
        with FailedLogins(guarded.engine).limits.engine.begin() as connection:
            connection.execute(insert(shared_limits), failing)
        clock.advance(timedelta(minutes=4))
        still = httpx.get(f"{base}/reports", auth=RIGHT)
    assert still.status_code == 429 and int(still.headers["retry-after"]) == 60


def test_bad_query_parameters_are_named(guarded: Workspace, serve: Serve) -> None:
    with serve(create_app(guarded)) as base:
        answers = {query: httpx.get(f"{base}/reports?{query}", auth=RIGHT)
                   for query in ("campaign=welcom", "since=last+week", "until=2026-13-01",
                                 "include_machine=maybe")}  # fmt: skip
    assert {q: a.status_code for q, a in answers.items()} == {
        "campaign=welcom": 404, "since=last+week": 400, "until=2026-13-01": 400,
        "include_machine=maybe": 400}  # fmt: skip
    unknown = answers["campaign=welcom"].text
    assert "welcom: no such campaign in settings (known: welcome)" in unknown
    assert "since='last week' is not an ISO time" in answers["since=last+week"].text
    assert "include_machine='maybe': write 1 or 0" in answers["include_machine=maybe"].text


@pytest.fixture
def seeded(project: Path, environ: dict[str, str], clock: FrozenClock,
           smtp_server: ScriptedSmtpServer) -> Iterator[Workspace]:  # fmt: skip
    workspace = seeded_workspace(project, environ, clock, smtp_server)
    yield workspace
    workspace.close()


def test_the_page_shows_the_numbers_of_mailer_report_json(
    seeded: Workspace, serve: Serve, project: Path, environ: dict[str, str], clock: FrozenClock
) -> None:
    since = "2026-11-24T00:00:00+00:00"  # the second step's messages only
    with serve(create_app(seeded)) as base:
        everything = httpx.get(f"{base}/reports", auth=RIGHT)
        machines = httpx.get(f"{base}/reports?include_machine=1&campaign=welcome", auth=RIGHT)
        later = httpx.get(f"{base}/reports", params={"since": since}, auth=RIGHT)
    report = cli_json(project, environ, clock)
    totals = report["campaigns"][0]["totals"]
    assert (totals["sent"], totals["unique_opens"], totals["unique_clicks"]) == (38, 26, 16)
    assert report["campaigns"][0]["steps"][1]["ab"] is not None
    for answer, expected in (
        (everything, report),
        (machines, cli_json(project, environ, clock, "welcome", "--include-machine")),
        (later, cli_json(project, environ, clock, "--since", since)),
    ):
        assert answer.status_code == 200
        found = page_numbers(answer.text)
        assert {key: value for key, value, _ in found} == report_numbers(expected)
    shown = {key: text for key, _, text in page_numbers(later.text)}
    assert shown["welcome", "hello", "", "sent", ""] == "0"  # sent before `since`
    assert shown["welcome", "tips", "", "sent", ""] == "18"


def test_mailer_report_html_writes_the_page_of_the_same_numbers(
    seeded: Workspace, project: Path, environ: dict[str, str], clock: FrozenClock
) -> None:
    environment = {**environ, "MAILER_CONFIG": str(project / "settings.toml"),
                   "MAILER_NOW": clock.now().isoformat()}  # fmt: skip
    written = project / "report.html"
    result = CliRunner().invoke(cli, ["report", "--html", str(written)], env=environment,
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    found = page_numbers(written.read_text(encoding="utf-8"))
    assert {key: value for key, value, _ in found} == report_numbers(
        cli_json(project, environ, clock)
    )
