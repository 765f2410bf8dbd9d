"""One-click survey answers (`/s/TOKEN`, links written by render/surveys.py).

`GET /s/TOKEN` records the answer the token names, committed before the page is sent, as a
website event `survey_answer` with properties `question`, `value` (NPS and scale answers:
a number) or `choice` (an option's text), `campaign`, `step` and `message`; then a thank-you
page with an optional comment box. `POST /s/TOKEN` (that form) saves `comment`.

One answer per contact and question: a later answer deletes the earlier one, whichever
message it came from (name a question `nps_2027` to keep last year's). Segments and step
conditions read it like any website event (each `where` filters the same event):

    event "survey_answer" where question = "nps" where value <= 6 within 30d
    event "survey_answer" where question = "why_leave" where choice = "Too many emails"

(`... where question = "nps" and value <= 6` would compare a contact attribute `value`.)

Mail scanners fetch links too, so a GET is judged as a click is (tracking/bots.py): a scanner
or library user agent, a HEAD request, or a fetch within 10 s of delivery is kept as a
`machine_survey` event (for the record, never in segments) and replaces nothing. So is every
answer of a burst: a second, different answer to the same question of the same message within
`BURST` means something tried each link, and the burst's earlier answers become machine ones
too. The page looks the same either way; sending the form (a person, not a scanner) records
the answer whatever the GET was judged. A browser-like scanner's burst more than 10 s after
delivery has, by its first click, already replaced the contact's earlier answer to the
question: that answer is lost (none is left, rather than a wrong one). Only the first answer
to a question scores (`[scoring] points.survey_answer`): changing one's mind earns nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailer.campaigns.activity import update_stage
from mailer.config import Settings
from mailer.contacts.scoring import add_points
from mailer.delivery.claims import outbox_id
from mailer.store.tables import contacts, events, outbox
from mailer.tokens import TokenError, TokenKeys, verify
from mailer.tracking.bots import classify
from mailer.tracking.hits import Hit
from mailer.tracking.pages import not_found_page, page
from mailer.webhooks_out import WebhookEvent, enqueue
from mailer.workspace import Workspace

EVENT = "survey_answer"
MACHINE = "machine_survey"  # events.kind of an answer taken for a machine's
BURST = timedelta(seconds=2)  # different answers of one message this close: a link scanner
MAX_COMMENT = 2000
ANSWERED = ("question", "value", "choice", "comment")  # what a survey_answered webhook says
_NUMBER = re.compile(r"0|[1-9][0-9]{0,5}")  # NPS and scale answers are stored as numbers


@dataclass(frozen=True)
class SurveyAnswer:
    message_key: str
    question: str
    value: str  # as the token carries it

    @property
    def stored(self) -> dict[str, int | str]:
        """`value` is only ever a number, so `where value <= 6` never meets text (which
        PostgreSQL refuses to cast); an option's text is the `choice`."""
        if _NUMBER.fullmatch(self.value):
            return {"value": int(self.value)}
        return {"choice": self.value}


@dataclass(frozen=True)
class Outcome:
    recorded: bool  # a person's answer, now the contact's answer to the question
    machine: str | None = None  # why it was taken for a machine's


def read_token(keys: TokenKeys, token: str) -> SurveyAnswer | None:
    """The answer a genuine survey token names; None for any other token."""
    try:
        key, question, value = verify(keys, "survey", token)
    except (TokenError, ValueError):
        return None
    return SurveyAnswer(key, question, value)


def _property(name: str) -> Any:
    return events.c.properties[name].as_string()  # as segment_sql.py reads properties


def _answers(connection: Connection, contact_id: int, question: str, *kinds: str) -> list[Row[Any]]:
    return list(connection.execute(
        select(events.c.id, events.c.kind, events.c.properties, events.c.occurred_at)
        .where(events.c.contact_id == contact_id, events.c.kind.in_(kinds),
               events.c.name == EVENT, _property("question") == question)
        .order_by(events.c.id)
    ))  # fmt: skip


def record_answer(connection: Connection, settings: Settings, answer: SurveyAnswer,
                  at: datetime, user_agent: str, method: str = "GET",
                  comment: str | None = None) -> Outcome | None:  # fmt: skip
    """Record a click on an answer link (`comment` None) or the thank-you form (a person,
    `comment` "" when left empty); None when the token's message does not exist."""
    message = connection.execute(
        select(outbox.c.contact_id, outbox.c.campaign, outbox.c.step, outbox.c.sent_at)
        .where(outbox.c.id == (outbox_id(answer.message_key) or -1))
    ).first()  # fmt: skip
    if message is None or message.contact_id is None:  # None: the person was erased
        return None
    contact_id = message.contact_id
    # One answer at a time per contact (SQLite's writes are serialised already).
    connection.execute(select(contacts.c.id).where(contacts.c.id == contact_id).with_for_update())
    properties: dict[str, Any] = {"question": answer.question, **answer.stored,
                                  "campaign": message.campaign, "step": message.step,
                                  "message": answer.message_key}  # fmt: skip
    if comment is None:
        reason = _machine(connection, answer, contact_id, message.sent_at, at, user_agent,
                          method)  # fmt: skip
        if reason is not None:
            _insert(connection, contact_id, MACHINE, properties | {"machine": reason}, at)
            return Outcome(False, reason)
    earlier = _answers(connection, contact_id, answer.question, "website")
    if comment is not None and earlier and _same(earlier[-1].properties, properties):
        if comment:
            connection.execute(update(events).where(events.c.id == earlier[-1].id)
                               .values(properties=earlier[-1].properties
                                       | {"comment": comment}))  # fmt: skip
        return Outcome(True)
    if earlier:
        connection.execute(delete(events).where(events.c.id.in_([row.id for row in earlier])))
    if comment:
        properties["comment"] = comment
    _insert(connection, contact_id, "website", properties, at)
    if not earlier or not _same(earlier[-1].properties, properties):  # a double click: once
        said: dict[str, Any] = {key: properties[key] for key in ANSWERED if key in properties}
        sent = outbox_id(answer.message_key)
        answered = WebhookEvent(at, contact_id=contact_id, outbox_id=sent, data=said)
        enqueue(connection, settings, "survey_answered", [answered])
    if not earlier:
        scoring = settings.scoring
        add_points(connection, contact_id, scoring.points.get(EVENT, 0.0), at,
                   scoring.half_life)  # fmt: skip
    update_stage(connection, settings, contact_id, at)
    return Outcome(True)


def _same(stored: dict[str, Any], properties: dict[str, Any]) -> bool:
    return all(stored.get(name) == properties.get(name) for name in ("value", "choice", "message"))


def _insert(connection: Connection, contact_id: int, kind: str, properties: dict[str, Any],
            at: datetime) -> None:  # fmt: skip
    connection.execute(insert(events).values(contact_id=contact_id, kind=kind, name=EVENT,
                                             step=None, properties=properties,
                                             occurred_at=at))  # fmt: skip


def _machine(connection: Connection, answer: SurveyAnswer, contact_id: int,
             sent_at: datetime | None, at: datetime, user_agent: str,
             method: str) -> str | None:  # fmt: skip
    """Why this click is a machine's, or None: the click rules of bots.py (user agent, HEAD,
    too soon after delivery), then the burst rule, which also turns the burst's earlier
    answers into machine ones."""
    hit = Hit("click", answer.message_key, None, at, user_agent, "", method)
    [verdict] = classify([hit], {answer.message_key: sent_at} if sent_at else {}, {})
    if verdict.machine:
        return verdict.reason
    burst = [row for row in _answers(connection, contact_id, answer.question, "website", MACHINE)
             if row.properties.get("message") == answer.message_key
             and abs(at - row.occurred_at) < BURST]  # fmt: skip
    if all(_same(row.properties, answer.stored | {"message": answer.message_key}) for row in burst):
        return None  # a double click is one answer
    reason = f"{len(burst) + 1} answers within {BURST.seconds} s"
    for row in burst:
        if row.kind != MACHINE:
            connection.execute(update(events).where(events.c.id == row.id).values(
                kind=MACHINE, properties=row.properties | {"machine": reason}))  # fmt: skip
    return reason


def clean_comment(text: str) -> str:
    """What is kept of a comment: trimmed, at most MAX_COMMENT characters, storable text."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text.strip()[:MAX_COMMENT].strip()


def thanks_page(action: str, answer: SurveyAnswer, comment: str | None = None) -> Response:
    """Thanks, and a box for a comment: a plain form, labelled, that works without scripts."""
    said = "Your comment was saved." if comment else "Your answer was saved."
    return page(
        "Thank you",
        f"""<h1>Thank you</h1>
<p role="status">{said} You answered <strong>{escape(answer.value)}</strong>.</p>
<form method="post" action="{escape(action)}">
<p><label for="comment">Anything you would like to add? (optional)</label></p>
<textarea id="comment" name="comment" rows="5" maxlength="{MAX_COMMENT}"
 style="width:100%;box-sizing:border-box;font:inherit;padding:.5rem;border:2px solid #1a1a1a;
 border-radius:6px">{escape(comment or "")}</textarea>
<p><button class="main" type="submit">Send comment</button></p>
</form>""",
    )


def survey_routes(workspace: Workspace) -> list[BaseRoute]:
    keys = workspace.renderer.keys

    def write(answer: SurveyAnswer, user_agent: str, method: str,
              comment: str | None) -> Outcome | None:  # fmt: skip
        with workspace.engine.begin() as connection:
            return record_answer(connection, workspace.settings, answer, workspace.clock.now(),
                                 user_agent, method, comment)  # fmt: skip

    async def answer_link(request: Request) -> Response:
        answer = read_token(keys, request.path_params["token"])
        if answer is None:
            return not_found_page()
        user_agent = request.headers.get("user-agent", "")
        if await run_in_threadpool(write, answer, user_agent, request.method, None) is None:
            return not_found_page()
        return thanks_page(request.url.path, answer)

    async def comment_form(request: Request) -> Response:
        answer = read_token(keys, request.path_params["token"])
        if answer is None:
            return not_found_page()
        form = await request.form()
        given = form.get("comment", "")
        comment = clean_comment(given if isinstance(given, str) else "")
        user_agent = request.headers.get("user-agent", "")
        if await run_in_threadpool(write, answer, user_agent, "POST", comment) is None:
            return not_found_page()
        return thanks_page(request.url.path, answer, comment)

    return [Route("/s/{token}", answer_link, methods=["GET"]),
            Route("/s/{token}", comment_form, methods=["POST"])]  # fmt: skip
