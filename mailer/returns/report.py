"""One returned message, classified: the shared shape between reading (DSN, ARF, mailboxes,
the inbound listener) and acting (suppressions, ledger entries, circuit breakers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Classification = Literal["hard", "soft", "delayed", "complaint", "not_bounce", "unparseable"]
CLASSIFICATIONS: tuple[Classification, ...] = (
    "hard", "soft", "delayed", "complaint", "not_bounce", "unparseable",
)  # fmt: skip


@dataclass(frozen=True)
class Returned:
    """What a returned message says. `recipient` is the failed or complaining address in lower
    case; `status_code` the RFC 3463 enhanced code ("5.1.1"); `verp_token` the token of our
    bounces+TOKEN@ address wherever it appears; `original_message_id` our Message-ID without
    <>; `feedback_type` the ARF Feedback-Type ("abuse"); `why` one line saying what decided
    the classification (a Diagnostic-Code, "Auto-Submitted: auto-replied", ...)."""

    classification: Classification
    recipient: str | None = None
    status_code: str | None = None
    verp_token: str | None = None
    original_message_id: str | None = None
    feedback_type: str | None = None
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
