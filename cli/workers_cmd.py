"""`rnm run-workers`: start N workers and show them live until the queue is drained or Ctrl-C."""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

import typer
from rich.live import Live
from rich.table import Table

from rnmtd3.errors import UsageError
from rnmtd3.folders import prepare_out_dir
from rnmtd3.registry import open_registry
from rnmtd3.resources import check_memory
from rnmtd3.worker_events import EVAL_LINE_S, EventLog, died
from rnmtd3.workers import WorkerPool, WorkerUpdate, default_artifacts

from .common import DbOption, err, fmt_duration, out

MAX_LEASE_S = 86_400.0
"""A day: a longer silence is a dead worker, and the heartbeat waits lease/4 in a timer that must not overflow."""


def run_workers(
    jobs: int = typer.Option(1, "-j", "--jobs", help="worker processes"),
    threads_per_worker: int = typer.Option(1, help="torch threads per worker"),
    wait: bool = typer.Option(False, "--wait", help="keep polling for new work instead of exiting when idle"),
    artifacts: Optional[Path] = typer.Option(None, help="checkpoint folder (default: rnm-artifacts/ beside the db)"),
    lease: float = typer.Option(60.0, help="seconds a silent worker keeps its run before others take it over "
                                "(10 to 86400)"),
    log_every: float = typer.Option(EVAL_LINE_S, help="event log: at most one evaluation line per run per this "
                                    "many seconds (0: every evaluation)"),
    ray: Optional[str] = typer.Option(None, "--ray", help="run the workers as Ray tasks: a cluster ADDRESS, "
                                      "'auto' (a running cluster) or 'local' (start one here)"),
    db: Optional[str] = DbOption,
) -> None:
    """Drain the queue with N worker processes.

    Ctrl-C checkpoints every run and hands it back to the queue.

    On a terminal, stderr shows a live board. Output that is not a terminal gets an event log instead, one line per
    event as it happens (claim, takeover, resume, evaluation, done, failure, release, worker exit), each starting
    with the local time and its UTC offset: on stdout when stdout is not a terminal (`rnm run-workers > workers.log
    2>&1`, nohup, a batch job; `> workers.log` alone keeps the board on the terminal), else on stderr
    (`rnm run-workers 2> workers.log`). Messages (stopping, failed runs) are on stderr."""
    if jobs < 1 or threads_per_worker < 1:
        raise UsageError("-j and --threads-per-worker must be at least 1")
    if not 10 <= lease <= MAX_LEASE_S:  # NaN fails both comparisons
        raise UsageError(f"bad --lease {lease}: give a number of seconds from 10 to {MAX_LEASE_S:.0f} (a day)")
    if not log_every >= 0:
        raise UsageError(f"bad --log-every {log_every}: give a number of seconds, 0 or more")
    registry = open_registry(db, create=False)
    if ray is not None:  # Ray workers run on the cluster's nodes: plan against their memory, not this machine's
        from rnmtd3.ray_workers import connect

        check_memory(registry, jobs, threads_per_worker, cluster=connect(ray, jobs))
    else:
        check_memory(registry, jobs, threads_per_worker)
    folder = prepare_out_dir(artifacts or default_artifacts(db), "--artifacts")
    failed_before = set(_failed(registry))
    if ray is not None:
        lost_tasks = _run_on_ray(ray, db, jobs, folder, lease, wait, threads_per_worker, registry)
        if _report_failed(registry, failed_before) or lost_tasks:
            raise typer.Exit(1)
        return
    pool = WorkerPool(db, jobs, folder, lease, wait=wait, threads=threads_per_worker)
    board = Board(jobs)
    log_file = _log_stream()
    events = EventLog(registry.runs_frame, log_every) if log_file else None
    stopping = {"count": 0, "signal": 0}

    def on_stop(signum, frame):  # noqa: ARG001
        stopping["count"] += 1
        stopping["signal"] = stopping["signal"] or signum
        if stopping["count"] == 1:
            err.print("stopping: each worker checkpoints at its next episode boundary and hands its run back "
                      "(Ctrl-C again to stop without the checkpoint)", soft_wrap=True)
        pool.stop(now=stopping["count"] > 1)

    def show(updates: list[WorkerUpdate]) -> None:
        for update in updates:
            board.apply(update)
            if events:
                _write(log_file, events.lines(update))

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    pool.start()
    if err.is_terminal:
        with Live(board.render(registry), console=err, refresh_per_second=2, transient=False) as live:
            codes = _drain(pool, board, registry, show, lambda: live.update(board.render(registry)))
            dead = board.exited(codes)
            live.update(board.render(registry))
        err.print()
        for line in board.log + dead:
            err.print(line)
    else:
        dead = board.exited(_drain(pool, board, registry, show, lambda: None))
    if events:
        _write(log_file, events.end(dead, board.counts))
    if _report_failed(registry, failed_before) or (dead and not stopping["count"]):
        raise typer.Exit(1)
    if stopping["count"]:  # 128 + the signal, as shells report it: a scheduler can tell a stop from a drained queue
        raise typer.Exit(128 + stopping["signal"])


def _log_stream() -> TextIO | None:
    """Where the event log goes: stdout when it is redirected, else stderr when that is; None when both are
    terminals (the board says it all)."""
    if not out.is_terminal:
        return sys.stdout
    return None if err.is_terminal else sys.stderr


def _write(stream: TextIO, lines: list[str]) -> None:
    """Plain lines, flushed at once, so that `tail -f` sees each event when it happens."""
    for line in lines:
        print(line, file=stream, flush=True)


def _drain(pool: WorkerPool, board: "Board", registry, show, redraw) -> list[int | None]:
    """Feed updates to the board and the log until every worker has exited; returns their exit codes."""
    last_counts = 0.0
    while pool.alive():
        show(pool.poll(0.1))  # short, so the end of the last worker is seen at once
        if time.time() - last_counts > 5:
            board.refresh_counts(registry)
            last_counts = time.time()
        redraw()
    show(pool.poll(0.1))
    board.refresh_counts(registry)
    return pool.join()


def _report_failed(registry, before: set[int]) -> bool:
    """Say which runs turned failed while this invocation ran: those its workers failed, and those the registry
    failed at a claim (an unreadable config, a worker lost on its last attempt), which no worker reports."""
    failed = sorted(set(_failed(registry)) - before)
    if failed:
        err.print(f"{len(failed)} run(s) failed: {', '.join(map(str, failed))}; `rnm status` shows why, `rnm retry` "
                  "queues them again", soft_wrap=True)
    return bool(failed)


def _run_on_ray(address: str, db, jobs: int, folder: Path, lease: float, wait: bool, threads: int, registry) -> bool:
    """Ray places the workers; the display shows the registry's counts, since Ray tasks send no updates.
    True when a task died."""
    from rnmtd3.ray_workers import RayPool

    pool = RayPool(address, db, jobs, folder, lease, wait=wait, threads=threads)
    board = Board(0)
    signal.signal(signal.SIGINT, lambda signum, frame: pool.stop())
    signal.signal(signal.SIGTERM, lambda signum, frame: pool.stop())
    try:
        with Live(board.render(registry), console=err, refresh_per_second=1) as live:
            while pool.alive():
                pool.wait(2.0)
                board.refresh_counts(registry)
                live.update(board.render(registry))
        finished, dead = pool.outcome()
    finally:
        pool.shutdown()
    err.print(f"{finished} run(s) finished by {jobs} Ray worker(s)")
    for line in dead:
        err.print(line)
    return bool(dead)


def _failed(registry) -> list[int]:
    runs = registry.runs_frame()
    return [] if runs.empty else [int(r) for r in runs.loc[runs["status"] == "failed", "run_id"]]


class Board:
    """The live display's state, built from worker updates and the registry's counts."""

    def __init__(self, jobs: int):
        self.workers = jobs
        self.rows: dict[int, WorkerUpdate] = {i: WorkerUpdate(i, "starting") for i in range(jobs)}
        self.counts: dict[str, int] = {}
        self.log: list[str] = []

    def apply(self, update: WorkerUpdate) -> None:
        self.rows[update.worker] = update
        if update.state in ("finished", "failed", "released", "lost") or (update.state == "exited" and update.message):
            ret = f", return {update.last_return:.1f}" if update.last_return is not None else ""
            self.log.append(f"worker {update.worker}: {update.state} {update.label}{ret} {update.message}".rstrip())

    def exited(self, codes: list[int | None]) -> list[str]:
        """Mark the rows of workers that died and say so in one line each: a dead worker sends no last update, so
        its row would still show its last progress as if it were alive."""
        dead = died(codes)
        for worker in dead:
            self.rows[worker] = dataclasses.replace(self.rows[worker], state="died")
        return list(dead.values())

    def refresh_counts(self, registry) -> None:
        runs = registry.runs_frame()
        self.counts = runs["status"].value_counts().to_dict() if not runs.empty else {}
        if not self.workers:  # Ray tasks send no updates: show the running runs as the registry has them
            running = runs[runs["status"] == "running"] if not runs.empty else runs
            running = running.assign(steps_per_sec=running["steps_per_sec"].fillna(0.0))  # NaN before a first beat
            self.rows = {
                int(r.run_id): WorkerUpdate(int(r.run_id), f"{r.worker_host}:{r.worker_pid}", int(r.run_id),
                                            f"#{r.run_id} {r.env} {r.pattern} s{r.seed}", int(r.steps_done),
                                            int(r.steps_total), float(r.steps_per_sec),
                                            None if r.last_return != r.last_return else r.last_return)
                for r in running.itertuples()
            }

    def render(self, registry) -> Table:
        table = Table(title=f"rnm workers on {registry.url}", title_justify="left")
        for column in ("worker", "state", "run", "steps", "steps/s", "last return", "ETA"):
            table.add_column(column, justify="right" if column in ("steps", "steps/s", "last return", "ETA") else "left")
        for i, row in sorted(self.rows.items()):
            eta = (row.total - row.step) / row.steps_per_sec if row.steps_per_sec and row.total else None
            table.add_row(str(i), row.state, row.label, f"{row.step:,}/{row.total:,}" if row.total else "",
                          f"{row.steps_per_sec:.0f}" if row.steps_per_sec else "",
                          f"{row.last_return:.1f}" if row.last_return is not None else "", fmt_duration(eta))
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        table.caption = f"runs: {counts}" if counts else None
        return table
