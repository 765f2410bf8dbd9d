"""compare(): the report's A/B numbers, by hand and against scipy."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from mailer.reports.ab import (
    Variant,
    compare,
    difference_interval,
    sample_size_per_variant,
    two_proportion_p_value,
    wilson_interval,
)

Z95 = 1.959963984540054


def test_textbook_two_proportion_example_by_hand() -> None:
    # 200/1000 against 250/1000, worked by hand with the pooled z-test:
    #   pooled p = 450/2000 = 0.225; SE = sqrt(0.225 * 0.775 * (1/1000 + 1/1000)) = 0.018675
    #   z = (0.25 - 0.20) / 0.018675 = 2.677; two-sided p = 2 * (1 - Phi(2.677)) = 0.0074
    #   (a normal table at z = 2.68 gives Phi = 0.9963, p = 0.0074; the brief's 0.0073 is
    #   that table value rounded down)
    result = compare([("A", 200, 1000), ("B", 250, 1000)], "clicks")
    (comparison,) = result["comparisons"]
    assert comparison["p_value"] == pytest.approx(0.0074, abs=0.00005)
    assert comparison["difference"] == pytest.approx(0.05)
    assert comparison["rate"] == 0.25 and comparison["baseline_rate"] == 0.20
    assert comparison["confident"] is True
    assert result["winner"] == result["leader"] == "B"
    assert result["verdict"] == "B wins on clicks, 99% confident"
    assert result["needed_per_variant"] is None


@pytest.mark.parametrize(
    ("treated", "control", "expected"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10
        ((56, 70), (48, 80), (0.0524, 0.3339)),
        ((9, 10), (3, 10), (0.1705, 0.8090)),
        ((6, 7), (2, 7), (0.0582, 0.8062)),
        ((5, 56), (0, 29), (-0.0381, 0.1926)),
        ((0, 10), (0, 20), (-0.1611, 0.2775)),
        ((10, 10), (0, 20), (0.6791, 1.0000)),
    ],
)
def test_difference_interval_matches_newcombes_published_examples(
    treated: tuple[int, int], control: tuple[int, int], expected: tuple[float, float]
) -> None:
    low, high = difference_interval(Variant("A", *control), Variant("B", *treated), Z95)
    assert (round(low, 4), round(high, 4)) == expected


def test_sample_size_for_20_against_25_percent_is_the_textbook_1094() -> None:
    # Fleiss's formula at alpha 0.05 two-sided and 80% power: 1094 per group (as G*Power)
    assert sample_size_per_variant(0.20, 0.25, 0.05) == 1094


def test_equal_rates_are_sized_for_a_ten_percent_relative_lift() -> None:
    assert sample_size_per_variant(0.20, 0.20, 0.05) == sample_size_per_variant(0.20, 0.22, 0.05)
    # a rate of 100% cannot lift: it is sized for a 10% drop
    assert sample_size_per_variant(1.0, 1.0, 0.05) == sample_size_per_variant(1.0, 0.9, 0.05)


counts = st.integers(min_value=1, max_value=5000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
)


@given(counts, counts)
def test_p_value_equals_scipys_chi_squared_without_correction(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    (sa, na), (sb, nb) = a, b
    p_value = two_proportion_p_value(Variant("A", sa, na), Variant("B", sb, nb))
    if sa + sb == 0 or sa + sb == na + nb:
        # a column of zeros: scipy refuses the table; no evidence either way
        assert p_value == (None if sa + sb == 0 else 1.0)
        return
    table = [[sa, na - sa], [sb, nb - sb]]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert p_value == pytest.approx(expected, rel=1e-6, abs=1e-12)


@given(counts)
def test_wilson_interval_equals_scipys(a: tuple[int, int]) -> None:
    successes, trials = a
    expected = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    low, high = wilson_interval(successes, trials, stats.norm.ppf(0.975))
    assert low == pytest.approx(expected.low, abs=1e-9)
    assert high == pytest.approx(expected.high, abs=1e-9)


@given(counts, counts)
def test_difference_interval_contains_the_difference_and_is_near_wald_for_large_samples(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    (sa, na), (sb, nb) = a, b
    low, high = difference_interval(Variant("A", sa, na), Variant("B", sb, nb), Z95)
    difference = sb / nb - sa / na
    assert -1 <= low <= difference <= high <= 1
    ra, rb = sa / na, sb / nb
    wald_half = stats.norm.ppf(0.975) * math.sqrt(ra * (1 - ra) / na + rb * (1 - rb) / nb)
    if min(sa, na - sa, sb, nb - sb) >= 500:  # far from 0% and 100%, the two agree
        assert low == pytest.approx(difference - wald_half, abs=0.005)
        assert high == pytest.approx(difference + wald_half, abs=0.005)


@given(counts, counts)
def test_confident_means_the_p_value_is_under_one_minus_confidence(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    result = compare([("A", *a), ("B", *b)], "opens", confidence=0.9)
    (comparison,) = result["comparisons"]
    if comparison["p_value"] is None:
        assert result["verdict"] == "no data yet"
        return
    assert comparison["confident"] == (comparison["p_value"] < 0.1)
    assert (result["winner"] is not None) == comparison["confident"]
    if result["winner"] is None:
        assert result["needed_per_variant"] >= 1
        needed = result["needed_per_variant"]
        assert result["verdict"] == (
            f"no winner yet: about {needed:,} more recipients per variant needed"
        )


def test_verdict_for_an_underpowered_test_says_how_many_more() -> None:
    result = compare([("A", 20, 100), ("B", 25, 100)], "clicks")
    assert result["leader"] == "B" and result["winner"] is None
    assert result["needed_per_variant"] == 994  # 1094 needed, 100 sent
    assert result["verdict"] == "no winner yet: about 994 more recipients per variant needed"


def test_large_numbers_in_the_verdict_get_thousands_separators() -> None:
    result = compare([("A", 200, 1000), ("B", 210, 1000)], "opens")
    assert result["needed_per_variant"] > 1000
    assert f"about {result['needed_per_variant']:,} more" in result["verdict"]
    assert "," in result["verdict"].split("about ")[1]


def test_confidence_is_floored_and_never_100_percent() -> None:
    overwhelming = compare([("A", 10, 10000), ("B", 5000, 10000)], "clicks")
    assert overwhelming["comparisons"][0]["p_value"] == 0.0
    assert overwhelming["verdict"] == "B wins on clicks, 99% confident"
    # p = 0.0355: 96.45% floors to 96%
    result = compare([("A", 100, 1000), ("B", 130, 1000)], "clicks")
    assert 0.03 < result["comparisons"][0]["p_value"] < 0.04
    assert result["verdict"] == "B wins on clicks, 96% confident"


def test_a_baseline_that_beats_b_wins() -> None:
    result = compare([("A", 250, 1000), ("B", 200, 1000)], "conversions")
    assert result["comparisons"][0]["difference"] == pytest.approx(-0.05)
    assert result["comparisons"][0]["ci_high"] < 0
    assert result["verdict"] == "A wins on conversions, 99% confident"


@pytest.mark.parametrize(
    "variants",
    [
        [],
        [("A", 0, 0)],
        [("A", 5, 100)],
        [("A", 0, 0), ("B", 0, 0)],
        [("A", 0, 1000), ("B", 0, 1000)],
        [("A", 50, 1000), ("B", 0, 0)],
        [("A", 0, 0), ("B", 50, 1000), ("C", 40, 1000)],
    ],
)
def test_no_data_is_no_exception_and_no_numbers(variants: list[tuple[str, int, int]]) -> None:
    result = compare(variants, "clicks")
    assert result["verdict"] == "no data yet"
    assert result["winner"] is None and result["leader"] is None
    assert result["needed_per_variant"] is None
    assert result["baseline"] == "A"
    for comparison in result["comparisons"]:
        if comparison["p_value"] is None:
            assert comparison["difference"] is None and comparison["ci_low"] is None


def test_the_baseline_is_a_wherever_it_is_listed() -> None:
    result = compare([("B", 250, 1000), ("A", 200, 1000)], "clicks")
    assert result["baseline"] == "A"
    assert [c["variant"] for c in result["comparisons"]] == ["B"]


def test_bonferroni_with_three_variants() -> None:
    # B and C against A: two comparisons, so each p-value doubles and alpha halves
    variants = [("A", 200, 1000), ("B", 210, 1000), ("C", 250, 1000)]
    result = compare(variants, "clicks")
    alone = two_proportion_p_value(Variant("A", 200, 1000), Variant("C", 250, 1000))
    assert alone is not None
    b, c = result["comparisons"]
    assert (b["variant"], c["variant"]) == ("B", "C")
    assert c["p_value"] == pytest.approx(2 * alone)
    # the interval is at 97.5%: wider than the 95% one
    low95, high95 = difference_interval(Variant("A", 200, 1000), Variant("C", 250, 1000), Z95)
    assert c["ci_low"] < low95 and c["ci_high"] > high95
    assert result["winner"] == "C"
    assert result["verdict"] == (
        "C wins on clicks, 98% confident"
        " (each variant against A, Bonferroni-corrected for 2 comparisons)"
    )


def test_bonferroni_can_take_a_winner_away() -> None:
    # p = 0.049 alone: confident with one comparison, not with two
    two = compare([("A", 100, 1000), ("C", 128, 1000)], "clicks")
    three = compare([("A", 100, 1000), ("B", 100, 1000), ("C", 128, 1000)], "clicks")
    assert two["winner"] == "C"
    assert three["winner"] is None and three["leader"] == "C"
    assert three["verdict"].startswith("no winner yet: about ")


def test_the_baseline_wins_among_three_only_when_it_beats_both() -> None:
    close = compare([("A", 250, 1000), ("B", 200, 1000), ("C", 245, 1000)], "clicks")
    assert close["leader"] == "A" and close["winner"] is None
    clear = compare([("A", 250, 1000), ("B", 200, 1000), ("C", 190, 1000)], "clicks")
    assert clear["winner"] == "A"


def test_impossible_counts_are_refused_naming_the_variant() -> None:
    with pytest.raises(ValueError, match="variant B: 12 successes out of 10 trials"):
        compare([("A", 1, 10), ("B", 12, 10)], "clicks")
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        compare([("A", 1, 10), ("B", 2, 10)], "clicks", confidence=95)
