"""Amazon SES through SNS: `POST /webhooks/ses`. Each SNS message is verified against the
signing certificate configured locally (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA over
the canonical string SNS documents); the SigningCertURL in the message is never fetched, so a
forger cannot name his own certificate. A SubscriptionConfirmation is logged for the operator,
or confirmed when settings allow and its SubscribeURL is an https amazonaws.com address.

SES's notification (the SNS Message) says `notificationType` (or `eventType` when published
through a configuration set): a Bounce (bounceType Permanent: hard; Transient or Undetermined:
soft) with its bouncedRecipients, or a Complaint with its complainedRecipients."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.config import Settings
from mailer.returns.classify import VERP
from mailer.returns.report import Returned
from mailer.returns.webhooks.receiving import (
    Call,
    ProviderEvent,
    json_body,
    provider_key,
    refuse_stale,
)
from mailer.tracking.website import Refusal

# The keys each type signs, in this order (SNS "Verifying the signatures of Amazon SNS messages").
SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
}  # fmt: skip
SIGNED["UnsubscribeConfirmation"] = SIGNED["SubscriptionConfirmation"]
DIGESTS = {"1": hashes.SHA1, "2": hashes.SHA256}


def verified_message(settings: Settings, body: bytes, now: datetime) -> dict[str, str]:
    """The SNS message, once its signature, topic and age are checked (Refusal otherwise)."""
    hook = settings.webhooks.ses
    pem = provider_key(settings, hook.certificate, hook.certificate_file,
                       "MAILER_WEBHOOKS__SES__CERTIFICATE")  # fmt: skip
    message = json_body(body)
    if not isinstance(message, dict) or message.get("Type") not in SIGNED:
        raise Refusal(400, "not an SNS message (Type Notification or SubscriptionConfirmation)")
    if not all(isinstance(value, str) for value in message.values()):
        raise Refusal(400, "an SNS message holds only strings")
    _check_signature(pem, message)
    if hook.topic_arn is not None and message.get("TopicArn") != hook.topic_arn:
        raise Refusal(403, f"not the topic configured ({hook.topic_arn})")
    try:
        sent_at = datetime.fromisoformat(message["Timestamp"])
    except (KeyError, ValueError):
        raise Refusal(400, "the SNS message has no valid Timestamp") from None
    refuse_stale(sent_at, now, settings.webhooks.max_age)
    return message


def _check_signature(pem: str, message: Mapping[str, str]) -> None:
    digest = DIGESTS.get(message.get("SignatureVersion", ""))
    if digest is None:
        raise Refusal(403, "SignatureVersion must be 1 or 2")
    signed = "".join(f"{key}\n{message[key]}\n" for key in SIGNED[message["Type"]]
                     if key in message)  # fmt: skip
    try:
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        signature = base64.b64decode(message.get("Signature", ""), validate=True)
    except binascii.Error:
        raise Refusal(403, "the signature is not base64") from None
    except ValueError:
        raise Refusal(503, "the configured SNS certificate is not a PEM certificate") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refusal(503, "the configured SNS certificate has no RSA key")
    try:
        key.verify(signature, signed.encode(), padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise Refusal(403, "the SNS signature does not verify") from None


def may_confirm(url: str) -> bool:
    """Only an https address of AWS is visited: a signed message is ours, but not its URL's
    target unless it is Amazon's."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and host.endswith(".amazonaws.com")


def notification_call(message: Mapping[str, str]) -> Call:
    """The bounces and complaints of one SES notification."""
    notice = json_body(message.get("Message", "").encode())
    if not isinstance(notice, dict):
        raise Refusal(400, "the SNS Message is not an SES notification")
    kind = notice.get("notificationType") or notice.get("eventType")
    mail = _table(notice, "mail")
    base = {"verp_token": _verp(mail), "original_message_id": _message_id(mail)}
    events: list[ProviderEvent] = []
    if kind == "Bounce":
        bounce = _table(notice, "bounce")
        permanent = bounce.get("bounceType") == "Permanent"
        for failed in _list(bounce, "bouncedRecipients"):
            recipient = _address(failed.get("emailAddress"))
            why = str(failed.get("diagnosticCode") or bounce.get("bounceSubType") or "")
            returned = Returned("hard" if permanent else "soft", recipient,
                                _text(failed.get("status")), why=why[:500], **base)  # fmt: skip
            events.append(ProviderEvent(returned, f"{message['MessageId']}:{recipient}"))
    elif kind == "Complaint":
        complaint = _table(notice, "complaint")
        said = {"user_agent": _text(complaint.get("userAgent")),
                "reporter": _text(complaint.get("feedbackId"))}  # fmt: skip
        for person in _list(complaint, "complainedRecipients"):
            recipient = _address(person.get("emailAddress"))
            returned = Returned(
                "complaint",
                recipient,
                feedback_type=_text(complaint.get("complaintFeedbackType")) or "abuse",
                why="SES complaint",
                **base,
            )
            events.append(ProviderEvent(returned, f"{message['MessageId']}:{recipient}", said))
    return Call("ses", message["MessageId"], events, ignored=0 if events else 1)


def _table(notice: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = notice.get(key)
    return value if isinstance(value, dict) else {}


def _list(table: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = table.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _address(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _verp(mail: Mapping[str, Any]) -> str | None:
    """Our bounces+TOKEN@ envelope sender, when SES kept it (mail.source)."""
    found = VERP.search(str(mail.get("source", "")).encode("utf-8", "replace"))
    return found.group(1).decode() if found else None


def _message_id(mail: Mapping[str, Any]) -> str | None:
    """Our Message-ID from the original headers (mail.messageId is SES's own id)."""
    for header in _list(mail, "headers"):
        if str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value", "")).strip().strip("<>") or None
    common = _table(mail, "commonHeaders").get("messageId")
    return common.strip().strip("<>") or None if isinstance(common, str) else None
