"""decide(): the broadcast auto-winner's choice, the default whenever the numbers cannot tell."""

import pytest

from mailer.reports.ab import decide


def test_a_clear_winner_is_chosen_with_the_numbers_in_the_reason() -> None:
    # 200/1000 against 250/1000: p = 0.0073 (see test_ab.py for the hand computation)
    name, why = decide([("A", 200, 1000), ("B", 250, 1000)], default="A", metric="clicks")
    assert name == "B"
    assert "B wins on clicks, 99% confident" in why
    assert "25.0% (250/1000)" in why and "20.0% (200/1000)" in why


def test_the_baseline_can_win_too() -> None:
    name, why = decide([("A", 250, 1000), ("B", 200, 1000)], default="B")
    assert name == "A"
    assert why.startswith("A wins, 99% confident")


def test_an_underpowered_test_falls_back_to_the_default() -> None:
    name, why = decide([("A", 20, 100), ("B", 25, 100)], default="A", metric="opens")
    assert name == "A"
    assert "no winner yet: about 994 more recipients per variant needed" in why
    assert "the default A" in why


def test_a_tie_falls_back_to_the_default_even_when_it_is_not_a() -> None:
    name, why = decide([("A", 300, 1000), ("B", 300, 1000)], default="B")
    assert name == "B"
    assert "the default B" in why


@pytest.mark.parametrize(
    "variants",
    [[("A", 0, 0), ("B", 0, 0)], [("A", 0, 500), ("B", 0, 500)], [("A", 10, 100), ("B", 0, 0)], []],
)
def test_no_data_falls_back_to_the_default(variants: list[tuple[str, int, int]]) -> None:
    name, why = decide(variants, default="A")
    assert name == "A"
    assert why.startswith("no data yet")


def test_three_variants_are_each_compared_with_a_and_corrected() -> None:
    # C against A alone: p = 0.0073; with two comparisons Bonferroni doubles it to 0.0146
    name, why = decide([("A", 200, 1000), ("B", 210, 1000), ("C", 250, 1000)], default="A")
    assert name == "C"
    assert "98% confident" in why
    assert "Bonferroni" in why


def test_a_default_that_is_not_a_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="default 'D' is not one of the variants A, B"):
        decide([("A", 1, 10), ("B", 2, 10)], default="D")
