"""What the report's figures draw, computed from a Report's frames apart from drawing, so that every plotted number
is reproducible (the same bootstrap seed as the tables) and testable without looking at a picture.

Definitions, to quote in captions:
- seed band: at each step, the mean over a variant's seeds on one env, shaded by one sample std (ddof=1) over them;
- performance profile: the fraction of a variant's runs, pooled over envs, whose normalized score is above tau
  (rliable's score distribution), with a 95% stratified bootstrap band (each env's runs resampled on their own);
- sample efficiency: at each step, the IQM over a variant's runs of all envs of the run's evaluation return over
  its own dense baseline mean (the same denominator as its normalized score), with a 95% stratified bootstrap band;
  only the steps that every run of the variant was evaluated at (the start included) are drawn, so a point never
  mixes runs with the ones that have not reached it;
- a run's SAD: the mean over its mask updates of the mean over its networks (actor, critic 1, critic 2) of the
  fraction of mask entries that flipped at that update; its return is its final score;
- SAD against return: Spearman's rank correlation over the runs of one env (every variant with SAD pooled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..variants import is_number
from .ablation import ALL_ENVS
from .intervals import bootstrap_arrays

PROFILE_POINTS = 201
PROFILE_MARGIN = 0.05
LOG_SPAN = 10.0
"""A numeric --by axis is logarithmic where its largest value is more than this many times its smallest."""


def seed_bands(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per variant and step: the mean and sample std over seeds of `value` (std NaN with one seed), and n_seeds.
    `frame` has variant, seed, step and `value`, one row per run and step."""
    return (frame.groupby(["variant", "step"])[value]
            .agg(mean="mean", std=lambda x: x.std(ddof=1), n_seeds="size").reset_index())


def sad_per_update(sad: pd.DataFrame) -> pd.DataFrame:
    """One row per run and mask update: its SAD as the mean over the networks recorded at that update."""
    keys = ["run_id", "env", "variant", "label", "seed", "step"]
    return sad.groupby(keys, as_index=False)["value"].mean()


def scored_variants(scores: pd.DataFrame, order: Sequence[str]) -> list[str]:
    """The variants of `order` that have normalized scores, in that order."""
    present = set(scores.loc[scores["normalized"].notna(), "variant"])
    return [variant for variant in order if variant in present]


def _per_env(frame: pd.DataFrame, column: str) -> list[np.ndarray]:
    return [group[column].to_numpy().reshape(-1, 1) for _, group in frame.groupby("env")]


def profile_taus(scores: pd.DataFrame) -> np.ndarray:
    """The thresholds of every profile of a report: from a little below its lowest normalized score to a little
    above its highest, so that each curve starts at 1 and falls to 0 inside the axis, and the axis spends its width
    where the runs are (scores bunch near 1, far from 0)."""
    normalized = scores["normalized"].dropna()
    low, high = float(normalized.min()), float(normalized.max())
    margin = PROFILE_MARGIN * max(high - low, abs(high), 1e-9)
    return np.linspace(low - margin, high + margin, PROFILE_POINTS)


def performance_profiles(scores: pd.DataFrame, order: Sequence[str], taus: np.ndarray, *, seed: int,
                         reps: int) -> pd.DataFrame:
    """Per variant and tau: the fraction of its runs (all envs pooled) with normalized score above tau, with its 95%
    stratified bootstrap interval (variant, label, tau, fraction, low, high, n_runs)."""
    def above(*per_env: np.ndarray) -> np.ndarray:
        return (np.concatenate(per_env).reshape(-1, 1) > taus).mean(axis=0)

    frames = []
    for variant in scored_variants(scores, order):
        mine = scores[(scores["variant"] == variant) & scores["normalized"].notna()]
        fraction, low, high = bootstrap_arrays(_per_env(mine, "normalized"), above, seed=seed, reps=reps)
        frames.append(pd.DataFrame({"variant": variant, "label": mine["label"].iloc[0], "tau": taus,
                                    "fraction": fraction, "low": low, "high": high, "n_runs": len(mine)}))
    return pd.concat(frames, ignore_index=True) if frames else _empty(["variant", "label", "tau", "fraction",
                                                                       "low", "high", "n_runs"])


def normalized_curves(curves: pd.DataFrame, scores: pd.DataFrame, variant: str) -> pd.DataFrame:
    """A variant's runs (rows, indexed by run_id) x the steps every one of them was evaluated at (columns): each
    evaluation return over the run's dense baseline mean. Runs without a baseline are left out, as in the IQM."""
    runs = scores[(scores["variant"] == variant) & scores["baseline_mean"].notna()].set_index("run_id")
    mine = curves[curves["run_id"].isin(runs.index)]
    table = mine.pivot_table(index="run_id", columns="step", values="return_mean", aggfunc="mean")
    common = table.dropna(axis="columns")
    return common.div(runs["baseline_mean"].reindex(common.index), axis="index")


def sample_efficiency(curves: pd.DataFrame, scores: pd.DataFrame, order: Sequence[str], *, seed: int,
                      reps: int) -> pd.DataFrame:
    """Per variant and common step: the IQM over its runs of all envs of the normalized evaluation return, with its
    95% stratified bootstrap interval (variant, label, step, iqm, low, high, n_runs)."""
    def iqm(*per_env: np.ndarray) -> np.ndarray:
        return scipy_stats.trim_mean(np.concatenate(per_env), 0.25, axis=0)  # rliable's IQM, per step

    frames = []
    for variant in scored_variants(scores, order):
        table = normalized_curves(curves, scores, variant)
        if table.empty:
            continue
        env_of = scores.set_index("run_id")["env"].reindex(table.index)
        per_env = [table[env_of == env].to_numpy() for env in sorted(env_of.unique())]
        point, low, high = bootstrap_arrays(per_env, iqm, seed=seed, reps=reps)
        label = scores.loc[scores["variant"] == variant, "label"].iloc[0]
        frames.append(pd.DataFrame({"variant": variant, "label": label, "step": table.columns.to_numpy(),
                                    "iqm": point, "low": low, "high": high, "n_runs": len(table)}))
    return pd.concat(frames, ignore_index=True) if frames else _empty(["variant", "label", "step", "iqm", "low",
                                                                       "high", "n_runs"])


def sad_against_return(sad: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per run with SAD: run_id, env, variant, label, seed, sad (the run's SAD, module docstring) and
    final (its final score)."""
    per_update = sad_per_update(sad)
    per_run = per_update.groupby("run_id")["value"].mean().rename("sad")
    keys = scores[["run_id", "env", "variant", "label", "seed", "final"]]
    return keys.merge(per_run, left_on="run_id", right_index=True, how="inner").reset_index(drop=True)


def sad_correlations(points: pd.DataFrame) -> pd.DataFrame:
    """Per env: n (runs), rho and p (scipy's Spearman test of SAD against final score). NaN where fewer than three
    runs or either value is constant: no rank correlation is defined there."""
    rows = []
    for env, runs in points.groupby("env"):
        rho = p = math.nan
        if len(runs) >= 3 and runs["sad"].nunique() > 1 and runs["final"].nunique() > 1:
            result = scipy_stats.spearmanr(runs["sad"], runs["final"])
            rho, p = float(result.statistic), float(result.pvalue)
        rows.append({"env": env, "n": len(runs), "rho": rho, "p": p})
    return pd.DataFrame(rows, columns=["env", "n", "rho", "p"])


def ablation_lines(ablation: pd.DataFrame) -> pd.DataFrame:
    """The --by figure's points: the ablation's 'all' rows (IQM across envs with its interval) with x, the key's
    value where every value is a number, else the value's position in the table's order (its text on the axis)."""
    rows = ablation[ablation["env"] == ALL_ENVS].reset_index(drop=True)
    texts = list(dict.fromkeys(rows["by_text"]))
    numeric = all(is_number(v) for v in rows["by_value"])
    x = rows["by_value"].astype(float) if numeric else rows["by_text"].map(texts.index).astype(float)
    return rows.assign(x=x.to_numpy(), numeric=numeric)


def log_axis(values: Sequence[float]) -> bool:
    """Whether numeric --by values are drawn on a log axis: all positive, and spanning more than LOG_SPAN."""
    array = np.asarray(values, dtype=float)
    return bool(len(array) and (array > 0).all() and array.max() > LOG_SPAN * array.min())


def seeds_text(counts: pd.Series) -> str:
    """'3 seeds', or '2-3 seeds' where cells hold different numbers of seeds (a failed or unfinished one)."""
    low, high = int(counts.min()), int(counts.max())
    return f"{high} seed{'s' if high != 1 else ''}" if low == high else f"{low}-{high} seeds"


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)
