"""One-click surveys: the template helper's links, and answering them over real HTTP (uvicorn on
a loopback port), down to the segment that finds the detractors."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jinja2 import Environment
from sqlalchemy import select, update
from starlette.applications import Starlette

from mailer.campaigns.segment_sql import SegmentCompiler, count_segment, sample_segment
from mailer.campaigns.segments import parse_segment
from mailer.clock import FrozenClock
from mailer.render.links import LinkTable
from mailer.render.surveys import SurveyError, survey_helper
from mailer.store.tables import contacts, events, outbox
from mailer.tokens import TokenKeys, sign, verify
from mailer.tracking.surveys import survey_routes
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET
from tests.delivery.helpers import queue_welcome

Serve = Callable[..., AbstractContextManager[str]]
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
          "Gecko) Chrome/126.0.0.0 Safari/537.36")  # fmt: skip
BROWSER = {"User-Agent": CHROME}
KEYS = TokenKeys(SECRET.encode())
BASE = "https://t.acme.example"
HREF = re.compile(r'href="([^"]+)"')


@pytest.fixture
def messages(workspace: Workspace, project: Path, clock: FrozenClock) -> dict[str, str]:
    """Ada and Bob were each sent the welcome message five minutes ago: message key by name."""
    queue_welcome(workspace, project, "ada@example.com,Ada", "bob@example.com,Bob")
    with workspace.engine.begin() as connection:
        connection.execute(update(outbox).values(status="sent", sent_at=NOW))
        found = connection.execute(select(contacts.c.first_name, outbox.c.id)
                                   .join(outbox, outbox.c.contact_id == contacts.c.id))  # fmt: skip
        keys = {name: f"m{message}" for name, message in found}
    clock.advance(timedelta(minutes=5))
    return keys


def links(workspace: Workspace, base: str, message_key: str, question: str = "nps",
          kind: str = "nps", options: list[str] | None = None) -> list[str]:  # fmt: skip
    helper = survey_helper(workspace.renderer.keys, base, message_key)
    return HREF.findall(str(helper(question, kind, options)))


def answers(workspace: Workspace, kind: str = "website") -> list[tuple[str, dict[str, Any]]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(contacts.c.first_name, events.c.properties)
            .join(contacts, contacts.c.id == events.c.contact_id)
            .where(events.c.kind == kind, events.c.name == "survey_answer").order_by(events.c.id)
        )  # fmt: skip
        return [(name, properties) for name, properties in rows]


def app(workspace: Workspace) -> Starlette:
    return Starlette(routes=survey_routes(workspace))


# -- the template helper ---------------------------------------------------------------------


def test_the_nps_helper_writes_eleven_labelled_links_whose_tokens_name_the_answer() -> None:
    html = str(survey_helper(KEYS, BASE, "m7")("nps", "nps"))
    urls = HREF.findall(html)
    assert len(urls) == 11 and all(url.startswith(f"{BASE}/s/") for url in urls)
    tokens = [url.rsplit("/", 1)[1] for url in urls]
    assert [verify(KEYS, "survey", token) for token in tokens] == [
        ["m7", "nps", str(n)] for n in range(11)
    ]
    assert 'aria-label="0 — not at all likely"' in html
    assert 'aria-label="5 out of 10"' in html and 'aria-label="10 — extremely likely"' in html
    assert html.startswith('<table role="presentation"') and "padding:12px" in html
    # Already links to the endpoint: click tracking leaves them alone.
    table = LinkTable(BASE, lambda index: f"{BASE}/c/{index}")
    assert table.rewrite_html(html) == html and table.targets == []


def test_the_scale_and_options_helpers_label_every_answer() -> None:
    survey = survey_helper(KEYS, BASE, "m7")
    scale = str(survey("delivery", "scale"))
    assert len(HREF.findall(scale)) == 5
    assert 'aria-label="1 — very dissatisfied"' in scale and "very satisfied</span>" in scale
    exit_survey = str(survey("why_leave", "options", ["Too many emails", "Not <relevant>"]))
    urls = HREF.findall(exit_survey)
    assert [verify(KEYS, "survey", url.rsplit("/", 1)[1])[2] for url in urls] == [
        "Too many emails", "Not <relevant>"]  # fmt: skip
    assert ">Not &lt;relevant&gt;</a>" in exit_survey
    plain = str(survey("nps", "nps", plain=True))
    assert plain.splitlines()[0].startswith(f"0 — not at all likely: {BASE}/s/")


def test_the_helper_renders_in_the_sandbox_and_refuses_bad_calls(workspace: Workspace) -> None:
    environment = workspace.renderer.environment
    survey = survey_helper(KEYS, BASE, "m7")
    template = environment.from_string('<p>How likely?</p>{{ survey("nps", "nps") }}')
    assert len(HREF.findall(template.render(survey=survey))) == 11
    for call in ['survey("NPS")', 'survey("nps", "stars")', 'survey("why", "options", ["a"])',
                 'survey("why", "options", ["a\x1fb", "c"])']:  # fmt: skip
        with pytest.raises(SurveyError, match=r"survey\(\)"):
            environment.from_string("{{ " + call + " }}").render(survey=survey)
    assert isinstance(environment, Environment)


# -- answering over HTTP ---------------------------------------------------------------------


def test_a_click_records_the_answer_and_shows_a_labelled_comment_box(
    workspace: Workspace, messages: dict[str, str], serve: Serve
) -> None:
    with serve(app(workspace)) as base:
        page = httpx.get(links(workspace, base, messages["Ada"])[3], headers=BROWSER)
    assert page.status_code == 200 and "Thank you" in page.text
    assert (
        '<label for="comment">' in page.text
        and '<textarea id="comment" name="comment"' in page.text
    )
    assert re.search(r'<form method="post" action="/s/[^"]+">', page.text)
    [(name, properties)] = answers(workspace)
    assert name == "Ada"
    assert properties == {"question": "nps", "value": 3, "campaign": "welcome", "step": "hello",
                          "message": messages["Ada"]}  # fmt: skip


def test_a_later_click_replaces_the_earlier_answer(
    workspace: Workspace, messages: dict[str, str], clock: FrozenClock, serve: Serve
) -> None:
    urls = links(workspace, "", messages["Ada"])
    with serve(app(workspace)) as base:
        assert httpx.get(base + urls[3], headers=BROWSER).status_code == 200
        clock.advance(timedelta(minutes=1))
        assert httpx.get(base + urls[9], headers=BROWSER).status_code == 200
        clock.advance(timedelta(minutes=1))
        assert httpx.get(base + urls[9], headers=BROWSER).status_code == 200  # the same again
    assert [(name, p["value"]) for name, p in answers(workspace)] == [("Ada", 9)]


def test_a_comment_is_saved_trimmed_into_the_answer(
    workspace: Workspace, messages: dict[str, str], serve: Serve
) -> None:
    url = links(workspace, "", messages["Ada"])[2]
    with serve(app(workspace)) as base:
        httpx.get(base + url, headers=BROWSER)
        page = httpx.post(base + url, data={"comment": "  Slow delivery <again>.\n "},
                          headers=BROWSER)  # fmt: skip
        long = httpx.post(base + url, data={"comment": "x" * 3000}, headers=BROWSER)
    assert page.status_code == 200 and "Your comment was saved." in page.text
    assert "Slow delivery &lt;again&gt;.</textarea>" in page.text
    assert long.status_code == 200
    [(_, properties)] = answers(workspace)
    assert properties["value"] == 2 and properties["comment"] == "x" * 2000


def test_the_form_records_the_answer_even_when_the_click_looked_like_a_scanner(
    workspace: Workspace, messages: dict[str, str], serve: Serve
) -> None:
    url = links(workspace, "", messages["Ada"])[8]
    with serve(app(workspace)) as base:
        httpx.get(base + url, headers={"User-Agent": "Mimecast URL checker"})
        assert answers(workspace) == []
        httpx.post(base + url, data={"comment": ""}, headers=BROWSER)
    assert [p["value"] for _, p in answers(workspace)] == [8]
    assert [p["machine"] for _, p in answers(workspace, "machine_survey")] == [
        "link scanner (Mimecast)"]  # fmt: skip


def test_scanner_fetches_change_no_answer(
    workspace: Workspace, messages: dict[str, str], clock: FrozenClock, serve: Serve
) -> None:
    urls = links(workspace, "", messages["Ada"])
    with serve(app(workspace)) as base:
        httpx.get(base + urls[9], headers=BROWSER)  # Ada's answer
        clock.advance(timedelta(hours=1))
        head = httpx.head(base + urls[0], headers=BROWSER)
        library = httpx.get(base + urls[0])  # python-httpx
        clock.advance(timedelta(minutes=1))
        # A scanner that copies a browser's user agent tries every link: a burst.
        tried = [httpx.get(base + url, headers=BROWSER).status_code for url in urls[:3]]
    assert head.status_code == 200 and library.status_code == 200 and tried == [200] * 3
    reasons = [p["machine"] for _, p in answers(workspace, "machine_survey")]
    assert reasons == ["HEAD request", "HTTP library (python-httpx)", "2 answers within 2 s",
                       "2 answers within 2 s", "3 answers within 2 s"]  # fmt: skip
    # The burst's first click had already replaced Ada's 9 (a documented loss): no answer left.
    assert answers(workspace) == []


def test_a_click_within_ten_seconds_of_delivery_is_not_an_answer(
    workspace: Workspace, project: Path, clock: FrozenClock, serve: Serve
) -> None:
    queue_welcome(workspace, project, "ada@example.com,Ada")
    with workspace.engine.begin() as connection:
        connection.execute(update(outbox).values(status="sent", sent_at=clock.now()))
        key = f"m{connection.scalar(select(outbox.c.id))}"
    clock.advance(timedelta(seconds=3))
    with serve(app(workspace)) as base:
        assert httpx.get(links(workspace, base, key)[0], headers=BROWSER).status_code == 200
    assert answers(workspace) == []
    assert answers(workspace, "machine_survey")[0][1]["machine"] == "clicked 3 s after delivery"


def test_forged_foreign_and_unknown_tokens_get_a_404_page(
    workspace: Workspace, messages: dict[str, str], serve: Serve
) -> None:
    keys = workspace.renderer.keys
    token = links(workspace, "", messages["Ada"])[5].rsplit("/", 1)[1]
    version, payload, _ = token.split(".")
    bad = [f"{version}.{payload}.{'A' * 22}",  # forged
           sign(keys, "click", messages["Ada"], "nps", "5"),  # another purpose
           sign(TokenKeys(b"another secret"), "survey", messages["Ada"], "nps", "5"),
           sign(keys, "survey", "m999999", "nps", "5"),  # no such message
           sign(keys, "survey", messages["Ada"], "nps"),  # too few fields
           "not-a-token"]  # fmt: skip
    with serve(app(workspace)) as base:
        for token in bad:
            got, posted = (httpx.get(f"{base}/s/{token}", headers=BROWSER),
                           httpx.post(f"{base}/s/{token}", data={"comment": "hi"}))  # fmt: skip
            assert (got.status_code, posted.status_code) == (404, 404), token
            assert "This link does not work" in got.text
    assert answers(workspace) == [] and answers(workspace, "machine_survey") == []


def test_a_segment_finds_the_detractor_and_not_the_promoter(
    workspace: Workspace, messages: dict[str, str], clock: FrozenClock, serve: Serve
) -> None:
    with serve(app(workspace)) as base:
        httpx.get(links(workspace, base, messages["Ada"])[6], headers=BROWSER)
        httpx.get(links(workspace, base, messages["Bob"])[9], headers=BROWSER)
        # An option's answer is text, kept as `choice`: `value <= 6` never meets it.
        httpx.get(links(workspace, base, messages["Bob"], "why_leave", "options",
                        ["Too many emails", "Not relevant"])[0], headers=BROWSER)  # fmt: skip
    compiler = SegmentCompiler.for_settings(workspace.settings, clock.now())

    def who(segment: str) -> list[str]:
        with workspace.engine.connect() as connection:
            condition = compiler.where(parse_segment(segment))
            count = count_segment(connection, condition)
            found = [row["email"] for row in sample_segment(connection, condition, 10)]
        assert count == len(found)
        return found

    nps = 'event "survey_answer" where question = "nps"'
    assert who(f"{nps} where value <= 6 within 30d") == ["ada@example.com"]
    assert who(f"{nps} where value >= 9") == ["bob@example.com"]
    assert who('event "survey_answer" where value <= 6') == ["ada@example.com"]  # any question
    assert who('event "survey_answer" where question = "why_leave" '
               'where choice = "Too many emails"') == ["bob@example.com"]  # fmt: skip
    clock.advance(timedelta(days=31))
    compiler = SegmentCompiler.for_settings(workspace.settings, clock.now())
    assert who(f"{nps} where value <= 6 within 30d") == []
