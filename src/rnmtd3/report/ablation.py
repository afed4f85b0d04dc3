"""The `--by KEY` ablation: which settings matter. Rows are the key's values, columns the variants without that key
(the patterns, with any other key that varies), cells the normalized score per env and the IQM across envs with its
95% stratified bootstrap interval. Runs are normalized as in the rest of the report (by their own dense baseline),
so an ablation row and the main table agree on every run's score."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd

from ..config import written
from ..variants import value_order
from .intervals import DEFAULT_REPS, iqm_interval

ALL_ENVS = "all"


def ablation_table(scores: pd.DataFrame, by: str, order: Sequence[str], *, seed: int,
                   reps: int = DEFAULT_REPS) -> pd.DataFrame:
    """One row per value of `by` x env (and env 'all') x variant without `by` (`order`, the report's order):
    by_value, by_text, env, variant, label, n_runs, normalized (a cell's mean normalized score; the IQM over envs
    on 'all' rows), ci_low and ci_high (on 'all' rows; NaN on env rows). Runs without a value of `by` (dense runs,
    for a key that a dense run ignores) are the baseline, not a row. Ordered by value (numbers by size), then env,
    then the report's variant order."""
    rows = []
    scored = scores[scores["by_value"].notna() & scores["normalized"].notna()]
    rank = {v: i for i, v in enumerate(order)}
    values = sorted({json.dumps(v, sort_keys=True) for v in scored["by_value"]},
                    key=lambda text: value_order(json.loads(text)))
    for text in values:
        value = json.loads(text)
        at_value = scored[scored["by_value"].map(lambda v, t=text: json.dumps(v, sort_keys=True) == t)]
        for variant, runs in sorted(at_value.groupby("by_variant"), key=lambda item: rank[item[0]]):
            common = {"by_value": value, "by_text": written(value), "variant": variant,
                      "label": runs["by_label"].iloc[0]}
            per_env = []
            for env, env_runs in runs.groupby("env"):
                rows.append({**common, "env": env, "n_runs": len(env_runs),
                             "normalized": env_runs["normalized"].mean(), "ci_low": math.nan, "ci_high": math.nan})
                per_env.append(env_runs["normalized"].to_numpy())
            iqm, low, high = iqm_interval(per_env, seed=seed, reps=reps)
            rows.append({**common, "env": ALL_ENVS, "n_runs": len(runs), "normalized": iqm, "ci_low": low,
                         "ci_high": high})
    columns = ["by_value", "by_text", "env", "variant", "label", "n_runs", "normalized", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)
