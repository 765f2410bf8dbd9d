"""Pure decisions about consent: which status an action leads to, and whether an import may
grant. Plain functions over plain values, tested without a database."""

from __future__ import annotations

from typing import Literal

# "lifted": an operator lifted a suppression (purpose "*"), at the person's request.
# "double_opt_in", "single_opt_in": a list's policy switched in settings (list_policy.py).
Action = Literal["granted", "confirmed", "withdrawn", "expired", "erased", "lifted",
                 "double_opt_in", "single_opt_in"]  # fmt: skip
Status = Literal["none", "pending", "granted", "confirmed", "withdrawn"]
Source = Literal[
    "import", "form", "api", "admin", "unsubscribe", "complaint", "bounce", "scheduler",
]  # fmt: skip

ACTIONS: tuple[Action, ...] = ("granted", "confirmed", "withdrawn", "expired", "erased",
                               "lifted", "double_opt_in", "single_opt_in")  # fmt: skip
SOURCES: tuple[Source, ...] = (
    "import", "form", "api", "admin", "unsubscribe", "complaint", "bounce", "scheduler",
)  # fmt: skip
SENDABLE: frozenset[Status] = frozenset({"granted", "confirmed"})


def status_after(current: Status, action: Action, double_opt_in: bool) -> Status:
    """The status of a (contact, list) after `action`.

    On a double opt-in list a grant is only `pending` until the contact confirms it; a grant
    never lowers a confirmation that is already there.
    """
    if action == "granted":
        if current == "confirmed":
            return "confirmed"
        return "pending" if double_opt_in else "granted"
    if action == "confirmed":
        return "confirmed"
    if action == "withdrawn":
        return "withdrawn"
    if action in ("lifted", "double_opt_in", "single_opt_in"):  # no person's list status changes
        return current
    return "none"  # expired, erased


def import_actions(current: Status, confirmed: bool) -> tuple[Action, ...]:
    """What an import row with consent evidence appends, given the status on record.

    Only where there is no consent yet, or a pending one that the row confirms. An import never
    re-subscribes a withdrawal (only a new confirmed opt-in may lift that) and never repeats a
    grant already on record, so importing the same file twice appends nothing.
    """
    if current == "none":
        return ("granted", "confirmed") if confirmed else ("granted",)
    if current == "pending" and confirmed:
        return ("confirmed",)
    return ()
