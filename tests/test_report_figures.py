"""The report's figures: every file written and not blank, and what they draw (profiles, sample-efficiency IQMs,
Spearman's rho, the --by lines) against an independent computation from the same frames; each variant's style
distinct and the same in every figure; what a band means and how many seeds it covers written on each figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from matplotlib.image import imread
from numpy.testing import assert_allclose
from rliable import library as rly

from rnmtd3.report import build_report, write_plots
from rnmtd3.report import figure_data as data
from rnmtd3.report.plots import (LINESTYLES, MARKERS, report_figures, report_styles, sample_efficiency_figure,
                                 variant_styles)
from test_report import LAST_K, REPS, make_frames

INTERVALS = (1000, 10000)
SLOWER_FACTOR = 0.95  # returns of the mask_interval=10000 copies
SAD_FACTOR = 2.0


def _with_keys(config: str, **keys: object) -> str:
    return json.dumps(json.loads(config) | keys)


def sweep_frames(truncate: dict[int, int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """make_frames' runs at mask_interval=1000 and a copy of each sparse run at 10000 (returns times
    SLOWER_FACTOR, SAD times SAD_FACTOR): two variants per pattern and a --by mask_interval ablation of two rows.
    `truncate` ends a run's evaluations at a step (run_id -> last step kept)."""
    runs, evals, stats = make_frames(factors={"dense": 1.0, "2:4": 1.1, "1:8": 0.9})
    runs = runs.assign(config=[_with_keys(c, mask_interval=INTERVALS[0]) for c in runs["config"]])
    sparse = runs[runs["pattern"] != "dense"]
    new_id = {old: int(runs["run_id"].max()) + 1 + i for i, old in enumerate(sparse["run_id"])}
    copies = sparse.assign(run_id=sparse["run_id"].map(new_id), config_hash=sparse["config_hash"] + "-10000",
                           config=[_with_keys(c, mask_interval=INTERVALS[1]) for c in sparse["config"]])
    copied_evals = evals[evals["run_id"].isin(new_id)]
    copied_evals = copied_evals.assign(run_id=copied_evals["run_id"].map(new_id),
                                       return_mean=copied_evals["return_mean"] * SLOWER_FACTOR)
    copied_stats = stats[stats["run_id"].isin(new_id)]
    is_sad = copied_stats["name"].str.startswith("sad_")
    copied_stats = copied_stats.assign(run_id=copied_stats["run_id"].map(new_id),
                                       value=copied_stats["value"].where(~is_sad, copied_stats["value"] * SAD_FACTOR))
    evals = pd.concat([evals, copied_evals], ignore_index=True)
    for run_id, last in (truncate or {}).items():
        evals = evals[(evals["run_id"] != run_id) | (evals["step"] <= last)]
    return (pd.concat([runs, copies], ignore_index=True), evals.reset_index(drop=True),
            pd.concat([stats, copied_stats], ignore_index=True))


@pytest.fixture(scope="module")
def sweep():
    runs, evals, stats = sweep_frames()
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, by="mask_interval")
    return runs, evals, stats, report


@pytest.fixture(scope="module")
def figures(sweep):
    return report_figures(sweep[3])


def drawn_lines(figure, panel: int = 0) -> dict:
    """The lines a figure's panel draws for variants, by variant text (reference lines have private labels)."""
    return {line.get_label(): line for line in figure.axes[panel].lines if not line.get_label().startswith("_")}


def independent_finals(evals: pd.DataFrame) -> pd.Series:
    """Per run: the mean of its last LAST_K evaluations after step 0 (the report's final score, recomputed)."""
    trained = evals[evals["step"] > 0].sort_values("step")
    return trained.groupby("run_id").tail(LAST_K).groupby("run_id")["return_mean"].mean()


# ---- files ------------------------------------------------------------------------------------------------------

def test_every_figure_file_is_written_and_not_blank(tmp_path: Path, sweep):
    paths = write_plots(sweep[3], tmp_path / "figs")
    stems = ["curves_Ant-v5", "curves_Hopper-v5", "curves_all", "normalized_iqm", "performance_profile",
             "sample_efficiency", "sad_Ant-v5", "sad_Hopper-v5", "sad_all", "sad_vs_return", "by_mask_interval"]
    assert sorted(p.name for p in paths) == sorted(f"{stem}.{ext}" for stem in stems for ext in ("png", "pdf"))
    for path in paths:
        if path.suffix == ".png":
            image = imread(path)
            assert image.shape[1] > 600 and image[..., :3].std() > 0.05, path  # not a blank canvas
        else:
            assert path.read_bytes().startswith(b"%PDF") and path.stat().st_size > 5_000, path


def test_figures_without_their_data_are_left_out():
    runs, evals, stats = make_frames(factors={"dense": 1.0}, sad=False)
    dense_only = report_figures(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS))
    assert sorted(dense_only) == sorted(["curves_Ant-v5", "curves_Hopper-v5", "curves_all", "normalized_iqm",
                                         "performance_profile", "sample_efficiency"])
    runs, evals, stats = make_frames(factors={"2:4": 1.1}, seeds=2)  # no dense run: no normalized score
    no_baseline = report_figures(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS))
    assert sorted(no_baseline) == sorted(["curves_Ant-v5", "curves_Hopper-v5", "curves_all", "sad_Ant-v5",
                                          "sad_Hopper-v5", "sad_all", "sad_vs_return"])


# ---- numbers ----------------------------------------------------------------------------------------------------

def test_performance_profile_is_the_fraction_of_runs_above_tau_as_rliable_draws_it(sweep, figures):
    report = sweep[3]
    taus = data.profile_taus(report.scores)
    profiles = data.performance_profiles(report.scores, report.variants, taus, seed=report.seed, reps=REPS)
    lines = drawn_lines(figures["performance_profile"])
    assert list(lines) == list(report.variants)
    for variant, runs in report.scores.groupby("variant"):
        mine = profiles[profiles["variant"] == variant]
        expected = [(runs["normalized"] > tau).mean() for tau in taus]
        assert_allclose(mine["fraction"], expected)
        assert_allclose(lines[variant].get_ydata(), expected)
        matrix = np.stack([group["normalized"].to_numpy() for _, group in runs.groupby("env")], axis=1)
        rliable_profile, _ = rly.create_performance_profile({"v": matrix}, taus, reps=10)
        assert_allclose(mine["fraction"], rliable_profile["v"])
        assert (mine["low"] <= mine["fraction"] + 1e-12).all() and (mine["fraction"] <= mine["high"] + 1e-12).all()
        assert mine["low"].min() >= 0 and mine["high"].max() <= 1
    assert (profiles["high"] > profiles["low"]).any()  # the bands are drawn from resamples, not the point
    own = np.sort(report.scores["normalized"].to_numpy())  # thresholds on the runs' own scores: strictly above
    at_own = data.performance_profiles(report.scores, report.variants, own, seed=report.seed, reps=10)
    for variant, runs in report.scores.groupby("variant"):
        expected = [(runs["normalized"] > tau).mean() for tau in own]
        assert_allclose(at_own[at_own["variant"] == variant]["fraction"], expected)


def test_bootstraps_repeat_from_the_seed_and_leave_the_global_rng_alone(sweep):
    report = sweep[3]
    state = np.random.get_state()[1].copy()

    def bands(seed: int) -> pd.DataFrame:
        return data.sample_efficiency(report.curves, report.scores, report.variants, seed=seed, reps=REPS)

    first = bands(3)
    pd.testing.assert_frame_equal(first, bands(3))
    assert not np.allclose(first["low"], bands(4)["low"])
    assert np.array_equal(np.random.get_state()[1], state)


def test_sample_efficiency_is_the_iqm_per_step_over_the_steps_every_run_reached():
    runs, _, _ = sweep_frames()
    short = int(runs[(runs["pattern"] == "2:4") & (runs["env"] == "Hopper-v5")]["run_id"].iloc[0])
    runs, evals, stats = sweep_frames(truncate={short: 40_000})
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    curves = data.sample_efficiency(report.curves, report.scores, report.variants, seed=report.seed, reps=REPS)
    lines = drawn_lines(sample_efficiency_figure(report, report_styles(report)[0]))
    finals = independent_finals(evals)
    dense = runs[runs["pattern"] == "dense"].assign(final=lambda f: f["run_id"].map(finals))
    baseline = dense.groupby("env")["final"].mean()
    variant_of = report.scores.set_index("run_id")["variant"]
    for variant in report.variants:
        ids = variant_of.index[variant_of == variant]
        mine = evals[evals["run_id"].isin(ids)]
        steps = sorted(set.intersection(*(set(group["step"]) for _, group in mine.groupby("run_id"))))
        expected = [scipy.stats.trim_mean(at["return_mean"] / at["env"].map(baseline), 0.25)
                    for step in steps for at in [mine[mine["step"] == step]]]
        got = curves[curves["variant"] == variant]
        assert list(got["step"]) == steps
        assert_allclose(got["iqm"], expected)
        assert_allclose(lines[variant].get_xydata(), np.column_stack([steps, expected]))
        assert (got["low"] <= got["iqm"] + 1e-12).all() and (got["iqm"] <= got["high"] + 1e-12).all()
    short_variant = variant_of[short]
    assert curves[curves["variant"] == short_variant]["step"].max() == 40_000
    assert curves[curves["variant"] != short_variant]["step"].max() == evals["step"].max()


def test_sad_against_return_has_scipys_spearman_rho_on_each_runs_mean_sad(sweep, figures):
    runs, evals, stats, report = sweep
    sad = stats[stats["name"].str.startswith("sad_")]
    run_sad = sad.groupby(["run_id", "step"])["value"].mean().groupby("run_id").mean()
    finals = independent_finals(evals)
    points = data.sad_against_return(report.sad, report.scores)
    correlations = data.sad_correlations(points).set_index("env")
    figure = figures["sad_vs_return"]
    for panel, env in enumerate(correlations.index):
        ids = runs[(runs["env"] == env) & runs["run_id"].isin(run_sad.index)]["run_id"]
        expected = scipy.stats.spearmanr(run_sad[ids], finals[ids])
        assert correlations.loc[env, "n"] == len(ids) == 12
        assert correlations.loc[env, "rho"] == pytest.approx(expected.statistic)
        assert correlations.loc[env, "p"] == pytest.approx(expected.pvalue)
        axes = figure.axes[panel]
        assert axes.get_title().startswith(env) and f"ρ = {expected.statistic:.2f}" in axes.get_title()
        drawn = np.concatenate([line.get_xydata() for line in drawn_lines(figure, panel).values()])
        assert_allclose(sorted(map(tuple, drawn)), sorted(zip(run_sad[ids], finals[ids])))


def test_too_few_runs_for_a_rank_correlation_say_so():
    points = pd.DataFrame({"env": ["a", "a", "b", "b", "b"], "sad": [0.1, 0.2, 0.1, 0.1, 0.1],
                           "final": [1.0, 2.0, 1.0, 2.0, 3.0]})
    correlations = data.sad_correlations(points).set_index("env")
    assert correlations["rho"].isna().all() and list(correlations["n"]) == [2, 3]


def test_by_figure_draws_the_ablations_iqm_rows(sweep, figures):
    ablation = sweep[3].ablation
    lines = drawn_lines(figures["by_mask_interval"])
    rows = ablation[ablation["env"] == "all"]
    assert sorted(lines) == sorted(rows["variant"].unique()) and len(lines) == 2
    for variant, mine in rows.groupby("variant"):
        mine = mine.sort_values("by_value")
        assert_allclose(lines[variant].get_xydata(), mine[["by_value", "normalized"]].to_numpy(dtype=float))
    points = data.ablation_lines(ablation)
    assert_allclose(points[["ci_low", "ci_high"]], rows[["ci_low", "ci_high"]])
    assert figures["by_mask_interval"].axes[0].get_xscale() == "linear"  # 1000 to 10000: not more than 10x


def test_by_axis_is_logarithmic_past_a_tenfold_span_and_categorical_for_text():
    assert data.log_axis([1000, 20000]) and not data.log_axis([1000, 10000]) and not data.log_axis([0, 1000])
    text = pd.DataFrame({"by_value": ["masked", "ste", "masked"], "by_text": ["masked", "ste", "masked"],
                         "env": ["all", "all", "Hopper-v5"], "variant": ["2:4"] * 3, "normalized": [1.0, 0.9, 1.0]})
    lines = data.ablation_lines(text)
    assert list(lines["x"]) == [0.0, 1.0] and not lines["numeric"].any()


# ---- reading ----------------------------------------------------------------------------------------------------

def test_each_variant_has_one_distinct_style_in_every_figure(sweep, figures):
    report = sweep[3]
    seen = {}
    for stem in ("curves_Hopper-v5", "curves_all", "performance_profile", "sample_efficiency", "sad_Ant-v5",
                 "by_mask_interval"):
        for variant, line in drawn_lines(figures[stem]).items():
            style = (tuple(line.get_color()), line.get_linestyle(), line.get_marker())
            assert seen.setdefault(variant, style) == style, (stem, variant)
    pairs = [style[1:] for style in seen.values()]
    assert len(set(pairs)) == len(pairs) == len(report.variants) + 2  # the two --by lines have their own
    assert seen["dense"][0] == (0.0, 0.0, 0.0)
    colors = {variant: style[0] for variant, style in seen.items()}
    assert colors["2:4 mask_interval=1000"] == colors["2:4 mask_interval=10000"] == colors["2:4"]
    assert colors["2:4"] != colors["1:8"]
    many = [f"2:4 mask_interval={i}" for i in range(len(LINESTYLES) * len(MARKERS))]
    styles = variant_styles(many, dict.fromkeys(many, "2:4"))
    assert len({(s.linestyle, s.marker) for s in styles.values()}) == len(many)
    methods = ["dense", "2:4", "2:4+rigl", "2:4+set", "unstructured:0.5", "unstructured:0.5+rigl", "1:4",
               "1:4+scaled", "1:8", "1:8+rigl"]  # rules side by side: one colour each
    styles = variant_styles(methods, {m: m for m in methods})
    assert len({s.color for s in styles.values()}) == len(methods) and styles["dense"].color == (0.0, 0.0, 0.0)


def test_every_figure_says_what_its_band_means_and_how_many_seeds(figures):
    for stem, figure in figures.items():
        if stem == "normalized_iqm":
            text = figure.axes[0].get_xlabel()
            assert "95% stratified bootstrap CI" in text and "3 seeds" in text
            continue
        title = figure.legends[0].get_title().get_text()
        assert "3 seeds" in title, stem
        if stem.startswith(("curves", "sad_A", "sad_H")) or stem == "sad_all":
            assert "±1 sample std" in title, stem
        elif stem != "sad_vs_return":
            assert "95% stratified bootstrap CI" in title, stem
