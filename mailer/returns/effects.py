"""What a returned message changes: a hard bounce suppresses at once, soft bounces after N
within a window ([returns]), a complaint withdraws every list and suppresses, a mailto:
unsubscribe leaves that message's list as one-click does. Each change is a ledger entry whose
evidence names the report; each report is recorded once (returned_messages), so the same one
read twice changes nothing twice.

Only a return matched to a message we sent acts: a bounce naming an address we never mailed
(backscatter, or a forged report) must not suppress anyone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from mailer.config import WebhookEventType
from mailer.consent.evidence import SentMessage, complaint_evidence
from mailer.consent.evidence import evidence as change_evidence
from mailer.consent.ledger import canonical_evidence
from mailer.consent.person import withdraw
from mailer.consent.records import lock_ledger
from mailer.delivery.writer import suppress_hard_bounce
from mailer.durations import format_duration
from mailer.returns.breakers import check_breakers
from mailer.returns.refusals import recipient_hash
from mailer.returns.report import Returned
from mailer.store.tables import contacts, outbox, returned_messages
from mailer.webhooks_out import WebhookEvent, enqueue
from mailer.workspace import Workspace

UNMATCHED = "none (no message matched)"
NO_EFFECT = {
    "delayed": "none (delay warning)",
    "not_bounce": "none (not a bounce)",
    "unparseable": "none (unparseable)",
}
# A bounce of a message older than [retention] returns_after: retention may have forgotten
# the report's digest, so reading it again would act twice; a real bounce comes within days.
# (A complaint or a mailto: unsubscribe that late still acts: stopping mail is always allowed.)
STALE_BOUNCE = "none (a bounce of a message sent before retention.returns_after)"
STALE = "stale"  # its returned_messages.classification
# The outgoing webhook event a return is (webhooks_out/).
WEBHOOK_TYPE: dict[str, WebhookEventType] = {"hard": "bounced", "soft": "bounced",
                                             "complaint": "complained"}  # fmt: skip
# Keys of evidence() itself: a caller's evidence may not overwrite them.
_OURS = ("at", "via", "message", "campaign", "step")


def report_digest(raw: bytes) -> str:
    """The digest a caller puts in `evidence["digest"]`: what makes a report the same report."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Matched:
    """The sent message a return is about."""

    outbox_id: int
    campaign: str
    step: str
    email: str | None  # None once the person was erased
    sent_at: datetime | None

    @property
    def sent(self) -> SentMessage:
        return SentMessage(self.outbox_id, self.campaign, self.step)


def apply_returned(
    connection: Connection,
    workspace: Workspace,
    returned: Returned,
    outbox_id: int | None,
    evidence: Mapping[str, Any],
    now: datetime,
) -> str:
    """Act on one classified return matched to `outbox_id` (None: matched nothing) and say
    what was done. `evidence`: what the caller knows of the report, kept with the ledger entry
    (`digest`: report_digest of the raw message, which makes it idempotent; `file`,
    `reporter`, `user_agent`, `source_ip` where known)."""
    lock_ledger(connection)  # a second reader of the same report waits, then finds it recorded
    digest = _digest(evidence, returned.as_dict() | {"outbox_id": outbox_id})
    if (done := _already(connection, digest)) is not None:
        return done
    message = _matched(connection, outbox_id)
    address = (message.email if message else None) or returned.recipient
    if message is None or address is None:
        unacted = UNMATCHED if message is None else "none (the person was erased)"
        action = NO_EFFECT.get(returned.classification, unacted)
    elif returned.classification in ("hard", "soft") and _past_retention(workspace, message, now):
        action = STALE_BOUNCE
    elif returned.classification == "hard":
        said = _evidence(returned, message, evidence, digest, now)
        detail = returned.why or returned.status_code
        appended = suppress_hard_bounce(connection, workspace, address, now, detail, said)
        action = "suppressed (hard bounce)" if appended else "none (already suppressed)"
    elif returned.classification == "soft":
        action = _soft(connection, workspace, returned, message, address, evidence, digest, now)
    elif returned.classification == "complaint":
        said = _evidence(returned, message, evidence, digest, now)
        appended = withdraw(connection, workspace.key, address, workspace.double_opt_in, now,
                            source="complaint", reason="complained", evidence=said)  # fmt: skip
        action = ("complaint: withdrawn from every list and suppressed" if appended
                  else "none (already suppressed)")  # fmt: skip
    else:
        action = NO_EFFECT[returned.classification]
    # A stale bounce is kept apart: the rates, breakers and soft-bounce counts never see it.
    classification = STALE if action == STALE_BOUNCE else returned.classification
    _record(connection, digest, now, classification, workspace, address, returned, message,
            action)  # fmt: skip
    if message is None or action == STALE_BOUNCE:
        return action
    if returned.classification in ("hard", "soft", "complaint"):
        kind = WEBHOOK_TYPE[returned.classification]
        enqueue(connection, workspace.settings, kind, [WebhookEvent(
            now, outbox_id=message.outbox_id, data=_webhook_data(returned, action))])  # fmt: skip
    if returned.classification in ("hard", "complaint"):
        check_breakers(connection, workspace.settings, message.campaign, now)
    return action


def apply_mailto_unsubscribe(
    connection: Connection,
    workspace: Workspace,
    outbox_id: int | None,
    evidence: Mapping[str, Any],
    now: datetime,
) -> str:
    """Mail to the `mailto:` address of List-Unsubscribe: the same as the one-click POST for
    that message (tracking/recipient.py): its campaign's list is withdrawn; a campaign no longer
    in settings, every list and the address suppressed."""
    lock_ledger(connection)
    digest = _digest(evidence, {"mailto": outbox_id})
    if (done := _already(connection, digest)) is not None:
        return done
    message = _matched(connection, outbox_id)
    if message is None or message.email is None:
        action = UNMATCHED if message is None else "none (the person was erased)"
    else:
        campaign = workspace.settings.campaigns.get(message.campaign)
        list_name = campaign.list_name if campaign else None
        said = _evidence(None, message, evidence, digest, now)
        appended = withdraw(connection, workspace.key, message.email, workspace.double_opt_in,
                            now, list_name=list_name, source="unsubscribe",
                            evidence=said)  # fmt: skip
        left = f"from {list_name}" if list_name else "from every list and suppressed"
        if appended:
            left_list = {"list": list_name, "via": "mailto"}
            enqueue(connection, workspace.settings, "unsubscribed",
                    [WebhookEvent(now, outbox_id=message.outbox_id, data=left_list)])  # fmt: skip
        action = f"unsubscribed {left}" if appended else f"none (already unsubscribed {left})"
    _record(connection, digest, now, "unsubscribe", workspace,
            message.email if message else None, None, message, action)  # fmt: skip
    return action


def _soft(
    connection: Connection,
    workspace: Workspace,
    returned: Returned,
    message: Matched,
    address: str,
    evidence: Mapping[str, Any],
    digest: str,
    now: datetime,
) -> str:
    """Counted with the soft bounces already on record for the address in the window; the
    Nth suppresses as a hard bounce would, its evidence naming the last report."""
    policy = workspace.settings.returns
    window = format_duration(policy.soft_window)
    earlier = connection.scalar(
        select(func.count()).select_from(returned_messages).where(
            returned_messages.c.recipient_hash == recipient_hash(workspace.key, address),
            returned_messages.c.classification == "soft",
            returned_messages.c.received_at > now - policy.soft_window,
        )
    )  # fmt: skip
    seen = int(earlier or 0) + 1
    if seen < policy.soft_bounces:
        return f"soft bounce {seen} of {policy.soft_bounces} within {window}"
    said = _evidence(returned, message, evidence, digest, now)
    detail = f"{seen} soft bounces within {window}; last: {returned.why or returned.status_code}"
    appended = suppress_hard_bounce(connection, workspace, address, now, detail, said)
    if not appended:
        return "none (already suppressed)"
    return f"suppressed ({seen} soft bounces within {window})"


def _past_retention(workspace: Workspace, message: Matched, now: datetime) -> bool:
    kept = workspace.settings.retention.returns_after
    return kept is not None and message.sent_at is not None and message.sent_at < now - kept


def _webhook_data(returned: Returned, action: str) -> dict[str, Any]:
    """What an outgoing "bounced" or "complained" event says of the report."""
    said = {"classification": returned.classification, "status_code": returned.status_code,
            "feedback_type": returned.feedback_type, "why": returned.why or None}  # fmt: skip
    return {key: value for key, value in said.items() if value is not None} | {"action": action}


def _digest(evidence: Mapping[str, Any], fallback: dict[str, Any]) -> str:
    """The report's digest; without one (a caller that has no raw message), one of what it
    says, which still makes the same call twice one row."""
    given = evidence.get("digest")
    if isinstance(given, str) and given:
        return given
    return hashlib.sha256(canonical_evidence(fallback).encode()).hexdigest()


def _already(connection: Connection, digest: str) -> str | None:
    done = connection.scalar(
        select(returned_messages.c.action).where(returned_messages.c.digest == digest)
    )
    return None if done is None else f"none (already processed: {done})"


def _matched(connection: Connection, outbox_id: int | None) -> Matched | None:
    if outbox_id is None:
        return None
    row = connection.execute(
        select(outbox.c.id, outbox.c.campaign, outbox.c.step, contacts.c.email, outbox.c.sent_at)
        .outerjoin(contacts, contacts.c.id == outbox.c.contact_id)
        .where(outbox.c.id == outbox_id)
    ).first()  # fmt: skip
    return None if row is None else Matched(row.id, row.campaign, row.step, row.email,
                                            row.sent_at)  # fmt: skip


def _evidence(returned: Returned | None, message: Matched, given: Mapping[str, Any],
              digest: str, now: datetime) -> str:  # fmt: skip
    """The ledger evidence: the message and campaign, the report (its digest, what it said)
    and what the caller knows of it; a complaint's reporter and agent as complaint_evidence
    keeps them."""
    extra = {key: str(value) for key, value in given.items()
             if key not in _OURS and value not in (None, "")}  # fmt: skip
    if returned is None:
        said = change_evidence(now, via="mailto", message=message.sent)
    elif returned.classification == "complaint":
        said = complaint_evidence(
            now, message.sent, feedback_type=returned.feedback_type or "abuse",
            reporter=extra.pop("reporter", None), user_agent=extra.pop("user_agent", None),
            ip=extra.pop("source_ip", None) or extra.pop("ip", None),
        )  # fmt: skip
    else:
        said = change_evidence(now, via="bounce", message=message.sent)
    report = {} if returned is None else {
        "classification": returned.classification, "status_code": returned.status_code,
        "why": returned.why,
    }  # fmt: skip
    data = extra | json.loads(said) | {k: v for k, v in report.items() if v} | {"digest": digest}
    return canonical_evidence(data)


def _record(connection: Connection, digest: str, now: datetime, classification: str,
            workspace: Workspace, address: str | None, returned: Returned | None,
            message: Matched | None, action: str) -> None:  # fmt: skip
    connection.execute(insert(returned_messages).values(
        digest=digest, received_at=now, classification=classification,
        recipient_hash=recipient_hash(workspace.key, address) if address else None,
        status_code=returned.status_code if returned else None,
        feedback_type=returned.feedback_type if returned else None,
        outbox_id=message.outbox_id if message else None,
        campaign=message.campaign if message else None, action=action,
    ))  # fmt: skip
