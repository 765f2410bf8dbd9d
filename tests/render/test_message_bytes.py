"""The bytes a message goes out as do not change when rendering is made faster: a mix of
templates (long lines, lines starting with a dot, trailing spaces and tabs, non-ASCII),
contacts (non-ASCII names, CR/LF and tabs in fields, long names, international addresses) and
variants is rendered, signed and made ready for the wire, and hashed. The hash was taken
before the DKIM signature was computed from the message's parts (render/dkim.sign_parts):
any change to a byte of any of these messages changes it. (It also reads the test project of
tests/conftest.py: if that changes on purpose, take the hash again with rendering unchanged.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.model import Contact
from mailer.delivery.rendering import wire_form
from mailer.render import dkim
from mailer.render.message import MessageRenderer, RenderError
from tests.conftest import SECRET

# A fixed Ed25519 seed: its signatures are deterministic, so the hash is.
SEED = b"bWFpbGVyLXRlc3QtZWQyNTUxOS1zZWVkLTMyYnl0ZXM="
LAYOUT = (
    '<!DOCTYPE html><html lang="{{ contact.locale | default("en") }}"><head>\n'
    "<style>p { color: #333; }   td\t{ padding: 2px; }</style></head><body>\n"
    "{% block content %}{% endblock %}\n"
    "<p>{{ sender.name }}, {{ sender.postal_address }} \t \n"
    '   <a href="{{ unsubscribe_url }}">Unsubscribe</a>  <a href="{{ preferences_url }}">'
    "Preferences</a></p>\n</body></html>\n"
)
HELLO = (
    '{% extends "layout.html" %}{% block content %}\n'
    "<p>Hello {{ contact.first_name | default('friend') }} {{ contact.last_name | default('') }},"
    " " + "a long line of the template's own words that goes on " * 4 + "</p>\n"
    ".a line that starts with a dot\n.\n"
    '<p><a href="https://shop.example/beans?a=1&amp;b=2&who={{ contact.email }}">Shop</a>\t\t'
    '<a href="mailto:hello@acme.example">Mail us</a>   <a href="#top">Top</a></p>\n'
    "<p>Orders: {{ contact.attributes.orders | default(0) }} · café crème — ½ price</p>\n"
    "{% endblock %}"
)
TIPS_TEXT = (
    "Tips for {{ contact.first_name | default('you') }} ({{ contact.email }}):\n"
    "https://shop.example/tips?x=1 and https://shop.example/other\n"
    ".dot line\n" + "x" * 200 + "\n"
    "trailing spaces   \ntrailing tab\t\n\n\n"
    "{{ sender.postal_address }}\nUnsubscribe: {{ unsubscribe_url }}\n"
)
NAMES = [
    ("Ada", "Lovelace", "ada@example.com"),
    ("Zoë", "Brontë", "zoe@example.fr"),
    ("Ana\r\nBcc: evil@example.com", "X\rY\nZ", "ana@example.com"),
    ("Tab\tbed", "  spaced   out  ", "tab@example.com"),
    ("=?utf-8?q?Eve=0D=0AX-Evil:_1?=", None, "eve@example.com"),
    ("Jürgen " * 30, "Weiß" * 20, "juergen@müller-post.de"),
    ("José", "García", "josé@example.es"),
    (None, None, "nobody@example.com"),
    ("Søren", "Kierkegaard", "soren@café-crème.fr"),
    ("O'Brien & <Sons>", '"Quoted"', "obrien@example.ie"),
]
EXPECTED = "1eadbc9f8ff4062551a5e2fc0e81066a74c7baebb74c5a792a06a096a388159e"


def contacts() -> list[Contact]:
    people = []
    for number, (first, last, email) in enumerate(NAMES):
        locale = ["en", "it", "de", None][number % 4]
        people.append(Contact(email=email, first_name=first, last_name=last, locale=locale,
                              timezone="Europe/Rome" if number % 2 else None,
                              attributes={"orders": number}, id=number + 1))  # fmt: skip
    return people


@pytest.fixture
def signing_renderer(project: Path, clock: FrozenClock) -> MessageRenderer:
    folder = project / "templates"
    (folder / "layout.html").write_text(LAYOUT)
    (folder / "welcome" / "1.html").write_text(HELLO)
    (folder / "welcome" / "2.txt").write_text(TIPS_TEXT)
    settings = load_settings(project / "settings.toml", environ={"MAILER_SECRET_KEY": SECRET})
    key = dkim.DkimKey("acme.example", "s1", "ed25519-sha256", SEED)
    return MessageRenderer(settings, settings.secret(), clock, dkim_key=key)


def every_message(renderer: MessageRenderer) -> list[bytes]:
    """Each contact through each step and variant, twice (the second time from the caches)."""
    campaign = renderer.settings.campaigns["welcome"]
    messages = []
    for round_number in range(2):
        for contact in contacts():
            for step in campaign.messages():
                for variant in [None, *step.variants]:
                    key = f"{round_number}-{contact.id}-{step.name}-{variant}"
                    try:
                        rendered = renderer.render("welcome", step, contact, key, variant)
                    except RenderError:  # the same failures, too (the text names a temp folder)
                        messages.append(b"failed " + key.encode())
                        continue
                    messages += [rendered.data, wire_form(rendered).wire]
    return messages


def test_a_mix_of_messages_is_written_byte_for_byte_as_before(
    signing_renderer: MessageRenderer,
) -> None:
    digest = hashlib.sha256()
    for data in every_message(signing_renderer):
        digest.update(len(data).to_bytes(4, "big") + data)
    assert digest.hexdigest() == EXPECTED
