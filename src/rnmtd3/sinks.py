"""Where a training run reports: the seam between the trainer and files, the registry, or a test."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol


def kept_through(start_step: int) -> int:
    """The last step a sink keeps when a run starts at `start_step`: a resume keeps its checkpoint's past, a
    restart from step 0 keeps nothing (its step-0 evaluation is made again)."""
    return start_step if start_step > 0 else -1


class Sink(Protocol):
    """What the trainer calls; every method must be cheap, it runs inside the training loop."""

    def on_start(self, step: int, note: str | None) -> None:
        """Training starts at `step`: drop what an earlier attempt recorded after it (see kept_through); `note`
        says why a run restarts from step 0 when its resume state could not be used."""

    def on_eval(self, step: int, return_mean: float, return_std: float, wall_time: float) -> None: ...

    def on_stats(self, step: int, stats: dict[str, float]) -> None: ...

    def before_checkpoint(self, step: int) -> None:
        """About to write the run folder's files: raise to stop the run where it may no longer write them (its
        registry lease is gone, and another worker may own the folder now)."""

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def on_progress(self, step: int, steps_per_sec: float) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class MemorySink:
    """Keeps everything in lists: for tests and notebooks."""

    evals: list[tuple[int, float, float]] = field(default_factory=list)
    stats: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stop_after_checkpoint: bool = False
    last_step: int = 0

    def on_start(self, step: int, note: str | None) -> None:
        keep = kept_through(step)
        self.evals = [e for e in self.evals if e[0] <= keep]
        self.stats = [s for s in self.stats if s[0] <= keep]
        if note:
            self.notes.append(note)

    def on_eval(self, step: int, return_mean: float, return_std: float, wall_time: float) -> None:
        self.evals.append((step, return_mean, return_std))

    def on_stats(self, step: int, stats: dict[str, float]) -> None:
        self.stats.append((step, dict(stats)))

    def before_checkpoint(self, step: int) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append(step)

    def on_progress(self, step: int, steps_per_sec: float) -> None:
        self.last_step = step

    def should_stop(self) -> bool:
        return self.stop_after_checkpoint and bool(self.checkpoints)


class FileSink:
    """`evals.csv` in the run folder, appended and flushed per evaluation; steps already there are not rewritten."""

    COLUMNS = ("step", "return_mean", "return_std", "wall_time")

    def __init__(self, run_dir: Path, on_progress: Callable[[int, float], None] | None = None,
                 on_eval: Callable[[int, float], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_note: Callable[[str], None] | None = None):
        self.path = Path(run_dir) / "evals.csv"
        self._progress = on_progress
        self._eval = on_eval
        self._should_stop = should_stop
        self._note = on_note
        self._seen: set[int] = set()

    def on_start(self, step: int, note: str | None) -> None:
        """Rewrite evals.csv with the rows this start keeps (atomically: a kill leaves the old file or the new)."""
        keep = kept_through(step)
        rows = []
        if self.path.exists():
            with self.path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= keep]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)
        self._seen = {int(row["step"]) for row in rows}
        if note and self._note:
            self._note(note)

    def on_eval(self, step: int, return_mean: float, return_std: float, wall_time: float) -> None:
        if step not in self._seen:
            with self.path.open("a", newline="") as handle:
                csv.writer(handle).writerow((step, repr(return_mean), repr(return_std), f"{wall_time:.3f}"))
            self._seen.add(step)
        if self._eval:
            self._eval(step, return_mean)

    def on_stats(self, step: int, stats: dict[str, float]) -> None:
        pass

    def before_checkpoint(self, step: int) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_progress(self, step: int, steps_per_sec: float) -> None:
        if self._progress:
            self._progress(step, steps_per_sec)

    def should_stop(self) -> bool:
        return bool(self._should_stop and self._should_stop())
