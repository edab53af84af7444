"""Statistics of human review: win rates with Wilson intervals, Bradley-Terry strengths, agreement
(Cohen's and Fleiss' kappa), and the votes a preference study needs.

Plain Python on purpose: these run on a few thousand votes, and every formula is the textbook one,
checked against published worked examples in the tests.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from statistics import NormalDist


def _z(two_sided_alpha: float) -> float:
    return NormalDist().inv_cdf(1 - two_sided_alpha / 2)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; better than the normal interval
    at the small counts and extreme rates of a pilot study. ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(1 - confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def votes_needed(p1: float = 0.6, p0: float = 0.5, alpha: float = 0.05, power: float = 0.8) -> int:
    """Votes a two-sided one-sample test at level ``alpha`` needs to tell a win rate ``p1`` from
    ``p0`` with probability ``power`` (normal approximation to the binomial): 194 for 60% against
    50% at the usual 0.05 and 0.8."""
    numerator = _z(alpha) * math.sqrt(p0 * (1 - p0)) + NormalDist().inv_cdf(power) * math.sqrt(p1 * (1 - p1))
    return math.ceil((numerator / (p1 - p0)) ** 2)


def bradley_terry(
    wins: dict[tuple[int, int], float], n_models: int, tol: float = 1e-10, max_iter: int = 10_000
) -> tuple[list[float], bool]:
    """Bradley-Terry strengths from ``wins[(i, j)]`` (times ``i`` beat ``j``; a tie counts half
    each way), normalised to sum to 1, by Hunter's MM iteration.

    The maximum-likelihood strengths exist only when every model has beaten, directly or through
    others, every other one (the win graph is strongly connected); otherwise a model that never
    lost would have infinite strength. Then one virtual tie is added to every compared pair, a
    weak prior that keeps the ranking and the estimates finite. Returns the strengths and whether
    that prior was used.
    """
    total = [[0.0] * n_models for _ in range(n_models)]
    won = [[0.0] * n_models for _ in range(n_models)]
    for (i, j), count in wins.items():
        won[i][j] += count
        total[i][j] += count
        total[j][i] += count
    regularised = not _strongly_connected(won, n_models)
    if regularised:
        for i in range(n_models):
            for j in range(n_models):
                if i != j and total[i][j] > 0:
                    won[i][j] += 0.5
                    total[i][j] += 1.0
    strength = [1.0 / n_models] * n_models
    for _ in range(max_iter):
        new = []
        for i in range(n_models):
            w = sum(won[i])
            denominator = sum(total[i][j] / (strength[i] + strength[j]) for j in range(n_models) if j != i)
            new.append(w / denominator if denominator > 0 else strength[i])
        norm = sum(new)
        new = [s / norm for s in new]
        converged = max(abs(a - b) for a, b in zip(new, strength, strict=True)) < tol
        strength = new
        if converged:
            break
    return strength, regularised


def _strongly_connected(won: list[list[float]], n: int) -> bool:
    """Whether every model reaches every other along "beat" edges (and back)."""

    def reach(forward: bool) -> set[int]:
        seen, stack = {0}, [0]
        while stack:
            i = stack.pop()
            for j in range(n):
                edge = won[i][j] if forward else won[j][i]
                if edge > 0 and j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    return n <= 1 or (len(reach(True)) == n and len(reach(False)) == n)


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined (no items, or
    both raters always gave the one same label)."""
    if len(first) != len(second):
        raise ValueError("both raters must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    count_a, count_b = Counter(first), Counter(second)
    expected = sum(count_a[label] * count_b[label] for label in count_a) / (n * n)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from ``table[item][category]`` = raters who put the item in that category
    (the same number of raters per item, who may differ from item to item); None when undefined."""
    rows = [list(row) for row in table if sum(row)]
    if not rows:
        return None
    raters = sum(rows[0])
    if raters < 2 or any(sum(row) != raters for row in rows):
        raise ValueError("Fleiss' kappa needs the same number (at least 2) of ratings per item")
    n_items = len(rows)
    per_item = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in rows]
    shares = [sum(row[k] for row in rows) / (n_items * raters) for k in range(len(rows[0]))]
    observed = sum(per_item) / n_items
    expected = sum(p * p for p in shares)
    return None if expected == 1 else (observed - expected) / (1 - expected)
