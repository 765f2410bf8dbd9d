"""The evidence a change of consent carries: what a recipient's request or an operator's command
says about who asked, when, through which message.

Kept to what an auditor needs and no more (GDPR Art. 5(1)(c)): the IP address is cut to its
network (/24 for IPv4, /48 for IPv6), the user agent to 300 characters. The result is the
canonical JSON the ledger stores apart from its chain (ledger.canonical_evidence).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import HTTPConnection

from mailer.consent.ledger import canonical_evidence

USER_AGENT_KEPT = 300


@dataclass(frozen=True)
class SentMessage:
    """The message a request came through (its outbox row)."""

    outbox_id: int
    campaign: str
    step: str | None = None


def truncated_ip(ip: str) -> str:
    """The network of `ip` ("203.0.113.0/24"), or "" when it is not an address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def evidence(
    at: datetime,
    *,
    via: str,
    message: SentMessage | None = None,
    ip: str = "",
    user_agent: str = "",
    **more: str | None,
) -> str:
    """The canonical evidence of a change: when, through what (`via`: "one-click",
    "unsubscribe-page", "preferences", "complaint", "cli" ...), the message and campaign, the
    truncated IP and the user agent; `more` (reason, reference, feedback type ...) where given."""
    data: dict[str, Any] = {"at": at.isoformat(), "via": via}
    if message is not None:
        data |= {"message": message.outbox_id, "campaign": message.campaign}
        if message.step is not None:
            data["step"] = message.step
    if ip:
        data["ip"] = truncated_ip(ip)
    if user_agent:
        data["user_agent"] = user_agent[:USER_AGENT_KEPT]
    data |= {name: value for name, value in more.items() if value}
    return canonical_evidence(data)


def request_evidence(
    request: HTTPConnection, message: SentMessage | None, at: datetime, via: str
) -> str:
    """The evidence of a recipient's request (one-click POST, a page's button)."""
    return evidence(at, via=via, message=message,
                    ip=request.client.host if request.client else "",
                    user_agent=request.headers.get("user-agent", ""))  # fmt: skip


def complaint_evidence(
    at: datetime,
    message: SentMessage | None,
    *,
    feedback_type: str = "abuse",
    reporter: str | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> str:
    """The evidence of a complaint (an ARF report, RFC 5965): the message it names, the
    feedback type, who reported it (the mailbox provider) and the reporting agent; the
    complainant's source IP, when the report gives one, truncated like any other."""
    return evidence(at, via="complaint", message=message, ip=ip or "",
                    user_agent=user_agent or "", feedback_type=feedback_type,
                    reporter=reporter)  # fmt: skip
