"""Postmark: `POST /webhooks/postmark`, its bounce and spam complaint webhooks, one record a
call, behind basic auth (the credentials are part of the webhook URL set in Postmark). Postmark
signs nothing, so a replay is recognised by the record's ID alone."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

from mailer.config import Settings
from mailer.returns.report import Classification, Returned
from mailer.returns.webhooks.receiving import Call, ProviderEvent, json_body, provider_key
from mailer.tracking.website import Refusal

# Postmark's bounce Type -> ours; other types (AutoResponder, Subscribe, ...) change nothing.
TYPES: dict[str, Classification] = {
    "HardBounce": "hard", "BadEmailAddress": "hard",
    "SoftBounce": "soft", "Transient": "soft", "DnsError": "soft", "Blocked": "soft",
    "SpamComplaint": "complaint",
}  # fmt: skip


def authorise(settings: Settings, headers: Mapping[str, str]) -> None:
    hook = settings.webhooks.postmark
    password = provider_key(settings, hook.password, hook.password_file,
                            "MAILER_WEBHOOKS__POSTMARK__PASSWORD")  # fmt: skip
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        given = b""
    expected = f"{hook.username}:{password}".encode()
    if scheme.lower() != "basic" or not hmac.compare_digest(given, expected):
        sent = "authorization" in headers
        raise Refusal(401, "wrong credentials" if sent else "no credentials: send basic auth",
                      headers={"WWW-Authenticate": 'Basic realm="webhooks"'})  # fmt: skip


def postmark_call(settings: Settings, headers: Mapping[str, str], body: bytes) -> Call:
    authorise(settings, headers)
    record = json_body(body)
    if not isinstance(record, dict) or record.get("ID") in (None, ""):
        raise Refusal(400, "not a Postmark bounce or spam complaint record (no ID)")
    record_id = f"{record.get('RecordType')}:{record['ID']}"
    classification = TYPES.get(str(record.get("Type")))
    if record.get("RecordType") not in ("Bounce", "SpamComplaint") or classification is None:
        return Call("postmark", record_id, [], ignored=1)
    recipient = _address(record.get("Email"))
    why = " ".join(str(record.get(key) or "") for key in ("Description", "Details")).strip()
    returned = Returned(classification, recipient, feedback_type="abuse"
                        if classification == "complaint" else None, why=why[:500])  # fmt: skip
    said: dict[str, Any] = {"postmark_message": record.get("MessageID")}
    return Call("postmark", record_id, [ProviderEvent(returned, record_id, said)])


def _address(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None
