"""Apply per-sample decisions made elsewhere (dedup clusters, review verdicts) as a stage.

Global decisions need the whole dataset, so they are computed first; this stage then copies the
kept samples and records the rejected ones through the same resumable runner as every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgefusion.data.dataset import Item
from edgefusion.data.runner import Outcome


@dataclass
class Decision:
    """Reject with ``reason`` (and ``details``), or keep with new row fields (``updates``)."""

    reason: str | None = None
    details: dict[str, Any] | None = None
    updates: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectStage:
    """Keep every sample without a reject decision; ``name`` and ``config`` are the deciding stage's."""

    name: str
    config: Any
    decisions: dict[str, Decision]
    writes_images: bool = True

    def process(self, items: list[Item]) -> list[Outcome]:
        outcomes = []
        for item in items:
            decision = self.decisions.get(item.id, Decision())
            if decision.reason is not None:
                outcomes.append(Outcome.rejected(item.id, decision.reason, decision.details))
            else:
                outcomes.append(Outcome(item.id, row={**item.row, **decision.updates}))
        return outcomes
