"""What every provider webhook shares: its key read from the environment or a file, the bound
on a signed call's age, and acting on a verified call in one transaction that also remembers
it, so the same call again (a replay) is refused and changes nothing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from mailer.config import Settings
from mailer.returns.effects import apply_returned
from mailer.returns.matching import match
from mailer.returns.report import Returned
from mailer.store.tables import webhook_deliveries
from mailer.tracking.website import Refusal
from mailer.workspace import Workspace

MAX_BODY = 5 * 1024 * 1024  # SendGrid posts events in batches


@dataclass(frozen=True)
class ProviderEvent:
    """One bounce or complaint a provider reported: the return, the provider's id for it
    (what makes it the same event), and what else it said, for the ledger's evidence."""

    returned: Returned
    event_id: str
    said: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """A verified webhook call: what names it (an SNS MessageId, a Mailgun token, ...), its
    bounces and complaints, and how many other events it carried (deliveries, opens)."""

    provider: str
    delivery: str
    events: list[ProviderEvent]
    ignored: int = 0


def provider_key(settings: Settings, value: SecretStr | None, file: Path | None,
                 variable: str) -> str:  # fmt: skip
    """A provider's secret, certificate or public key: from the environment, or the file
    settings name; a 503 when neither is set (the route is on but cannot verify anything)."""
    if value is not None and value.get_secret_value().strip():
        return value.get_secret_value().strip()
    if file is not None:
        try:
            return settings.path(file).read_text().strip()
        except (OSError, UnicodeDecodeError):
            raise Refusal(503, f"cannot read {settings.path(file)}: set {variable}") from None
    raise Refusal(503, f"this webhook has no key: set {variable} or its _file setting")


def refuse_stale(sent_at: datetime, now: datetime, max_age: timedelta) -> None:
    """A signed call older than max_age (or as far ahead) is a replay, or a clock to fix."""
    if abs(now - sent_at) > max_age:
        raise Refusal(409, f"the call was signed at {sent_at:%Y-%m-%dT%H:%M:%SZ}, more than "
                           f"{max_age} from now: a replay is refused")  # fmt: skip


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as error:
        raise Refusal(400, f"body is not JSON: {error}") from None


def act_on(workspace: Workspace, call: Call, now: datetime) -> dict[str, Any]:
    """Remember the call and act on each of its events, in one transaction: a call already
    remembered is a replay (409, nothing done); a failure remembers nothing, so the
    provider's retry is acted on."""
    delivery = hashlib.sha256(call.delivery.encode()).hexdigest()
    actions = []
    try:
        with workspace.engine.begin() as connection:
            connection.execute(insert(webhook_deliveries).values(
                provider=call.provider, delivery=delivery, received_at=now))  # fmt: skip
            for event in call.events:
                outbox_id = match(connection, workspace.renderer.keys, event.returned, now)
                digest = hashlib.sha256(f"{call.provider}:{event.event_id}".encode()).hexdigest()
                evidence = {**event.said, "digest": digest, "source": f"webhook {call.provider}",
                            "event": event.event_id}  # fmt: skip
                actions.append(apply_returned(connection, workspace, event.returned, outbox_id,
                                              evidence, now))  # fmt: skip
    except IntegrityError:
        raise Refusal(409, "this call was received before: a replay is refused") from None
    return {"events": len(call.events), "ignored": call.ignored, "actions": actions}
