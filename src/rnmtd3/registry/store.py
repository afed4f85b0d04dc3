"""The registry's public API: each method is one transaction; each state change one conditional statement.

A lost race (another worker claimed first, a lease was taken over) returns False or None; it never raises.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd
from sqlalchemy import Engine, case, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from ..config import RunConfig
from .engine import open_engine, safe_url
from .models import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Evaluation, Run, TrainStat

DEFAULT_LEASE_S = 60.0


@dataclass(frozen=True)
class Claim:
    """A run this worker now holds; `token` proves it on every later write."""

    run_id: int
    config: RunConfig
    attempts: int
    token: str
    checkpoint: str | None


@dataclass(frozen=True)
class EnqueueResult:
    added: list[RunConfig]
    existing: list[RunConfig]


class Registry:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        self.url = safe_url(engine.url.render_as_string(hide_password=False))

    # -- time, by the database's clock -------------------------------------------------------------
    def _now(self) -> ColumnElement[float]:
        if self.engine.dialect.name == "sqlite":
            return (func.julianday("now") - 2440587.5) * 86400.0
        return func.extract("epoch", func.clock_timestamp())

    def _insert_ignore(self, table):
        """INSERT that skips rows whose key exists: a resumed run re-reporting a step changes nothing."""
        if self.engine.dialect.name == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        raise NotImplementedError(f"rnm supports SQLite and PostgreSQL, not {self.engine.dialect.name}")

    def _tx(self) -> Session:
        return self._session.begin()

    # -- queue ------------------------------------------------------------------------------------
    def enqueue(self, configs: Sequence[RunConfig], max_attempts: int = 3, dry_run: bool = False) -> EnqueueResult:
        """Add the configs not already present, all in one transaction; `dry_run` only reports what would be."""
        with self._tx() as session:
            hashes = [c.hash for c in configs]
            present: set[str] = set()
            for start in range(0, len(hashes), 500):
                chunk = hashes[start:start + 500]
                present.update(session.scalars(select(Run.config_hash).where(Run.config_hash.in_(chunk))))
            new = [c for c in configs if c.hash not in present]
            if new and not dry_run:
                now = session.scalar(select(self._now()))
                session.execute(insert(Run), [
                    {"config_hash": c.hash, "config": c.to_json(), "env": c.env, "pattern": str(c.pattern),
                     "seed": c.seed, "steps_total": c.steps, "status": QUEUED, "attempts": 0,
                     "max_attempts": max_attempts, "created_at": now, "steps_done": 0}
                    for c in new
                ])
        return EnqueueResult(new, [c for c in configs if c.hash in present])

    def claim(self, lease_s: float = DEFAULT_LEASE_S, host: str | None = None, pid: int | None = None) -> Claim | None:
        """Atomically take the oldest claimable run: queued, or running with an expired lease (its worker is gone).

        One UPDATE ... RETURNING statement; on PostgreSQL its subquery locks with FOR UPDATE SKIP LOCKED.
        """
        host = host or socket.gethostname()
        pid = pid or os.getpid()
        token = str(uuid.uuid4())
        now = self._now()
        with self._tx() as session:
            session.execute(
                update(Run)
                .where(Run.status == RUNNING, Run.lease_expires < now, Run.attempts >= Run.max_attempts)
                .values(status=FAILED, finished_at=now, claim_token=None,
                        error=func.coalesce(Run.error, "") + "worker lost (killed or silent) on its last attempt")
            )
            candidate = (
                select(Run.id)
                .where((Run.status == QUEUED) | ((Run.status == RUNNING) & (Run.lease_expires < now)))
                .order_by(Run.id)
                .limit(1)
            )
            if self.engine.dialect.name == "postgresql":
                candidate = candidate.with_for_update(skip_locked=True)
            row = session.execute(
                update(Run)
                .where(Run.id == candidate.scalar_subquery())
                .values(status=RUNNING, attempts=Run.attempts + 1, worker_host=host, worker_pid=pid,
                        claim_token=token, lease_expires=now + lease_s, heartbeat_at=now,
                        started_at=func.coalesce(Run.started_at, now))
                .returning(Run.id, Run.config, Run.attempts, Run.checkpoint)
            ).one_or_none()
        if row is None:
            return None
        return Claim(row.id, RunConfig.from_dict(json.loads(row.config)), row.attempts, token, row.checkpoint)

    def expire_dead_local(self, host: str | None = None) -> list[int]:
        """Expire the leases of runs held by processes of this host that no longer exist, so they are claimable now."""
        host = host or socket.gethostname()
        with self._tx() as session:
            held = session.execute(
                select(Run.id, Run.worker_pid, Run.claim_token).where(Run.status == RUNNING, Run.worker_host == host)
            ).all()
            dead = [r for r in held if r.worker_pid is not None and not _pid_alive(r.worker_pid)]
            for r in dead:
                session.execute(update(Run).where(Run.id == r.id, Run.claim_token == r.claim_token)
                                .values(lease_expires=0.0))
        return [r.id for r in dead]

    # -- while a run is held (each write checks the token) -------------------------------------------
    def heartbeat(self, claim: Claim, steps_done: int | None = None, steps_per_sec: float | None = None,
                  lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Renew the lease; False when the run was taken over or cancelled (the worker must stop)."""
        now = self._now()
        values: dict[str, object] = {"lease_expires": now + lease_s, "heartbeat_at": now}
        if steps_done is not None:
            values["steps_done"] = steps_done
        if steps_per_sec is not None:
            values["steps_per_sec"] = steps_per_sec
        with self._tx() as session:
            result = session.execute(update(Run).where(*self._held(claim)).values(**values))
        return result.rowcount == 1

    def record_eval(self, claim: Claim, step: int, return_mean: float, return_std: float, wall_time: float) -> bool:
        """Store an evaluation if the claim still holds the run; False (nothing written) when it was lost."""
        with self._tx() as session:
            held = session.execute(update(Run).where(*self._held(claim)).values(last_return=return_mean))
            if held.rowcount != 1:
                return False
            session.execute(self._insert_ignore(Evaluation), [
                {"run_id": claim.run_id, "step": step, "return_mean": return_mean, "return_std": return_std,
                 "wall_time": wall_time}])
        return True

    def record_stats(self, claim: Claim, step: int, stats: dict[str, float]) -> bool:
        """Store training statistics if the claim still holds the run; False (nothing written) when it was lost."""
        with self._tx() as session:
            if session.scalar(select(func.count()).select_from(Run).where(*self._held(claim))) != 1:
                return False
            if stats:
                session.execute(self._insert_ignore(TrainStat), [
                    {"run_id": claim.run_id, "step": step, "name": name, "value": float(value)}
                    for name, value in stats.items()])
        return True

    def record_checkpoint(self, claim: Claim, step: int, path: str) -> bool:
        with self._tx() as session:
            result = session.execute(update(Run).where(*self._held(claim)).values(steps_done=step, checkpoint=path))
        return result.rowcount == 1

    def note(self, claim: Claim, text: str) -> bool:
        """Append a line to the run's notes (kept across attempts)."""
        with self._tx() as session:
            result = session.execute(update(Run).where(*self._held(claim)).values(
                notes=func.coalesce(Run.notes + "\n", "") + text))
        return result.rowcount == 1

    def finish(self, claim: Claim, steps_done: int) -> bool:
        now = self._now()
        with self._tx() as session:
            result = session.execute(update(Run).where(*self._held(claim)).values(
                status=DONE, steps_done=steps_done, finished_at=now, claim_token=None, lease_expires=None,
                error=None))
        return result.rowcount == 1

    def release(self, claim: Claim) -> bool:
        """Give a run back to the queue after a clean stop; the attempt does not count."""
        with self._tx() as session:
            result = session.execute(update(Run).where(*self._held(claim)).values(
                status=QUEUED, attempts=Run.attempts - 1, claim_token=None, lease_expires=None,
                worker_host=None, worker_pid=None))
        return result.rowcount == 1

    def fail(self, claim: Claim, error: str) -> bool:
        """Record a failed attempt: back to the queue, or failed for good once attempts reach max_attempts."""
        now = self._now()
        with self._tx() as session:
            result = session.execute(update(Run).where(*self._held(claim)).values(
                status=case((Run.attempts >= Run.max_attempts, literal(FAILED)), else_=literal(QUEUED)),
                finished_at=case((Run.attempts >= Run.max_attempts, now), else_=None),
                error=error, claim_token=None, lease_expires=None))
        return result.rowcount == 1

    @staticmethod
    def _held(claim: Claim) -> tuple[ColumnElement[bool], ...]:
        return (Run.id == claim.run_id, Run.claim_token == claim.token, Run.status == RUNNING)

    # -- user actions -----------------------------------------------------------------------------
    def retry_failed(self, run_ids: Iterable[int] | None = None) -> int:
        """Failed (and cancelled) runs back to the queue with fresh attempts; they resume from their checkpoint."""
        stmt = update(Run).where(Run.status.in_((FAILED, CANCELLED))).values(
            status=QUEUED, attempts=0, finished_at=None, claim_token=None, lease_expires=None)
        if run_ids is not None:
            stmt = stmt.where(Run.id.in_(list(run_ids)))
        with self._tx() as session:
            return session.execute(stmt).rowcount

    def cancel(self, run_ids: Iterable[int] | None = None, include_running: bool = False) -> int:
        """Cancel queued runs (and running ones if asked: their workers notice at the next heartbeat)."""
        states = (QUEUED, RUNNING) if include_running else (QUEUED,)
        stmt = update(Run).where(Run.status.in_(states)).values(status=CANCELLED, claim_token=None,
                                                               lease_expires=None)
        if run_ids is not None:
            stmt = stmt.where(Run.id.in_(list(run_ids)))
        with self._tx() as session:
            return session.execute(stmt).rowcount

    # -- reading ----------------------------------------------------------------------------------
    def runs_frame(self) -> pd.DataFrame:
        columns = [Run.id.label("run_id"), Run.env, Run.pattern, Run.seed, Run.status, Run.attempts,
                   Run.steps_done, Run.steps_total, Run.checkpoint, Run.config_hash, Run.worker_host,
                   Run.worker_pid, Run.created_at, Run.started_at, Run.finished_at, Run.heartbeat_at,
                   Run.steps_per_sec, Run.last_return, Run.error, Run.notes, Run.config]
        frame = self._frame(select(*columns).order_by(Run.id))
        # Nullable float columns come back as object dtype when every value is NULL; readers expect numbers.
        return frame.astype({"steps_per_sec": float, "last_return": float})

    def evals_frame(self) -> pd.DataFrame:
        return self._frame(
            select(Evaluation.run_id, Run.env, Run.pattern, Run.seed, Evaluation.step, Evaluation.return_mean,
                   Evaluation.return_std, Evaluation.wall_time)
            .join(Run, Run.id == Evaluation.run_id).order_by(Evaluation.run_id, Evaluation.step))

    def stats_frame(self) -> pd.DataFrame:
        return self._frame(
            select(TrainStat.run_id, Run.env, Run.pattern, Run.seed, TrainStat.step, TrainStat.name, TrainStat.value)
            .join(Run, Run.id == TrainStat.run_id).order_by(TrainStat.run_id, TrainStat.step, TrainStat.name))

    def now(self) -> float:
        with self._tx() as session:
            return float(session.scalar(select(self._now())))

    def _frame(self, stmt) -> pd.DataFrame:
        with self._tx() as session:
            result = session.execute(stmt)
            return pd.DataFrame(result.all(), columns=list(result.keys()))

    def close(self) -> None:
        self.engine.dispose()


def open_registry(db: str | os.PathLike | None = None, create: bool = True) -> Registry:
    """The registry at `db` (a path or SQLAlchemy URL; default $RNM_DB or ./rnm.db), migrated to the head."""
    return Registry(open_engine(db, create=create))


def _pid_alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a killed worker its parent has not reaped yet is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(") ", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): existence is all we can tell
        return True
