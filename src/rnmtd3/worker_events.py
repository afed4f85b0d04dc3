"""The event log of a worker pool: one timestamped line per thing that happened, for output that nobody watches live
(`rnm run-workers > workers.log 2>&1`, nohup, a batch job's output file) and that is read with `tail -f` or grep.

What counts as an event is decided here, from the pool's WorkerUpdates: a claim (a takeover when another worker of
this pool held the run), a resume or a restart, an evaluation (at most one line per run per `every` seconds, so that
fast runs do not flood the file), a finish, a failure, a release, a lost lease, a worker that idles, exits or dies.
Progress updates make no line. Runs are named by env, variant (variants.run_variants: the method, and the keys that
vary among the registry's runs) and seed, so that two settings never read as the same run.

Times are the parent's local time with its UTC offset (ISO 8601, `2026-03-14T09:12:05+01:00`): when it heard of the
event, which is within a poll (0.1 s) of when it happened.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from typing import Callable

import pandas as pd

from .variants import run_variants
from .workers import WorkerUpdate

EVAL_LINE_S = 60.0
"""Default spacing of one run's evaluation lines: a run of 1M steps at 200 steps/s evaluates every 25 s."""


def timestamp(now: float) -> str:
    return datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds")


def exit_reason(code: int) -> str:
    """A worker process's exit code in words: `killed by SIGKILL`, `exit code 1`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def died(codes: list[int | None]) -> dict[int, str]:
    """The workers whose process died (a non-zero exit code, or a signal), with why."""
    return {worker: f"worker {worker} died ({exit_reason(code)})" for worker, code in enumerate(codes)
            if code not in (0, None)}


def run_names(runs: pd.DataFrame) -> dict[int, str]:
    """`Hopper-v5 2:4 mask_interval=1000 seed 0` per run id, from a registry runs frame."""
    if runs.empty:
        return {}
    return {int(run_id): f"{env} {variant} seed {seed}"
            for run_id, env, variant, seed in zip(runs["run_id"], runs["env"], run_variants(runs), runs["seed"])}


class EventLog:
    """Turns the pool's updates into lines; `runs` reads the registry's runs frame, for the runs' names."""

    def __init__(self, runs: Callable[[], pd.DataFrame], every: float = EVAL_LINE_S,
                 clock: Callable[[], float] = time.time):
        self._runs, self.every, self._clock = runs, every, clock
        self._names: dict[int, str] = {}
        self._holder: dict[int, int] = {}
        """run -> the worker of this pool that claimed it and has not yet let it go (or died holding it)."""
        self._last_eval: dict[int, float] = {}
        self._resumed_at: dict[int, int] = {}
        """run -> the step its holder resumed from: the evaluations up to it are the saved curve, recorded again."""
        self._idle: set[int] = set()

    def lines(self, update: WorkerUpdate) -> list[str]:
        text = self._text(update)
        if update.state != "idle":
            self._idle.discard(update.worker)
        return [self._stamp(text)] if text else []

    def end(self, dead: list[str], counts: dict[str, int]) -> list[str]:
        """The last lines: the workers that died (see `died`), then the registry's runs by status."""
        tally = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        return [self._stamp(line) for line in [*dead, f"all workers exited; runs: {tally or 'none'}"]]

    def _stamp(self, text: str) -> str:
        return f"{timestamp(self._clock())} {text}"

    def _text(self, u: WorkerUpdate) -> str | None:
        run, who = f"run {u.run_id}", f"(worker {u.worker})"
        if u.state == "claimed":
            return self._claim(u)
        if u.state == "started":
            self._resumed_at[u.run_id] = u.step
            if u.message:
                return f"restart {run} {who}: {u.message}"
            return f"resume {run} at step {u.step}/{u.total} {who}" if u.step else None
        if u.state == "eval":
            return self._eval(u)
        if u.state == "finished":
            self._holder.pop(u.run_id, None)
            ret = f", return {u.last_return:.1f}" if u.last_return is not None else ""
            return f"done {run} {self._name(u)}: step {u.step}/{u.total}{ret} {who}"
        if u.state == "failed":
            self._holder.pop(u.run_id, None)
            return f"failed {run} {self._name(u)} {who}: {u.message}"
        if u.state == "released":
            self._holder.pop(u.run_id, None)
            at = f" at step {u.step}/{u.total}" if u.total else ""
            return f"released {run}{at} {who}: back in the queue"
        if u.state == "lost":
            if self._holder.get(u.run_id) == u.worker:
                del self._holder[u.run_id]
            return f"lost {run} {who}: taken over or cancelled, stopped without writing more"
        if u.state == "idle":
            return self._idle_text(u)
        if u.state == "exited":
            return f"worker {u.worker} exited" + (f": {u.message}" if u.message else "")
        return None  # progress: the board's, not the log's

    def _claim(self, u: WorkerUpdate) -> str:
        before = self._holder.get(u.run_id)
        self._holder[u.run_id] = u.worker
        self._last_eval.pop(u.run_id, None)
        self._resumed_at.pop(u.run_id, None)
        taken = before is not None and before != u.worker
        detail = (f"worker {u.worker}" + (f", from worker {before}" if taken else "")
                  + (f", attempt {u.attempt}" if u.attempt > 1 else ""))
        return f"{'takeover' if taken else 'claim'} run {u.run_id} {self._name(u)} ({detail})"

    def _eval(self, u: WorkerUpdate) -> str | None:
        now = self._clock()
        last = self._last_eval.get(u.run_id)
        resumed_at = self._resumed_at.get(u.run_id, 0)
        if (resumed_at and u.step <= resumed_at) or (last is not None and now - last < self.every):
            return None
        self._last_eval[u.run_id] = now
        rate = f" ({u.steps_per_sec:.0f} steps/s)" if u.steps_per_sec else ""
        return f"run {u.run_id} step {u.step}/{u.total} return {u.last_return:.1f}{rate}"

    def _idle_text(self, u: WorkerUpdate) -> str | None:
        """A message (a retry's back-off, a database outage) each time; a plain wait for work once per spell."""
        if u.message:
            return f"worker {u.worker} idle: {u.message}"
        if u.worker in self._idle:
            return None
        self._idle.add(u.worker)
        return f"worker {u.worker} idle: waiting for runs"

    def _name(self, u: WorkerUpdate) -> str:
        """The run's name from the registry, read again when a run is new to it (queued after the last read); the
        worker's own label where the registry does not have it."""
        if u.run_id not in self._names:
            self._names.update(run_names(self._runs()))
        return self._names.get(u.run_id, u.label)
