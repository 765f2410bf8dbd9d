from __future__ import annotations

import pytest

from mailer.consent.state import import_may_grant, status_after


@pytest.mark.parametrize(("current", "action", "double_opt_in", "expected"), [
    ("none", "granted", False, "granted"),
    ("none", "granted", True, "pending"),
    ("pending", "confirmed", True, "confirmed"),
    ("confirmed", "granted", True, "confirmed"),
    ("granted", "withdrawn", False, "withdrawn"),
    ("withdrawn", "granted", False, "granted"),
    ("granted", "expired", False, "none"),
])  # fmt: skip
def test_status_after_each_action(
    current: str, action: str, double_opt_in: bool, expected: str
) -> None:
    assert status_after(current, action, double_opt_in) == expected  # type: ignore[arg-type]


def test_an_import_grants_only_where_nothing_or_pending_is_held() -> None:
    assert import_may_grant("none") and import_may_grant("pending")
    assert not any(map(import_may_grant, ("granted", "confirmed", "withdrawn")))  # type: ignore[arg-type]
