"""SendGrid: `POST /webhooks/sendgrid`, the signed event webhook. SendGrid signs timestamp +
body with ECDSA P-256 (SHA-256), in X-Twilio-Email-Event-Webhook-Signature and -Timestamp;
the verification key is the one SendGrid shows (base64 DER, or PEM). A call older than
[webhooks] max_age is refused; a newer one is remembered by its signature.

The body is a list of events: `bounce` (type "bounce": hard; "blocked": soft) and `spamreport`
(a complaint) act; the rest (delivered, open, deferred, dropped, ...) are counted and ignored."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailer.config import Settings
from mailer.returns.report import Classification, Returned
from mailer.returns.webhooks.receiving import (
    Call,
    ProviderEvent,
    json_body,
    provider_key,
    refuse_stale,
)
from mailer.tracking.website import Refusal

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"


def sendgrid_call(settings: Settings, headers: Mapping[str, str], body: bytes,
                  now: datetime) -> Call:  # fmt: skip
    hook = settings.webhooks.sendgrid
    key = _public_key(provider_key(settings, hook.public_key, hook.public_key_file,
                                   "MAILER_WEBHOOKS__SENDGRID__PUBLIC_KEY"))  # fmt: skip
    timestamp, signature = headers.get(TIMESTAMP, ""), headers.get(SIGNATURE, "")
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body,
                   ec.ECDSA(hashes.SHA256()))  # fmt: skip
    except (binascii.Error, InvalidSignature):
        raise Refusal(403, "the SendGrid signature does not verify") from None
    try:
        sent_at = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise Refusal(400, "the signature's timestamp is not a number") from None
    refuse_stale(sent_at, now, settings.webhooks.max_age)
    events = json_body(body)
    if not isinstance(events, list):
        raise Refusal(400, "the SendGrid event webhook posts a list of events")
    acted = [found for item in events if isinstance(item, dict)
             if (found := _event(item)) is not None]  # fmt: skip
    return Call("sendgrid", signature, acted, ignored=len(events) - len(acted))


def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise Refusal(503, "the configured SendGrid key is not a public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Refusal(503, "the configured SendGrid key is not an ECDSA key")
    return key


def _event(item: dict[str, Any]) -> ProviderEvent | None:
    kind, bounce_type = item.get("event"), item.get("type")
    classification: Classification
    if kind == "bounce":
        classification = "soft" if bounce_type == "blocked" else "hard"
    elif kind == "spamreport":
        classification = "complaint"
    else:
        return None
    recipient = item.get("email")
    recipient = recipient.strip().lower() if isinstance(recipient, str) else None
    message_id = str(item.get("smtp-id") or "").strip().strip("<>") or None
    status = item.get("status")
    returned = Returned(
        classification, recipient, status if isinstance(status, str) and status else None,
        original_message_id=message_id, why=str(item.get("reason") or "")[:500],
        feedback_type="abuse" if classification == "complaint" else None,
    )  # fmt: skip
    event_id = str(item.get("sg_event_id") or f"{item.get('sg_message_id')}:{kind}:{recipient}")
    return ProviderEvent(returned, event_id)
