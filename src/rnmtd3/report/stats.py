"""The report's statistics (MISSION.md section 3), as pure functions over the registry's DataFrames.

Definitions, in one place so that tables, plots and tests agree:
- a run's final score is the mean of its last `last_k` evaluations by step, never counting the evaluation at step
  0, taken before training;
- a column is a variant (`variants`): a method (pattern, mask rule, init) with its values of the keys that vary
  among the runs of one env and method; runs that differ in more than the seed are thus never pooled;
- a cell (env x variant) is the mean and the sample std (ddof=1) of its runs' final scores; with one seed the std
  is undefined and stays NaN (tables show the mean alone, csv an empty field);
- the baseline of a run is the dense runs of its env with the same values of the keys that a dense run does not
  ignore (a `--set lr=...` sweep of dense and 2:4 compares each lr with its own); where the env has dense runs of
  one setting only, they are every column's baseline. A normalized score is a final score over its baseline's mean,
  undefined (NaN) where there is none or its mean is not positive, since a ratio to a non-positive baseline does not
  order methods;
- a cell's measured density per network is the mean over its runs of each run's latest `density_*` training
  statistic (the critics' the mean of the two); runs from before the trainer recorded it have none;
- the aggregate over envs is the IQM of the per-run normalized scores, and the probability of improvement
  P(variant > dense) the chance that a run of the variant scores above a run of its baseline on the same env,
  averaged over envs; both with 95% stratified bootstrap intervals (`intervals`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..config import SPARSITY_KEYS, config_keys, json_value, stored_config, written
from ..envs import resolve_env_id
from ..errors import UsageError
from ..methods import Method
from ..patterns import Pattern
from ..summary import DENSITY_STATS, run_densities
from ..variants import NOT_SETTINGS, Variant, run_variants, variant_order, varying_keys
from .intervals import DEFAULT_REPS, improvement_interval, improvement_probability, iqm_interval
from .ablation import ablation_table
from .cost import cost_cells
from .notes import evaluation_count_note, runs_text, status_counts, version_notes

DONE = "done"
DENSE = str(Pattern.dense())
SAD_PREFIX = "sad_"
MEASURED_DENSITY = {name: "density_actor" if "actor" in name else "density_critic" for name in DENSITY_STATS}
"""Training statistic -> the report's column: the two critics are shown as one, their mean."""
SEPARATION_LEVEL = 0.05
"""A cell is bold only where a one-sided Welch t-test puts it above its row's runner-up at this level."""


@dataclass(frozen=True)
class Report:
    """Everything the tables need, computed once (tables read it and compute nothing); the figures draw what
    `figure_data`'s pure functions compute from its frames.

    scores: one row per included run (run_id, env, pattern, method, variant, label, seed, status, n_evals, final,
        baseline_mean, normalized, density, density_actor, density_critic, and by_value under `by`).
    cells: one row per env x variant (env, variant, label, pattern, method, sparsity, n_seeds, n_partial,
        fewer_seeds, mean, std, normalized, best, density: what the pattern keeps of its runs' networks, NaN where it
        cannot be judged; density_actor, density_critic: measured in training, NaN where no run recorded it;
        p_improve: P(> dense) on this env alone).
    aggregate: one row per variant (variant, label, pattern, method, sparsity, n_runs, n_partial, n_envs, iqm,
        ci_low, ci_high, best, p_improve, p_improve_low, p_improve_high (NaN for dense variants), coarse and
        p_coarse: whether its runs (and, for P(> dense), its baseline's) are too few for a 95% bootstrap interval of
        the IQM and of P(> dense), see `coarse`).
    curves: the evaluations of the included runs (with env, variant, label, seed), for learning curves.
    sad: the `sad_*` training statistics of the included runs, likewise.
    variants: the columns' canonical texts in report order; labels maps each to its header.
    by, ablation: the `--by` key and its table (see `ablation`), None without one.
    notes: what a reader of the tables must know (they go under the first table); hints: what the person running
        rnm can do about them (command options, files), which stay out of a paper.
    costs: the cost table per env x variant (see `cost`), None unless asked for or where no run's own checkpoint
        counted; cost_note says which runs it leaves out, or why there is none.
    """

    scores: pd.DataFrame
    cells: pd.DataFrame
    aggregate: pd.DataFrame
    curves: pd.DataFrame
    sad: pd.DataFrame
    envs: tuple[str, ...]
    variants: tuple[str, ...]
    labels: dict[str, str]
    last_k: int
    seed: int
    reps: int
    notes: tuple[str, ...]
    hints: tuple[str, ...] = ()
    by: str | None = None
    ablation: pd.DataFrame | None = None
    costs: pd.DataFrame | None = None
    cost_note: str | None = None


def canonical_pattern(text: str) -> str:
    """'2:4', ' 2 : 4' and 'DENSE' all name one column, so the registry's text is normalized once here."""
    return str(Pattern.parse(text))


def final_scores(runs: pd.DataFrame, evals: pd.DataFrame, last_k: int) -> pd.DataFrame:
    """One row per run that has evaluations after step 0: its final score, the mean of its last `last_k` of them.

    The evaluation at step 0 measures the untrained actor and never counts. Runs without any later evaluation have
    no score and are absent; `n_evals` says how many evaluations were averaged.
    """
    trained = evals[evals["step"] > 0]
    tail = trained.sort_values(["run_id", "step"]).groupby("run_id").tail(last_k)
    per_run = tail.groupby("run_id")["return_mean"].agg(final="mean", n_evals="size").reset_index()
    keys = ["run_id", "env", "pattern", "method", "variant", "label", "baseline", "seed", "status"]
    by_keys = [key for key in ("by_value", "by_variant", "by_label") if key in runs]
    scored = runs[keys + by_keys].merge(per_run, on="run_id", how="inner")
    return scored.sort_values(["env", "variant", "seed", "run_id"]).reset_index(drop=True)


def baseline_groups(scores: pd.DataFrame) -> pd.Series:
    """Per run, the `baseline` text of the dense runs it is compared with on its env (module docstring), or None."""
    dense = scores[scores["pattern"] == DENSE]
    present = set(zip(dense["env"], dense["baseline"]))
    single = dense.groupby("env")["baseline"].unique().map(lambda b: b[0] if len(b) == 1 else None)

    def group(env: str, baseline: str) -> str | None:
        return baseline if (env, baseline) in present else single.get(env)

    return pd.Series([group(e, b) for e, b in zip(scores["env"], scores["baseline"])], index=scores.index)


def baseline_means(scores: pd.DataFrame, groups: pd.Series) -> pd.Series:
    """Per run, the mean final score of its baseline's dense runs where it is positive, else NaN."""
    dense = scores[scores["pattern"] == DENSE]
    means = dense.groupby(["env", "baseline"])["final"].mean()
    values = [means.get((env, group), math.nan) if group is not None else math.nan
              for env, group in zip(scores["env"], groups)]
    return pd.Series(values, index=scores.index).where(lambda m: m > 0)


def _separated(best: pd.Series, runner_up: pd.Series) -> bool:
    """Whether a one-sided Welch t-test puts `best` above `runner_up` (cells with mean, std, n_seeds) at
    SEPARATION_LEVEL; a cell with one seed has no std, so it is never separated."""
    if best["n_seeds"] < 2 or runner_up["n_seeds"] < 2:
        return False
    result = scipy_stats.ttest_ind_from_stats(best["mean"], best["std"], best["n_seeds"], runner_up["mean"],
                                              runner_up["std"], runner_up["n_seeds"], equal_var=False,
                                              alternative="greater")
    return bool(result.pvalue < SEPARATION_LEVEL)


def _best_of_rows(cells: pd.DataFrame) -> pd.Series:
    """Per cell, whether it is the best of its env and separated from the runner-up; an env with one cell has no
    best."""
    best = pd.Series(False, index=cells.index)
    for _, row in cells.groupby("env"):
        ranked = row.sort_values("mean", ascending=False)
        if len(ranked) > 1 and _separated(ranked.iloc[0], ranked.iloc[1]):
            best[ranked.index[0]] = True
    return best


def cell_stats(scores: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Mean and sample std over seeds per env x variant, the normalized mean, the separated best of each env,
    whether a cell has fewer seeds than the fullest cell of the table (a failed or missing seed to flag), the
    densities of its runs (one setting per cell, so one kept density; runs without a value are skipped), and its
    probability of improving on its baseline on this env."""
    grouped = scores.groupby(["env", "variant"])
    cells = grouped["final"].agg(mean="mean", std=lambda x: x.std(ddof=1), n_seeds="size").reset_index()
    for column in ("pattern", "method", "label"):
        cells[column] = grouped[column].first().to_numpy()
    cells["n_partial"] = grouped["status"].agg(lambda s: int((s != DONE).sum())).to_numpy()
    for column in ("density", *MEASURED_DENSITY.values(), "baseline_mean"):
        cells[column] = grouped[column].mean().to_numpy()
    cells["normalized"] = cells["mean"] / cells.pop("baseline_mean")
    cells["p_improve"] = [math.nan if pattern == DENSE else _env_improvement(scores, env, variant)
                          for env, variant, pattern in zip(cells["env"], cells["variant"], cells["pattern"])]
    cells["fewer_seeds"] = cells["n_seeds"] < cells["n_seeds"].max()
    cells["sparsity"] = [Pattern.parse(p).sparsity for p in cells["pattern"]]
    rank = {variant: i for i, variant in enumerate(order)}
    cells = cells.sort_values(["env", "variant"], key=lambda c: c.map(rank) if c.name == "variant" else c)
    cells["best"] = _best_of_rows(cells)
    columns = ["env", "variant", "label", "pattern", "method", "sparsity", "n_seeds", "n_partial", "fewer_seeds",
               "mean", "std", "normalized", "best", "p_improve", "density", "density_actor", "density_critic"]
    return cells[columns].reset_index(drop=True)


def _improvement_arrays(scores: pd.DataFrame, variant: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per env where both exist: (normalized scores of the variant's runs, those of its baseline's dense runs)."""
    mine = scores[(scores["variant"] == variant) & scores["normalized"].notna()]
    pairs = []
    for env, runs in mine.groupby("env"):
        group = runs["baseline_group"].iloc[0]
        dense = scores[(scores["env"] == env) & (scores["pattern"] == DENSE) & (scores["baseline"] == group)]
        if len(dense):
            pairs.append((runs["normalized"].to_numpy(), dense["normalized"].to_numpy()))
    return pairs


def _env_improvement(scores: pd.DataFrame, env: str, variant: str) -> float:
    pairs = _improvement_arrays(scores[scores["env"] == env], variant)
    return improvement_probability(*pairs[0]) if pairs else math.nan


def measured_densities(stats: pd.DataFrame) -> pd.DataFrame:
    """Per run (the index), the nonzero fraction of its sparse layers that training measured at the run's latest
    record: density_actor, and density_critic the mean of the two critics'. A run without these statistics (made
    before the trainer recorded them) is absent."""
    latest = stats[stats["name"].isin(MEASURED_DENSITY)].sort_values("step", kind="stable")
    latest = latest.groupby(["run_id", "name"]).tail(1)
    per_network = latest.assign(column=latest["name"].map(MEASURED_DENSITY))
    table = per_network.groupby(["run_id", "column"])["value"].mean().unstack()
    return table.reindex(columns=list(dict.fromkeys(MEASURED_DENSITY.values())))


def aggregate(scores: pd.DataFrame, order: Sequence[str], *, seed: int, reps: int = DEFAULT_REPS) -> pd.DataFrame:
    """Per variant, the IQM of normalized scores across envs and P(> dense), each with its CI. Each bootstrap starts
    from the same seed, so that a variant's interval does not change when others are filtered in or out. `best`
    marks an IQM whose interval lies wholly above every other variant's."""
    normalized = scores.dropna(subset=["normalized"])
    rows = []
    for variant in [v for v in order if v in set(normalized["variant"])]:
        mine = normalized[normalized["variant"] == variant]
        per_env = [group["normalized"].to_numpy() for _, group in mine.groupby("env")]
        iqm, low, high = iqm_interval(per_env, seed=seed, reps=reps)
        first = mine.iloc[0]
        pairs = [] if first["pattern"] == DENSE else _improvement_arrays(scores, variant)
        p_improve = improvement_interval(pairs, seed=seed, reps=reps) if pairs else (math.nan,) * 3
        rows.append({"variant": variant, "label": first["label"], "pattern": first["pattern"],
                     "method": first["method"], "sparsity": Pattern.parse(first["pattern"]).sparsity,
                     "n_runs": len(mine), "n_partial": int((mine["status"] != DONE).sum()), "n_envs": len(per_env),
                     "iqm": iqm, "ci_low": low, "ci_high": high, "p_improve": p_improve[0],
                     "p_improve_low": p_improve[1], "p_improve_high": p_improve[2],
                     "coarse": coarse([len(x) for x in per_env]),
                     "p_coarse": coarse([len(a) for pair in pairs for a in pair]) if pairs else True})
    columns = ["variant", "label", "pattern", "method", "sparsity", "n_runs", "n_partial", "n_envs", "iqm",
               "ci_low", "ci_high", "p_improve", "p_improve_low", "p_improve_high", "coarse", "p_coarse"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["best"] = [len(frame) > 1 and not frame.at[i, "coarse"] and bool((frame["ci_high"].drop(i) < low).all())
                     for i, low in frame["ci_low"].items()]
    return frame


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
        ignored = (runs["pattern"] == DENSE) & (key in SPARSITY_KEYS)
        if not (matches & ~ignored).any():
            have = sorted({written(c.get(key)) for c in configs[~ignored]})
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
        runs = runs[wanted | (runs["pattern"] == DENSE)]
    return runs


RANGES = {"last_k": (1, 10**6), "seed": (0, 2**32 - 1), "reps": (100, 10**6)}
"""Bounds of build_report's numbers: a 95% interval needs 100 resamples, and 10**6 is an hour's bootstrap; numpy
seeds are 32-bit."""


def _check_numbers(**values: int) -> None:
    for name, value in values.items():
        low, high = RANGES[name]
        if not low <= value <= high:
            raise UsageError(f"--{name.replace('_', '-')} must be from {low:,} to {high:,} (got {value:,})")


def _readable(config_text: str) -> bool:
    """A stored config that names its env, pattern and seed: one that does not (edited by hand, cut short) cannot
    be given a column."""
    config = stored_config(config_text)
    try:
        return bool(config) and "env" in config and "seed" in config and bool(Pattern.parse(config["pattern"]))
    except (KeyError, TypeError, UsageError):
        return False


def _env_only_notes(runs: pd.DataFrame) -> list[str]:
    """A note per key whose value differs between envs but not within one (a longer budget for Ant): each env's
    cells are one setting, but an aggregate across envs pools them, which a reader should know."""
    differing = []
    keys = set(config_keys()) - NOT_SETTINGS - set(varying_keys(runs))
    configs = runs.assign(parsed=runs["config"].map(stored_config))
    for key in sorted(keys):
        per_env = {}
        for (env, method), group in configs.groupby(["env", "method"]):
            if Method.parse(method).pattern.is_dense and key in SPARSITY_KEYS:
                continue
            per_env.setdefault(env, set()).update(json.dumps(c.get(key)) for c in group["parsed"])
        if len({value for values in per_env.values() for value in values}) > 1:
            shown = "; ".join(f"{env}: {', '.join(written(json.loads(v)) for v in sorted(values))}"
                              for env, values in sorted(per_env.items()))
            differing.append(f"{key} ({shown})")
    if not differing:
        return []
    return [f"Settings that differ between envs: {'; '.join(differing)}. Each env's cells are one setting; the "
            "aggregate across envs pools them."]


def _check_by(runs: pd.DataFrame, by: str) -> None:
    """`--by KEY` needs a key the runs set, with more than one value among them."""
    if by not in config_keys() or by in ("mask_rule", "sparse_init"):
        raise UsageError(f"cannot report --by {by}: choose a config key that the runs sweep (see `rnm keys`); "
                         "patterns, mask rules and inits are already the columns")
    values = {json.dumps(stored_config(c).get(by)) for c, p in zip(runs["config"], runs["pattern"])
              if not (p == DENSE and by in SPARSITY_KEYS)}
    if len(values) < 2:
        raise UsageError(f"nothing to compare --by {by}: every selected run has {by}="
                         f"{written(json.loads(next(iter(values))) if values else None)}")
    if by not in varying_keys(runs):
        raise UsageError(f"cannot report --by {by}: it differs only between envs (the runs of each env share one "
                         "value), so its rows would compare envs, not settings")


def _with_variants(runs: pd.DataFrame, by: str | None) -> tuple[pd.DataFrame, dict[str, Variant]]:
    """`runs` with each run's variant (text), label and baseline text, and the variants by text. Under `by`, also
    its value of that key (None for a dense run, where the key is one a dense run ignores) and its variant without
    that key (by_variant, by_label): the columns of the ablation table."""
    keys = varying_keys(runs)
    variants = run_variants(runs, keys)
    runs = runs.assign(variant=[str(v) for v in variants], label=[v.label() for v in variants],
                       baseline=[json.dumps(v.baseline_settings()) for v in variants])
    if by:
        without = run_variants(runs, [k for k in keys if k != by])
        values = [None if p == DENSE and by in SPARSITY_KEYS else stored_config(c).get(by)
                  for c, p in zip(runs["config"], runs["pattern"])]
        runs = runs.assign(by_value=pd.Series(values, index=runs.index, dtype=object),
                           by_variant=[str(v) for v in without], by_label=[v.label() for v in without])
        variants = variants + without
    return runs, {str(v): v for v in variants}


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
    by: str | None = None,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
    attempts: pd.DataFrame | None = None,
    costs: pd.DataFrame | None = None,
) -> Report:
    """Compute the whole report from the registry's frames: filter, score, aggregate, and note what was left out.

    Unfinished and failed runs are left out unless `include_partial`, in which case they are scored on the
    evaluations they have so far. `where` keeps the runs whose config has those values (`--set key=value`). `by`
    names a swept key whose values become the rows of an ablation table (its columns are then the variants
    without that key). `seed` fixes the bootstrap so that a report is reproducible; `reps` is the number of
    bootstrap resamples: 10,000 keeps a report to seconds; rliable's own default, 50,000, is there for a final
    paper at five times the wait. `attempts` (the registry's attempts frame; None for a database from before it)
    says which versions made the runs, noted where they differ. `costs` is `cost.run_costs` of the runs (or of more:
    the included ones are taken), what their checkpoints cost, for the cost table; None leaves it out.
    """
    _check_numbers(last_k=last_k, seed=seed, reps=reps)
    if by is not None and not by.strip():
        raise UsageError("--by needs a config key, such as --by mask_interval")
    readable = runs["config"].map(_readable).astype(bool) if len(runs) else pd.Series(dtype=bool)
    if len(runs) and not readable.any():
        raise UsageError("no run's stored config reads as one (edited by hand or cut short?): `rnm export runs` "
                         "lists them")
    selected = _select(runs[readable], envs, patterns, where)
    if by:
        _check_by(selected, by)
    unfinished = selected[selected["status"] != DONE]
    notes, hints = [], []
    if not readable.all():
        notes.append(f"Left out {runs_text(int((~readable).sum()))} whose stored config does not read as one.")
        hints.append("`rnm export runs` lists every run with its stored config.")
    if not include_partial:
        selected = selected[selected["status"] == DONE]
        if selected.empty:
            raise UsageError(f"no finished runs match ({status_counts(unfinished)}); "
                             "use --include-partial to report them on their evaluations so far")
        if len(unfinished):
            notes.append(f"Left out {runs_text(len(unfinished))} not finished ({status_counts(unfinished)}).")
            hints.append("--include-partial reports unfinished runs on their evaluations so far.")
    selected, variants = _with_variants(selected, by)
    scores = final_scores(selected, evals, last_k)
    unscored = selected[~selected["run_id"].isin(scores["run_id"])]
    if scores.empty:
        raise UsageError(f"none of the {len(selected)} matching runs has an evaluation after step 0 yet")
    if len(unscored):
        notes.append(f"Left out {runs_text(len(unscored))} with no evaluation after step 0 yet "
                     f"({status_counts(unscored)}).")
    if include_partial and (scores["status"] != DONE).any():
        partial = scores[scores["status"] != DONE]
        notes.append(f"Includes {runs_text(len(partial))} not finished ({status_counts(partial)}), "
                     "scored on the evaluations they have so far (marked †).")
    finite = np.isfinite(scores["final"])
    if not finite.all():
        notes.append(f"Left out {runs_text(int((~finite).sum()))} whose final score is not a finite number (an "
                     "infinite return among its last evaluations).")
        scores = scores[finite].reset_index(drop=True)
        if scores.empty:
            raise UsageError("no matching run has a finite final score")
    note = evaluation_count_note(scores, last_k)
    if note:
        notes.append(note)
    order = [str(v) for v in variant_order([variants[v] for v in scores["variant"].unique()])]
    by_order = [str(v) for v in variant_order([variants[v] for v in scores["by_variant"].unique()])] if by else []
    densities = pd.Series(run_densities(selected).to_numpy(), index=selected["run_id"].to_numpy())
    scores = scores.assign(density=scores["run_id"].map(densities)).join(measured_densities(stats), on="run_id")
    groups = baseline_groups(scores)
    scores = scores.assign(baseline_group=groups, baseline_mean=baseline_means(scores, groups))
    scores = scores.assign(normalized=scores["final"] / scores["baseline_mean"])
    cells = cell_stats(scores, order)
    if cells["density"].isna().any():
        notes.append("Kept density is unknown (a dash) where it could not be computed.")
        hints.append("Kept density needs the env to be buildable on this machine and the run's config readable.")
    if cells["normalized"].isna().any():
        notes.append("Normalized scores need dense runs with a positive mean on the same env; "
                     "shown as a dash where missing.")
    notes += _baseline_notes(scores)
    notes += _env_only_notes(selected[selected["run_id"].isin(scores["run_id"])])
    included = scores["run_id"]
    notes += version_notes(attempts, included)
    sad = stats[stats["run_id"].isin(included) & stats["name"].astype(str).str.startswith(SAD_PREFIX)]
    cost_table, cost_note = (None, None) if costs is None else _cost_cells(costs, scores, variants)
    if cost_note:
        (hints if cost_table is None else notes).append(cost_note)
    overall = aggregate(scores, order, seed=seed, reps=reps)
    notes += _coarse_interval_notes(overall) + _fewer_envs_notes(overall, scores["env"].nunique())
    return Report(
        scores=scores,
        cells=cells,
        aggregate=overall,
        curves=_with_keys(evals[evals["run_id"].isin(included)], scores),
        sad=_with_keys(sad, scores),
        envs=tuple(sorted(scores["env"].unique())),
        variants=tuple(order),
        labels={v: variants[v].label() for v in order},
        last_k=last_k,
        seed=seed,
        reps=reps,
        notes=tuple(notes),
        hints=tuple(hints),
        by=by,
        ablation=ablation_table(scores, by, by_order, seed=seed, reps=reps) if by else None,
        costs=cost_table,
        cost_note=cost_note,
    )


def _baseline_notes(scores: pd.DataFrame) -> list[str]:
    """A note where a variant is normalized by dense runs of another setting (the env's only dense setting)."""
    borrowed = scores[scores["baseline_group"].notna() & (scores["baseline_group"] != scores["baseline"])]
    if borrowed.empty:
        return []
    labels = ", ".join(dict.fromkeys(borrowed["label"]))
    settings = "; ".join(sorted({", ".join(f"{k}={written(v)}" for k, v in json.loads(g)) or "its defaults"
                                 for g in borrowed["baseline_group"]}))
    return [f"No dense run shares the setting of {labels}: they are normalized by the env's dense runs "
            f"({settings})."]


def _cost_cells(costs: pd.DataFrame, scores: pd.DataFrame,
               variants: dict[str, Variant]) -> tuple[pd.DataFrame | None, str | None]:
    """The cost table of the included runs from `costs` (cost.run_costs, one row per run), and a note on the runs
    whose checkpoint did not count, by reason; no table where none counted."""
    per_run = scores[["run_id", "variant"]].merge(costs.drop(columns=["env", "pattern"], errors="ignore"),
                                                  on="run_id", how="left")
    per_run = per_run.assign(env=scores["env"].to_numpy(), pattern=scores["pattern"].to_numpy())
    problems = per_run["checkpoint_problem"].fillna("missing").where(~per_run["checkpoint_found"].fillna(False)
                                                                     .astype(bool)).dropna().value_counts()
    if problems.sum() == len(per_run):
        return None, (f"No cost table: no run's own checkpoint.pt is readable here ({_problem_counts(problems)}; "
                      "`rnm export runs` shows where each run keeps it).")
    cells = cost_cells(per_run.drop(columns=["variant"]), [variants[v] for v in per_run["variant"]])
    note = None
    if problems.sum():
        note = (f"The cost table leaves out {runs_text(int(problems.sum()))} ({_problem_counts(problems)}) and "
                "averages the others.")
    return cells.assign(variant=cells["variant"].map(str)), note


def _problem_counts(problems: pd.Series) -> str:
    """'2 missing, 1 another run's': why checkpoints were not counted."""
    return ", ".join(f"{count} {reason}" for reason, count in problems.items())


def coarse(per_env_counts: Sequence[int]) -> bool:
    """Whether a percentile bootstrap over these runs per env is too coarse for a 95% interval: one extreme
    resample is at least 2.5% likely (2 runs in each of 2 envs: 1/16), so the interval is the whole range that
    resampling reaches, and a point estimate can sit at its end."""
    return float(np.prod([float(n) ** -float(n) for n in per_env_counts])) >= 0.025


def _coarse_interval_notes(aggregate: pd.DataFrame) -> list[str]:
    """A reader must be told where an interval is not a 95% interval, and why no bold (IQM) or claim (P(> dense))
    rests on it."""
    notes = []
    for flag, what, consequence in (("coarse", "the IQM", "no bold rests on it"),
                                    ("p_coarse", "P(> dense)", "no claim rests on it")):
        rows = aggregate[aggregate[flag] & (aggregate["p_improve"].notna() if flag == "p_coarse" else True)]
        if rows.empty:
            continue
        which = "every column" if len(rows) == len(aggregate) else "; ".join(rows["label"])
        notes.append(f"Too few runs for a 95% bootstrap interval of {what} ({which}): such an interval is the whole "
                     f"range of values that resampling can reach, and a point estimate can sit at its end; "
                     f"{consequence}.")
    if notes and aggregate["coarse"].any():
        notes[0] += " Below 4 runs the IQM is the plain mean."
    return notes


def _fewer_envs_notes(aggregate: pd.DataFrame, n_envs: int) -> list[str]:
    """An aggregate over fewer envs than the table's is another quantity: name the columns it concerns."""
    rows = aggregate[aggregate["n_envs"] < n_envs]
    if rows.empty:
        return []
    listed = "; ".join(f"{label} ({n} of {n_envs})" for label, n in zip(rows["label"], rows["n_envs"]))
    return [f"Aggregates over fewer envs than the table's, so not comparable with the others: {listed}."]


def _with_keys(frame: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Rows of `frame` with env, pattern, method, variant, label and seed taken from the runs (canonical patterns),
    not their own copies."""
    keys = scores[["run_id", "env", "pattern", "method", "variant", "label", "seed"]]
    return frame.drop(columns=["env", "pattern", "seed"], errors="ignore").merge(keys, on="run_id", how="inner")
