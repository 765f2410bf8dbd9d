"""CSS inlined once per template (render/inline_cache.py) writes exactly the bytes that inlining
every message whole writes, whatever the contact's values and wherever the template puts them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.clock import FrozenClock
from mailer.config import Settings, load_settings
from mailer.contacts.model import Contact
from mailer.render.inline_cache import (
    _ENTITIES,
    _ENTITY,
    _PLAIN,
    _VALUE,
    CLOSE,
    OPEN,
    _skeleton,
    _usable,
    _written,
)
from mailer.render.message import MessageRenderer
from tests.conftest import SECRET

HEAD = ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>{{ contact.first_name }}</title>'
        "<style>p { color: #333; } .big { font-size: 20px; } td { padding: 2px; }</style>"
        "</head><body>")  # fmt: skip
FOOT = '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
TEMPLATES = {
    "text, attributes, title, table": (
        '<p class="big" title="{{ contact.last_name }}">Hi {{ contact.first_name }},</p>'
        "<p>{{ contact.attributes.note }}</p><table><tr><td>{{ contact.email }}</td></tr></table>"
        '<a href="https://shop.example/?who={{ contact.email }}'
        '&amp;n={{ contact.attributes.note }}">'
        "shop</a><img alt='{{ contact.first_name }}' src=\"https://shop.example/a.png\">"
    ),
    "a value inside a style attribute": (
        '<p style="color: {{ contact.attributes.note }}">x</p><p>{{ contact.first_name }}</p>'
    ),
    "output captured as a value": (
        "{% set greeting %}Hi {{ contact.first_name }}{% endset %}"
        "<p>{{ greeting | length }} {{ greeting }} {{ greeting | truncate(9) }}</p>"
    ),
    "autoescape off": (
        "{% autoescape false %}<p>{{ contact.first_name }}</p>{% endautoescape %}"
        "<p>{{ contact.attributes.note }}</p>"
    ),
    "comment, noscript, script": (
        "<!-- {{ contact.first_name }} --><noscript>{{ contact.first_name }}</noscript>"
        "<script>var n = '{{ contact.attributes.note }}';</script><p>{{ contact.email }}</p>"
    ),
    "an attribute selector": (
        '<style>[title="Ada"] { color: blue; }</style><p title="{{ contact.first_name }}">x</p>'
    ),
    "an unquoted attribute": "<p title={{ contact.first_name }}>x</p><p class=big>y</p>",
    "a character reference cut by a value": "<p>&{{ contact.attributes.note }};</p>",
}
HOSTILE = [
    "Ada", "O'Brien & <Sons>", ' "quoted" ', "", "  leading", "trailing  ", "a\r\nb", "a\rb",
    "nbsp\u00a0name", "</title><script>alert(1)</script>", '"><img src=x onerror=alert(1)>',
    "&amp;already", "&#39;", "\ue000marker\ue001", "\ue0000\ue001", "x\x00y", "Zoë 🎉",
    "{{ 7 * 7 }}", "red; background: url(https://evil.example/x)", "blue } p { color: red",
    "tab\there", "\x0cform feed", "\u2028line", "amp", "#39",
]  # fmt: skip


def contacts() -> list[Contact]:
    people = []
    for number, value in enumerate(HOSTILE):
        email = f"reader{number}@example.com"
        note = HOSTILE[(number + 3) % len(HOSTILE)]
        people.append(Contact(email=email, first_name=value, last_name=HOSTILE[-number - 1],
                              locale="en", attributes={"note": note}, id=number + 1))  # fmt: skip
    return people


def outcome(renderer: MessageRenderer, settings: Settings, contact: Contact) -> bytes | str:
    step = settings.campaigns["welcome"].step("hello")
    try:
        return renderer.render("welcome", step, contact, f"m{contact.id}").data
    except Exception as error:  # both paths must fail alike, too
        return f"{type(error).__name__}: {error}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_cached_inlining_writes_the_same_bytes_as_inlining_each_message(
    name: str, project: Path, clock: FrozenClock
) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(HEAD + TEMPLATES[name] + FOOT)
    settings = load_settings(project / "settings.toml", environ={"MAILER_SECRET_KEY": SECRET})
    cached = MessageRenderer(settings, settings.secret(), clock)
    whole = MessageRenderer(settings, settings.secret(), clock, cache_inlining=False)
    for contact in contacts() * 2:  # the second time round from the cache
        assert outcome(cached, settings, contact) == outcome(whole, settings, contact), (
            f"{name}: {contact.first_name!r} / {contact.attributes['note']!r}"
        )


def test_plain_values_are_inlined_from_the_cache(project: Path, clock: FrozenClock) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(
        HEAD + TEMPLATES["text, attributes, title, table"] + FOOT
    )
    settings = load_settings(project / "settings.toml", environ={"MAILER_SECRET_KEY": SECRET})
    cached = MessageRenderer(settings, settings.secret(), clock)
    step = settings.campaigns["welcome"].step("hello")
    for number, name in enumerate(["Ada", "Grace", "O'Brien & <Sons>", "Zoë"]):
        contact = Contact(email=f"r{number}@example.com", first_name=name, last_name="Hopper",
                          locale="en", attributes={"note": "hi"}, id=number + 1)  # fmt: skip
        message = cached.render("welcome", step, contact, f"m{number}")
        assert 'style="color: #333;"' in message.html  # the stylesheet was inlined
    assert cached.inline_cache is not None
    assert cached.inline_cache.hits == {"welcome/1.html": 3}  # one skeleton, inlined once
    assert cached.inline_cache.misses == {"welcome/1.html": 1}


def test_skeletons_of_the_same_length_are_told_apart(project: Path, clock: FrozenClock) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(
        HEAD + "<p class=\"{% if contact.first_name == 'Ada' %}big{% else %}sma{% endif %}\">"
        "Hi {{ contact.first_name }}</p>" + FOOT
    )
    settings = load_settings(project / "settings.toml", environ={"MAILER_SECRET_KEY": SECRET})
    cached = MessageRenderer(settings, settings.secret(), clock)
    whole = MessageRenderer(settings, settings.secret(), clock, cache_inlining=False)
    ada, bob = (Contact(email=f"{name.lower()}@example.com", first_name=name, locale="en", id=n)
                for n, name in enumerate(["Ada", "Bob"], 1))  # fmt: skip
    for contact in [ada, bob, ada, bob]:
        assert outcome(cached, settings, contact) == outcome(whole, settings, contact)
    big, small = outcome(cached, settings, ada), outcome(cached, settings, bob)
    assert isinstance(big, bytes) and b"font-size: 20px" in big
    assert isinstance(small, bytes) and b"font-size: 20px" not in small
    assert cached.inline_cache is not None
    assert cached.inline_cache.misses == {"welcome/1.html": 2}


def test_a_value_in_a_style_attribute_is_inlined_with_each_message(
    project: Path, clock: FrozenClock
) -> None:
    (project / "templates" / "welcome" / "1.html").write_text(
        HEAD + TEMPLATES["a value inside a style attribute"] + FOOT
    )
    settings = load_settings(project / "settings.toml", environ={"MAILER_SECRET_KEY": SECRET})
    cached = MessageRenderer(settings, settings.secret(), clock)
    step = settings.campaigns["welcome"].step("hello")
    contact = Contact(email="r@example.com", first_name="Ada", locale="en",
                      attributes={"note": "red; font-size: 30px"}, id=1)  # fmt: skip
    html = cached.render("welcome", step, contact, "m1").html
    assert "font-size: 30px" in html and "color: red" in html  # css-inline read the value


VALUE_PIECES = ["a", "é", " ", "\xa0", "\t", "\n", "\x0b", "\x00", "\x7f", "\ud800", "&", "<", ">",
                '"', "'", "&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#34;", "&#x27;", "&nbsp;",
                "&#39", "—", "\u2028"]  # fmt: skip


@given(st.lists(st.sampled_from(VALUE_PIECES), max_size=12), st.booleans())
def test_the_quick_checks_on_a_value_agree_with_their_patterns(
    pieces: list[str], attribute: bool
) -> None:
    value = "".join(pieces)
    plain = bool(value) and not value[0].isspace() and _PLAIN.fullmatch(value) is not None
    assert _usable(value) == plain
    if plain:
        text = _ENTITY.sub(lambda entity: _ENTITIES[entity.group(0)], value)
        text = text.replace("&", "&amp;").replace("\xa0", "&nbsp;")
        text = (
            text.replace('"', "&quot;")
            if attribute
            else text.replace("<", "&lt;").replace(">", "&gt;")
        )
        assert _written(value, attribute) == text


def skeleton_one_value_at_a_time(marked: str) -> tuple[str, list[str]]:
    """The reference: each value replaced by its placeholder as the pattern finds it."""
    values: list[str] = []

    def placeholder(found: re.Match[str]) -> str:
        values.append(found.group(1))
        return f"{OPEN}{len(values) - 1}{CLOSE}"

    return _VALUE.sub(placeholder, marked), values


@given(st.lists(st.sampled_from(["a", "<p>", OPEN, CLOSE, f"{OPEN}Ada{CLOSE}", f"{OPEN}{CLOSE}",
                                 "\n", "0"]), max_size=40))  # fmt: skip
def test_the_skeleton_cut_by_split_is_the_one_cut_value_by_value(pieces: list[str]) -> None:
    marked = "".join(pieces)
    assert _skeleton(marked) == skeleton_one_value_at_a_time(marked)
