"""A withdrawal is recorded once however many requests ask for it at the same moment: mailbox
providers repeat one-click POSTs, people double-click, and two tracking servers may share the
database. The requests go over real HTTP to two servers, each with its own connection pool."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack

import httpx
import pytest
from sqlalchemy import func, select

from mailer.store.tables import consent_entries, consent_evidence, suppressions
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]
REQUESTS = 12


@pytest.fixture
def two_servers(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> Iterator[tuple[Workspace, list[str], str]]:
    """Two tracking servers on the same database, as two `mailer serve` processes would be."""
    workspace, urls = sent
    other = Workspace(workspace.settings, workspace.clock)
    with ExitStack() as stack:
        bases = [stack.enter_context(serve(create_app(each))) for each in (workspace, other)]
        yield workspace, bases, urls["unsubscribe"]
    other.close()


def post_at_once(bases: list[str], url: str, data: dict[str, str]) -> list[int]:
    """POST `data` REQUESTS times, spread over the servers, every request released together."""
    start = threading.Barrier(REQUESTS)
    answers: list[int] = []

    def one(index: int) -> None:
        with httpx.Client(timeout=60) as client:
            start.wait()
            answers.append(client.post(at(bases[index % len(bases)], url), data=data).status_code)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def withdrawals(workspace: Workspace) -> list[str]:
    with workspace.engine.connect() as connection:
        return list(connection.scalars(
            select(consent_entries.c.purpose).where(consent_entries.c.action == "withdrawn")
            .order_by(consent_entries.c.id)
        ))  # fmt: skip


def test_concurrent_one_click_posts_append_one_withdrawal(
    two_servers: tuple[Workspace, list[str], str],
) -> None:
    workspace, bases, url = two_servers
    answers = post_at_once(bases, url, {"List-Unsubscribe": "One-Click"})
    assert answers == [200] * REQUESTS
    assert withdrawals(workspace) == ["newsletter"]


def test_concurrent_unsubscribe_from_everything_appends_one_entry_per_list(
    two_servers: tuple[Workspace, list[str], str],
) -> None:
    workspace, bases, url = two_servers
    answers = post_at_once(bases, url, {"action": "all"})
    assert answers == [200] * REQUESTS
    assert withdrawals(workspace) == ["newsletter", "*"]
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(suppressions)) == 1


def test_the_preference_page_leaves_a_list_once(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    preferences = urls["unsubscribe"].replace("/u/", "/p/")  # the footer's preferences link
    with serve(create_app(workspace)) as base:
        page = httpx.get(at(base, preferences))
        left = [httpx.post(at(base, preferences), data={"action": "leave:newsletter"})
                for _ in range(2)]  # fmt: skip
    assert page.status_code == 200 and "Your email preferences" in page.text
    assert f'action="{preferences.removeprefix("http://127.0.0.1:8025")}"' in page.text
    assert 'value="leave:newsletter"' in page.text and 'value="all"' in page.text
    assert [answer.status_code for answer in left] == [200, 200]
    assert "You are unsubscribed from Newsletter." in left[0].text
    assert 'value="join:newsletter"' in left[1].text  # shown as left, offered back
    assert withdrawals(workspace) == ["newsletter"]
    with workspace.engine.connect() as connection:
        [evidence] = connection.scalars(
            select(consent_evidence.c.data)
            .join(consent_entries, consent_entries.c.id == consent_evidence.c.entry_id)
            .where(consent_entries.c.action == "withdrawn")
        )
    assert json.loads(evidence)["via"] == "preferences"  # the page the change came through
