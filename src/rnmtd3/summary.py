"""What `rnm status` and the queue summary show, computed from registry frames (no printing here)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from .config import config_keys
from .patterns import Pattern
from .registry import STATUSES


@dataclass(frozen=True)
class StatusSummary:
    counts: pd.DataFrame  # one row per (env, pattern): a column per status, steps_done, steps_total
    total_steps: int
    done_steps: int
    eta_s: float | None  # remaining steps over the current aggregate speed of running runs
    failed: pd.DataFrame  # run_id, env, pattern, seed, attempts, last error line


def summarize(runs: pd.DataFrame) -> StatusSummary:
    if runs.empty:
        empty = pd.DataFrame(columns=["env", "pattern", *STATUSES, "steps_done", "steps_total"])
        return StatusSummary(empty, 0, 0, None, pd.DataFrame(columns=["run_id", "env", "pattern", "seed", "error"]))
    counts = runs.pivot_table(index=["env", "pattern"], columns="status", values="run_id", aggfunc="count",
                              fill_value=0).reindex(columns=list(STATUSES), fill_value=0)
    steps = runs.groupby(["env", "pattern"])[["steps_done", "steps_total"]].sum()
    counts = counts.join(steps).reset_index()
    counts = counts.sort_values(["env", "pattern"], key=lambda col: col.map(Pattern.sort_key) if col.name == "pattern"
                                else col).reset_index(drop=True)
    counts.columns.name = None
    active = runs[runs["status"].isin(["queued", "running"])]
    total = int(runs.loc[runs["status"] != "cancelled", "steps_total"].sum())
    done = int(runs.loc[runs["status"] != "cancelled", "steps_done"].clip(lower=0).sum())
    remaining = int((active["steps_total"] - active["steps_done"]).sum())
    speed = runs.loc[runs["status"] == "running", "steps_per_sec"].fillna(0).sum()
    eta = remaining / speed if speed > 0 else None
    failed = runs[runs["status"] == "failed"][["run_id", "env", "pattern", "seed", "attempts", "error"]].copy()
    failed["error"] = failed["error"].fillna("").map(last_line)
    return StatusSummary(counts, total, done, eta, failed.reset_index(drop=True))


def last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def runs_export(runs: pd.DataFrame) -> pd.DataFrame:
    """`rnm export runs`: the contract's columns first, then every config key as its own column."""
    front = ["run_id", "env", "pattern", "seed", "status", "attempts", "steps_done", "checkpoint"]
    rest = ["steps_total", "last_return", "worker_host", "worker_pid", "created_at", "started_at", "finished_at",
            "config_hash", "error"]
    out = runs[front + rest].copy()
    configs = runs["config"].map(json.loads)
    for key in config_keys():
        values = configs.map(lambda c, k=key: c.get(k))
        out[key] = values.map(lambda v: "x".join(map(str, v)) if isinstance(v, list) else v)
    for column in ("created_at", "started_at", "finished_at"):
        out[column] = pd.to_datetime(out[column], unit="s", utc=True)
    return out


def evals_export(evals: pd.DataFrame) -> pd.DataFrame:
    return evals[["run_id", "env", "pattern", "seed", "step", "return_mean", "return_std", "wall_time"]]
