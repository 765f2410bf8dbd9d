"""What a returned message says: a bounce (hard, soft, delayed), a complaint, or neither.

Standards first: RFC 3464 delivery status notifications (`message/delivery-status`, with RFC
3463 codes) and RFC 5965 abuse reports (`message/feedback-report`). Then RFC 3834 auto-replies,
then GNU Mailman's detectors (flufl.bounce) for the non-standard bounces of qmail, Lotus,
Yahoo and friends, and only then a heuristic of our own. Pure: bytes in, a Returned out, never
an exception (what cannot be read is `unparseable`).
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from mailer.render.mime import decoded_words
from mailer.returns.report import Classification, Returned

# RFC 3463: class.subject.detail; the class says permanent (5), transient (4) or success (2).
STATUS_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
SMTP_REPLY = re.compile(r"(?<![\d.])([45])\d\d(?:[ -]|$)", re.MULTILINE)
# Our envelope sender: bounces+TOKEN@bounce-domain (render/message.py); the token's shape is
# tokens._SHAPE's.
VERP = re.compile(rb"bounces\+([1-9][0-9]{0,5}\.[A-Za-z0-9_-]{0,400}\.[A-Za-z0-9_-]{22})@", re.I)
MESSAGE_ID_LINE = re.compile(rb"^Message-ID:[ \t]*<([^<>\s]{1,250})>", re.I | re.M)
ADDRESS = re.compile(r"[^\s<>@\"'();:,]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Where the verp token may be when the returned message is not attached: the headers the
# receiving side adds for the envelope recipient.
# Why a message is `not_bounce` when it is no report, no bounce and no auto-reply: a person
# wrote it (returns/replies.py counts only these as replies).
FROM_A_PERSON = "no delivery report, feedback report or bounce format"
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "To", "Envelope-To", "Return-Path")
BOUNCE_SENDERS = ("mailer-daemon@", "postmaster@", "mail-daemon@", "mailerdaemon@")
BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|has failed|notification)|returned mail|failure notice"
    r"|mail delivery (failed|system|subsystem)|not delivered|delivery problem",
    re.I,
)
AUTO_REPLY_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response"
    r"|on vacation|away from (my|the) (desk|office)|abwesenheit|absence",
    re.I,
)
MAILBOX_FULL = re.compile(r"mailbox (is )?full|over ?quota|quota exceeded|insufficient storage")
NO_SUCH_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|doesn't exist"
    r"|recipient ?not ?found|address rejected|not listed in|invalid recipient|unknown recipient"
    r"|mailbox unavailable|no mailbox|account (is )?(disabled|inactive)|doesn't have a",
    re.I,
)
STILL_TRYING = re.compile(
    r"will (continue|keep) (to )?(try|retry)|not yet been delivered|delayed|still trying"
    r"|warning: message",
    re.I,
)
# RFC 6590 redaction and what feedback loops print instead of an address.
REDACTED = re.compile(r"redacted|^x+@|^\*+@|^\[.*\]@", re.I)


def classify(raw: bytes) -> Returned:
    """What `raw` (one whole message, headers and body) says; never raises."""
    try:
        return _classify(raw)
    except Exception as error:  # a parser's corner we did not foresee: keep it, say why
        return Returned("unparseable", why=f"could not read: {type(error).__name__}: {error}")


def _classify(raw: bytes) -> Returned:
    message = email.message_from_bytes(raw, policy=compat32)
    if not message.keys():
        return Returned("unparseable", why="no mail headers")
    token = verp_token(message, raw)
    message_id = original_message_id(message, raw)
    report = _feedback_report(message)
    if report is not None:
        return _complaint(message, report, token, message_id)
    statuses = _delivery_status(message)
    if statuses:
        return _from_dsn(statuses, token, message_id)
    if _is_report(message) and message.defects:
        return Returned("unparseable", verp_token=token, original_message_id=message_id,
                        why="a delivery report whose MIME is broken or cut short")  # fmt: skip
    auto = _auto_reply_header(message)
    if auto and not _from_mailer_daemon(message):
        return Returned("not_bounce", verp_token=token, original_message_id=message_id, why=auto)
    found = _from_detectors(message, token, message_id)
    if found is not None:
        return found
    subject = _header(message, "Subject")
    if AUTO_REPLY_SUBJECT.search(subject) and not _from_mailer_daemon(message):
        return Returned("not_bounce", verp_token=token, original_message_id=message_id,
                        why=f"auto-reply subject: {subject[:80]}")  # fmt: skip
    return _heuristic(message, token, message_id)


# -- where our message is named -----------------------------------------------------------


def verp_token(message: Message, raw: bytes) -> str | None:
    """The token of our bounces+TOKEN@ address: in the envelope headers the receiving side
    added, else anywhere in the returned text (the attached original's Return-Path)."""
    for name in ENVELOPE_HEADERS:
        for value in message.get_all(name) or []:
            found = VERP.search(str(value).encode("utf-8", "replace"))
            if found:
                return found.group(1).decode("ascii")
    found = VERP.search(raw)
    return found.group(1).decode("ascii") if found else None


def original_message_id(message: Message, raw: bytes) -> str | None:
    """The Message-ID of the message that was returned (not of the report itself), without
    <>: from an attached message/rfc822 or text/rfc822-headers part, else from a copy of the
    headers quoted in the body."""
    for part in message.walk():
        headers = _returned_headers(part)
        if headers is not None:
            value = _header(headers, "Message-ID").strip()
            if value:
                return value.strip("<>").strip() or None
    own = _header(message, "Message-ID").strip().strip("<>")
    body = raw.partition(b"\r\n\r\n" if b"\r\n\r\n" in raw[:8192] else b"\n\n")[2]
    for found in MESSAGE_ID_LINE.finditer(body):
        value = found.group(1).decode("ascii", "replace")
        if value != own:
            return value
    return None


def _returned_headers(part: Message) -> Message | None:
    """The headers of the returned original, if `part` holds them."""
    kind = part.get_content_type()
    if kind == "message/rfc822":
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    if kind == "text/rfc822-headers":
        text = _text(part)
        return email.message_from_string(text.lstrip(), policy=compat32) if text else None
    return None


# -- RFC 5965 abuse reports ------------------------------------------------------------------


def _feedback_report(message: Message) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            return _fields(part)
    return None


def _complaint(message: Message, report: Message, token: str | None,
               message_id: str | None) -> Returned:  # fmt: skip
    feedback_type = _header(report, "Feedback-Type").strip().lower() or "abuse"
    candidates = [_header(report, "Original-Rcpt-To"), _header(message, "X-HmXmrOriginalRecipient")]
    for part in message.walk():
        headers = _returned_headers(part)
        if headers is not None:
            candidates.append(_header(headers, "To"))
    recipient = next((a for a in map(_address, candidates) if a and not REDACTED.search(a)), None)
    why = f"Feedback-Type: {feedback_type}" + ("" if recipient else " (recipient redacted)")
    return Returned("complaint", recipient, None, token, message_id, feedback_type, why)


# -- RFC 3464 delivery status notifications --------------------------------------------------


def _delivery_status(message: Message) -> list[Message]:
    """The per-recipient blocks of every message/delivery-status part (the first block of a
    part is per-message, RFC 3464 section 2.1)."""
    blocks: list[Message] = []
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            parsed = _blocks(part)
            blocks.extend(block for block in parsed if block.get("Action") or block.get("Status"))
    return blocks


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = _text(part).replace("\r\n", "\n")
    return [email.message_from_string(block.strip() + "\n", policy=compat32)
            for block in re.split(r"\n\s*\n", text) if block.strip()]  # fmt: skip


def _from_dsn(blocks: list[Message], token: str | None, message_id: str | None) -> Returned:
    # A report may name several recipients: the one that failed matters most, then delayed.
    order = {"failed": 0, "delayed": 1}
    block = min(blocks, key=lambda b: order.get(_header(b, "Action").strip().lower(), 2))
    action = _header(block, "Action").strip().lower()
    recipient = _address(_header(block, "Final-Recipient") or _header(block, "Original-Recipient"))
    diagnostic = " ".join(_header(block, "Diagnostic-Code").split())
    status = _status_code(_header(block, "Status")) or _status_code(diagnostic)
    why = f"Action: {action or '?'}; Status: {status or '?'}" + (
        f"; {diagnostic[:160]}" if diagnostic else ""
    )
    if action in ("delivered", "relayed", "expanded"):
        return Returned("not_bounce", recipient, status, token, message_id, None, why)
    if action == "delayed":
        return Returned("delayed", recipient, status, token, message_id, None, why)
    kind = _severity(status, diagnostic)
    if kind is None and action != "failed":
        return Returned("not_bounce", recipient, status, token, message_id, None, why)
    return Returned(kind or "hard", recipient, status, token, message_id, None, why)


def _severity(status: str | None, text: str) -> Classification | None:
    """Hard or soft from an RFC 3463 code (or the SMTP reply) and the text beside it.

    5.2.2 (mailbox full) and over-quota texts are soft: the address exists and may empty.
    5.7.x (policy, spam, authentication) is soft unless the text says the mailbox does not
    exist: a block of our message or our server says nothing about the address, and repeated
    blocks still suppress through the soft-bounce rule."""
    if status is None:
        reply = SMTP_REPLY.search(text)
        if reply is None:
            return None
        return "soft" if reply.group(1) == "4" or MAILBOX_FULL.search(text.lower()) else "hard"
    if status.startswith("2."):
        return None
    if status.startswith("4.") or status == "5.2.2" or MAILBOX_FULL.search(text.lower()):
        return "soft"
    if status.startswith("5.7.") and not NO_SUCH_USER.search(text):
        return "soft"
    return "hard"


# -- auto-replies (RFC 3834) -----------------------------------------------------------------


def _auto_reply_header(message: Message) -> str | None:
    auto = _header(message, "Auto-Submitted").strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if message.get(name) is not None:
            return f"{name}: {_header(message, name).strip()}"
    precedence = _header(message, "Precedence").strip().lower()
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    return None


def _from_mailer_daemon(message: Message) -> bool:
    sender = parseaddr(_header(message, "From"))[1].lower()
    return sender.startswith(BOUNCE_SENDERS) or bool(
        BOUNCE_SUBJECT.search(_header(message, "Subject"))
    )


# -- non-standard bounces --------------------------------------------------------------------


def _from_detectors(message: Message, token: str | None, message_id: str | None) -> Returned | None:
    """GNU Mailman's detectors: they know qmail's QSBMF, Lotus Notes, Yahoo, Exim's plain
    bounces and dozens of odd MTAs."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector choking on odd input is no verdict
        return None
    addresses = sorted(permanent) or sorted(temporary)
    if not addresses:
        return None
    recipient = _address(addresses[0].decode("ascii", "replace"))
    text = _body_text(message)
    status = _status_code(text)
    if permanent:
        kind = _severity(status, text) or "hard"
        if kind == "hard" and MAILBOX_FULL.search(text.lower()):
            kind = "soft"
        why = "non-standard bounce (flufl.bounce: permanent failure)"
    else:
        kind = "delayed" if STILL_TRYING.search(text) else "soft"
        why = "non-standard bounce (flufl.bounce: temporary failure)"
    return Returned(kind, recipient, status, token, message_id, None, why)


def _heuristic(message: Message, token: str | None, message_id: str | None) -> Returned:
    """A message from a mailer daemon that no detector knew: its first SMTP error and
    address. Anything else that came back to us is not a bounce."""
    if not _from_mailer_daemon(message):
        return Returned("not_bounce", verp_token=token, original_message_id=message_id,
                        why=FROM_A_PERSON)  # fmt: skip
    text = _body_text(message)
    status = _status_code(text)
    kind = _severity(status, text)
    addresses = [a.lower() for a in ADDRESS.findall(text) if not VERP.search(a.encode())]
    ours = {parseaddr(_header(message, "From"))[1].lower()}
    recipient = next((a for a in addresses if a not in ours and not a.startswith(BOUNCE_SENDERS)),
                     None)  # fmt: skip
    if kind is None or recipient is None:
        return Returned("unparseable", recipient, status, token, message_id,
                        why="looks like a bounce but names no failed address or error")  # fmt: skip
    return Returned(kind, recipient, status, token, message_id, None,
                    "heuristic: a mailer daemon's message with an SMTP error")  # fmt: skip


# -- small readers ---------------------------------------------------------------------------


def _is_report(message: Message) -> bool:
    return message.get_content_type() == "multipart/report"


def _fields(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return email.message_from_string(_text(part).lstrip(), policy=compat32)


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _body_text(message: Message) -> str:
    return "\n".join(_text(part) for part in _text_parts(message))


def _text_parts(message: Message) -> Iterator[Message]:
    for part in message.walk():
        if part.get_content_maintype() == "text" and part.get_content_type() != "text/html":
            yield part


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    text = str(value)
    decoded = decoded_words(text)  # RFC 2047 words; a broken one reads as written
    return text if decoded is None else decoded


def _address(value: str) -> str | None:
    """The address in a header value: `rfc822; Ada@Example.com`, `<ada@example.com>`, ..."""
    value = value.partition(";")[2] if ";" in value.split("@")[0] else value
    for _name, address in getaddresses([value]):
        if "@" in address:
            return address.strip().lower()
    found = ADDRESS.search(value)
    return found.group(0).lower() if found else None


def _status_code(text: str) -> str | None:
    found = STATUS_CODE.search(text)
    return ".".join(found.groups()) if found else None
