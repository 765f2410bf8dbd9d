from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError

from mailer.render.templates import (
    Namespace,
    localised_names,
    template_environment,
)


def render(source: str, **context: object) -> str:
    return template_environment(Path(".")).from_string(source).render(context)


def test_locale_variants_are_tried_most_specific_first() -> None:
    assert list(localised_names("welcome/1", ".html", "pt_BR")) == [
        "welcome/1.pt_BR.html", "welcome/1.pt.html", "welcome/1.html",
    ]  # fmt: skip
    assert list(localised_names("welcome/1", ".txt", None)) == ["welcome/1.txt"]


def test_dates_numbers_and_money_in_the_contacts_locale() -> None:
    italian = Namespace("contact", {"locale": "it", "timezone": "Europe/Rome"})
    assert render("{{ '2026-03-01' | date }}", contact=italian) == "1 marzo 2026"
    assert render("{{ 1234.5 | number }}", contact=italian) == "1.234,5"
    assert render("{{ 12.5 | money('EUR') }}", contact=italian) == "12,50\xa0€"
    moment = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert render("{{ t | datetime('short') }}", contact=italian, t=moment) == "01/03/26, 09:30"
    english = Namespace("contact", {"locale": "en_GB"})
    assert render("{{ '2026-03-01' | date }}", contact=english) == "1 March 2026"


def test_a_key_of_a_namespace_reads_as_an_attribute_unless_a_dict_has_that_attribute() -> None:
    """As Jinja's sandbox reads them: the attribute first (a dict's `items`, the namespace's
    own `path`), then the key."""
    values = Namespace("contact.attributes", {"plan": "gold", "items": 3, "path": "x"})
    contact = Namespace("contact", {"attributes": values})
    assert render("{{ contact.attributes.plan }}", contact=contact) == "gold"
    assert render("{{ contact.attributes['items'] }}", contact=contact) == "3"
    assert render("{{ contact.attributes.path }}", contact=contact) == "contact.attributes"
    assert render("{{ contact.attributes.items() | list | length }}", contact=contact) == "3"
    with pytest.raises(SecurityError):
        render("{{ contact.attributes.__class__ }}", contact=contact)


def test_undefined_names_are_errors_that_name_them() -> None:
    contact = Namespace("contact", {"attributes": Namespace("contact.attributes", {})})
    with pytest.raises(Exception, match=r"'contact\.attributes\.plan' is undefined"):
        render("{{ contact.attributes.plan }}", contact=contact)
    with pytest.raises(Exception, match="'coupon' is undefined"):
        render("{{ coupon }}")
    assert render("{{ contact.attributes.plan | default('basic') }}", contact=contact) == "basic"
