"""From (campaign, step, contact) to the exact bytes that go to SMTP.

render -> inline CSS -> tracked links and open pixel -> plain-text part -> headers -> DKIM.
A MessageRenderer is made once per process: it holds the compiled templates, the token keys
and the DKIM key, so the per-message path re-reads and re-parses nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import css_inline
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import Template, TemplateError, TemplateNotFound
from jinja2.exceptions import SecurityError

from mailer.clock import Clock
from mailer.config import Campaign, Settings, Step
from mailer.contacts.model import Contact
from mailer.errors import MailerError
from mailer.render.dkim import DkimKey
from mailer.render.dkim import sign_fields as dkim_sign_fields
from mailer.render.inline_cache import (
    CLOSE,
    OPEN,
    InlineCache,
    MarkerInValue,
    captures_output,
    mark,
    unmarked,
)
from mailer.render.links import LinkTable, add_open_pixel, add_preheader
from mailer.render.mime import (
    Alternative,
    alternative_fields,
    decoded_words,
    mailbox,
    unstructured,
    wire_address,
)
from mailer.render.surveys import survey_helper
from mailer.render.templates import Namespace, localised_names, template_environment
from mailer.tokens import TokenKeys, sign

_TEXT_CONFIG = ParserConfig(display_links=True)


class RenderError(MailerError):
    """A template could not be rendered for this contact; the message says where and why."""


@dataclass(frozen=True)
class RenderedMessage:
    message_key: str
    message_id: str
    envelope_from: str  # VERP: bounces+TOKEN@bounce-domain
    recipient: str  # as the SMTP envelope carries it (IDNA domain)
    smtputf8: bool  # the recipient's local part is not ASCII: the relay must offer SMTPUTF8
    subject: str
    html: str
    text: str
    links: list[str]  # the click targets, by link index
    data: bytes  # the signed message, ready for SMTP DATA


# What a lenient reader decodes as an encoded word (Python's own decode_header takes any text,
# `?` included, between `?B?` and `?=`), not only what RFC 2047 allows: `=??B?0??=` too.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bBqQ]\?.*?\?=")
# C0 and C1 controls that are not whitespace (str.split() takes care of those), and DEL.
_CONTROLS = dict.fromkeys(c for c in [*range(0x20), *range(0x7F, 0xA0)] if not chr(c).isspace())


def header_text(value: str) -> str:
    """One line of plain text for a header, whatever contact data or templates hold.

    Encoded words (`=?utf-8?q?...?=`) are decoded here first: mail readers decode them, and
    one hiding CR/LF would show the reader a forged header (Python's own email package even
    writes it out as a real one: CVE-2024-6923, unfixed in 3.11.7). Then control characters
    (NUL, ESC, DEL, ...) are dropped and every run of whitespace, CR and LF included, is one
    space.
    """
    return value if _plain_line(value) else _cleaned(value)


def _cleaned(value: str) -> str:
    for _ in range(4):  # encoded words may hide encoded words
        if not _ENCODED_WORD.search(value):
            break
        decoded = decoded_words(value)
        if decoded is None:
            break
        value = decoded
    value = " ".join(value.translate(_CONTROLS).split())
    # Whatever still looks like an encoded word must not be read as one.
    return _ENCODED_WORD.sub(lambda word: word.group(0).replace("=?", "= ?"), value)


def _plain_line(value: str) -> bool:
    """Whether `header_text` has nothing to do: printable (no control character, and no
    whitespace but the ASCII space), no space run or space at either end, no encoded word."""
    return (value.isprintable() and "  " not in value and "=?" not in value
            and value[:1] != " " and value[-1:] != " ")  # fmt: skip


def problem(error: Exception) -> str:
    """What went wrong, in one line: Jinja's own message, else the exception's type and text
    (`ZeroDivisionError: integer division or modulo by zero`; Babel's bare AssertionError)."""
    if isinstance(error, (TemplateError, SecurityError)):
        return str(error.message or error)
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _flat_globals(template: Template) -> Template:
    """`template` with its globals in one dict: Jinja keeps them as a ChainMap over the
    environment's, which every render copies key by key in Python (6 µs a template). Our
    environments' globals are all set before the first template is loaded."""
    template.globals = dict(template.globals)
    return template


# Headers that depend on settings alone (or on the moment, the same for a whole chunk of
# messages): written once, not per message.
@lru_cache(maxsize=64)
def _from(name: str, address: str) -> str:
    return mailbox(header_text(name), address)


@lru_cache(maxsize=64)
def _list_id(title: str, list_name: str, domain: str) -> str:
    """RFC 2919: a phrase, then the list's id as a dotted name under the sender's domain."""
    return f"{unstructured(header_text(title))} <{list_name}.{domain}>"


@lru_cache(maxsize=4)
def _date(now: datetime, offset: timedelta | None) -> str:
    """`offset` is part of the key: 12:00+00:00 and 13:00+01:00 are equal datetimes."""
    return format_datetime(now)


class MessageRenderer:
    def __init__(self, settings: Settings, secret: bytes, clock: Clock,
                 dkim_key: DkimKey | None = None, cache_inlining: bool = True) -> None:  # fmt: skip
        self.settings = settings
        self.clock = clock
        self.dkim_key = dkim_key
        self.templates_dir = settings.path(settings.templates_dir)
        self.environment = template_environment(self.templates_dir)
        self.environment.globals["default_locale"] = settings.default_locale
        # HTML templates render with each value marked, so CSS is inlined once per template
        # where the contact's values cannot change the result (render/inline_cache.py).
        self.inline_cache = InlineCache() if cache_inlining else None
        self.html_environment = template_environment(self.templates_dir, finalize=mark)
        self.html_environment.globals["default_locale"] = settings.default_locale
        self._marked_templates: dict[tuple[str, str, str | None], Template] = {}
        self._captures: dict[str, bool] = {}
        self.keys = TokenKeys(
            secret, settings.tracking.token_version, settings.tracking.oldest_token_version
        )
        message_id_key = hmac.digest(secret, b"mailer message-id", "sha256")
        self._message_id_mac = hmac.new(message_id_key, digestmod=hashlib.sha256)
        self._subjects: dict[str, Template] = {}
        self._templates: dict[tuple[str, str, str | None], Template] = {}
        self._zones: dict[str, ZoneInfo] = {}
        self._steps: dict[tuple[str, str], Step] = {}

    def render(
        self,
        campaign_name: str,
        step: Step,
        contact: Contact,
        message_key: str,
        variant: str | None = None,
        track: bool = True,
        now: datetime | None = None,
    ) -> RenderedMessage:
        """The message for `contact` as of `now` (default: the clock's time); RenderError when
        a template fails for this contact."""
        now = now or self.clock.now()
        campaign = self.settings.campaigns[campaign_name]
        template, subject_source = self._variant(step, variant)
        base = self.settings.tracking.base_url
        unsubscribe = sign(self.keys, "unsubscribe", message_key)
        context = self._context(campaign_name, campaign, step, contact, unsubscribe, now)
        context["survey"] = survey_helper(self.keys, base, message_key)
        where = (campaign_name, campaign, step)  # spelled out only for an error message
        subject = header_text(self._render_string(subject_source, context, where, "subject"))
        html, marked = self._html(template, contact.locale, context)
        if step.preheader:
            preheader = header_text(self._render_string(step.preheader, context, where,
                                                        "preheader"))  # fmt: skip
            if marked and (OPEN in preheader or CLOSE in preheader):
                html, marked = unmarked(html), False
            html = add_preheader(html, mark(preheader) if preheader and marked else preheader)
        if marked and self.inline_cache is not None:
            html = self.inline_cache.inline(html, self._html_name(template, contact.locale))
        else:
            html = css_inline.inline(html)
        links = LinkTable(
            base, lambda index: f"{base}/c/{sign(self.keys, 'click', message_key, index)}"
        )
        if track:
            html = links.rewrite_html(html)
        text = self._text_part(template, contact.locale, context, html, links if track else None)
        if track:
            html = links.add_honeypot(html)  # after the text part: never in it
        if track and step.track_opens and campaign.track_opens:
            html = add_open_pixel(html, f"{base}/o/{sign(self.keys, 'open', message_key)}.gif")
        message_id = self.message_id(message_key)
        try:
            written = self._mime(campaign_name, campaign, step, contact, message_key,
                                 message_id, subject, unsubscribe, html, text, now,
                                 variant)  # fmt: skip
        except (ValueError, UnicodeError) as error:
            raise RenderError(f"{contact.email}: cannot write the headers: {error}") from None
        data = written.data
        if self.dkim_key is not None:
            try:
                data = dkim_sign_fields(data, written.fields, self.dkim_key, now)
            except Exception as error:
                raise RenderError(
                    f"{contact.email}: DKIM signing failed: {problem(error)}"
                ) from None
        bounce = f"bounces+{sign(self.keys, 'bounce', message_key)}@{self._bounce_domain}"
        recipient = wire_address(contact.email)
        return RenderedMessage(message_key, message_id, bounce, recipient,
                               not recipient.isascii(), subject, html, text, links.targets,
                               data)  # fmt: skip

    def step(self, campaign_name: str, name: str) -> Step:
        """Step `name` of the campaign, found once: settings do not change under a renderer,
        and a broadcast's step (or a resend) is a new Step each time the campaign is asked."""
        key = (campaign_name, name)
        found = self._steps.get(key)
        if found is None:
            found = self._steps[key] = self.settings.campaigns[campaign_name].step(name)
        return found

    @property
    def _bounce_domain(self) -> str:
        return self.settings.sender.envelope_domain

    def _variant(self, step: Step, variant: str | None) -> tuple[str, str]:
        if variant is None:
            return step.template, step.subject
        if variant not in step.variants:
            known = ", ".join(step.variants) or "none"
            raise RenderError(f"step '{step.name}' has no variant '{variant}' (variants: {known})")
        chosen = step.variants[variant]
        return chosen.template or step.template, chosen.subject or step.subject

    def _context(self, campaign_name: str, campaign: Campaign, step: Step, contact: Contact,
                 unsubscribe: str, now: datetime) -> dict[str, object]:  # fmt: skip
        sender = self.settings.sender
        zone = self._zone(contact.timezone or self.settings.default_timezone)
        values = {
            "email": contact.email, "first_name": contact.first_name,
            "last_name": contact.last_name, "name": contact.name, "locale": contact.locale,
            "timezone": contact.timezone, "tags": list(contact.tags),
            "attributes": Namespace("contact.attributes", dict(contact.attributes)),
        }  # fmt: skip
        base = self.settings.tracking.base_url
        return {
            # A missing value is undefined, not None: templates say `| default("friend")`.
            "contact": Namespace("contact", {k: v for k, v in values.items() if v is not None}),
            "campaign": Namespace("campaign", {"name": campaign_name, "list": campaign.list_name,
                                               "description": campaign.description}),
            "step": Namespace("step", {"name": step.name}),
            "sender": Namespace("sender", {"name": sender.name, "email": sender.email,
                                           "postal_address": sender.postal_address}),
            "unsubscribe_url": f"{base}/u/{unsubscribe}",
            "preferences_url": f"{base}/p/{unsubscribe}",
            "now": now.astimezone(zone),
        }  # fmt: skip

    def _zone(self, name: str) -> ZoneInfo:
        """The time zone `name`, kept: ZoneInfo itself keeps only the 8 used last, and a
        contact in a ninth had its zone file read and parsed again (120 µs)."""
        zone = self._zones.get(name)
        if zone is None:
            zone = self._zones[name] = ZoneInfo(name)
        return zone

    def _render_file(self, template: str, suffix: str, locale: str | None,
                     context: dict[str, object], marked: bool = False) -> str:  # fmt: skip
        environment = self.html_environment if marked else self.environment
        templates = self._marked_templates if marked else self._templates
        try:
            chosen = (template, suffix, locale)
            if chosen not in templates:  # found once: the file system is asked once
                templates[chosen] = _flat_globals(
                    environment.select_template(list(localised_names(template, suffix, locale)))
                )
            return templates[chosen].render(context)
        except MarkerInValue:
            raise
        except TemplateNotFound:
            raise RenderError(
                f"{self.templates_dir.name}/{template}{suffix} does not exist"
            ) from None
        except Exception as error:  # any error of one contact's data fails that message alone
            raise RenderError(self._where(error) + problem(error)) from None

    def _render_string(self, source: str, context: dict[str, object],
                       where: tuple[str, Campaign, Step], field: str) -> str:  # fmt: skip
        try:
            if source not in self._subjects:
                self._subjects[source] = _flat_globals(self.environment.from_string(source))
            return self._subjects[source].render(context)
        except Exception as error:
            raise RenderError(f"{self._setting(*where)}.{field}: {problem(error)}") from None

    def _html(self, template: str, locale: str | None,
              context: dict[str, object]) -> tuple[str, bool]:  # fmt: skip
        """The step's HTML, and whether its values are marked for the inlining cache."""
        if self.inline_cache is not None and self._cacheable(template, locale):
            try:
                return self._render_file(template, ".html", locale, context, marked=True), True
            except MarkerInValue:
                pass
        return self._render_file(template, ".html", locale, context), False

    def _html_name(self, template: str, locale: str | None) -> str:
        return self._marked_templates[(template, ".html", locale)].name or template

    def _cacheable(self, template: str, locale: str | None) -> bool:
        """Whether the template's CSS may be inlined from the cache (inline_cache.py)."""
        chosen = (template, ".html", locale)
        try:
            if chosen not in self._marked_templates:
                self._marked_templates[chosen] = _flat_globals(
                    self.html_environment.select_template(
                        list(localised_names(template, ".html", locale))
                    )
                )
            name = self._html_name(template, locale)
            if name not in self._captures:
                self._captures[name] = captures_output(self.html_environment, name)
        except Exception:  # not found or broken: the plain path says so, as before
            return False
        return not self._captures[name]

    def _setting(self, campaign_name: str, campaign: Campaign, step: Step) -> str:
        """Where in settings this step is written, for error messages."""
        where = f"{self.settings.source}: campaigns.{campaign_name}"
        resend = ".resend" if step.name.endswith(".resend") else ""  # config.resent
        if campaign.kind == "broadcast":
            return where + resend
        names = [candidate.name for candidate in campaign.steps]
        return f"{where}.steps[{names.index(step.name.removesuffix('.resend'))}]{resend}"

    def _where(self, error: Exception) -> str:
        """`templates/welcome/2.html:14: ` from the template frame the error passed through."""
        for frame in reversed(traceback.extract_tb(error.__traceback__)):
            path = Path(frame.filename)
            if path.is_relative_to(self.templates_dir):
                shown = Path(self.templates_dir.name) / path.relative_to(self.templates_dir)
                return f"{shown}:{frame.lineno}: "
        return ""

    def _text_part(self, template: str, locale: str | None, context: dict[str, object],
                   html: str, links: LinkTable | None) -> str:  # fmt: skip
        """The step's .txt template, links tracked; else text made from the (tracked) HTML."""
        try:
            text = self._render_file(template, ".txt", locale, context)
        except RenderError as error:
            if "does not exist" not in str(error):
                raise
            return str(get_text(html, _TEXT_CONFIG)).strip() + "\n"
        return links.rewrite_text(text) if links else text

    def _mime(self, campaign_name: str, campaign: Campaign, step: Step, contact: Contact,
              message_key: str, message_id: str, subject: str, unsubscribe: str, html: str,
              text: str, now: datetime, variant: str | None = None) -> Alternative:  # fmt: skip
        sender = self.settings.sender
        contact_list = self.settings.lists[campaign.list_name]
        chosen = step.variants.get(variant) if variant is not None else None
        from_name = chosen.from_name if chosen is not None and chosen.from_name else sender.name
        headers = [
            ("From", _from(from_name, sender.email)),
            ("To", mailbox(header_text(contact.name or ""), contact.email)),
            ("Subject", unstructured(subject)),
            ("Date", _date(now, now.utcoffset())),
            ("Message-ID", message_id),
            *self._reply_to(message_key),
            # RFC 8058: the https URL is the one-click one; never folded, never encoded.
            ("List-Unsubscribe", self._list_unsubscribe(unsubscribe)),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", _list_id(contact_list.title, campaign.list_name, sender.domain)),
            ("Feedback-ID", f"{step.name}:{campaign_name}:{campaign.list_name}:"
                            f"{sender.feedback_id}"),
        ]  # fmt: skip
        tag = self._tag(b"boundary " + message_key.encode())
        return alternative_fields(headers, text, html, boundary=f"=_{tag[:12].hex()}")

    def _reply_to(self, message_key: str) -> list[tuple[str, str]]:
        """reply+TOKEN@ when replies are tracked (mailer inbound records and forwards them),
        else [sender] reply_to, else none."""
        sender = self.settings.sender
        if sender.reply_tracking:
            token = sign(self.keys, "reply", message_key)
            return [("Reply-To", mailbox(None, f"reply+{token}@{self._bounce_domain}"))]
        return [("Reply-To", mailbox(None, sender.reply_to))] if sender.reply_to else []

    def _list_unsubscribe(self, token: str) -> str:
        """The one-click URL; the mailto address only when the sender says something reads it
        (an address advertised and never read would drop the person's request)."""
        url = f"<{self.settings.tracking.base_url}/u/{token}>"
        if not self.settings.sender.mailto_unsubscribe:
            return url
        return f"{url}, <mailto:unsubscribe+{token}@{self._bounce_domain}>"

    def message_id(self, message_key: str) -> str:
        """The same Message-ID for every attempt at the same message (a retry reuses it)."""
        tag = self._tag(message_key.encode())[:6].hex()
        return f"<{message_key}.{tag}@{self.settings.sender.domain}>"

    def _tag(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` under the message-id key (a copy of the keyed state: a third
        of the cost of hmac.digest)."""
        state = self._message_id_mac.copy()
        state.update(data)
        return state.digest()
