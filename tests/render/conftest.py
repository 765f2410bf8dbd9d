"""A small project with templates for render tests, and a renderer over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.model import Contact
from mailer.render.message import MessageRenderer
from tests.conftest import SECRET

LAYOUT = """<!DOCTYPE html><html><head><style>p { color: #333; }</style></head><body>
{% block content %}{% endblock %}
<p>{{ sender.name }}, {{ sender.postal_address }}</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""


@pytest.fixture
def templates(project: Path) -> Path:
    folder = project / "templates"
    (folder / "layout.html").write_text(LAYOUT)
    (folder / "welcome" / "1.html").write_text(
        '{% extends "layout.html" %}{% block content %}'
        "<p>Hello {{ contact.first_name | default('friend') }}</p>"
        '<p><a href="https://shop.example/beans?a=1&amp;b=2">Shop</a> '
        '<a href="mailto:hello@acme.example">Mail us</a> <a href="#top">Top</a> '
        '<a data-notrack href="https://shop.example/private">Private</a> '
        "<a href='https://shop.example/beans?a=1&amp;b=2'>Shop again</a></p>"
        "{% endblock %}"
    )
    (folder / "welcome" / "1.it.html").write_text(
        '{% extends "layout.html" %}{% block content %}<p>Ciao {{ contact.first_name }}</p>'
        "{% endblock %}"
    )
    (folder / "welcome" / "2.html").write_text(
        '{% extends "layout.html" %}{% block content %}\n<p>Tips</p>\n'
        "<p>{{ contact.first_name }}</p>\n{% endblock %}"
    )
    (folder / "welcome" / "2.txt").write_text(
        "Tips for {{ contact.email }}: https://shop.example/tips\n"
        "{{ sender.postal_address }}\nUnsubscribe: {{ unsubscribe_url }}\n"
    )
    return folder


@pytest.fixture
def renderer(project: Path, templates: Path, clock: FrozenClock) -> MessageRenderer:
    settings = load_settings(project / "settings.toml", environ={"MAILER_SECRET_KEY": SECRET})
    return MessageRenderer(settings, settings.secret(), clock)


ADA = Contact(email="ada@example.com", first_name="Ada", last_name="Lovelace",
              timezone="Europe/London", locale="en", attributes={"orders": 3})  # fmt: skip
