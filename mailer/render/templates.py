"""The template environment: Jinja's sandbox over templates/, strict about undefined names,
with per-locale variants and locale-aware filters.

Templates are compiled once per process and kept (auto_reload off), so rendering a message
never re-reads or re-parses a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, get_timezone
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateSyntaxError,
    Undefined,
    pass_context,
)
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

TEMPLATE_SUFFIXES = (".html", ".txt")


class Namespace(dict[str, Any]):
    """A mapping the templates see as `contact`, `campaign`, ...; it knows its own name, so
    that a missing key is reported as `'contact.first_name' is undefined`."""

    def __init__(self, path: str, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.path = path


class NamedUndefined(StrictUndefined):
    """Every use of an undefined name is an error that says which name."""

    @property
    def _undefined_message(self) -> str:
        owner = self._undefined_obj
        if isinstance(owner, Namespace) and isinstance(self._undefined_name, str):
            return f"'{owner.path}.{self._undefined_name}' is undefined"
        if owner is missing:
            return f"'{self._undefined_name}' is undefined"
        return str(super()._undefined_message)


# What `getattr` finds on a Namespace: anything else is a key or undefined.
_NAMESPACE_ATTRIBUTES = frozenset([*dir(Namespace), "path"])


class TemplateEnvironment(SandboxedEnvironment):
    """Jinja's sandbox, with `contact.first_name` looked up as a key at once: the sandbox
    tries the attribute first, and the AttributeError it catches cost more than the lookup
    (about fifteen a message). The result is the same: a Namespace has no other attributes."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is Namespace and attribute not in _NAMESPACE_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def template_environment(
    templates_dir: Path, finalize: Callable[[Any], Any] | None = None
) -> SandboxedEnvironment:
    environment = TemplateEnvironment(
        finalize=finalize,
        loader=FileSystemLoader(templates_dir),
        autoescape=lambda name: name is not None and name.endswith(".html"),
        undefined=NamedUndefined,
        auto_reload=False,
        # Templates are files, so they are few: a plain dict holds them all (each `{% extends %}`
        # asks for its layout at every render, and the default LRU cache takes a lock to answer).
        cache_size=-1,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        date=_date, datetime=_datetime, number=_number, money=_money
    )  # fmt: skip
    return environment


def localised_names(template: str, suffix: str, locale: str | None) -> Iterator[str]:
    """`welcome/1` for `pt_BR`: welcome/1.pt_BR.html, welcome/1.pt.html, welcome/1.html."""
    if locale:
        yield f"{template}.{locale}{suffix}"
        language = locale.split("_")[0]
        if language != locale:
            yield f"{template}.{language}{suffix}"
    yield f"{template}{suffix}"


def syntax_problem(error: TemplateSyntaxError, templates_dir: Path, fallback: str) -> str:
    """`templates/welcome/2.html:14: unexpected '}'`, the way an editor wants it."""
    name = error.name or fallback
    return f"{templates_dir / name if error.name else name}:{error.lineno}: {error.message}"


# Filters: dates, numbers and money in the contact's own locale (Babel), e.g.
# {{ contact.attributes.signed_up_at | date }}, {{ 12.5 | money("EUR") }}.


def _locale(context: Context) -> Locale:
    contact = context.get("contact")
    name = contact.get("locale") if isinstance(contact, dict) else None
    try:
        return Locale.parse(name or context.get("default_locale") or "en")
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def _defined(value: object) -> None:
    """A filter given an undefined value says which name (Babel would fail on it with a bare
    AssertionError)."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()


def _iso(value: str, kind: type[date]) -> date:
    try:
        return kind.fromisoformat(value[:10] if kind is date else value)
    except ValueError:
        example = "2026-03-01" if kind is date else "2026-03-01T09:30:00+00:00"
        raise ValueError(f"'{value}' is not an ISO {kind.__name__} (like {example})") from None


@pass_context
def _date(context: Context, value: date | str, format: str = "long") -> str:
    _defined(value)
    moment = _iso(value, date) if isinstance(value, str) else value
    return str(format_date(moment, format=format, locale=_locale(context)))


@pass_context
def _datetime(context: Context, value: datetime | str, format: str = "medium") -> str:
    _defined(value)
    moment = _iso(value, datetime) if isinstance(value, str) else value
    contact = context.get("contact")
    zone = contact.get("timezone") if isinstance(contact, dict) else None
    where = get_timezone(zone) if zone else None
    return str(format_datetime(moment, format=format, tzinfo=where, locale=_locale(context)))


@pass_context
def _number(context: Context, value: float | int) -> str:
    _defined(value)
    return str(format_decimal(value, locale=_locale(context)))


@pass_context
def _money(context: Context, value: float | int, currency: str) -> str:
    _defined(value)
    return str(format_currency(value, currency, locale=_locale(context)))
