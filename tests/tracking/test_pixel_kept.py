"""The pixel keeps what it worked out for a token and a user agent (tracking/recipient.py):
asked again, it gives the same answer it gave the first time, for each token and agent."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import httpx
from sqlalchemy import select

from mailer.store.tables import events
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.helpers import refetches
from tests.tracking.conftest import at

Serve = Callable[..., AbstractContextManager[str]]
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
          "Gecko) Chrome/126.0.0.0 Safari/537.36")  # fmt: skip
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"


def forged(url: str) -> str:
    """The pixel URL with the last character of its MAC changed."""
    token = url[: -len(".gif")]
    return f"{token[:-1]}{'A' if token[-1] != 'A' else 'B'}.gif"


def test_a_pixel_asked_again_is_recorded_again_and_a_forged_one_never(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]  # not instant
    agents = [CHROME, CHROME, THUNDERBIRD, CHROME]
    with serve(create_app(workspace)) as base:
        answers = []
        for n, agent in enumerate(agents):
            if n == 2:  # a reading two minutes later; the second fetch was the first again
                workspace.clock.advance(timedelta(minutes=2))  # type: ignore[attr-defined]
            answers.append(httpx.get(at(base, urls["open"]), headers={"User-Agent": agent}))
            answers.append(httpx.get(at(base, forged(urls["open"])), headers={"User-Agent": agent}))
    assert [answer.status_code for answer in answers] == [200] * 8
    assert {answer.content for answer in answers} == {answers[0].content}  # the GIF, forged too
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(events.c.kind, events.c.properties)
                                  .order_by(events.c.id)).all()  # fmt: skip
    assert [row.properties["user_agent"] for row in rows] == [CHROME, THUNDERBIRD]
    assert [row.kind for row in rows] == ["open", "open"]
    assert refetches(workspace) == 2  # the genuine four only: two fetched again


def test_what_the_pixel_keeps_is_bounded_by_genuine_tokens_and_short_agents(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    """Forged tokens and huge user agents are answered (and the agent recorded whole) but not
    kept: a flood of them cannot fill the serving process's memory."""
    workspace, urls = sent
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    app = create_app(workspace)
    huge = "Mozilla/5.0 " + "x" * 2_000
    with serve(app) as base:
        for n in range(20):
            bad = forged(urls["open"]).replace(".gif", f"{n}.gif")
            assert httpx.get(at(base, bad), headers={"User-Agent": CHROME}).status_code == 200
        answer = httpx.get(at(base, urls["open"]), headers={"User-Agent": huge})
        assert answer.status_code == 200
        workspace.clock.advance(timedelta(minutes=2))  # type: ignore[attr-defined]  # an open
        assert httpx.get(at(base, urls["open"]), headers={"User-Agent": CHROME}).status_code == 200
    recipient = app.recipient  # type: ignore[attr-defined]
    assert list(recipient.opened) == [urls["open"].rsplit("/", 1)[1][: -len(".gif")]]
    assert [len(agent) for agent in recipient.agents] == [len(CHROME)]  # not the huge one
    with workspace.engine.connect() as connection:
        agents = connection.scalars(select(events.c.properties).order_by(events.c.id)).all()
    assert [row["user_agent"] for row in agents] == [huge[:300], CHROME]
