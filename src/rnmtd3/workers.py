"""Worker processes that drain the registry: claim, train with a registry sink, heartbeat, finish or hand back.

Each worker is a spawned process with its own database connection and one torch thread by default. The parent
only starts them, forwards stop signals and collects the progress messages they send for the live display.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import DatabaseError, IncompleteCurve, RnmError, TransientDatabaseError, UsageError
from .registry import Claim, Registry, open_registry
from .registry.engine import resolve_url, sqlite_path
from .resources import check_runs_fit, spare_cores

POLL_S = 2.0
MAX_IDLE_WAIT_S = 60.0
OUTAGE_WAIT_S = 5.0
PARENT_CHECK_S = 1.0
MAX_OUTAGES = 10
"""Consecutive database outages a worker waits out (about 25 minutes in all) before it gives up."""
TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.ENOMEM}


class LeaseLost(Exception):
    """The run was taken over or cancelled: stop at once and write nothing more for it."""


def default_artifacts(db: str | None) -> Path:
    """Beside a SQLite database (`rnm.db` -> `rnm-artifacts/`), else `./rnm-artifacts`."""
    path = sqlite_path(resolve_url(db))
    return (path.parent if path else Path.cwd()) / "rnm-artifacts"


@dataclass
class WorkerUpdate:
    """What a worker tells the parent; the parent's display is built only from these."""

    worker: int
    state: str  # claimed | started | progress | eval | finished | released | failed | lost | idle | exited
    run_id: int | None = None
    label: str = ""
    step: int = 0
    total: int = 0
    steps_per_sec: float = 0.0
    last_return: float | None = None
    message: str = ""
    attempt: int = 0
    """The claim's attempt number (1 for a run's first), on the updates of a held run."""


class RegistrySink:
    """Writes a held run's evaluations, statistics and checkpoints to the registry; keeps its lease alive."""

    def __init__(self, registry: Registry, claim: Claim, report: Callable[[WorkerUpdate], None], worker: int,
                 stop: threading.Event, lease_s: float):
        self.registry, self.claim, self.report, self.worker = registry, claim, report, worker
        self.stop = stop
        self.lease_s = lease_s
        self.lost = threading.Event()
        self.rate = 0.0
        self.step: int | None = None
        self.last_return: float | None = None
        self._done = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        cfg = claim.config
        self.label = f"#{claim.run_id} {cfg.env} {cfg.pattern} s{cfg.seed}"

    def _heartbeat(self) -> None:
        while not self._done.wait(self.lease_s / 4):
            try:
                if not self.registry.heartbeat(self.claim, steps_done=self.step, steps_per_sec=self.rate or None,
                                           lease_s=self.lease_s):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack for three
                continue

    def close(self) -> None:
        self._done.set()
        self._beat.join()

    def on_start(self, step: int, note: str | None) -> None:
        if step == 0 and note is None and self.claim.checkpoint:
            why = _why_unused(Path(self.claim.checkpoint), self.registry.database_id)
            note = f"checkpoint {self.claim.checkpoint} {why}; restarted from step 0"
        if not self.registry.begin_attempt(self.claim, step, note):
            raise LeaseLost(f"run {self.claim.run_id} was taken over or cancelled")
        self.step = step
        self.announce("started", step, note or "")

    def announce(self, state: str, step: int, message: str = "") -> None:
        self.report(WorkerUpdate(self.worker, state, self.claim.run_id, self.label, step, self.claim.config.steps,
                                 self.rate, self.last_return, message, self.claim.attempts))

    def on_eval(self, step: int, return_mean: float, return_std: float, wall_time: float) -> None:
        if not self.registry.record_eval(self.claim, step, return_mean, return_std, wall_time):
            raise LeaseLost(f"run {self.claim.run_id} was taken over or cancelled")
        self.last_return = return_mean
        self.announce("eval", step)

    def on_stats(self, step: int, stats: dict[str, float]) -> None:
        if not self.registry.record_stats(self.claim, step, stats):
            raise LeaseLost(f"run {self.claim.run_id} was taken over or cancelled")

    def before_checkpoint(self, step: int) -> None:
        """Renew the lease now: a renewed lease cannot be taken over for lease_s, so the files written next are
        this claim's; a lost one stops the run before it can overwrite the new holder's files."""
        if self.lost.is_set() or not self.registry.heartbeat(self.claim, steps_done=self.step, lease_s=self.lease_s):
            self.lost.set()
            raise LeaseLost(f"run {self.claim.run_id} was taken over or cancelled")

    def on_checkpoint(self, step: int, path: Path) -> None:
        if not self.registry.record_checkpoint(self.claim, step, str(path)):
            self.lost.set()

    def on_progress(self, step: int, steps_per_sec: float) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"run {self.claim.run_id} was taken over or cancelled")
        self.rate, self.step = steps_per_sec, step
        self.announce("progress", step)

    def should_stop(self) -> bool:
        if self.lost.is_set():
            raise LeaseLost(f"run {self.claim.run_id} was taken over or cancelled")
        return self.stop.is_set()


def run_folder(claim: Claim, artifacts: Path, database_id: str) -> Path:
    """The run's own folder, under one per database, so that two databases sharing `artifacts` never share a run
    folder: where its last checkpoint was written when this host can reach that (a shared filesystem mounted
    under another `--artifacts`), else under `artifacts`."""
    own = Path(_database_folder(database_id)) / f"run-{claim.run_id:06d}-{claim.config.hash[:8]}"
    if claim.checkpoint:
        last = Path(claim.checkpoint).parent
        if last.is_dir() and last.parts[-2:] == own.parts:
            return last
    return artifacts / own


def _database_folder(database_id: str) -> str:
    return f"db-{database_id[:12]}"


def _why_unused(checkpoint: Path, database_id: str) -> str:
    if not checkpoint.parent.is_dir():
        return f"is not reachable from {socket.gethostname()}"
    folder = checkpoint.parent.parent.name
    if folder == _database_folder(database_id):
        return "is gone"
    if folder.startswith("db-"):
        return ("belongs to another database identity (this file is a copy of that database, or was restored or "
                "moved to another disk)")
    return "is in a folder shared by every database (written before rnm kept one folder per database)"


def classify(exc: BaseException) -> str:
    """'permanent' when retrying cannot help (bad config for this machine, an incomplete curve), 'transient' when
    waiting may (a full disk, a lost database connection), else 'error' (counts as an attempt)."""
    if isinstance(exc, (UsageError, IncompleteCurve)):
        return "permanent"
    if isinstance(exc, TransientDatabaseError) or (isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS):
        return "transient"
    return "error"


def one_line(exc: BaseException) -> str:
    return " ".join(f"{exc.__class__.__name__}: {exc}".split())


def work(db: str, worker: int, report: Callable[[WorkerUpdate], None], stop: threading.Event,
         artifacts: Path, lease_s: float, wait: bool = False, background_eval: bool = False) -> int:
    """Claim and train runs until none is left (or `stop` is set); returns the number of runs finished."""
    # Imported here: the parent of a pool (`rnm run-workers`) never trains, and need not pay torch's import.
    import torch

    from .checkpoint import owner_of
    from .provenance import collect
    from .trainer import train

    registry = open_registry(db, create=False)
    finished = 0
    try:
        database_id = registry.database_id
        outages = 0
        while not stop.is_set():
            try:
                registry.expire_dead_local()
                claim = registry.claim(lease_s)
            except TransientDatabaseError as exc:  # a lost connection: wait for it, as a run's failure would
                outages += 1
                if outages > MAX_OUTAGES:
                    raise
                delay = min(OUTAGE_WAIT_S * 2 ** (outages - 1), MAX_IDLE_WAIT_S * 5)
                report(WorkerUpdate(worker, "idle", message=f"{one_line(exc)}; retrying in {delay:.0f} s"))
                stop.wait(delay)
                continue
            outages = 0
            if claim is None:
                backoff = registry.next_retry_in()
                if not wait and backoff is None:
                    break
                report(WorkerUpdate(worker, "idle", message="" if backoff is None else
                                    f"next retry in {backoff:.0f} s"))
                stop.wait(min(backoff, MAX_IDLE_WAIT_S) if backoff else POLL_S)
                continue
            run_dir = run_folder(claim, Path(artifacts), database_id)
            sink = RegistrySink(registry, claim, report, worker, stop, lease_s)
            sink.announce("claimed", 0)
            try:
                registry.record_attempt(claim, collect(torch.get_num_threads()))
                check_runs_fit([claim.config])  # queued elsewhere or by an older rnm: fails at once if it cannot fit
                result = train(claim.config, run_dir, sink, background_eval=background_eval,
                               owner=owner_of(claim.config, database_id, claim.run_id))
                if result.finished:
                    registry.finish(claim, result.steps_done)
            except LeaseLost as exc:
                report(WorkerUpdate(worker, "lost", claim.run_id, sink.label, message=str(exc)))
            except KeyboardInterrupt:
                registry.release(claim)
                report(WorkerUpdate(worker, "released", claim.run_id, sink.label))
                break
            except Exception as exc:  # noqa: BLE001 - every failure of a run is recorded, by its kind
                kind = classify(exc)
                detail = traceback.format_exc() if kind == "error" else one_line(exc)  # a surprise keeps its trace
                try:
                    registry.fail(claim, detail, permanent=kind == "permanent", transient=kind == "transient")
                except DatabaseError:  # the database itself is gone: the lease expires and the run is taken over
                    pass
                report(WorkerUpdate(worker, "failed", claim.run_id, sink.label, message=one_line(exc)))
            else:
                if result.finished:
                    finished += 1
                    report(WorkerUpdate(worker, "finished", claim.run_id, sink.label, result.steps_done,
                                        claim.config.steps, sink.rate, result.last_return))
                else:
                    registry.release(claim)
                    report(WorkerUpdate(worker, "released", claim.run_id, sink.label, result.steps_done,
                                        claim.config.steps))
            finally:
                sink.close()
    finally:
        registry.close()
    return finished


def _process_main(db: str, worker: int, updates: mp.Queue, artifacts: str, lease_s: float, wait: bool,
                  threads: int, background_eval: bool) -> None:
    """Entry of a spawned worker: one torch thread; the parent's SIGTERM means 'checkpoint and hand the run back',
    its SIGUSR1 'hand it back now'. A terminal's Ctrl-C reaches the whole process group, so workers ignore SIGINT
    and let the parent decide, which keeps the order of the two requests unambiguous. A parent that dies (kill -9)
    counts as SIGTERM: no worker goes on unseen, beyond the reach of the next `run-workers` and its Ctrl-C."""
    import torch

    torch.set_num_threads(threads)
    stop = threading.Event()
    parent = os.getppid()

    def watch_parent() -> None:
        while not stop.wait(PARENT_CHECK_S):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()

    def on_term(signum, frame):  # noqa: ARG001
        stop.set()

    def on_abort(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_abort)
    try:
        work(db, worker, updates.put, stop, Path(artifacts), lease_s, wait, background_eval)
        updates.put(WorkerUpdate(worker, "exited"))
    except KeyboardInterrupt:  # aborted between runs: a run claimed in that instant is reaped as a dead pid's
        updates.put(WorkerUpdate(worker, "exited", message="aborted"))
    except RnmError as exc:  # the database or folder cannot be used: one line, as the CLI gives it
        updates.put(WorkerUpdate(worker, "exited", message=one_line(exc)))
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a surprise: reported to the parent, with its traceback on stderr
        updates.put(WorkerUpdate(worker, "exited", message=f"{exc.__class__.__name__}: {exc}"))
        raise


class WorkerPool:
    """N worker processes and the stream of their updates; `stop()` asks each to checkpoint and hand back.

    Workers evaluate in helper processes when the machine has a core to spare beyond their torch threads.
    """

    def __init__(self, db: str, jobs: int, artifacts: Path, lease_s: float, wait: bool = False, threads: int = 1):
        ctx = mp.get_context("spawn")
        background_eval = spare_cores(jobs, threads)
        self.updates: mp.Queue = ctx.Queue()
        self.processes = [
            ctx.Process(target=_process_main, name=f"rnm-worker-{i}", daemon=False,
                        args=(resolve_url(db), i, self.updates, str(artifacts), lease_s, wait, threads,
                              background_eval))
            for i in range(jobs)
        ]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.processes)

    def poll(self, timeout: float) -> list[WorkerUpdate]:
        """Updates that arrived within `timeout` seconds (at least one wait, then whatever is queued)."""
        out: list[WorkerUpdate] = []
        try:
            out.append(self.updates.get(timeout=timeout))
            while True:
                out.append(self.updates.get_nowait())
        except queue_mod.Empty:
            pass
        return out

    def stop(self, now: bool = False) -> None:
        """Ask every worker to checkpoint and hand its run back; `now` skips the checkpoint."""
        for process in self.processes:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGUSR1 if now else signal.SIGTERM)

    def join(self) -> list[int | None]:
        for process in self.processes:
            process.join()
        return [p.exitcode for p in self.processes]
