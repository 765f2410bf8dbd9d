"""The double opt-in confirmation email: rendered from templates/confirm.html (and .txt) in the
sandbox, signed, and sent straight through the relays (failing over as campaign mail does). It
asks for consent, so consent gate 2 does not apply to it."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import TemplateNotFound
from markupsafe import escape as markup_escape

from mailer.delivery.relay_board import send_one
from mailer.delivery.rendering import wire_form
from mailer.logs import logger
from mailer.render.dkim import sign as dkim_sign
from mailer.render.message import MessageRenderer, RenderedMessage, header_text
from mailer.render.mime import alternative, mailbox, unstructured, wire_address
from mailer.render.templates import Namespace, template_environment
from mailer.store.limits import Limit, SharedLimits
from mailer.tokens import sign
from mailer.workspace import Workspace

if TYPE_CHECKING:
    from mailer.tracking.forms import Lead, Subscriber

CONFIRM_VALID = timedelta(days=7)
RESEND_AFTER = timedelta(minutes=10)  # at most one confirmation email per (contact, list)
# A bucket of one token per (contact, list), shared by every instance through the database.
RESEND = Limit(rate=1 / RESEND_AFTER.total_seconds(), burst=1)
CONFIRM_TEMPLATE = "confirm"
_TEXT_CONFIG = ParserConfig(display_links=True)


@dataclass(frozen=True)
class ConfirmLink:
    """What a confirmation link carries (its token's fields). Links sent before issue 13 carry
    no basis: they confirm a pending grant only."""

    contact_id: int
    list_name: str
    expires: int
    basis: int | None = None  # the ledger entry behind the status the link was sent for
    requested: int = 0  # when the form was posted (epoch seconds)
    consent_text_version: str = ""
    form_id: str = ""

    def fields(self) -> tuple[str | int, ...]:
        return (self.contact_id, self.list_name, self.expires, self.basis or 0, self.requested,
                self.consent_text_version, self.form_id)  # fmt: skip

    @classmethod
    def parse(cls, fields: list[str]) -> ConfirmLink:
        """ValueError for a token of another shape."""
        if len(fields) == 3:
            return cls(int(fields[0]), fields[1], int(fields[2]))
        contact, list_name, expires, basis, requested, version, form_id = fields
        return cls(int(contact), list_name, int(expires), int(basis), int(requested), version,
                   form_id)  # fmt: skip

    def request_evidence(self) -> dict[str, Any]:
        """The form post the link answers: not its IP (anyone may have typed the address)."""
        at = datetime.fromtimestamp(self.requested, UTC).isoformat()
        return {"at": at, "consent_text_version": self.consent_text_version,
                "form_id": self.form_id or None, "source": "form"}  # fmt: skip


class ConfirmationMail:
    """Renders the confirmation email (templates/confirm.html and .txt, in the sandbox) and
    sends it through the relay. It asks for consent, so consent gate 2 does not apply.

    At most one per (contact, list) every RESEND_AFTER, remembered in the database: every
    `mailer serve` instance knows what the others sent, and a restart forgets nothing.
    """

    def __init__(self, workspace: Workspace, renderer: MessageRenderer | None = None) -> None:
        """`renderer`: whose token keys and DKIM key sign the message (the workspace's own, or
        `mailer check`'s, which has no DKIM key and whose links are never sent)."""
        self.workspace = workspace
        self.renderer = renderer or workspace.renderer
        settings = workspace.settings
        self.environment = template_environment(settings.path(settings.templates_dir))
        self.environment.globals["default_locale"] = settings.default_locale

    @cached_property
    def limits(self) -> SharedLimits:
        """Opened at the first send: writing a message (for `mailer check`) needs no database."""
        return SharedLimits(self.workspace.engine)

    def due(self, subscriber: Subscriber, list_name: str, now: datetime) -> bool:
        """Whether to send now; marks it sent (a failed send is unmarked). One round trip."""
        bucket = _resend_bucket(subscriber.contact_id, list_name)
        return self.limits.take({bucket: (RESEND, 1)}, now.timestamp())[bucket].granted == 1

    def message(self, subscriber: Subscriber, lead: Lead, now: datetime) -> RenderedMessage:
        settings, keys = self.workspace.settings, self.renderer.keys
        list_name = lead.list_name
        sender, title = settings.sender, settings.lists[list_name].title
        expires = int((now + CONFIRM_VALID).timestamp())
        link = ConfirmLink(subscriber.contact_id, list_name, expires, subscriber.basis,
                           int(now.timestamp()), lead.consent_text_version,
                           lead.form_id or "")  # fmt: skip
        token = sign(keys, "confirm", *link.fields())
        context = {
            # Only the address: names typed into a form are a stranger's words until the
            # mailbox confirms, and this mail goes out under the brand's signature.
            "contact": Namespace("contact", {"email": subscriber.email}),
            "list": Namespace("list", {"name": list_name, "title": title}),
            "confirm_url": f"{settings.tracking.base_url}/confirm/{token}",
            "valid_days": CONFIRM_VALID.days,
            "sender": Namespace("sender", {"name": sender.name, "email": sender.email,
                                           "postal_address": sender.postal_address}),
        }  # fmt: skip
        html = self.environment.get_template(f"{CONFIRM_TEMPLATE}.html").render(context)
        try:
            text = self.environment.get_template(f"{CONFIRM_TEMPLATE}.txt").render(context)
        except TemplateNotFound:  # no .txt: the text part is made from the HTML
            text = str(get_text(html, _TEXT_CONFIG)).strip() + "\n"
        # The sender's postal address is in every message, even from a template that forgot it.
        footer = f"{sender.name}, {sender.postal_address}"
        if str(markup_escape(sender.postal_address)) not in html:
            html += f"\n<p>{markup_escape(footer)}</p>\n"
        if sender.postal_address not in text:
            text += f"\n--\n{footer}\n"
        subject = header_text(f"Please confirm your subscription to {title}")
        message_id = f"<confirm.{secrets.token_hex(12)}@{sender.domain}>"
        headers = [
            ("From", mailbox(header_text(sender.name), sender.email)),
            ("To", mailbox(None, subscriber.email)),
            ("Subject", unstructured(subject)),
            ("Date", format_datetime(now)),
            ("Message-ID", message_id),
            *([("Reply-To", mailbox(None, sender.reply_to))] if sender.reply_to else []),
        ]
        data = alternative(headers, text, html, boundary=f"=_{secrets.token_hex(12)}")
        dkim_key = self.renderer.dkim_key
        if dkim_key is not None:
            data = dkim_sign(data, dkim_key, now)
        key = f"confirm-{subscriber.contact_id}"  # not an outbox key: bounce handling skips it
        bounce_domain = sender.envelope_domain
        recipient = wire_address(subscriber.email)
        return RenderedMessage(key, message_id, f"bounces+{sign(keys, 'bounce', key)}@"
                               f"{bounce_domain}", recipient, not recipient.isascii(), subject,
                               html, text, [], data)  # fmt: skip

    async def send(self, subscriber: Subscriber, lead: Lead, now: datetime) -> bool:
        """Render and send; whether the relay took it. A failure is logged (the person may use
        the form again)."""
        list_name = lead.list_name
        where = {"contact_id": subscriber.contact_id, "list": list_name}
        try:
            outgoing = wire_form(self.message(subscriber, lead, now))
            relay, reply = await send_one(self.workspace.engine, self.workspace.settings,
                                          outgoing.envelope_from, outgoing.recipient,
                                          outgoing.wire, outgoing.smtputf8, now)  # fmt: skip
        except Exception:
            logger.exception("confirmation email not sent", extra=where)
            await self._unmark(subscriber.contact_id, list_name)
            return False
        if reply.code != 250:
            logger.warning("confirmation email refused",
                           extra={**where, "reply": str(reply), "relay": relay})  # fmt: skip
            await self._unmark(subscriber.contact_id, list_name)
            return False
        return True

    async def _unmark(self, contact_id: int, list_name: str) -> None:
        """The email did not go: the person may ask again at once."""
        try:
            await asyncio.to_thread(self.limits.refill, _resend_bucket(contact_id, list_name))
        except Exception:  # the database too: the next request waits RESEND_AFTER
            logger.exception("confirmation email not unmarked",
                             extra={"contact_id": contact_id, "list": list_name})  # fmt: skip


def _resend_bucket(contact_id: int, list_name: str) -> str:
    return f"confirm:{contact_id}:{list_name}"[:200]
