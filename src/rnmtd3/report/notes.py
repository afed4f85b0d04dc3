"""Notes under the report's tables: what was left out, how much a score averages, and which versions made the runs.
Each is one sentence a paper's reader can act on."""

from __future__ import annotations

import pandas as pd

from ..provenance import VERSION_KEYS


def status_counts(runs: pd.DataFrame) -> str:
    """'2 running, 1 failed': the statuses of runs that are not done, for the notes."""
    counts = runs["status"].value_counts()
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))


def runs_text(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


VERSION_LABELS = {"rnm_version": "rnm", "git_commit": "git commit", "torch": "torch", "gymnasium": "gymnasium",
                  "mujoco": "mujoco"}
COMMIT_CHARS = 12  # enough to name a commit in a note; the export has the full hash


def _short_commit(commit: str) -> str:
    """'0123456789ab-dirty' for a full hash with '-dirty'; 'none' stays as it is."""
    suffix = "-dirty" if commit.endswith("-dirty") else ""
    return commit.removesuffix(suffix)[:COMMIT_CHARS] + suffix


def version_notes(attempts: pd.DataFrame | None, run_ids: pd.Series) -> list[str]:
    """Notes for a table whose runs were made by different code or library versions (VERSION_KEYS), with the runs
    of each version counted, and for runs without recorded provenance beside runs with it (their versions are
    unknown, so the table cannot be said to come from one). Every attempt counts: a run resumed under a new
    torch was made by both. None (an old database) or an empty frame: nothing is known, nothing is noted."""
    if attempts is None or attempts.empty:
        return []
    mine = attempts[attempts["run_id"].isin(run_ids)]
    if mine.empty:
        return []
    differing = []
    for key in VERSION_KEYS:
        values = mine[key].map(lambda v: "none" if pd.isna(v) else str(v))
        if key == "git_commit":
            values = values.map(_short_commit)
        counts = mine.groupby(values)["run_id"].nunique()
        if len(counts) > 1:
            listed = ", ".join(f"{value} ({runs_text(count)})" for value, count in sorted(counts.items()))
            differing.append(f"{VERSION_LABELS[key]} {listed}")
    notes = []
    if differing:
        notes.append(f"The runs were made by different versions: {'; '.join(differing)}.")
    unknown = len(set(run_ids) - set(mine["run_id"]))
    if unknown:
        notes.append(f"{runs_text(unknown)} made before rnm recorded versions: whether they match the others' "
                     "is unknown.")
    return notes


def evaluation_count_note(scores: pd.DataFrame, last_k: int) -> str | None:
    """Where runs have fewer evaluations after step 0 than `last_k`, how many their final scores average, so that a
    caption's 'last 10' is never silently fewer."""
    short = scores[scores["n_evals"] < last_k]
    if short.empty:
        return None
    low, high = int(short["n_evals"].min()), int(short["n_evals"].max())
    counts = f"{low}" if low == high else f"{low} to {high}"
    return (f"{len(short)} of {runs_text(len(scores))} had fewer than {last_k} evaluations after the "
            f"one before training; their final score is the mean of all they have ({counts}).")
