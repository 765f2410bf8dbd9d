from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from mailer.campaigns.segment_sql import SegmentCompiler, count_segment
from mailer.campaigns.segments import (
    Both,
    Compare,
    Either,
    Engagement,
    Event,
    Exists,
    Not,
    OneOf,
    Operator,
    RelativeTime,
    Segment,
    SegmentError,
    Sent,
    Tagged,
    parse_segment,
)
from mailer.store.tables import contacts, events, outbox
from mailer.workspace import Workspace
from tests.conftest import write_csv
from tests.helpers import run_import

EXAMPLES = {
    'not opened any within 90d': Not(Engagement("open", None, None, timedelta(days=90))),
    'attribute orders > 1': Compare("orders", ">", 1.0),
    'event "viewed_product" within 7d and not event "purchased" within 7d': Both((
        Event("viewed_product", within=timedelta(days=7)),
        Not(Event("purchased", within=timedelta(days=7))),
    )),
    'signed_up_at > now - 30d': Compare("signed_up_at", ">", RelativeTime(timedelta(days=-30))),
    'plan in ("gold", "silver") or tagged "vip"': Either((
        OneOf("plan", ("gold", "silver")), Tagged("vip"))),
    'clicked step "welcome.tips"': Engagement("click", "welcome", "tips", None),
    'event "purchased" count >= 2 within 365d': Event(
        "purchased", within=timedelta(days=365), count=(">=", 2)),
    'sent any count >= 3 within 90d': Sent(None, within=timedelta(days=90), count=(">=", 3)),
    'sent "welcome" before now - 90d': Sent("welcome", before=RelativeTime(timedelta(days=-90))),
    'not sent previous': Not(Sent("(previous step)", "(previous step)")),
}  # fmt: skip


@pytest.mark.parametrize(("source", "expected"), EXAMPLES.items())
def test_the_language_reads_what_marketers_write(source: str, expected: Segment) -> None:
    assert parse_segment(source) == expected


@pytest.mark.parametrize(("source", "message"), [
    ("not opened any within 90 days", "col 23: expected a duration (e.g. 30d, 12h, 2w)"),
    ("opened any including robots", "col 22: expected 'machines' (as in: opened any incl"),
    ("orders >", "col 9: expected a value"),
    ("orders > 1 and", "col 15: expected a condition"),
    ('tagged vip', "col 8: expected a quoted tag, found 'vip'"),
    ('(orders > 1', "col 12: expected ')'"),
    ('consent "newsletter" is maybe', "col 25: expected a consent status"),
    ("orders ~ 1", "col 8: unexpected '~'"),
    ('clicked step "welcome"', 'write the step as "campaign.step"'),
    ("sent any before 90d", "col 17: expected a moment (e.g. now - 90d), found '90d'"),
    ("sent any count >= 2.5", "col 19: a count is a whole number"),
    ("sent any including machines", "col 10: expected 'and', 'or' or the end"),
])  # fmt: skip
def test_errors_point_at_the_column(source: str, message: str) -> None:
    with pytest.raises(SegmentError) as caught:
        parse_segment(source)
    assert message in str(caught.value)


@pytest.fixture
def people(workspace: Workspace, tmp_path: Path) -> Workspace:
    run_import(workspace, write_csv(tmp_path / "n.csv", """
        email,orders,plan,signed_up_at,tags,consent_at,consent_confirmed_at
        ada@example.com,3,gold,2026-11-01,vip,2026-11-01,2026-11-01
        bob@example.com,1,silver,2025-01-01,,2026-11-01,
        cy@example.com,,,,vip,,
    """), "newsletter")  # fmt: skip
    now = workspace.clock.now()
    with workspace.engine.begin() as connection:
        rows = connection.execute(select(contacts.c.email, contacts.c.id))
        ids = {row.email: row.id for row in rows}
        connection.execute(
            insert(events),
            [
                {
                    "contact_id": ids["ada@example.com"],
                    "kind": "website",
                    "name": "viewed_product",
                    "step": None,
                    "properties": {"category": "espresso"},
                    "occurred_at": now - timedelta(days=2),
                },
                {
                    "contact_id": ids["bob@example.com"],
                    "kind": "website",
                    "name": "viewed_product",
                    "step": None,
                    "properties": {"category": "filter"},
                    "occurred_at": now - timedelta(days=2),
                },
                {
                    "contact_id": ids["bob@example.com"],
                    "kind": "website",
                    "name": "purchased",
                    "step": None,
                    "properties": {},
                    "occurred_at": now - timedelta(days=1),
                },
                {
                    "contact_id": ids["ada@example.com"],
                    "kind": "open",
                    "name": "welcome",
                    "step": "hello",
                    "properties": {},
                    "occurred_at": now - timedelta(days=100),
                },
                {
                    "contact_id": ids["bob@example.com"],
                    "kind": "click",
                    "name": "welcome",
                    "step": "tips",
                    "properties": {},
                    "occurred_at": now - timedelta(days=3),
                },
                {  # Apple's proxy fetched cy's pixel: not cy reading it
                    "contact_id": ids["cy@example.com"],
                    "kind": "machine_open",
                    "name": "welcome",
                    "step": "hello",
                    "properties": {"machine": "Apple Mail Privacy Protection"},
                    "occurred_at": now - timedelta(days=1),
                },
            ],
        )
    return workspace


def matching(workspace: Workspace, source: str) -> set[str]:
    compiler = SegmentCompiler(workspace.clock.now(), workspace.settings.attributes)
    condition = compiler.where(parse_segment(source))
    with workspace.engine.connect() as connection:
        found = {row.email for row in connection.execute(select(contacts.c.email).where(condition))}
        assert count_segment(connection, condition) == len(found)
    return {email.split("@")[0] for email in found}


@pytest.mark.parametrize(("source", "expected"), [
    ("orders > 1", {"ada"}),
    ("not orders > 1", {"bob", "cy"}),  # cy has no orders: the comparison is false
    ("plan exists", {"ada", "bob"}),
    ('plan != "gold"', {"bob"}),
    ('email contains "@example.com" and tagged "vip"', {"ada", "cy"}),
    ("signed_up_at > now - 30d", {"ada"}),
    ('in list "newsletter"', {"ada", "bob", "cy"}),
    ('consent "newsletter"', {"ada"}),  # bob is only pending (double opt-in)
    ('consent "newsletter" is pending', {"bob"}),
    ('consent "newsletter" is none', {"cy"}),
    ('event "viewed_product" within 7d and not event "purchased" within 7d', {"ada"}),
    ('event "viewed_product" where category = "espresso"', {"ada"}),
    ('event "viewed_product" count >= 1 and event "purchased" count = 1', {"bob"}),
    ("opened any within 90d", set()),
    ('opened "welcome"', {"ada"}),
    ('clicked step "welcome.tips"', {"bob"}),
    ("not opened any within 90d and not clicked any within 90d", {"ada", "cy"}),
    ("opened any within 90d including machines", {"cy"}),  # people's opens only by default
])  # fmt: skip
def test_segments_select_the_right_contacts(
    people: Workspace, source: str, expected: set[str]
) -> None:
    assert matching(people, source) == expected


# `sent`: messages the relay accepted (outbox rows with status sent), by their sent_at.
# ada was first mailed 100 days ago and three times since; bob once, 5 days ago (his second
# message is still queued); cy never.
MAILED = {
    "ada": [("welcome", "hello", 100, "sent"), ("welcome", "tips", 60, "sent"),
            ("spring", "launch", 45, "sent"), ("welcome", "offer", 20, "sent"),
            ("welcome", "extra", 10, "failed")],
    "bob": [("welcome", "hello", 5, "sent"), ("welcome", "tips", 0, "queued")],
}  # fmt: skip


@pytest.fixture
def mailed(people: Workspace) -> Workspace:
    now = people.clock.now()
    with people.engine.begin() as connection:
        ids = {row.email.split("@")[0]: row.id
               for row in connection.execute(select(contacts.c.email, contacts.c.id))}  # fmt: skip
        connection.execute(insert(outbox), [
            {"campaign": campaign, "step": step, "contact_id": ids[name], "cycle": 0,
             "status": status, "queued_at": now - timedelta(days=days),
             "sent_at": now - timedelta(days=days) if status == "sent" else None}
            for name, messages in MAILED.items() for campaign, step, days, status in messages
        ])  # fmt: skip
    return people


@pytest.mark.parametrize(("source", "expected"), [
    ("sent any", {"ada", "bob"}),
    ("not sent any", {"cy"}),
    ("sent any before now - 90d", {"ada"}),  # the first message is at least 90 days old
    ("sent any within 30d", {"ada", "bob"}),
    ("sent any within 30d before now - 10d", {"ada"}),  # bob's was 5 days ago
    ("sent any count >= 3 within 90d", {"ada"}),  # a failed message is not sent
    ("sent any count >= 4", {"ada"}),
    ("sent any count < 2", {"bob", "cy"}),  # never mailed: a count of zero
    ('sent "welcome" count = 1', {"bob"}),  # his queued one is not sent yet
    ('sent step "welcome.tips"', {"ada"}),
    ('sent "spring" within 30d', set()),
    ("sent any before now - 90d and sent any count >= 3 within 90d"
     " and not opened any within 90d and not clicked any within 90d", {"ada"}),
])  # fmt: skip
def test_sent_counts_the_messages_the_relay_accepted(
    mailed: Workspace, source: str, expected: set[str]
) -> None:
    assert matching(mailed, source) == expected


def test_sent_previous_means_the_step_before_in_this_run(mailed: Workspace) -> None:
    now = mailed.clock.now()
    compiler = SegmentCompiler(now, {}, previous=("welcome", "tips"),
                               entered=now - timedelta(days=70))  # fmt: skip
    with mailed.engine.connect() as connection:
        found = connection.scalars(
            select(contacts.c.email).where(compiler.where(parse_segment("sent previous")))
        )
        assert {email.split("@")[0] for email in found} == {"ada"}
    later = SegmentCompiler(now, {}, previous=("welcome", "tips"),
                            entered=now - timedelta(days=50))  # fmt: skip
    with mailed.engine.connect() as connection:  # ada's tips was sent before this run
        assert count_segment(connection, later.where(parse_segment("sent previous"))) == 0


def test_type_errors_say_what_to_declare(people: Workspace) -> None:
    with pytest.raises(SegmentError, match="declare it in \\[attributes\\]"):
        matching(people, "plan > 3")
    with pytest.raises(SegmentError, match="orders is a number"):
        matching(people, 'orders = "three"')


# Property: random expressions select exactly what a plain Python evaluation selects.

ORDERS = [3.0, 1.0, None, 0.0, 7.0, None]
PLANS = ["gold", None, "silver", "gold", None, "bronze"]
VIP = [True, False, True, False, False, True]

leaves = st.one_of(
    st.builds(Compare, st.just("orders"), st.sampled_from(["=", "!=", "<", ">", "<=", ">="]),
              st.sampled_from([0.0, 1.0, 3.0, 5.0])),
    st.builds(Compare, st.just("plan"), st.sampled_from(["=", "!="]),
              st.sampled_from(["gold", "silver", "tin"])),
    st.builds(Exists, st.sampled_from(["plan", "orders"])),
    st.builds(Tagged, st.just("vip")),
    st.builds(OneOf, st.just("plan"), st.lists(st.sampled_from(["gold", "bronze", "x"]),
                                               min_size=1, max_size=3).map(tuple)),
)  # fmt: skip
expressions = st.recursive(leaves, lambda inner: st.one_of(
    st.builds(Not, inner),
    st.lists(inner, min_size=2, max_size=3).map(lambda parts: Both(tuple(parts))),
    st.lists(inner, min_size=2, max_size=3).map(lambda parts: Either(tuple(parts))),
), max_leaves=8)  # fmt: skip


def reference(segment: Segment, person: dict[str, Any]) -> bool:
    if isinstance(segment, Not):
        return not reference(segment.inner, person)
    if isinstance(segment, Both):
        return all(reference(part, person) for part in segment.parts)
    if isinstance(segment, Either):
        return any(reference(part, person) for part in segment.parts)
    if isinstance(segment, Tagged):
        return bool(person["vip"])
    if isinstance(segment, Exists):
        return person[segment.field] is not None
    if isinstance(segment, OneOf):
        return person["plan"] is not None and person["plan"] in segment.values
    assert isinstance(segment, Compare)
    value = person[segment.field]
    if value is None:
        return False
    results = {"=": value == segment.value, "!=": value != segment.value,
               "<": value < segment.value, ">": value > segment.value,
               "<=": value <= segment.value, ">=": value >= segment.value}  # fmt: skip
    return bool(results[segment.op])


def written(segment: Segment) -> str:
    """The expression as a marketer would write it (round trip through the parser)."""
    if isinstance(segment, Not):
        return f"not ({written(segment.inner)})"
    if isinstance(segment, Both | Either):
        joiner = " and " if isinstance(segment, Both) else " or "
        return "(" + joiner.join(written(part) for part in segment.parts) + ")"
    if isinstance(segment, Tagged):
        return f'tagged "{segment.tag}"'
    if isinstance(segment, Exists):
        return f"{segment.field} exists"
    if isinstance(segment, OneOf):
        return f"{segment.field} in (" + ", ".join(f'"{v}"' for v in segment.values) + ")"
    assert isinstance(segment, Compare)
    value = f'"{segment.value}"' if isinstance(segment.value, str) else str(segment.value)
    return f"{segment.field} {segment.op} {value}"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(expression=expressions)
def test_random_segments_match_a_python_evaluation(
    workspace: Workspace, tmp_path: Path, expression: Segment
) -> None:
    people = [{"email": f"p{i}@example.com", "orders": o, "plan": p, "vip": v}
              for i, (o, p, v) in enumerate(zip(ORDERS, PLANS, VIP, strict=True))]  # fmt: skip
    with workspace.engine.connect() as connection:
        loaded = connection.scalar(select(contacts.c.id).limit(1)) is not None
    if not loaded:
        lines = ["email,orders,plan,tags"] + [
            f"{p['email']},{'' if p['orders'] is None else int(p['orders'])},"
            f"{p['plan'] or ''},{'vip' if p['vip'] else ''}" for p in people
        ]  # fmt: skip
        run_import(workspace, write_csv(tmp_path / "p.csv", "\n".join(lines) + "\n"), "leads")
    assert parse_segment(written(expression)) == expression
    expected = {p["email"].split("@")[0] for p in people if reference(expression, p)}
    assert matching(workspace, written(expression)) == expected


@pytest.mark.parametrize(("source", "expected"), [
    ('event "viewed_product" count < 1', {"cy"}),  # zero events passes: counted per contact
    ('event "viewed_product" count <= 1', {"ada", "bob", "cy"}),
    ('event "viewed_product" count != 0', {"ada", "bob"}),  # grouped: only those with events
    ('event "purchased" count = 0', {"ada", "cy"}),
    ('event "viewed_product" where category = "espresso" count >= 1', {"ada"}),  # grouped
    ('event "viewed_product" where category = "espresso" count < 1', {"bob", "cy"}),
])  # fmt: skip
def test_event_counts_include_or_exclude_contacts_without_events(
    people: Workspace, source: str, expected: set[str]
) -> None:
    assert matching(people, source) == expected


# A value of another type than the comparison's (the events API takes any JSON; an attribute
# declared a number may hold text): the comparison is false, on both databases, never an error.

ANSWERS = {"ada": "high", "bob": 5, "cy": 9}  # survey_answer's value, as the website sent it


@pytest.fixture
def answered(people: Workspace) -> Workspace:
    now = people.clock.now()
    with people.engine.begin() as connection:
        ids = {row.email.split("@")[0]: row.id
               for row in connection.execute(select(contacts.c.email, contacts.c.id))}  # fmt: skip
        connection.execute(insert(events), [
            {"contact_id": ids[name], "kind": "website", "name": "survey_answer", "step": None,
             "properties": {"question": "nps", "value": value}, "occurred_at": now}
            for name, value in ANSWERS.items()
        ])  # fmt: skip
        # An attribute declared "integer" ([attributes] orders) holding text.
        connection.execute(update(contacts).where(contacts.c.id == ids["cy"])
                           .values(attributes={"orders": "three", "plan": 7}))  # fmt: skip
    return people


@pytest.mark.parametrize(("source", "expected"), [
    ('event "survey_answer" where value <= 6', {"bob"}),
    ('event "survey_answer" where value > 6', {"cy"}),  # "high" is not above 6 either
    ('event "survey_answer" where value != 6', {"bob", "cy"}),  # nor other than 6
    ('not event "survey_answer" where value <= 6', {"ada", "cy"}),
    ('event "survey_answer" where value = "high"', {"ada"}),
    ('event "survey_answer" where value > "a"', {"ada"}),  # numbers are not text
    ('event "survey_answer" where value = true', set()),
    ("orders >= 0", {"ada", "bob"}),  # cy's "three" is no number
    ("not orders >= 0", {"cy"}),
    ("orders exists", {"ada", "bob", "cy"}),  # a value of any type exists
    ('plan = "7"', set()),  # cy's plan is the number 7, not the text "7"
    ('plan contains "7"', set()),
])  # fmt: skip
def test_a_comparison_with_a_value_of_another_type_is_false(
    answered: Workspace, source: str, expected: set[str]
) -> None:
    assert matching(answered, source) == expected


# Property: a comparison of any JSON value (text, number, true/false, null, nested) with a
# number, a text or true/false never raises and selects what a Python evaluation selects,
# where a value of another type than the compared one is false (as a missing one is).

json_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=6)  # a NUL is no text either database keeps  # fmt: skip
json_numbers = st.one_of(st.integers(-20, 20), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), json_numbers, json_text, st.sampled_from(["high", "5"])),
    lambda inner: st.one_of(st.lists(inner, max_size=2),
                            st.dictionaries(json_text, inner, max_size=2)),
    max_leaves=4,
)  # fmt: skip
literals = st.one_of(json_numbers.map(float), json_text, st.booleans())
OPERATORS = ["=", "!=", "<", ">", "<=", ">="]


def same_type(value: Any, literal: float | str | bool) -> bool:
    if isinstance(literal, bool) or isinstance(value, bool):
        return isinstance(literal, bool) and isinstance(value, bool)
    if isinstance(literal, float):
        return isinstance(value, int | float)
    return isinstance(value, str)


def python_compare(value: Any, op: str, literal: float | str | bool) -> bool:
    if not same_type(value, literal):
        return False
    results = {"=": value == literal, "!=": value != literal, "<": value < literal,
               ">": value > literal, "<=": value <= literal, ">=": value >= literal}  # fmt: skip
    return bool(results[op])


def selected(workspace: Workspace, segment: Segment) -> set[int]:
    condition = SegmentCompiler(workspace.clock.now(), workspace.settings.attributes).where(segment)
    with workspace.engine.connect() as connection:
        return {row.id for row in connection.execute(select(contacts.c.id).where(condition))}


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(values=st.lists(json_values, min_size=5, max_size=5), op=st.sampled_from(OPERATORS),
       literal=literals)  # fmt: skip
def test_comparing_any_json_value_never_raises_and_matches_python(
    workspace: Workspace, tmp_path: Path, values: list[Any], op: Operator,
    literal: float | str | bool,
) -> None:  # fmt: skip
    ids = holding(workspace, tmp_path, values)
    expected = {i for i, value in zip(ids, values, strict=True)
                if python_compare(value, op, literal)}  # fmt: skip
    event = Event("answer", where=(Compare("value", op, literal),))
    assert selected(workspace, event) == expected
    assert selected(workspace, Not(event)) == set(ids) - expected
    if isinstance(literal, float):  # orders is declared "integer": numbers only
        assert selected(workspace, Compare("orders", op, literal)) == expected
    elif isinstance(literal, str):  # plan is text
        assert selected(workspace, Compare("plan", op, literal)) == expected
        assert selected(workspace, Not(Compare("plan", op, literal))) == set(ids) - expected


def holding(workspace: Workspace, tmp_path: Path, values: list[Any]) -> list[int]:
    """One contact per value, holding it as attributes orders and plan and as the value of an
    "answer" event; the contacts' ids."""
    query = select(contacts.c.id).order_by(contacts.c.id)
    with workspace.engine.connect() as connection:
        ids = list(connection.scalars(query))
    if not ids:
        lines = ["email"] + [f"p{i}@example.com" for i in range(len(values))]
        run_import(workspace, write_csv(tmp_path / "p.csv", "\n".join(lines) + "\n"), "leads")
    with workspace.engine.begin() as connection:
        ids = list(connection.scalars(query))
        connection.execute(delete(events))
        connection.execute(insert(events), [
            {"contact_id": contact_id, "kind": "website", "name": "answer", "step": None,
             "properties": {"value": value}, "occurred_at": workspace.clock.now()}
            for contact_id, value in zip(ids, values, strict=True)
        ])  # fmt: skip
        for contact_id, value in zip(ids, values, strict=True):
            connection.execute(update(contacts).where(contacts.c.id == contact_id)
                               .values(attributes={"orders": value, "plan": value}))  # fmt: skip
    return ids
