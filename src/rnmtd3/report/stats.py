"""The report's statistics (MISSION.md section 3), as pure functions over the registry's DataFrames.

Definitions, in one place so that tables, plots and tests agree:
- a run's final score is the mean of its last `last_k` evaluations (by step);
- a column is a method (`methods`): a pattern with its mask_rule and sparse_init; every other key but the seed is
  one setting per env and method, never pooled;
- a cell (env x method) is the mean and the sample std (ddof=1) of its runs' final scores; with one seed the std
  is undefined and stays NaN (tables show the mean alone, csv an empty field);
- the normalized score of a cell is its mean over the dense cell's mean on the same env; it is left undefined
  (NaN) where the env has no dense runs or their mean is not positive, since a ratio to a non-positive
  baseline does not order methods;
- a cell's measured density per network is the mean over its runs of each run's latest `density_*` training
  statistic (the critics' the mean of the two); runs from before the trainer recorded it have none;
- the aggregate over envs is rliable's IQM of the per-run normalized scores (each run's final score over the
  dense mean of its env), with a 95% stratified bootstrap confidence interval computed by rliable itself.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics as rly_metrics

from ..config import SPARSITY_KEYS, json_value, stored_config
from ..envs import resolve_env_id
from ..errors import UsageError
from ..patterns import Pattern
from ..provenance import VERSION_KEYS
from ..summary import DENSITY_STATS, run_densities
from ..methods import Method, method_order

DONE = "done"
SAD_PREFIX = "sad_"
MEASURED_DENSITY = {name: "density_actor" if "actor" in name else "density_critic" for name in DENSITY_STATS}
"""Training statistic -> the report's column: the two critics are shown as one, their mean."""
DEFAULT_REPS = 10_000


@dataclass(frozen=True)
class Report:
    """Everything the tables and plots need, computed once; renderers read it and compute nothing.

    scores: one row per included run (run_id, env, pattern, method, seed, status, n_evals, final, normalized,
        density, density_actor, density_critic).
    cells: one row per env x method (env, pattern, method, sparsity, label, n_seeds, n_partial, fewer_seeds, mean,
        std, normalized, best, density: what the pattern keeps of its runs' networks, NaN where it cannot be judged;
        density_actor, density_critic: the density measured in training, NaN where no run recorded it).
    aggregate: one row per method (pattern, method, sparsity, label, n_runs, n_partial, n_envs, iqm, ci_low,
        ci_high).
    curves: the evaluations of the included runs, for learning curves.
    sad: the `sad_*` training statistics of the included runs.
    """

    scores: pd.DataFrame
    cells: pd.DataFrame
    aggregate: pd.DataFrame
    curves: pd.DataFrame
    sad: pd.DataFrame
    envs: tuple[str, ...]
    methods: tuple[str, ...]
    last_k: int
    seed: int
    reps: int
    notes: tuple[str, ...]


def canonical_pattern(text: str) -> str:
    """'2:4', ' 2 : 4' and 'DENSE' all name one column, so the registry's text is normalized once here."""
    return str(Pattern.parse(text))


def final_scores(runs: pd.DataFrame, evals: pd.DataFrame, last_k: int) -> pd.DataFrame:
    """One row per run that has evaluations: its final score, the mean of its last `last_k` evaluations by step.

    Runs without any evaluation have no score and are absent; `n_evals` says how many evaluations were averaged.
    """
    if last_k < 1:
        raise UsageError(f"--last-k must be at least 1 (got {last_k})")
    tail = evals.sort_values(["run_id", "step"]).groupby("run_id").tail(last_k)
    per_run = tail.groupby("run_id")["return_mean"].agg(final="mean", n_evals="size").reset_index()
    scored = runs[["run_id", "env", "pattern", "method", "seed", "status"]].merge(per_run, on="run_id", how="inner")
    return scored.sort_values(["env", "method", "seed", "run_id"]).reset_index(drop=True)


def dense_means(scores: pd.DataFrame) -> pd.Series:
    """Mean final score of the dense runs per env, where it is positive: the denominator of every normalization."""
    dense = scores[scores["pattern"] == str(Pattern.dense())].groupby("env")["final"].mean()
    return dense[dense > 0]


def cell_stats(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds per env x method, the normalized mean, the best of each env,
    whether a cell has fewer seeds than the fullest cell of the table (a failed or missing seed to flag), and the
    densities of its runs (one setting per cell, so one kept density; runs without a value are skipped)."""
    grouped = scores.groupby(["env", "method"])
    cells = grouped["final"].agg(mean="mean", std=lambda x: x.std(ddof=1), n_seeds="size").reset_index()
    cells["pattern"] = grouped["pattern"].first().to_numpy()
    cells["n_partial"] = grouped["status"].agg(lambda s: int((s != DONE).sum())).to_numpy()
    for column in ("density", *MEASURED_DENSITY.values()):
        cells[column] = grouped[column].mean().to_numpy()
    cells["normalized"] = cells["mean"] / cells["env"].map(dense_means(scores))
    cells["best"] = cells["mean"] == cells.groupby("env")["mean"].transform("max")
    cells["fewer_seeds"] = cells["n_seeds"] < cells["n_seeds"].max()
    cells["sparsity"] = [Pattern.parse(p).sparsity for p in cells["pattern"]]
    cells["label"] = [Method.parse(m).label() for m in cells["method"]]
    order = sorted(range(len(cells)), key=lambda i: (cells["env"].iat[i], method_order(cells["method"].iat[i])))
    columns = ["env", "pattern", "method", "sparsity", "label", "n_seeds", "n_partial", "fewer_seeds", "mean", "std",
               "normalized", "best", "density", "density_actor", "density_critic"]
    return cells.iloc[order][columns].reset_index(drop=True)


def measured_densities(stats: pd.DataFrame) -> pd.DataFrame:
    """Per run (the index), the nonzero fraction of its sparse layers that training measured at the run's latest
    record: density_actor, and density_critic the mean of the two critics'. A run without these statistics (made
    before the trainer recorded them) is absent."""
    latest = stats[stats["name"].isin(MEASURED_DENSITY)].sort_values("step", kind="stable")
    latest = latest.groupby(["run_id", "name"]).tail(1)
    per_network = latest.assign(column=latest["name"].map(MEASURED_DENSITY))
    table = per_network.groupby(["run_id", "column"])["value"].mean().unstack()
    return table.reindex(columns=list(dict.fromkeys(MEASURED_DENSITY.values())))


def normalized_scores(scores: pd.DataFrame) -> pd.Series:
    """Each run's final score over the dense mean of its env (NaN where that mean is missing or not positive)."""
    return scores["final"] / scores["env"].map(dense_means(scores))


@contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """rliable 1.2's StratifiedBootstrap draws its indices from numpy's global RNG and ignores `random_state`,
    so a reproducible interval needs the global RNG seeded too; the caller's global state is put back after."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def iqm_interval(per_env: Sequence[np.ndarray], *, seed: int, reps: int = DEFAULT_REPS) -> tuple[float, float, float]:
    """rliable's IQM over all runs of all envs, with its 95% stratified bootstrap CI: (iqm, low, high).

    `per_env` holds one (runs x 1) array of normalized scores per env. Envs may have different numbers of runs
    (a failed seed), which one (runs x tasks) array cannot hold; rliable's list form resamples the runs of each
    env independently, which is the same stratified bootstrap, and the IQM is taken over the pooled runs.
    """
    def iqm(*columns: np.ndarray) -> np.ndarray:
        return np.array([rly_metrics.aggregate_iqm(np.concatenate(columns, axis=0))])

    with _global_numpy_seed(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
        points, intervals = rly.get_interval_estimates(
            {"scores": list(per_env)}, iqm, reps=reps, confidence_interval_size=0.95,
            random_state=np.random.RandomState(seed),
        )
    low, high = intervals["scores"][:, 0]
    return float(points["scores"][0]), float(low), float(high)


def aggregate_iqm(scores: pd.DataFrame, *, seed: int, reps: int = DEFAULT_REPS) -> pd.DataFrame:
    """Per method, the IQM of normalized scores across envs with its CI; each method's bootstrap starts from
    the same seed, so a method's interval does not change when other methods are filtered in or out."""
    normalized = scores.assign(normalized=normalized_scores(scores)).dropna(subset=["normalized"])
    rows = []
    for method in sorted(normalized["method"].unique(), key=method_order):
        mine = normalized[normalized["method"] == method]
        per_env = [group["normalized"].to_numpy()[:, None] for _, group in mine.groupby("env")]
        iqm, low, high = iqm_interval(per_env, seed=seed, reps=reps)
        parsed = Method.parse(method)
        rows.append({"pattern": str(parsed.pattern), "method": method, "sparsity": parsed.pattern.sparsity,
                     "label": parsed.label(), "n_runs": len(mine), "n_partial": int((mine["status"] != DONE).sum()),
                     "n_envs": len(per_env), "iqm": iqm, "ci_low": low, "ci_high": high})
    columns = ["pattern", "method", "sparsity", "label", "n_runs", "n_partial", "n_envs", "iqm", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def _select(runs: pd.DataFrame, envs: Sequence[str] | None, patterns: Sequence[str] | None,
            where: dict[str, Any] | None = None) -> pd.DataFrame:
    """The runs named by the filters, with patterns canonical and their method; an empty result is a usage error
    naming what exists. `patterns` keeps every method of a pattern.

    The dense runs stay whatever `patterns` says: they are the denominator of every normalized score; and a
    `where` on a key that a dense run ignores (SPARSITY_KEYS) does not drop them.
    """
    if runs.empty:
        raise UsageError("the database has no runs yet: queue some with `rnm queue`, then `rnm run-workers`")
    runs = runs.assign(pattern=[canonical_pattern(p) for p in runs["pattern"]],
                       method=[str(Method.of_config(stored_config(c))) for c in runs["config"]])
    for key, value in (where or {}).items():
        configs = runs["config"].map(stored_config)
        matches = configs.map(lambda c, k=key: c.get(k) == json_value(value))
        ignored = (runs["pattern"] == str(Pattern.dense())) & (key in SPARSITY_KEYS)
        if not (matches & ~ignored).any():
            have = sorted({str(c.get(key)) for c in configs})
            raise UsageError(f"no runs match --set {key}={value}; the runs have {key} in {', '.join(have)}")
        runs = runs[matches | ignored]
    if envs:
        selected = runs[runs["env"].isin({resolve_env_id(name) for name in envs})]
        if selected.empty:
            raise UsageError(f"no runs match --envs {','.join(envs)}; the database has: "
                             f"{', '.join(sorted(runs['env'].unique()))}")
        runs = selected
    if patterns:
        wanted = runs["pattern"].isin({canonical_pattern(p) for p in patterns})
        if not wanted.any():
            have = sorted(runs["pattern"].unique(), key=Pattern.sort_key)
            raise UsageError(f"no runs match --patterns {','.join(patterns)}; "
                             f"the selected runs have: {', '.join(have)}")
        runs = runs[wanted | (runs["pattern"] == str(Pattern.dense()))]
    return runs


def _refuse_mixed_settings(runs: pd.DataFrame) -> None:
    """A cell is a mean over seeds of one setting: runs of one (env, method) that differ in another key (a `--set`
    sweep) are refused with the keys to choose from, never pooled into one cell. Runs that differ in a method key
    (mask_rule, sparse_init) are different columns, not a mix."""
    varying: dict[str, set[str]] = {}
    for (_, method), group in runs.groupby(["env", "method"]):
        ignore = {"seed", *(SPARSITY_KEYS if method == str(Pattern.dense()) else ())}
        configs = [stored_config(c) for c in group["config"]]
        for key in set().union(*configs) - ignore:
            values = {json.dumps(c.get(key)) for c in configs}
            if len(values) > 1:
                varying.setdefault(key, set()).update(values)
    if varying:
        choices = "; ".join(f"{key} in {', '.join(sorted(v))}" for key, v in sorted(varying.items()))
        example = next(iter(sorted(varying)))
        raise UsageError(f"runs of one method (pattern, mask_rule, sparse_init) differ in more than the seed "
                         f"({choices}); report one setting at a time, e.g. --set {example}=...")


def _status_counts(runs: pd.DataFrame) -> str:
    """'2 running, 1 failed': the statuses of runs that are not done, for the notes."""
    counts = runs["status"].value_counts()
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))


def _runs(count: int) -> str:
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
            listed = ", ".join(f"{value} ({_runs(count)})" for value, count in sorted(counts.items()))
            differing.append(f"{VERSION_LABELS[key]} {listed}")
    notes = []
    if differing:
        notes.append(f"The runs were made by different versions: {'; '.join(differing)}. "
                     "`rnm export runs` shows each run's.")
    unknown = len(set(run_ids) - set(mine["run_id"]))
    if unknown:
        notes.append(f"{_runs(unknown)} made before rnm recorded versions: whether they match the others' "
                     "is unknown.")
    return notes


def build_report(
    runs: pd.DataFrame,
    evals: pd.DataFrame,
    stats: pd.DataFrame,
    *,
    last_k: int = 10,
    envs: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    include_partial: bool = False,
    where: dict[str, Any] | None = None,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
    attempts: pd.DataFrame | None = None,
) -> Report:
    """Compute the whole report from the registry's frames: filter, score, aggregate, and note what was left out.

    Unfinished and failed runs are left out unless `include_partial`, in which case they are scored on the
    evaluations they have so far. `where` keeps the runs whose config has those values (`--set key=value`).
    `seed` fixes the bootstrap so that a report is reproducible; `reps` is the number of bootstrap resamples:
    10,000 keeps a report to seconds; rliable's own default, 50,000, is there for a final paper at five times
    the wait. `attempts` (the registry's attempts frame; None for a database from before it) says which
    versions made the runs, noted where they differ.
    """
    selected = _select(runs, envs, patterns, where)
    unfinished = selected[selected["status"] != DONE]
    notes = []
    if not include_partial:
        selected = selected[selected["status"] == DONE]
        if selected.empty:
            raise UsageError(f"no finished runs match ({_status_counts(unfinished)}); "
                             "use --include-partial to report them on their evaluations so far")
        if len(unfinished):
            notes.append(f"Left out {_runs(len(unfinished))} not finished ({_status_counts(unfinished)}); "
                         "--include-partial shows them.")
    scores = final_scores(selected, evals, last_k)
    unscored = selected[~selected["run_id"].isin(scores["run_id"])]
    if scores.empty:
        raise UsageError(f"none of the {len(selected)} matching runs has an evaluation yet")
    if len(unscored):
        notes.append(f"Left out {_runs(len(unscored))} with no evaluation yet ({_status_counts(unscored)}).")
    if include_partial and (scores["status"] != DONE).any():
        partial = scores[scores["status"] != DONE]
        notes.append(f"Includes {_runs(len(partial))} not finished ({_status_counts(partial)}), "
                     "scored on the evaluations they have so far (marked †).")
    _refuse_mixed_settings(selected)
    densities = pd.Series(run_densities(selected).to_numpy(), index=selected["run_id"].to_numpy())
    scores = scores.assign(density=scores["run_id"].map(densities)).join(measured_densities(stats), on="run_id")
    cells = cell_stats(scores)
    if cells["density"].isna().any():
        notes.append("Kept density is unknown (a dash) where this machine cannot build the env or read the "
                     "run's config.")
    if cells["normalized"].isna().any():
        notes.append("Normalized scores need dense runs with a positive mean on the same env; "
                     "shown as a dash where missing.")
    scores = scores.assign(normalized=normalized_scores(scores))
    included = scores["run_id"]
    notes += version_notes(attempts, included)
    sad = stats[stats["run_id"].isin(included) & stats["name"].astype(str).str.startswith(SAD_PREFIX)]
    return Report(
        scores=scores,
        cells=cells,
        aggregate=aggregate_iqm(scores, seed=seed, reps=reps),
        curves=_with_keys(evals[evals["run_id"].isin(included)], scores),
        sad=_with_keys(sad, scores),
        envs=tuple(sorted(scores["env"].unique())),
        methods=tuple(sorted(scores["method"].unique(), key=method_order)),
        last_k=last_k,
        seed=seed,
        reps=reps,
        notes=tuple(notes),
    )


def _with_keys(frame: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frame` with env, pattern, method and seed taken from the runs (canonical patterns), not their own
    copies."""
    keys = scores[["run_id", "env", "pattern", "method", "seed"]]
    return frame.drop(columns=["env", "pattern", "seed"], errors="ignore").merge(keys, on="run_id", how="inner")
