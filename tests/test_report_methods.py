"""The report's columns are methods (a pattern with its mask_rule and sparse_init): labelled, ordered, never pooled
with each other, filtered by pattern; and the density that training measured, shown where runs recorded it."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from test_report import LAST_K, REPS, expected_cells, make_frames, read_csv

from rnmtd3.errors import UsageError
from rnmtd3.report import build_report, render
from rnmtd3.methods import Method, method_order

# Given out of order on purpose: the report must sort them.
SIDE_BY_SIDE = {"unstructured:0.5+rigl": 1.05, "1:8+scaled": 0.95, "2:4+rigl": 1.08, "dense": 1.0,
                "unstructured:0.5": 1.02, "2:4": 1.1}
ORDER = ["dense", "2:4", "2:4+rigl", "unstructured:0.5", "unstructured:0.5+rigl", "1:8+scaled"]
LABELS = ["dense", "2:4 (50%)", "2:4 (50%) rigl", "unstructured 50%", "unstructured 50% rigl", "1:8 (87.5%) scaled"]


def table_rows(markdown: str, title: str) -> list[list[str]]:
    """The rows (header first, rule left out) of the markdown table under `**title**`, as stripped cells."""
    lines = markdown[markdown.index(f"**{title}**"):].splitlines()[2:]
    rows = [line for line in lines[:lines.index("")] if not line.startswith("|-")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


# ---- the method itself -------------------------------------------------------------------------------------------

def test_method_text_label_and_order():
    texts = ["unstructured:0.5+set+scaled", "2:4+rigl+scaled", "2:4+set", "1:4", "2:4", "unstructured:0.5",
             "2:4+scaled", "dense", "1:2+rigl", "2:4+rigl", "unstructured:0.75"]
    for text in texts:
        assert str(Method.parse(text)) == text
    assert sorted(random.Random(1).sample(texts, len(texts)), key=method_order) == [
        "dense", "1:2+rigl", "2:4", "2:4+scaled", "2:4+set", "2:4+rigl", "2:4+rigl+scaled", "unstructured:0.5",
        "unstructured:0.5+set+scaled", "1:4", "unstructured:0.75"]
    assert Method.parse("unstructured:0.5+set+scaled").label() == "unstructured 50% set scaled"
    assert Method.parse("2:4+rigl+scaled").label() == "2:4 (50%) rigl scaled"
    assert str(Method.of_config({"pattern": "dense", "mask_rule": "rigl", "sparse_init": "scaled"})) == "dense"
    for bad in ("2:4+rigl+set", "2:4+fast", "2:4+scaled+scaled"):
        with pytest.raises(UsageError, match=re.escape(f"bad method {bad!r}")):
            Method.parse(bad)


# ---- columns -----------------------------------------------------------------------------------------------------

def test_methods_side_by_side_are_columns_labelled_and_ordered_by_sparsity():
    runs, evals, stats = make_frames(factors=SIDE_BY_SIDE)
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    assert list(report.variants) == ORDER
    markdown = render(report, "markdown")
    for title in ("Final return", "Normalized score", "Density"):
        assert table_rows(markdown, title)[0] == ["env", *LABELS]
    assert "then its mask-update rule where it is not magnitude pruning (set: random regrowth; rigl" in markdown
    assert list(report.aggregate["method"]) == ORDER and list(report.aggregate["label"]) == LABELS
    csv = read_csv(render(report, "csv"))
    hopper = csv[csv["env"] == "Hopper-v5"]
    assert list(hopper["method"]) == ORDER and list(hopper["label"]) == LABELS
    assert list(hopper["pattern"]) == ["dense", "2:4", "2:4", "unstructured:0.5", "unstructured:0.5", "1:8"]
    assert list(csv[csv["env"] == "all"]["method"]) == ORDER


def test_each_method_is_its_own_cell_never_pooled_with_another_rule_of_its_pattern():
    runs, evals, stats = make_frames(factors=SIDE_BY_SIDE)
    cells = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS).cells.set_index(["env", "method"])
    methods = runs["config"].map(lambda c: str(Method.of_config(json.loads(c))))
    expected = expected_cells(runs.assign(pattern=methods), evals, LAST_K).set_index(["env", "pattern"])
    assert sorted(cells.index) == sorted(expected.index)
    for key, row in expected.iterrows():
        assert cells.loc[key, "mean"] == pytest.approx(row["mean"], rel=1e-12)
        assert cells.loc[key, "normalized"] == pytest.approx(row["normalized"], rel=1e-12)
        assert cells.loc[key, "n_seeds"] == 3
    assert cells.loc[("Ant-v5", "2:4"), "mean"] != cells.loc[("Ant-v5", "2:4+rigl"), "mean"]


def test_patterns_filter_keeps_every_rule_of_a_pattern_and_the_dense_baseline():
    runs, evals, stats = make_frames(factors=SIDE_BY_SIDE, seeds=2)
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, patterns=["2:4", "1:8"])
    assert report.variants == ("dense", "2:4", "2:4+rigl", "1:8+scaled")
    rigl = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, where={"mask_rule": "rigl"})
    assert rigl.variants == ("dense", "2:4+rigl", "unstructured:0.5+rigl")


def test_a_run_of_one_method_that_differs_in_another_key_is_its_own_column():
    runs, evals, stats = make_frames(factors=SIDE_BY_SIDE, seeds=2)
    one = runs.index[runs["config"].str.contains('"mask_rule":"rigl"') & (runs["pattern"] == "2:4")][0]
    runs.loc[one, "config"] = json.dumps(json.loads(runs.loc[one, "config"]) | {"lr": 1e-3})
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    assert "2:4 (50%) rigl, lr=0.001" in report.labels.values()
    lone = report.cells[report.cells["label"] == "2:4 (50%) rigl, lr=0.001"]
    assert lone["n_seeds"].tolist() == [1]  # never pooled with the lr=0.0003 seed
    # lr applies to dense runs too; they ran at 0.0003 only, so they are the baseline of both lr columns, and
    # the report says so
    assert lone["normalized"].notna().all()
    assert any("No dense run shares the setting of 2:4 (50%) rigl, lr=0.001" in note for note in report.notes)


def test_a_run_queued_before_the_method_keys_existed_is_the_default_method():
    """A stored config without mask_rule, drop_fraction, mask_end or sparse_init ran with their defaults: the same
    setting as a run that says so, so it joins that cell instead of being refused as a mix."""
    runs, evals, stats = make_frames(factors={"dense": 1.0, "2:4": 1.1, "2:4+rigl": 1.0}, seeds=2)
    new_keys = ("mask_rule", "drop_fraction", "mask_end", "sparse_init")
    old = (runs["seed"] == 0) & ~runs["config"].str.contains('"mask_rule":"rigl"')
    runs.loc[old, "config"] = [json.dumps({k: v for k, v in json.loads(c).items() if k not in new_keys})
                               for c in runs.loc[old, "config"]]
    for where in (None, {"mask_end": 1.0}):  # the old runs have mask_end's default too
        report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, where=where)
        assert report.variants == ("dense", "2:4", "2:4+rigl")
        assert report.cells.groupby("method")["n_seeds"].sum().to_dict() == {"dense": 4, "2:4": 4, "2:4+rigl": 4}


# ---- measured density --------------------------------------------------------------------------------------------

ACTOR = {"2:4": 0.50, "2:4+rigl": 0.48, "unstructured:0.5": 0.46}  # latest actor density of seed 0; seed 1 adds 0.02


def with_density_stats(runs: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """Density statistics as the trainer records them, for the sparse runs (dense runs record none), with an earlier
    record that the report must not take and the rows in no order."""
    rows = []
    for run in runs.itertuples():
        method = str(Method.of_config(json.loads(run.config)))
        if method not in ACTOR:
            continue
        key = dict(run_id=run.run_id, env=run.env, pattern=run.pattern, seed=run.seed)
        latest = {"density_actor": ACTOR[method] + 0.02 * run.seed, "density_critic1": 0.40, "density_critic2": 0.44}
        rows += [key | dict(step=5000, name=name, value=0.9) for name in latest]
        rows += [key | dict(step=50_000, name=name, value=value) for name, value in latest.items()]
    return pd.concat([stats, pd.DataFrame(rows)], ignore_index=True).sample(frac=1.0, random_state=5)


def test_the_density_measured_in_training_is_shown_per_network():
    factors = {"dense": 1.0, **{method: 1.0 for method in ACTOR}}
    runs, evals, stats = make_frames(envs={"Hopper-v5": 3000.0}, factors=factors, seeds=2)
    report = build_report(runs, evals, with_density_stats(runs, stats), last_k=LAST_K, reps=REPS)
    markdown = render(report, "markdown")
    assert table_rows(markdown, "Density")[1:] == [
        ["Hopper-v5", "100%", "50.3%", "50.3%", "50%"],  # kept by the pattern (Hopper's 11 inputs round up at 2:4)
        ["Hopper-v5 actor", "-", "51%", "49%", "47%"],
        ["Hopper-v5 critics", "-", "42%", "42%", "42%"]]
    assert "Rows 'actor' and 'critics': the nonzero fraction of the sparse layers measured in training" in markdown
    latex = render(report, "latex")
    assert r"Hopper-v5 actor & -- & 51\% & 49\% & 47\% \\" in latex
    csv = read_csv(render(report, "csv")).set_index(["env", "method"])
    assert csv.loc[("Hopper-v5", "2:4+rigl"), "density_actor"] == pytest.approx(0.49)
    assert csv.loc[("Hopper-v5", "unstructured:0.5"), "density_critic"] == pytest.approx(0.42)
    assert csv.loc[[("Hopper-v5", "dense"), ("all", "2:4")], ["density_actor", "density_critic"]].isna().all(None)


def test_without_density_statistics_the_report_shows_no_measured_rows():
    runs, evals, stats = make_frames(factors=SIDE_BY_SIDE, seeds=2)
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    markdown = render(report, "markdown")
    assert [row[0] for row in table_rows(markdown, "Density")] == ["env", "Ant-v5", "Hopper-v5"]
    assert "Rows 'actor'" not in markdown and "-v5 actor" not in render(report, "latex")
    csv = read_csv(render(report, "csv"))
    assert {"density_actor", "density_critic"} <= set(csv.columns)  # the same columns, empty
    assert csv[["density_actor", "density_critic"]].isna().all(None)


# ---- figures -----------------------------------------------------------------------------------------------------

# ---- the command, on a registry --------------------------------------------------------------------------------

def test_cli_report_on_a_registry_with_rules_side_by_side_and_measured_density(tmp_path: Path):
    from typer.testing import CliRunner

    from rnm_cli.main import app
    from rnmtd3.registry import open_registry
    from rnmtd3.sweep import make_config

    db = tmp_path / "rnm.db"
    registry = open_registry(db, create=True)
    try:
        registry.enqueue([make_config("Hopper", pattern, seed, {"steps": 1000, **values}) for seed in (0, 1)
                          for pattern, values in (("dense", {}), ("2:4", {}), ("2:4", {"mask_rule": "rigl"}))])
        while (claim := registry.claim()) is not None:
            rigl = claim.config.mask_rule == "rigl"
            for i in range(3):
                registry.record_eval(claim, i * 500, 100.0 * i + (20.0 if rigl else 0.0), 1.0, float(i))
            if not claim.config.pattern.is_dense:
                registry.record_stats(claim, 1000, {"density_actor": 0.5, "density_critic1": 0.5,
                                                    "density_critic2": 0.5 - 0.1 * rigl})
            registry.finish(claim, 1000)
    finally:
        registry.close()
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--reps", "1000", "--last-k", "1"])
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout, "Final return")[:2] == [["env", "dense", "2:4 (50%)", "2:4 (50%) rigl"],
                                                             ["Hopper-v5", "200.0 ± 0.0", "200.0 ± 0.0",
                                                              "**220.0 ± 0.0**"]]
    assert table_rows(result.stdout, "Density")[-1] == ["Hopper-v5 critics", "-", "50%", "45%"]
