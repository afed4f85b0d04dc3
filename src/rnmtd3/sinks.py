"""Where a training run reports: the seam between the trainer and files, the registry, or a test."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol


class Sink(Protocol):
    """What the trainer calls; every method must be cheap, it runs inside the training loop."""

    def on_eval(self, step: int, return_mean: float, return_std: float, wall_time: float) -> None: ...

    def on_stats(self, step: int, stats: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def on_progress(self, step: int, steps_per_sec: float) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class MemorySink:
    """Keeps everything in lists: for tests and notebooks."""

    evals: list[tuple[int, float, float]] = field(default_factory=list)
    stats: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    stop_after_checkpoint: bool = False
    last_step: int = 0

    def on_eval(self, step: int, return_mean: float, return_std: float, wall_time: float) -> None:
        self.evals.append((step, return_mean, return_std))

    def on_stats(self, step: int, stats: dict[str, float]) -> None:
        self.stats.append((step, dict(stats)))

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
                 should_stop: Callable[[], bool] | None = None):
        self.path = Path(run_dir) / "evals.csv"
        self._progress = on_progress
        self._eval = on_eval
        self._should_stop = should_stop
        self._seen: set[int] = set()
        if self.path.exists():
            with self.path.open() as handle:
                self._seen = {int(row["step"]) for row in csv.DictReader(handle)}
        else:
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(self.COLUMNS)

    def on_eval(self, step: int, return_mean: float, return_std: float, wall_time: float) -> None:
        if step not in self._seen:
            with self.path.open("a", newline="") as handle:
                csv.writer(handle).writerow((step, repr(return_mean), repr(return_std), f"{wall_time:.3f}"))
            self._seen.add(step)
        if self._eval:
            self._eval(step, return_mean)

    def on_stats(self, step: int, stats: dict[str, float]) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path) -> None:
        pass

    def on_progress(self, step: int, steps_per_sec: float) -> None:
        if self._progress:
            self._progress(step, steps_per_sec)

    def should_stop(self) -> bool:
        return bool(self._should_stop and self._should_stop())
