"""`opened "xmas" variant "B"`: engagement with one variant of a message, through
events.outbox_id (or, for hits recorded before migration 0019, the contact's message of that
campaign and step); `variant = "B"` alone is an error that says what to write."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import (
    Compare,
    Engagement,
    SegmentError,
    Sent,
    parse_segment,
)
from mailer.check import check_project
from mailer.config import load_settings
from mailer.store.tables import contacts, events, outbox
from mailer.workspace import Workspace
from tests.conftest import NOW, write_csv
from tests.helpers import run_import


@dataclass(frozen=True)
class Message:
    person: str
    campaign: str
    step: str
    variant: str | None  # None: the base, A (as the engine stores it)


@dataclass(frozen=True)
class Hit:
    person: str
    kind: str
    message: int | None  # index into MESSAGES; None: a website event
    linked: bool  # events.outbox_id set (False: recorded before migration 0019)
    days_ago: int


MESSAGES = [
    Message("ada", "xmas", "hello", None),
    Message("bob", "xmas", "hello", "B"),
    Message("cy", "xmas", "hello", "B"),
    Message("dee", "xmas", "hello", "C"),
    Message("bob", "xmas", "tips", "B"),
    Message("ada", "xmas", "tips", None),
    Message("ada", "spring", "launch", "B"),
    Message("eve", "spring", "launch", None),
]
HITS = [
    Hit("ada", "open", 0, True, 2),
    Hit("bob", "open", 1, True, 3),
    Hit("cy", "open", 2, False, 40),  # before 0019: matched through cy's xmas.hello message
    Hit("dee", "machine_open", 3, True, 1),  # a scanner fetched dee's pixel
    Hit("bob", "click", 4, True, 3),
    Hit("ada", "click", 5, False, 20),
    Hit("eve", "open", 7, True, 1),
]
PEOPLE = ["ada", "bob", "cy", "dee", "eve"]


@pytest.fixture
def tested(workspace: Workspace, tmp_path: Path) -> Workspace:
    lines = "email,variant\n" + "".join(f"{name}@example.com,\n" for name in PEOPLE)
    lines = lines.replace("eve@example.com,", "eve@example.com,B")  # an attribute, not a message
    run_import(workspace, write_csv(tmp_path / "p.csv", lines), "newsletter")
    now = workspace.clock.now()
    with workspace.engine.begin() as connection:
        ids = {row.email.split("@")[0]: row.id
               for row in connection.execute(select(contacts.c.email, contacts.c.id))}  # fmt: skip
        outbox_ids = [
            connection.execute(
                insert(outbox).values(
                    campaign=m.campaign, step=m.step, contact_id=ids[m.person], cycle=0,
                    variant=m.variant, status="sent", queued_at=now - timedelta(days=50),
                    sent_at=now - timedelta(days=50),
                ).returning(outbox.c.id)
            ).scalar_one()
            for m in MESSAGES
        ]  # fmt: skip
        connection.execute(insert(events), [
            {"contact_id": ids[hit.person], "kind": hit.kind,
             "name": MESSAGES[hit.message].campaign if hit.message is not None else "x",
             "step": MESSAGES[hit.message].step if hit.message is not None else None,
             "properties": {}, "occurred_at": now - timedelta(days=hit.days_ago),
             "outbox_id": outbox_ids[hit.message] if hit.linked and hit.message is not None
             else None}
            for hit in HITS
        ])  # fmt: skip
    return workspace


def matching(workspace: Workspace, source: str) -> set[str]:
    compiler = SegmentCompiler(workspace.clock.now(), workspace.settings.attributes)
    condition = compiler.where(parse_segment(source))
    with workspace.engine.connect() as connection:
        found = connection.scalars(select(contacts.c.email).where(condition))
        return {email.split("@")[0] for email in found}


def test_the_variant_is_read_after_the_messages() -> None:
    assert parse_segment('opened "xmas" variant "B"') == Engagement("open", "xmas", variant="B")
    assert parse_segment('clicked step "xmas.tips" variant "B" within 7d') == Engagement(
        "click", "xmas", "tips", timedelta(days=7), variant="B"
    )
    assert parse_segment('opened "xmas" within 7d variant "A" including machines') == Engagement(
        "open", "xmas", None, timedelta(days=7), machines=True, variant="A"
    )
    assert parse_segment('sent "xmas" variant "C" count >= 1') == Sent(
        "xmas", count=(">=", 1), variant="C"
    )
    assert parse_segment('attribute variant = "B"') == Compare("variant", "=", "B")


@pytest.mark.parametrize(("source", "message"), [
    ('opened "xmas" and variant = "B"',
     'col 19: variant is not an attribute; did you mean `opened "xmas" variant "B"`? '
     '(for a contact attribute named variant, write `attribute variant = "B"`)'),
    ('clicked step "xmas.tips" within 7d and not variant = "C"',
     'did you mean `clicked step "xmas.tips" within 7d variant "C"`?'),
    ('variant = "B"', 'col 1: variant is not an attribute; did you mean `opened "CAMPAIGN" '
                      'variant "B"`?'),
    ('variant in ("B", "C")', 'did you mean `opened "CAMPAIGN" variant "B"`?'),
    ('opened "xmas" variant B', "col 23: expected a quoted variant name (e.g. \"B\"), found 'B'"),
])  # fmt: skip
def test_variant_as_an_attribute_says_what_to_write(source: str, message: str) -> None:
    with pytest.raises(SegmentError) as caught:
        parse_segment(source)
    assert message in str(caught.value)


@pytest.mark.parametrize(("source", "expected"), [
    ('opened "xmas" variant "B"', {"bob", "cy"}),  # cy's open predates outbox_id
    ('opened "xmas" variant "A"', {"ada"}),  # the base is stored as no variant
    ('opened "xmas" variant "C"', set()),  # dee's was a machine's
    ('opened "xmas" variant "C" including machines', {"dee"}),
    ('opened "xmas" variant "B" within 14d', {"bob"}),
    ('not opened "xmas" variant "B"', {"ada", "dee", "eve"}),
    ('opened any variant "B"', {"bob", "cy"}),  # ada's spring message was B, unopened
    ('clicked step "xmas.tips" variant "B"', {"bob"}),
    ('clicked step "xmas.tips" variant "A"', {"ada"}),
    ('sent "xmas" variant "B"', {"bob", "cy"}),
    ('sent any variant "B" count >= 2', {"bob"}),
    ('sent step "spring.launch" variant "A"', {"eve"}),
    ('attribute variant = "B"', {"eve"}),
])  # fmt: skip
def test_variant_selects_engagement_with_that_variant(
    tested: Workspace, source: str, expected: set[str]
) -> None:
    assert matching(tested, source) == expected


def reference(kind: str, campaign: str | None, step: str | None, variant: str,
              machines: bool, within: int | None) -> set[str]:  # fmt: skip
    """The same question answered in Python over the fixture's lists."""
    kinds = {kind, f"machine_{kind}"} if machines else {kind}
    found = set()
    for hit in HITS:
        if hit.message is None or hit.kind not in kinds:
            continue
        message = MESSAGES[hit.message]  # linked or not, the contact got exactly this one
        if (
            (campaign is None or message.campaign == campaign)
            and (step is None or message.step == step)
            and (message.variant or "A") == variant
            and (within is None or hit.days_ago <= within)
        ):
            found.add(hit.person)
    return found


COMBINATIONS = list(itertools.product(
    ["open", "click"],
    [(None, None), ("xmas", None), ("xmas", "hello"), ("xmas", "tips"), ("spring", "launch")],
    ["A", "B", "C"], [False, True], [None, 14],
))  # fmt: skip


def test_sql_agrees_with_a_python_evaluation(tested: Workspace) -> None:
    for kind, (campaign, step), variant, machines, within in COMBINATIONS:
        verb = "opened" if kind == "open" else "clicked"
        messages = "any" if campaign is None else (
            f'step "{campaign}.{step}"' if step else f'"{campaign}"')  # fmt: skip
        source = f'{verb} {messages} variant "{variant}"'
        source += f" within {within}d" if within else ""
        source += " including machines" if machines else ""
        expected = reference(kind, campaign, step, variant, machines, within)
        assert matching(tested, source) == expected, source


def test_mailer_check_names_the_segment_and_what_to_write(project: Path) -> None:
    path = project / "settings.toml"
    path.write_text(path.read_text() + "\n[segments]\n"
                    "xmas_b = 'opened \"xmas\" and variant = \"B\"'\n"
                    "xmas_b_fixed = 'opened \"xmas\" variant \"B\"'\n")  # fmt: skip
    settings = load_settings(path, environ={})
    report = check_project(settings, NOW)
    assert [problem.message for problem in report.errors] == [
        f"{settings.source}: segments.xmas_b: col 19: variant is not an attribute; did you mean "
        '`opened "xmas" variant "B"`? (for a contact attribute named variant, write '
        '`attribute variant = "B"`)'
    ]
