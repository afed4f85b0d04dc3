"""The registry's tables. Times are Unix seconds read from the database's clock, so hosts never disagree."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One (config, seed): its identity, its place in the queue, who holds it, and how far it got."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    config_hash: Mapped[str] = mapped_column(String(64), unique=True)
    config: Mapped[str] = mapped_column(Text)
    env: Mapped[str] = mapped_column(String(128))
    pattern: Mapped[str] = mapped_column(String(64))  # `unstructured:0.875` is 18 characters
    seed: Mapped[int] = mapped_column(Integer)
    steps_total: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_ns: Mapped[str | None] = mapped_column(String(64))  # boot and pid namespace the pid belongs to
    claim_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    steps_per_sec: Mapped[float | None] = mapped_column(Float)
    last_return: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)  # events worth knowing that are not errors (a lost checkpoint)
    retry_at: Mapped[float | None] = mapped_column(Float)  # not claimable before this time (transient back-off)
    transient_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (Index("ix_runs_status", "status"),)


class Evaluation(Base):
    """One evaluation of a run: the mean and std of the noise-free episode returns at `step`."""

    __tablename__ = "evaluations"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    return_mean: Mapped[float] = mapped_column(Float)
    return_std: Mapped[float] = mapped_column(Float)
    wall_time: Mapped[float] = mapped_column(Float)


class TrainStat(Base):
    """A named training statistic (critic_loss, actor_loss, sad_actor, steps_per_sec, ...) of a run at `step`."""

    __tablename__ = "train_stats"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class RegistryInfo(Base):
    """Facts about the database itself; `database_id` names it in every artifact written for its runs."""

    __tablename__ = "registry_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Attempt(Base):
    """One attempt at a run: when, by which process, and the code and library versions that made its numbers."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    rnm_version: Mapped[str | None] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(128))
    python: Mapped[str | None] = mapped_column(String(64))
    torch: Mapped[str | None] = mapped_column(String(64))
    gymnasium: Mapped[str | None] = mapped_column(String(64))
    mujoco: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    cpu: Mapped[str | None] = mapped_column(String(255))
    threads: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_attempts_run_id", "run_id"),)
