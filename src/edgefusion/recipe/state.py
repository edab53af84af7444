"""The recipe's memory between runs: ``recipe-state.json`` in its output folder.

For each stage it keeps what a re-run must compare against: the fingerprint of the stage's
resolved settings and of its inputs (the fingerprints of the stages it references, and when
each of them last finished), the settings themselves (so a plan can say which one changed),
whether the stage finished, and when it ran and for how long (for ``recipe report``). The file
is rewritten whole after every change (:func:`edgefusion.atomic.write_text_atomic`), so a crash
leaves the state before or after a step, never a torn one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgefusion.atomic import write_text_atomic
from edgefusion.errors import EdgefusionError

STATE_FILE = "recipe-state.json"
RUNNING, DONE = "running", "done"


@dataclass
class StageRecord:
    """One stage's entry: ``status`` is ``running`` from its start until it finished (a record
    left ``running`` is a stage a crash or ``Ctrl-C`` interrupted)."""

    kind: str
    fingerprint: str
    settings: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    folder: str
    output: str
    status: str = RUNNING
    started: float = 0.0
    finished: float | None = None
    seconds: float = 0.0
    runs: int = 0


@dataclass
class RecipeState:
    """Every stage's record, by stage name, and the order of the recipe's stages when it last ran."""

    recipe: str
    stages: dict[str, StageRecord] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def save(self, out: Path) -> None:
        write_text_atomic(out / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")

    def start(self, name: str, record: StageRecord, out: Path) -> StageRecord:
        """Record that stage ``name`` starts (or starts again) now."""
        previous = self.stages.get(name)
        same = previous is not None and previous.fingerprint == record.fingerprint
        record.seconds = previous.seconds if same else 0.0
        record.runs = (previous.runs if same else 0) + 1
        record.started = time.time()
        self.stages[name] = record
        self.save(out)
        return record

    def finish(self, name: str, out: Path, seconds: float) -> None:
        """Record that stage ``name`` finished, after ``seconds`` more of work."""
        record = self.stages[name]
        record.status = DONE
        record.finished = time.time()
        record.seconds = round(record.seconds + seconds, 1)
        self.save(out)

    def add_time(self, name: str, out: Path, seconds: float) -> None:
        """Count the time an interrupted attempt spent (the stage stays ``running``)."""
        self.stages[name].seconds = round(self.stages[name].seconds + seconds, 1)
        self.save(out)


def read_state(out: Path, recipe: str = "") -> RecipeState:
    """The state in ``out`` (an empty one for a recipe not run there yet)."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        return RecipeState(recipe)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stages = {name: StageRecord(**record) for name, record in data["stages"].items()}
    except (ValueError, KeyError, TypeError) as err:
        raise EdgefusionError(
            f"{path} is not a recipe state file ({err}): delete it to run every stage again"
        ) from None
    return RecipeState(data.get("recipe", recipe), stages, list(data.get("order", [])))
