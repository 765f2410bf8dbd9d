"""A/B statistics: is one variant's rate really better, and how many more recipients would tell?

Plain functions over plain numbers (name, successes, trials); the report and the broadcast
auto-winner feed them people's events only, so machine opens and clicks never decide.

- The test is the pooled two-proportion z-test, two-sided (the same p-value as a chi-squared
  test of the 2x2 table without continuity correction).
- The interval for the difference is Newcombe's hybrid score interval (Newcombe 1998, method
  10): built from two Wilson intervals, it stays inside [-1, 1] and behaves at rates near 0,
  where the textbook Wald interval collapses to a point.
- With more than two variants each is compared against the baseline "A" only, and the
  p-values and intervals are Bonferroni-corrected for the number of comparisons.
- The sample size is Fleiss's formula for two proportions (no continuity correction) at the
  given confidence and 80% power, for the observed rates.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

POWER = 0.80
# When both rates are equal the observed difference cannot size a test: ask for enough
# recipients to see a 10% relative lift over the observed rate instead.
MINIMUM_RELATIVE_LIFT = 0.10
BASELINE = "A"
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Variant:
    name: str
    successes: int
    trials: int

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None


def two_proportion_p_value(a: Variant, b: Variant) -> float | None:
    """Two-sided p-value of the pooled z-test; None without trials on a side or any success."""
    if not a.trials or not b.trials:
        return None
    pooled = (a.successes + b.successes) / (a.trials + b.trials)
    if pooled == 0:
        return None
    if pooled == 1:
        return 1.0  # everyone succeeded on both sides: no difference to find
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / a.trials + 1 / b.trials))
    z = (b.successes / b.trials - a.successes / a.trials) / standard_error
    return 2 * _NORMAL.cdf(-abs(z))


def wilson_interval(successes: int, trials: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for one proportion (no continuity correction)."""
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(a: Variant, b: Variant, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval for rate(b) - rate(a); both need trials."""
    rate_a, rate_b = a.successes / a.trials, b.successes / b.trials
    low_a, high_a = wilson_interval(a.successes, a.trials, z)
    low_b, high_b = wilson_interval(b.successes, b.trials, z)
    difference = rate_b - rate_a
    low = difference - math.sqrt((rate_b - low_b) ** 2 + (high_a - rate_a) ** 2)
    high = difference + math.sqrt((high_b - rate_b) ** 2 + (rate_a - low_a) ** 2)
    return max(-1.0, low), min(1.0, high)  # rounding can step past 100% by one ulp


def sample_size_per_variant(
    rate_a: float, rate_b: float, alpha: float, power: float = POWER
) -> int:
    """Recipients per variant for a two-sided test at `alpha` to find rate_a != rate_b with `power`.

    When the rates are equal, rate_b becomes rate_a plus a 10% relative lift (minus, when that
    would pass 100%); None is never returned for a positive rate.
    """
    if rate_a == rate_b:
        lifted = rate_a * (1 + MINIMUM_RELATIVE_LIFT)
        rate_b = lifted if lifted <= 1 else rate_a * (1 - MINIMUM_RELATIVE_LIFT)
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2)
    z_beta = _NORMAL.inv_cdf(power)
    mean = (rate_a + rate_b) / 2
    spread = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(
        rate_a * (1 - rate_a) + rate_b * (1 - rate_b)
    )
    return math.ceil(spread * spread / (rate_a - rate_b) ** 2)


def _confidence_words(p_value: float) -> str:
    """1 - p as a whole percent, floored, never 100%."""
    return f"{min(99, math.floor((1 - p_value) * 100))}% confident"


def compare(
    variants: Sequence[tuple[str, int, int]], metric: str, confidence: float = 0.95
) -> dict[str, Any]:
    """Each variant against the baseline "A" (else the first) on `metric`: the report's AB dict.

    `variants` are (name, successes, trials), e.g. ("B", unique_clicks, delivered). The p-values
    in "comparisons" and the confidence in the verdict are Bonferroni-corrected when there are
    two or more comparisons; `confident` is p < 1 - confidence after that correction.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    arms = [_variant(*v) for v in variants]
    baseline = next((v for v in arms if v.name == BASELINE), arms[0] if arms else None)
    others = [v for v in arms if v is not baseline]
    result: dict[str, Any] = {
        "metric": metric, "leader": None, "baseline": baseline.name if baseline else BASELINE,
        "comparisons": [], "winner": None, "verdict": "no data yet", "needed_per_variant": None,
    }  # fmt: skip
    if baseline is None or not others:
        return result
    alpha = (1 - confidence) / len(others)
    z = _NORMAL.inv_cdf(1 - alpha / 2)
    result["comparisons"] = [
        _comparison(baseline, other, len(others), alpha, z) for other in others
    ]
    if any(not v.trials for v in arms) or all(not v.successes for v in arms):
        return result
    leader = max(arms, key=lambda v: (v.successes / v.trials, v is baseline))
    result["leader"] = leader.name
    comparisons = result["comparisons"]
    if leader is baseline:
        # the baseline wins only when it beats every other variant: the closest one decides
        decisive = max(comparisons, key=lambda c: c["p_value"])
        won = all(c["confident"] and c["difference"] < 0 for c in comparisons)
    else:
        decisive = next(c for c in comparisons if c["variant"] == leader.name)
        won = decisive["confident"] and decisive["difference"] > 0
    if won:
        result["winner"] = leader.name
        result["verdict"] = (
            f"{leader.name} wins on {metric}, {_confidence_words(decisive['p_value'])}"
        )
        if len(others) > 1:
            result["verdict"] += (
                f" (each variant against {baseline.name},"
                f" Bonferroni-corrected for {len(others)} comparisons)"
            )
        return result
    needed = sample_size_per_variant(decisive["baseline_rate"], decisive["rate"], alpha)
    have = min(baseline.trials, next(v.trials for v in others if v.name == decisive["variant"]))
    result["needed_per_variant"] = max(1, needed - have)
    result["verdict"] = (
        f"no winner yet: about {result['needed_per_variant']:,} more recipients per variant needed"
    )
    return result


def _variant(name: str, successes: int, trials: int) -> Variant:
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(
            f"variant {name}: {successes} successes out of {trials} trials is impossible"
        )
    return Variant(name, successes, trials)


def _comparison(
    baseline: Variant, other: Variant, comparisons: int, alpha: float, z: float
) -> dict[str, Any]:
    p_value = two_proportion_p_value(baseline, other)
    entry: dict[str, Any] = {
        "variant": other.name, "against": baseline.name,
        "rate": other.rate, "baseline_rate": baseline.rate, "difference": None,
        "ci_low": None, "ci_high": None, "p_value": None, "confident": False,
    }  # fmt: skip
    if p_value is None or other.rate is None or baseline.rate is None:
        return entry
    entry["difference"] = other.rate - baseline.rate
    entry["ci_low"], entry["ci_high"] = difference_interval(baseline, other, z)
    entry["p_value"] = min(1.0, p_value * comparisons)
    entry["confident"] = p_value < alpha
    return entry


def decide(
    variants: Sequence[tuple[str, int, int]],
    default: str,
    confidence: float = 0.95,
    *,
    metric: str | None = None,
) -> tuple[str, str]:
    """The winner's name and why, in one sentence.

    A tie, an underpowered test or no data gives `default`, and the reason says so.
    """
    names = [name for name, _, _ in variants]
    if variants and default not in names:
        raise ValueError(f"default {default!r} is not one of the variants {', '.join(names)}")
    result = compare(variants, metric or "the chosen rate", confidence)
    if result["winner"] is None:
        return default, f"{result['verdict']}; sending the default {default}"
    winner = result["winner"]
    verdict = result["verdict"] if metric else result["verdict"].replace(" on the chosen rate", "")
    arms = {name: (successes, trials) for name, successes, trials in variants}
    numbers = ", ".join(
        f"{name} {successes / trials:.1%} ({successes}/{trials})"
        for name, (successes, trials) in arms.items()
    )
    return winner, f"{verdict}: {numbers}"
