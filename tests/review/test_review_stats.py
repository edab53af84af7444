"""The review statistics against published worked examples and closed forms."""

from __future__ import annotations

import math

import pytest

from edgefusion.review.stats import bradley_terry, cohen_kappa, fleiss_kappa, votes_needed, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),  # the usual textbook case
        (0, 10, 0.0, 0.2775),  # no successes: the interval still has width
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_interval_known_values(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_matches_scipy_and_handles_no_votes():
    from scipy.stats import binomtest

    for successes, n in [(3, 7), (120, 200), (1, 1000)]:
        reference = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(successes, n) == pytest.approx((reference.low, reference.high), abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # Half wins (ties split) are allowed: 6 wins + 2 ties of 10 is 7 of 10.
    assert wilson_interval(6 + 2 / 2, 10) == wilson_interval(7, 10)


def test_votes_needed_for_60_against_50_percent():
    assert votes_needed() == 194  # two-sided alpha 0.05, power 0.8
    assert votes_needed(0.55) == 783
    assert votes_needed(0.6, power=0.9) == 259
    z_a, z_b = 1.959963984540054, 0.8416212335729143
    exact = ((z_a * 0.5 + z_b * math.sqrt(0.24)) / 0.1) ** 2
    assert votes_needed() == math.ceil(exact)


def test_cohen_kappa_worked_example():
    # 50 items, two raters: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po 0.7, pe 0.5, kappa 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # one label only: chance agreement is total
    assert cohen_kappa([], []) is None


def test_fleiss_kappa_worked_example():
    # Fleiss (1971) style example: 10 subjects, 14 raters, 5 categories -> kappa 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 0], [1, 2]])


def test_bradley_terry_recovers_the_strengths_that_made_the_wins():
    # Strengths 1 : 2 : 4 and 15 games per pair give these expected wins; they are their own MLE.
    wins = {(0, 1): 5, (1, 0): 10, (0, 2): 3, (2, 0): 12, (1, 2): 5, (2, 1): 10}
    strengths, prior = bradley_terry(wins, 3)
    assert strengths == pytest.approx([1 / 7, 2 / 7, 4 / 7], rel=1e-8)
    assert not prior


def test_bradley_terry_two_models_is_the_win_ratio_and_stationary():
    strengths, _ = bradley_terry({(0, 1): 30, (1, 0): 10}, 2)
    assert strengths[0] / sum(strengths) == pytest.approx(0.75)
    wins = {(0, 1): 7, (1, 0): 3, (0, 2): 2.5, (2, 0): 7.5, (1, 2): 6, (2, 1): 4, (0, 3): 5, (3, 0): 5}
    p, _ = bradley_terry(wins, 4)
    for i in range(4):  # the likelihood equations: observed wins = expected wins, per model
        won = sum(v for (a, _), v in wins.items() if a == i)
        expected = sum(v * p[i] / (p[i] + p[b if a == i else a]) for (a, b), v in wins.items() if i in (a, b))
        assert won == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_undefeated_model_uses_the_prior():
    strengths, prior = bradley_terry({(0, 1): 4, (0, 2): 4, (1, 2): 3, (2, 1): 1}, 3)
    assert prior
    assert all(math.isfinite(s) for s in strengths)
    assert strengths[0] > strengths[1] > strengths[2]
