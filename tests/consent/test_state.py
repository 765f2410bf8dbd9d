from __future__ import annotations

import pytest

from mailer.consent.state import import_actions, status_after


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


@pytest.mark.parametrize(("current", "confirmed", "expected"), [
    ("none", False, ("granted",)),
    ("none", True, ("granted", "confirmed")),
    ("pending", False, ()),
    ("pending", True, ("confirmed",)),
    ("granted", True, ()),
    ("confirmed", True, ()),
    ("withdrawn", True, ()),
])  # fmt: skip
def test_an_import_adds_only_what_is_missing(
    current: str, confirmed: bool, expected: tuple[str, ...]
) -> None:
    assert import_actions(current, confirmed) == expected  # type: ignore[arg-type]
