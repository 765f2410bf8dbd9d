"""Mailgun: `POST /webhooks/mailgun`, one event a call (JSON `{"signature", "event-data"}`).
The signature is HMAC-SHA256 of timestamp + token with the webhook signing key; it does not
cover the event, so the token is remembered (a captured signature cannot carry another event)
and a timestamp older than [webhooks] max_age is refused.

`failed` with severity permanent is a hard bounce (soft when Mailgun gave up retrying, reason
"old"); severity temporary means Mailgun is still retrying: a delay, no effect; `complained`
is a complaint."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

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


def mailgun_call(settings: Settings, body: bytes, now: datetime) -> Call:
    hook = settings.webhooks.mailgun
    key = provider_key(settings, hook.signing_key, hook.signing_key_file,
                       "MAILER_WEBHOOKS__MAILGUN__SIGNING_KEY")  # fmt: skip
    document = json_body(body)
    signature = document.get("signature") if isinstance(document, dict) else None
    if not isinstance(signature, dict):
        raise Refusal(400, "not a Mailgun webhook (no signature object)")
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not token or not hmac.compare_digest(str(signature.get("signature", "")), expected):
        raise Refusal(403, "the Mailgun signature does not verify")
    try:
        sent_at = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise Refusal(400, "the signature's timestamp is not a number") from None
    refuse_stale(sent_at, now, settings.webhooks.max_age)
    event = document.get("event-data")
    event = event if isinstance(event, dict) else {}
    returned = _returned(event)
    if returned is None:
        return Call("mailgun", token, [], ignored=1)
    event_id = str(event.get("id") or token)
    return Call("mailgun", token, [ProviderEvent(returned, event_id)])


def _returned(event: dict[str, Any]) -> Returned | None:
    recipient = event.get("recipient")
    recipient = recipient.strip().lower() if isinstance(recipient, str) else None
    headers = _table(_table(event, "message"), "headers")
    message_id = str(headers.get("message-id") or "").strip().strip("<>") or None
    kind = event.get("event")
    if kind == "complained":
        return Returned("complaint", recipient, original_message_id=message_id,
                        feedback_type="abuse", why="Mailgun complaint")  # fmt: skip
    if kind != "failed":
        return None
    status = _table(event, "delivery-status")
    why = str(status.get("message") or status.get("description") or event.get("reason") or "")
    code = status.get("enhanced-code") or None
    severity, reason = event.get("severity"), event.get("reason")
    classification: Classification = ("delayed" if severity == "temporary"
                      else "soft" if reason == "old" else "hard")  # fmt: skip
    return Returned(classification, recipient, str(code) if code else None,
                    original_message_id=message_id, why=why[:500])  # fmt: skip


def _table(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}
