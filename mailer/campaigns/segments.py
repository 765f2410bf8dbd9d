"""The segment language: a small filter over contacts, parsed here into plain data and compiled
to SQL in segment_sql.py (never evaluated row by row in Python).

    orders > 1 and not tagged "wholesale"
    signed_up_at > now - 30d
    favourite_roast in ("espresso", "dark")        email contains "@example.org"
    plan exists                                   in list "newsletter"
    consent "newsletter" is confirmed             consent "newsletter"   (granted or confirmed)
    event "viewed_product" within 7d and not event "purchased" within 7d
    event "viewed_product" where category = "espresso" count >= 2 within 30d
    opened "welcome" within 14d    clicked step "welcome.tips"    not opened any within 90d
    not opened previous            (in a step's condition: the step before it)
    opened any within 7d including machines    (people's opens only, unless so)
    sent any count >= 3 within 90d    sent "welcome"    sent step "welcome.tips"
    sent any before now - 90d      (the first message is at least 90 days old)
    event "purchased" ever         (in a goal: before this run of the sequence too)
    opened "xmas" variant "B"      clicked step "xmas.tips" variant "A"    sent "xmas" variant "C"

`sent` counts the messages the relay accepted (outbox rows with status sent) by when they
were sent; queued, failed and skipped ones are not sent. `within 90d` and `before now - 90d`
bound when, `count` how many (a contact never mailed has a count of zero).

`variant "B"` narrows opened, clicked and sent to the messages of that variant ("A" is the
base); a bare `variant = "B"` would compare a contact attribute nobody has, so it is refused
with what to write instead (`attribute variant = "B"` still means an attribute).

A comparison with a value the contact does not have is false (and `not` of it true).
Errors name the column: `segments.silent: col 14: expected a duration`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from mailer.durations import parse_duration

Operator = Literal["=", "!=", "<", ">", "<=", ">="]
STATUSES = ("none", "pending", "granted", "confirmed", "withdrawn")
PREVIOUS = "(previous step)"


class SegmentError(ValueError):
    """The expression cannot be read; the message starts with the column."""


@dataclass(frozen=True)
class RelativeTime:
    """`now - 30d` (sign -1) or `now + 1d`."""

    offset: timedelta


Value = str | float | bool | RelativeTime


@dataclass(frozen=True)
class Compare:
    field: str
    op: Operator
    value: Value


@dataclass(frozen=True)
class OneOf:
    field: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Contains:
    field: str
    text: str


@dataclass(frozen=True)
class Exists:
    field: str


@dataclass(frozen=True)
class Tagged:
    tag: str


@dataclass(frozen=True)
class InList:
    name: str


@dataclass(frozen=True)
class Consent:
    list_name: str
    status: str | None  # None: granted or confirmed (may be sent to)


@dataclass(frozen=True)
class Event:
    name: str
    where: tuple[Compare, ...] = ()
    within: timedelta | None = None
    count: tuple[Operator, int] | None = None  # None: at least one
    ever: bool = False  # in a goal: events before the contact entered this run count too


@dataclass(frozen=True)
class Engagement:
    kind: Literal["open", "click"]
    campaign: str | None  # None: any
    step: str | None = None
    within: timedelta | None = None
    machines: bool = False  # count a machine's opens and clicks too (people's only by default)
    ever: bool = False  # in a goal or with `previous`: before this run of the sequence too
    variant: str | None = None  # of this variant of the message only ("A": the base)


@dataclass(frozen=True)
class Sent:
    campaign: str | None  # None: any
    step: str | None = None
    within: timedelta | None = None
    before: RelativeTime | None = None  # sent before this moment (`before now - 90d`)
    count: tuple[Operator, int] | None = None  # None: at least one
    ever: bool = False  # in a goal or with `previous`: before this run of the sequence too
    variant: str | None = None  # of this variant of the message only ("A": the base)


@dataclass(frozen=True)
class Not:
    inner: Segment


@dataclass(frozen=True)
class Both:
    parts: tuple[Segment, ...]


@dataclass(frozen=True)
class Either:
    parts: tuple[Segment, ...]


Segment = (
    Compare
    | OneOf
    | Contains
    | Exists
    | Tagged
    | InList
    | Consent
    | Event
    | Engagement
    | Sent
    | Not
    | Both
    | Either
)

_TOKEN = re.compile(
    r"""\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<duration>\d+[smhdw]\b)"""
    r"""|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|=|<|>|\(|\)|,|-|\+)"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"""
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int  # 1-based, for error messages

    @property
    def value(self) -> str:
        if self.kind == "string":
            return re.sub(r"\\(.)", r"\1", self.text[1:-1])
        return self.text


def tokens(source: str) -> list[Token]:
    found, position = [], 0
    while position < len(source):
        if source[position:].strip() == "":
            break
        match = _TOKEN.match(source, position)
        if match is None or match.lastgroup is None:
            column = position + len(source[position:]) - len(source[position:].lstrip()) + 1
            raise SegmentError(f"col {column}: unexpected {source[column - 1]!r}")
        start = match.start(match.lastgroup)
        found.append(Token(match.lastgroup, match.group(match.lastgroup), start + 1))
        position = match.end()
    found.append(Token("end", "", len(source) + 1))
    return found


def parse_segment(source: str) -> Segment:
    """The expression as plain data, or SegmentError naming the column."""
    parser = _Parser(tokens(source))
    segment = parser.either()
    parser.expect_end()
    return segment


class _Parser:
    def __init__(self, items: list[Token]) -> None:
        self.items, self.at = items, 0
        self.messages_read: str | None = None  # the last `opened "xmas" ...` as written

    @property
    def token(self) -> Token:
        return self.items[self.at]

    def take(self) -> Token:
        token = self.items[self.at]
        self.at += 1
        return token

    def is_word(self, *words: str) -> bool:
        return self.token.kind == "word" and self.token.text.lower() in words

    def fail(self, expected: str) -> SegmentError:
        found = "the end" if self.token.kind == "end" else repr(self.token.text)
        return SegmentError(f"col {self.token.column}: expected {expected}, found {found}")

    def word(self, *words: str) -> None:
        if not self.is_word(*words):
            raise self.fail(" or ".join(repr(word) for word in words))
        self.take()

    def string(self, what: str = "a quoted name") -> str:
        if self.token.kind != "string":
            raise self.fail(what)
        return self.take().value

    def expect_end(self) -> None:
        if self.token.kind != "end":
            raise self.fail("'and', 'or' or the end")

    def either(self) -> Segment:
        parts = [self.both()]
        while self.is_word("or"):
            self.take()
            parts.append(self.both())
        return parts[0] if len(parts) == 1 else Either(tuple(parts))

    def both(self) -> Segment:
        parts = [self.negation()]
        while self.is_word("and"):
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else Both(tuple(parts))

    def negation(self) -> Segment:
        if self.is_word("not"):
            self.take()
            return Not(self.negation())
        if self.token.text == "(":
            self.take()
            inner = self.either()
            if self.token.text != ")":
                raise self.fail("')'")
            self.take()
            return inner
        return self.predicate()

    def predicate(self) -> Segment:
        if self.is_word("tagged"):
            self.take()
            return Tagged(self.string("a quoted tag"))
        if self.is_word("in", "joins"):  # `joins list` reads better in goals
            self.take()
            self.word("list")
            return InList(self.string("a quoted list name"))
        if self.is_word("consent"):
            return self.consent()
        if self.is_word("event"):
            return self.event()
        if self.is_word("opened", "clicked"):
            return self.engagement()
        if self.is_word("sent"):
            return self.sent()
        if self.is_word("attribute"):
            self.take()
        elif self.is_word("variant"):
            raise self.variant_is_not_an_attribute()
        if self.token.kind != "word":
            raise self.fail("a condition (a field, tagged, in list, consent, event, opened, "
                            "clicked, sent)")  # fmt: skip
        return self.field_condition(self.take().text)

    def variant_is_not_an_attribute(self) -> SegmentError:
        """`opened "xmas" and variant = "B"` would compare an attribute no contact has."""
        column = self.token.column
        label = next((t.value for t in self.items[self.at : self.at + 4] if t.kind == "string"),
                     "B")  # fmt: skip
        messages = self.messages_read or 'opened "CAMPAIGN"'
        return SegmentError(
            f"col {column}: variant is not an attribute; did you mean "
            f'`{messages} variant "{label}"`? (for a contact attribute named variant, '
            f'write `attribute variant = "{label}"`)'
        )

    def variant(self) -> str:
        """After `variant`: the quoted label."""
        self.take()
        return self.string('a quoted variant name (e.g. "B")')

    def remember_messages(self, start: int) -> None:
        """Keep `opened "xmas" within 7d` as written, for the hint above."""
        self.messages_read = " ".join(token.text for token in self.items[start : self.at])

    def field_condition(self, field: str) -> Segment:
        if self.is_word("exists"):
            self.take()
            return Exists(field)
        if self.is_word("contains"):
            self.take()
            return Contains(field, self.string("a quoted text"))
        if self.is_word("in"):
            self.take()
            return OneOf(field, self.value_list())
        return self.comparison(field)

    def comparison(self, field: str) -> Compare:
        if self.token.kind != "op" or self.token.text not in ("=", "!=", "<", ">", "<=", ">="):
            raise self.fail("a comparison (=, !=, <, >, <=, >=), 'in', 'contains' or 'exists'")
        op: Operator = self.take().text  # type: ignore[assignment]
        return Compare(field, op, self.value())

    def value_list(self) -> tuple[Value, ...]:
        if self.token.text != "(":
            raise self.fail("'('")
        self.take()
        values = [self.value()]
        while self.token.text == ",":
            self.take()
            values.append(self.value())
        if self.token.text != ")":
            raise self.fail("',' or ')'")
        self.take()
        return tuple(values)

    def value(self) -> Value:
        token = self.token
        if token.kind == "string":
            return self.take().value
        if token.kind == "number":
            return float(self.take().text)
        if self.is_word("true", "false"):
            return self.take().text.lower() == "true"
        if self.is_word("now"):
            return self.moment()
        raise self.fail("a value (a quoted text, a number, true, false or now - 30d)")

    def moment(self) -> RelativeTime:
        """`now`, `now - 90d`, `now + 1d`."""
        self.word("now")
        if self.token.text not in ("-", "+"):
            return RelativeTime(timedelta(0))
        sign = -1 if self.take().text == "-" else 1
        return RelativeTime(sign * self.duration())

    def duration(self) -> timedelta:
        if self.token.kind != "duration":
            raise self.fail("a duration (e.g. 30d, 12h, 2w)")
        return parse_duration(self.take().text)

    def consent(self) -> Consent:
        self.take()
        list_name = self.string("a quoted list name")
        if not self.is_word("is"):
            return Consent(list_name, None)
        self.take()
        if not self.is_word(*STATUSES):
            raise self.fail(f"a consent status ({', '.join(STATUSES)})")
        return Consent(list_name, self.take().text.lower())

    def event(self) -> Event:
        self.take()
        name = self.string("a quoted event name")
        where: list[Compare] = []
        within, count, ever = None, None, False
        while self.is_word("where", "within", "count", "ever"):
            keyword = self.take().text.lower()
            if keyword == "ever":
                ever = True
            elif keyword == "where":
                if self.token.kind != "word":
                    raise self.fail("a property name")
                where.append(self.comparison(self.take().text))
            elif keyword == "within":
                within = self.duration()
            else:
                count = self.count()
        return Event(name, tuple(where), within, count, ever)

    def count(self) -> tuple[Operator, int]:
        """After `count`: `>= 3`."""
        comparison = self.comparison("count")
        if not isinstance(comparison.value, float) or comparison.value % 1:
            raise SegmentError(f"col {self.items[self.at - 1].column}: a count is a "
                               "whole number")  # fmt: skip
        return comparison.op, int(comparison.value)

    def messages(self) -> tuple[str | None, str | None]:
        """(campaign, step) after opened, clicked or sent; None for any."""
        if self.is_word("any"):
            self.take()
            return None, None
        if self.is_word("previous"):  # in a step's condition: the step before it
            self.take()
            return PREVIOUS, PREVIOUS
        if self.is_word("step"):
            self.take()
            campaign, _, step = self.string('a quoted "campaign.step"').partition(".")
            if not step:
                raise SegmentError(f"col {self.items[self.at - 1].column}: write the step as "
                                   '"campaign.step", e.g. "welcome.tips"')  # fmt: skip
            return campaign, step
        return self.string("a quoted campaign name, 'step' or 'any'"), None

    def sent(self) -> Sent:
        start = self.at
        self.take()
        campaign, step = self.messages()
        within, before, count, ever, variant = None, None, None, False, None
        while self.is_word("within", "before", "count", "ever", "variant"):
            if self.is_word("variant"):
                variant = self.variant()
                continue
            keyword = self.take().text.lower()
            if keyword == "within":
                within = self.duration()
            elif keyword == "before":
                if not self.is_word("now"):
                    raise self.fail("a moment (e.g. now - 90d)")
                before = self.moment()
            elif keyword == "count":
                count = self.count()
            else:
                ever = True
        self.remember_messages(start)
        return Sent(campaign, step, within, before, count, ever, variant)

    def engagement(self) -> Engagement:
        start = self.at
        kind: Literal["open", "click"] = "open" if self.take().text.lower() == "opened" else "click"
        campaign, step = self.messages()
        variant = self.variant() if self.is_word("variant") else None
        within = None
        if self.is_word("within"):
            self.take()
            within = self.duration()
        if variant is None and self.is_word("variant"):
            variant = self.variant()
        self.remember_messages(start)
        machines = False
        if self.is_word("including"):  # machine opens and clicks count too (tracking/bots.py)
            self.take()
            if not self.is_word("machines"):
                raise self.fail("'machines' (as in: opened any including machines)")
            self.take()
            machines = True
        ever = self.is_word("ever")
        if ever:
            self.take()
        return Engagement(kind, campaign, step, within, machines, ever, variant)
