"""What a task's answers say: per-pair win rates and a ranking for A/B tasks, decisions and
reviewer agreement for curation tasks. One dict per report, printed as a table or as JSON by
``edgefusion review report`` and shown on the admin's report page."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from edgefusion.data.review_db import Database
from edgefusion.data.review_queue import AB, Task, get_task, progress, standing_answers, status_counts
from edgefusion.errors import EdgefusionError
from edgefusion.review.stats import bradley_terry, cohen_kappa, fleiss_kappa, votes_needed, wilson_interval
from edgefusion.review.tasks import task_models

TIES = {"split": "ties split: a tie counts half a win for each model", "drop": "ties left out"}
#: Categories agreement is measured on: keep, keep with a new caption, drop.
AGREEMENT_CATEGORIES = {"accept": "keep", "edit": "edit", "reject": "drop"}


def task_report(db: Database, ref: str | int, ties: str = "split") -> dict[str, Any]:
    task = get_task(db, ref)
    base = {
        "task": task.name,
        "id": task.id,
        "kind": task.kind,
        "overlap": task.overlap,
        "progress": progress(db, task),
    }
    return {**base, **(ab_report(db, task, ties) if task.kind == AB else curate_report(db, task))}


def ab_report(db: Database, task: Task, ties: str = "split") -> dict[str, Any]:
    """Per pair of models: wins, ties, votes, reviewers, the first model's win rate with its 95%
    Wilson interval, and the votes needed to tell 60% from 50%; a Bradley-Terry ranking when
    more than two models are compared."""
    if ties not in TIES:
        raise EdgefusionError(f"ties must be one of {', '.join(TIES)}")
    models = [row["name"] for row in task_models(db, task)]
    pair_of = {
        row["item_id"]: (row["model_a"], row["model_b"])
        for row in db.query("SELECT item_id, model_a, model_b FROM pairs WHERE task_id = ?", (task.id,))
    }
    tally: dict[tuple[int, int], dict[str, Any]] = defaultdict(
        lambda: {"a": 0, "b": 0, "tie": 0, "reviewers": set()}
    )
    for answer in standing_answers(db, task):
        a, b = pair_of[answer["item_id"]]
        counts = tally[(a, b)]
        counts["reviewers"].add(answer["reviewer"])
        counts["tie" if answer["winner"] is None else "a" if answer["winner"] == a else "b"] += 1
    needed = votes_needed(0.6, 0.5, 0.05, 0.8)
    pairs, wins = [], {}
    for a, b in combinations(range(len(models)), 2):
        counts = tally[(a, b)]
        votes = counts["a"] + counts["b"] + counts["tie"]
        if ties == "split":
            successes, n = counts["a"] + counts["tie"] / 2, votes
            wins[(a, b)], wins[(b, a)] = successes, counts["b"] + counts["tie"] / 2
        else:
            successes, n = counts["a"], counts["a"] + counts["b"]
            wins[(a, b)], wins[(b, a)] = counts["a"], counts["b"]
        low, high = wilson_interval(successes, n)
        pairs.append(
            {
                "model_a": models[a],
                "model_b": models[b],
                "wins_a": counts["a"],
                "wins_b": counts["b"],
                "ties": counts["tie"],
                "votes": votes,
                "reviewers": len(counts["reviewers"]),
                "win_rate_a": round(successes / n, 4) if n else None,
                "ci95": [round(low, 4), round(high, 4)],
                "votes_needed": needed,
            }
        )
    report: dict[str, Any] = {
        "models": models,
        "ties": ties,
        "ties_rule": TIES[ties],
        "power_rule": "votes to tell a 60% from a 50% win rate: two-sided, alpha 0.05, power 0.8",
        "pairs": pairs,
        "ranking": None,
    }
    if len(models) > 2 and any(wins.values()):
        strengths, regularised = bradley_terry(wins, len(models))
        order = sorted(range(len(models)), key=lambda i: -strengths[i])
        report["ranking"] = [{"model": models[i], "strength": round(strengths[i], 4)} for i in order]
        report["ranking_prior"] = regularised
    return report


def curate_report(db: Database, task: Task) -> dict[str, Any]:
    return {"dataset": task.source, "decisions": status_counts(db, task), "agreement": agreement(db, task)}


def agreement(db: Database, task: Task) -> dict[str, Any] | None:
    """Agreement on keep / edit / drop over the items answered by ``overlap`` reviewers: Cohen's
    kappa when two reviewers gave them all, Fleiss' kappa when more did. None without overlap."""
    if task.overlap < 2:
        return None
    by_item: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for answer in standing_answers(db, task):
        by_item[answer["item_id"]].append((answer["reviewer"], AGREEMENT_CATEGORIES[answer["action"]]))
    complete = [ratings[: task.overlap] for ratings in by_item.values() if len(ratings) >= task.overlap]
    reviewers = sorted({name for ratings in complete for name, _ in ratings})
    result: dict[str, Any] = {"items": len(complete), "reviewers": len(reviewers), "kappa": None}
    if not complete:
        return {**result, "method": None}
    if len(reviewers) == 2:
        first, second = zip(*[[label for _, label in sorted(ratings)] for ratings in complete], strict=True)
        return {**result, "method": "Cohen's kappa", "kappa": _round(cohen_kappa(first, second))}
    categories = list(dict.fromkeys(AGREEMENT_CATEGORIES.values()))
    table = [[sum(label == c for _, label in ratings) for c in categories] for ratings in complete]
    return {**result, "method": "Fleiss' kappa", "kappa": _round(fleiss_kappa(table))}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
