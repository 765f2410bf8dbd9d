"""Any error while rendering or signing one message is a RenderError for that message, naming
the template file and line where Jinja knows them: never a bare exception that would stop
the whole delivery run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.config import Step
from mailer.contacts.model import Contact
from mailer.render.dkim import DkimKey, generate_key
from mailer.render.message import MessageRenderer, RenderError
from tests.render.conftest import ADA


def hello(renderer: MessageRenderer) -> Step:
    return renderer.settings.campaigns["welcome"].steps[0]


def failure(renderer: MessageRenderer, contact: Contact) -> str:
    with pytest.raises(RenderError) as caught:
        renderer.render("welcome", hello(renderer), contact, "m1")
    return str(caught.value)


def with_body(templates: Path, body: str) -> None:
    (templates / "welcome" / "1.html").write_text(
        '{% extends "layout.html" %}{% block content %}\n<p>Hi</p>\n' + body + "\n{% endblock %}"
    )


def test_an_arithmetic_error_for_one_contact_names_the_template_line(
    renderer: MessageRenderer, templates: Path
) -> None:
    with_body(templates, "{{ 100 // (contact.attributes.orders | default(0) | int) }}")
    assert "33" in renderer.render("welcome", hello(renderer), ADA, "m1").html  # 3 orders
    no_orders = Contact(email="bob@example.com", first_name="Bob", attributes={"orders": 0})
    assert failure(renderer, no_orders) == (
        "templates/welcome/1.html:3: ZeroDivisionError: integer division or modulo by zero"
    )


def test_the_date_filter_on_a_missing_value_says_which_name(
    renderer: MessageRenderer, templates: Path
) -> None:
    with_body(templates, "<p>Last seen {{ contact.attributes.last_visit | date }}</p>")
    assert failure(renderer, ADA) == (
        "templates/welcome/1.html:3: 'contact.attributes.last_visit' is undefined"
    )


def test_the_date_filter_on_a_value_that_is_not_a_date_says_what_it_expects(
    renderer: MessageRenderer, templates: Path
) -> None:
    with_body(templates, "<p>Last seen {{ contact.attributes.last_visit | date }}</p>")
    visited = Contact(email="cy@example.com", first_name="Cy",
                      attributes={"last_visit": "01/03/2026"})  # fmt: skip
    assert failure(renderer, visited) == (
        "templates/welcome/1.html:3: ValueError: '01/03/2026' is not an ISO date (like 2026-03-01)"
    )
    ok = Contact(email="di@example.com", first_name="Di", locale="en",
                 attributes={"last_visit": "2026-03-01"})  # fmt: skip
    assert "March 1, 2026" in renderer.render("welcome", hello(renderer), ok, "m2").html


def test_a_dkim_signing_error_fails_the_message_with_its_cause(
    renderer: MessageRenderer,
) -> None:
    seed, _ = generate_key("ed25519-sha256")  # an Ed25519 seed where an RSA key belongs
    renderer.dkim_key = DkimKey("acme.example", "s1", "rsa-sha256", seed)
    assert failure(renderer, ADA).startswith("ada@example.com: DKIM signing failed: ")
