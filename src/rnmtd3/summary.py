"""What `rnm status` and the queue summary show, computed from registry frames (no printing here)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from .config import RunConfig, config_keys, stored_config
from .envs import env_dims
from .errors import RnmError
from .patterns import network_density
from .provenance import KEYS as PROVENANCE_KEYS
from .registry import STATUSES, Registry
from .variants import run_variants


DENSITY_STATS = ("density_actor", "density_critic1", "density_critic2")
"""The training statistics that measure each online network's density (nonzero weights over all weights of its
sparse layers; 1.0 for dense), emitted by the trainer; the targets share their online network's mask."""
DENSITY_RANGES = ("actor_min", "actor_max", "critic_min", "critic_max")


@dataclass(frozen=True)
class StatusSummary:
    counts: pd.DataFrame  # one row per (env, pattern): a column per status, steps_done, steps_total, and the
    # lowest and highest latest measured density of its runs' actors and critics (DENSITY_RANGES; NaN before any)
    total_steps: int
    done_steps: int
    running: int  # runs running now
    speed: float  # their aggregate steps/s, as their last heartbeats reported it
    eta_s: float | None  # remaining steps over the current aggregate speed of running runs
    failed: pd.DataFrame  # run_id, env, pattern, seed, attempts, last error line
    notes: pd.DataFrame  # run_id, env, pattern, seed, last note line: why a run restarted, for instance
    waiting: pd.DataFrame  # run_id, env, pattern, seed, retries, retry_at, last error line: queued runs backing
    # off after a passing failure (a full disk), which would otherwise look like any queued run


def measured_densities(registry: Registry) -> pd.DataFrame:
    """Each run's latest measured densities: run_id and DENSITY_STATS, NaN before its first measurement."""
    return registry.latest_stats(DENSITY_STATS)


def summarize(runs: pd.DataFrame, densities: pd.DataFrame) -> StatusSummary:
    """Counts per env and variant (a pattern with its mask rule and init, and the values of any key that differs
    between its runs), so that a sweep shows each setting's own progress and density and two settings never look
    like one; `densities` as measured_densities gives them."""
    if runs.empty:
        empty = pd.DataFrame(columns=["env", "method", "label", *STATUSES, "steps_done", "steps_total",
                                      *DENSITY_RANGES])
        return StatusSummary(empty, 0, 0, 0, 0.0, None,
                             pd.DataFrame(columns=["run_id", "env", "pattern", "seed", "attempts", "error"]),
                             pd.DataFrame(columns=["run_id", "env", "pattern", "seed", "note"]),
                             pd.DataFrame(columns=["run_id", "env", "pattern", "seed", "retries", "retry_at",
                                                   "error"]))
    per_run = run_variants(runs)
    variants = {str(v): v for v in per_run}
    runs = runs.assign(method=[str(v) for v in per_run])
    counts = runs.pivot_table(index=["env", "method"], columns="status", values="run_id", aggfunc="count",
                              fill_value=0).reindex(columns=list(STATUSES), fill_value=0)
    steps = runs.groupby(["env", "method"])[["steps_done", "steps_total"]].sum()
    counts = counts.join(steps).join(density_ranges(runs, densities)).reset_index()
    counts = counts.sort_values(["env", "method"], key=lambda col: col.map(lambda t: variants[t].sort_key())
                                if col.name == "method" else col).reset_index(drop=True)
    counts.insert(2, "label", [variants[text].label() for text in counts["method"]])
    counts.columns.name = None
    active = runs[runs["status"].isin(["queued", "running"])]
    total = int(runs.loc[runs["status"] != "cancelled", "steps_total"].sum())
    done = int(runs.loc[runs["status"] != "cancelled", "steps_done"].clip(lower=0).sum())
    remaining = int((active["steps_total"] - active["steps_done"]).sum())
    running = runs["status"] == "running"
    speed = float(runs.loc[running, "steps_per_sec"].fillna(0).sum())
    eta = remaining / speed if speed > 0 else None
    failed = runs[runs["status"] == "failed"][["run_id", "env", "pattern", "seed", "attempts", "error"]].copy()
    failed["error"] = failed["error"].fillna("").map(last_line)
    notes = runs[["run_id", "env", "pattern", "seed"]].assign(note=runs["notes"].fillna("").map(last_line))
    notes = notes[notes["note"] != ""]
    waiting = runs[(runs["status"] == "queued") & runs["retry_at"].notna()].rename(
        columns={"transient_failures": "retries"})
    waiting = waiting[["run_id", "env", "pattern", "seed", "retries", "retry_at"]].assign(
        error=waiting["error"].fillna("").map(last_line))
    return StatusSummary(counts, total, done, int(running.sum()), speed, eta, failed.reset_index(drop=True),
                         notes.reset_index(drop=True), waiting.reset_index(drop=True))


def density_ranges(runs: pd.DataFrame, densities: pd.DataFrame) -> pd.DataFrame:
    """Per (env, method), the lowest and highest latest measured density of its runs' actors and of their critics
    (both critics of a run pooled): a sweep over hidden sizes or sparse_io differs by run, and an input width that
    is not a multiple of M makes an actor and a critic differ."""
    measured = runs[["run_id", "env", "method"]].merge(densities, on="run_id", how="left")
    critics = measured[list(DENSITY_STATS[1:])]
    measured = measured.assign(actor=measured[DENSITY_STATS[0]], critic_low=critics.min(axis=1),
                               critic_high=critics.max(axis=1))
    return measured.groupby(["env", "method"]).agg(actor_min=("actor", "min"), actor_max=("actor", "max"),
                                                    critic_min=("critic_low", "min"), critic_max=("critic_high", "max"))


def run_densities(runs: pd.DataFrame) -> pd.Series:
    """The density each run's config gives its networks (kept weights over all weights of the actor and one
    critic), computed without training, indexed like `runs` (measured_densities has what training measured). It is
    not N/M: a row whose length is not a multiple of M ends in a shorter group that keeps up to N (Hopper's 11
    inputs keep 2 of 11 at 1:8). NaN for a run this machine cannot judge: its env
    cannot be built here, or its config comes from another rnm version."""
    return pd.Series([_config_density(text) for text in runs["config"]], index=runs.index, dtype=float)


def _config_density(config_json: str) -> float:
    try:
        config = RunConfig.from_dict(json.loads(config_json))
        obs_dim, act_dim = env_dims(config.env)
    except (RnmError, ValueError, TypeError):  # TypeError: a key whose type this version does not read
        return math.nan
    return network_density(config.pattern, obs_dim, act_dim, config.hidden, config.sparse_io)


def last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def latest_provenance(attempts: pd.DataFrame) -> pd.DataFrame:
    """The provenance of each run's latest attempt (run_id and PROVENANCE_KEYS), the code that its checkpoint
    and last evaluations come from. An empty frame (a database from before attempts were recorded) gives none."""
    if attempts.empty:
        return pd.DataFrame(columns=["run_id", *PROVENANCE_KEYS])
    # By start time, not attempt number: `rnm retry` resets a run's count, so a later attempt can reuse a number.
    latest = attempts.sort_values(["run_id", "started_at"], kind="stable").groupby("run_id").tail(1)
    return latest[["run_id", *PROVENANCE_KEYS]]


def runs_export(runs: pd.DataFrame, attempts: pd.DataFrame, densities: pd.DataFrame) -> pd.DataFrame:
    """`rnm export runs`: the contract's columns first, then the notes and speed, the latest measured densities
    (DENSITY_STATS, as measured_densities gives them; empty before a run's first measurement), the provenance of
    the latest attempt (empty for a run that has none recorded), and every config key as its own column."""
    front = ["run_id", "env", "pattern", "seed", "status", "attempts", "steps_done", "checkpoint"]
    rest = ["steps_total", "last_return", "steps_per_sec", "worker_host", "worker_pid", "created_at", "started_at",
            "finished_at", "retry_at", "transient_failures", "config_hash", "error", "notes"]
    out = runs[front + rest].merge(densities[["run_id", *DENSITY_STATS]], on="run_id", how="left")
    out = out.merge(latest_provenance(attempts), on="run_id", how="left")
    # Whole numbers stay whole beside a missing value (a queued run has no pid, an old one no provenance): 4, not 4.0.
    out = out.astype({"worker_pid": "Int64", "threads": "Int64"})
    configs = [stored_config(text) for text in runs["config"]]
    for key in config_keys():
        values = (config.get(key) for config in configs)
        out[key] = ["x".join(map(str, v)) if isinstance(v, list) else v for v in values]
    for column in ("created_at", "started_at", "finished_at", "retry_at"):
        out[column] = pd.to_datetime(out[column], unit="s", utc=True)
    return out


def evals_export(evals: pd.DataFrame) -> pd.DataFrame:
    return evals[["run_id", "env", "pattern", "seed", "step", "return_mean", "return_std", "wall_time"]]
