from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

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


def test_undefined_names_are_errors_that_name_them() -> None:
    contact = Namespace("contact", {"attributes": Namespace("contact.attributes", {})})
    with pytest.raises(Exception, match=r"'contact\.attributes\.plan' is undefined"):
        render("{{ contact.attributes.plan }}", contact=contact)
    with pytest.raises(Exception, match="'coupon' is undefined"):
        render("{{ coupon }}")
    assert render("{{ contact.attributes.plan | default('basic') }}", contact=contact) == "basic"
