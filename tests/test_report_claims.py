"""The report's claims against independent computations from `rnm export runs` and `rnm export evals` alone:
P(> dense) and its interval, the `--by` ablation, the final score without the step-0 evaluation, the bold of a
separated best, and the caption's wording of an improvement."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rliable import library as rly
from rliable import metrics as rly_metrics
from typer.testing import CliRunner

from rnm_cli.main import app
from rnmtd3.errors import UsageError
from rnmtd3.registry import open_registry
from rnmtd3.report import build_report, render
from rnmtd3.sweep import expand

from test_report import LAST_K, REPS, make_frames, read_csv

SEED = 11
FACTORS = {("2:4", 1000): 1.3, ("2:4", 10000): 1.0,
           ("1:8", 1000): 0.7, ("1:8", 10000): 0.9}


def sweep_db(tmp_path: Path, extra: list[str] = ()) -> Path:
    """A Hopper sweep of dense, 2:4 and 1:8 over mask_interval 1000 and 10000, 3 seeds, with known returns: the
    returns of each run rise over 6 evaluations (step 0 the lowest), scaled by FACTORS, with seeded noise."""
    db = tmp_path / "rnm.db"
    registry = open_registry(db, create=True)
    rng = np.random.default_rng(5)
    try:
        registry.enqueue(expand(["Hopper"], ["2:4", "1:8"], 3, ["mask_interval=1000,10000", *extra], steps=6000))
        while (claim := registry.claim()) is not None:
            config = claim.config
            factor = 1.0 if config.pattern.is_dense else FACTORS[(str(config.pattern), config.mask_interval)]
            factor *= 1.2 if config.lr != 3e-4 else 1.0
            for i in range(6):
                registry.record_eval(claim, i * 1000, factor * (500.0 + 100 * i) + rng.normal(0, 30), 1.0, float(i))
            registry.finish(claim, 6000)
    finally:
        registry.close()
    return db


def exported(db: Path, what: str) -> pd.DataFrame:
    result = CliRunner().invoke(app, ["export", what, "--db", str(db)])
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def finals_from_exports(db: Path, last_k: int) -> pd.DataFrame:
    """Per run: the mean of its last `last_k` evaluations after step 0, and its score over the dense mean of the
    runs with its lr (pandas on the exports, independent of rnmtd3.report)."""
    runs, evals = exported(db, "runs"), exported(db, "evals")
    trained = evals[evals["step"] > 0].sort_values("step")
    final = trained.groupby("run_id")["return_mean"].apply(lambda r: r.iloc[-last_k:].mean())
    runs = runs.assign(final=runs["run_id"].map(final))
    dense = runs[runs["pattern"] == "dense"].groupby("lr")["final"].mean()
    return runs.assign(normalized=runs["final"] / runs["lr"].map(dense))


def test_probability_of_improvement_equals_pairwise_comparison_and_rliables_bootstrap(tmp_path: Path):
    db = sweep_db(tmp_path)
    finals = finals_from_exports(db, 3)
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--format", "csv", "--last-k", "3",
                                      "--seed", str(SEED), "--reps", str(REPS)])
    assert result.exit_code == 0, result.output
    table = read_csv(result.stdout)
    overall = table[table["env"] == "all"].set_index("label")
    dense = finals[finals["pattern"] == "dense"]["normalized"].to_numpy()
    for (pattern, interval), runs in finals[finals["pattern"] != "dense"].groupby(["pattern", "mask_interval"]):
        mine = runs["normalized"].to_numpy()
        pairs = [1.0 if x > y else 0.5 if x == y else 0.0 for x in mine for y in dense]
        row = overall.loc[f"{pattern} ({'50%' if pattern == '2:4' else '87.5%'}), mask_interval={interval}"]
        assert row["p_improve"] == pytest.approx(np.mean(pairs), abs=1e-12)
        # rliable's own estimator and bootstrap from the same seed give the same interval
        np.random.seed(SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            point, ci = rly.get_interval_estimates(
                {"x": [mine[:, None], dense[:, None]]},
                lambda x, y: np.array([rly_metrics.probability_of_improvement(x, y)]),
                reps=REPS, random_state=np.random.RandomState(SEED))
        assert row["p_improve"] == pytest.approx(point["x"][0], abs=1e-12)
        assert (row["p_improve_ci_low"], row["p_improve_ci_high"]) == pytest.approx(tuple(ci["x"][:, 0]), abs=1e-12)
    assert overall.loc["2:4 (50%), mask_interval=1000", "p_improve"] == 1.0  # built 30% better than dense
    assert overall.loc["1:8 (87.5%), mask_interval=1000", "p_improve"] == 0.0


def test_by_key_rows_equal_a_pandas_groupby_of_the_exported_final_scores(tmp_path: Path):
    db = sweep_db(tmp_path)
    finals = finals_from_exports(db, 3)
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--by", "mask_interval", "--format", "csv",
                                      "--table", "ablation", "--last-k", "3", "--reps", str(REPS)])
    assert result.exit_code == 0, result.output
    table = read_csv(result.stdout)
    per_env = table[table["env"] == "Hopper-v5"].set_index(["by_value", "variant"])["normalized"]
    expected = finals[finals["pattern"] != "dense"].groupby(["mask_interval", "pattern"])["normalized"].mean()
    assert sorted(per_env.index) == sorted(expected.index)
    for key, value in expected.items():
        assert per_env[key] == pytest.approx(value, rel=1e-12)
    assert list(table.drop_duplicates("by_value")["by_value"]) == [1000, 10000]  # one block per value, by size
    markdown = CliRunner().invoke(app, ["report", "--db", str(db), "--by", "mask_interval", "--last-k", "3",
                                        "--reps", str(REPS)]).stdout
    assert "| mask_interval |" in markdown and "Effect of mask_interval" in markdown


def test_by_key_splits_columns_by_any_other_key_that_differs(tmp_path: Path):
    db = sweep_db(tmp_path, extra=["lr=0.0003,0.001"])
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--by", "mask_interval", "--format", "csv",
                                      "--table", "ablation", "--last-k", "3", "--reps", str(REPS)])
    assert result.exit_code == 0, result.output
    table = read_csv(result.stdout)
    assert set(table["label"]) == {"dense, lr=0.0003", "dense, lr=0.001", "2:4 (50%), lr=0.0003",
                                   "2:4 (50%), lr=0.001", "1:8 (87.5%), lr=0.0003", "1:8 (87.5%), lr=0.001"} - {
        "dense, lr=0.0003", "dense, lr=0.001"}  # dense ignores mask_interval: the baseline, not a row
    assert (table.groupby(["by_value", "variant", "env"]).size() == 1).all()  # never pooled
    finals = finals_from_exports(db, 3)
    expected = finals[(finals["pattern"] == "2:4") & (finals["lr"] == 0.001) & (finals["mask_interval"] == 1000)]
    row = table[(table["variant"] == "2:4 lr=0.001") & (table["by_value"] == 1000) & (table["env"] != "all")]
    assert row["normalized"].item() == pytest.approx(expected["normalized"].mean(), rel=1e-12)


@pytest.mark.parametrize("args, message", [
    (["--by", "lr"], "nothing to compare --by lr: every selected run has lr=0.0003"),
    (["--by", "colour"], "cannot report --by colour"),
    (["--table", "ablation"], "--table ablation needs --by KEY"),
])
def test_a_bad_by_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str):
    db = sweep_db(tmp_path)
    before = db.read_bytes()
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--reps", str(REPS), *args])
    assert message in str(result.exception)
    assert db.read_bytes() == before


def test_the_step_0_evaluation_never_counts_and_a_short_run_is_noted():
    runs, evals, stats = make_frames(n_evals=4)  # steps 0, 5000, 10000, 15000: three after training began
    report = build_report(runs, evals, stats, last_k=10, reps=REPS)
    expected = evals[evals["step"] > 0].groupby("run_id")["return_mean"].mean()
    scores = report.scores.set_index("run_id")
    assert scores["final"].to_dict() == pytest.approx(expected.to_dict(), rel=1e-12)
    assert (scores["n_evals"] == 3).all()
    note = f"{len(runs)} of {len(runs)} runs had fewer than 10 evaluations after the one before training; " \
           "their final score is the mean of all they have (3)."
    assert note in report.notes and note in render(report, "markdown")
    assert not any("fewer than" in n for n in build_report(runs, evals, stats, last_k=3, reps=REPS).notes)


def test_bold_marks_a_best_cell_only_where_it_is_separated_from_the_runner_up():
    runs, evals, stats = make_frames(factors={"dense": 1.0, "2:4": 1.2, "1:4": 1.19})
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    assert not report.cells["best"].any()  # 2:4 has the highest mean, but 1:4 is within its noise
    assert "**" not in render(report, "markdown").split("**Normalized score**")[0].split("\n", 2)[2]
    runs, evals, stats = make_frames(factors={"dense": 1.0, "2:4": 1.5, "1:4": 1.0})
    best = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS).cells.query("best")
    assert sorted(best["env"]) == ["Ant-v5", "Hopper-v5"] and set(best["variant"]) == {"2:4"}


def test_the_caption_claims_an_improvement_only_where_the_interval_is_above_one_half(tmp_path: Path):
    db = sweep_db(tmp_path)
    markdown = CliRunner().invoke(app, ["report", "--db", str(db), "--last-k", "3", "--reps", str(REPS)]).stdout
    caption = next(line for line in markdown.splitlines() if line.startswith("Normalized score:"))
    above = caption.split("Interval above 0.5, so more likely than not to outperform dense: ")[1].split(".")[0]
    assert above == "2:4 (50%), mask_interval=1000"
    assert "1:8 (87.5%), mask_interval=1000" in caption.split("underperform dense: ")[1]
    assert "P(> dense)" in markdown.split("**Density**")[0]


def test_latex_uses_table_for_a_narrow_table_and_table_star_for_a_wide_one():
    runs, evals, stats = make_frames(factors={"dense": 1.0, "2:4": 1.1}, envs={"Hopper-v5": 3000.0})
    narrow = render(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS), "latex")
    assert r"\begin{table}[t]" in narrow and "table*" not in narrow
    runs, evals, stats = make_frames(factors={"dense": 1.0, "2:4": 1.1, "1:4": 1.0, "1:8": 0.9, "2:8": 0.9})
    wide = render(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS), "latex")
    assert r"\begin{table*}[t]" in wide
    assert wide.count(r"\begin{table") == wide.count(r"\end{table")


def checkpointed_db(tmp_path: Path, sets: list[str]) -> Path:
    """Hopper dense and 2:4 at hidden 8x8, 2 seeds, with real checkpoints of the run's own config and owner for
    seed 0 (seed 1's are not on this machine)."""
    from test_report_cost import ramp_checkpoint

    db = tmp_path / "rnm.db"
    registry = open_registry(db, create=True)
    try:
        registry.enqueue(expand(["Hopper"], ["2:4"], 2, ["hidden=8x8", *sets], steps=6000))
        while (claim := registry.claim()) is not None:
            for i in range(3):
                registry.record_eval(claim, i * 2500, 100.0 + i + claim.run_id, 1.0, float(i))
            if claim.config.seed == 0:
                path, _ = ramp_checkpoint(tmp_path / f"run-{claim.run_id}", claim.config, claim.run_id,
                                          registry.database_id)
                registry.record_checkpoint(claim, 6000, str(path))
            registry.finish(claim, 6000)
    finally:
        registry.close()
    return db


def test_the_cost_table_reads_each_runs_checkpoint_and_notes_the_missing(tmp_path: Path):
    db = checkpointed_db(tmp_path, [])
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--format", "csv", "--table", "cost",
                                      "--reps", str(REPS)])
    assert result.exit_code == 0, result.output
    table = read_csv(result.stdout).set_index("variant")
    assert table.loc["2:4", ["actor_nonzeros", "critic_nonzeros", "action_macs_sparse"]].tolist() == [92, 100, 92]
    assert table.loc["2:4", "action_speedup"] == pytest.approx(176 / 92)
    assert table.loc["dense", "action_speedup"] == 1.0
    assert table["n_checkpoints"].tolist() == [1, 1] and table["n_runs"].tolist() == [2, 2]
    assert "The cost table leaves out 2 runs (2 missing)" in result.stderr
    markdown = CliRunner().invoke(app, ["report", "--db", str(db), "--reps", str(REPS)]).stdout
    assert "| MACs/action " in markdown and "92 (1.91x)" in markdown


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_every_table_compiles_and_fits_a_two_column_page(tmp_path: Path):
    """The ablation and cost tables too, with long variant labels: no overfull line in a two-column paper."""
    db = checkpointed_db(tmp_path, ["mask_interval=1000,10000"])
    out = tmp_path / "report.tex"
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--format", "latex", "--by", "mask_interval",
                                      "--out", str(out), "--reps", str(REPS)])
    assert result.exit_code == 0, result.output
    latex = out.read_text(encoding="utf-8")
    assert all(r"\label{tab:rnm-" + name + "}" in latex for name in ("returns", "normalized", "ablation", "cost"))
    document = tmp_path / "paper.tex"
    document.write_text("\\documentclass[twocolumn]{article} \\usepackage{booktabs}\n\\begin{document}\n"
                        f"{latex}\n\\end{{document}}\n", encoding="utf-8")
    compiled = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert compiled.returncode == 0, compiled.stdout[-3000:]
    assert "Overfull \\hbox" not in compiled.stdout, compiled.stdout[-3000:]


def test_an_interval_from_too_few_runs_is_called_what_it_is():
    """2 runs in each of 2 envs: one extreme resample has a 1/16 chance, so the '95%' interval is the whole range
    resampling reaches, and the point can sit at its end; with 5 seeds it is a real 95% interval."""
    few = build_report(*make_frames(seeds=2), last_k=LAST_K, reps=REPS)
    assert any(note.startswith("Too few runs for a 95% bootstrap interval of the IQM (every column)")
               for note in few.notes)
    enough = build_report(*make_frames(seeds=5), last_k=LAST_K, reps=REPS)
    assert not any(note.startswith("Too few runs") for note in enough.notes)


# ---- what a careless or hostile database does not break ------------------------------------------------------

def test_a_list_valued_key_sweep_queues_reports_and_ablates(tmp_path: Path):
    """hidden=64x64,32x32 is stored as JSON lists: the queue table, the columns and --by hidden all name them."""
    db = tmp_path / "rnm.db"
    registry = open_registry(db, create=True)
    try:
        registry.enqueue(expand(["Hopper"], ["2:4"], 4, ["hidden=64x64,32x32"], steps=6000))
        while (claim := registry.claim()) is not None:
            width = claim.config.hidden[0]
            for i in range(6):
                registry.record_eval(claim, i * 1000, 100.0 + width + i + claim.config.seed, 1.0, float(i))
            registry.finish(claim, 6000)
    finally:
        registry.close()
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--by", "hidden", "--format", "csv", "--table",
                                      "ablation", "--last-k", "3", "--reps", str(REPS)])
    assert result.exit_code == 0, result.output
    table = read_csv(result.stdout)
    assert list(table.drop_duplicates("by_text")["by_text"]) == ["32x32", "64x64"]
    labels = build_report(*_frames(db), last_k=3, reps=REPS).labels.values()
    assert set(labels) == {"dense, hidden=32x32", "dense, hidden=64x64", "2:4 (50%), hidden=32x32",
                           "2:4 (50%), hidden=64x64"}


def _frames(db: Path):
    with open_registry(db, create=False) as registry:
        return registry.runs_frame(), registry.evals_frame(), registry.stats_frame()


def test_unreadable_configs_and_infinite_scores_are_left_out_with_a_note():
    runs, evals, stats = make_frames(seeds=5)
    runs.loc[0, "config"] = "{not json"
    runs.loc[1, "config"] = "null"
    evals.loc[evals["run_id"] == 3, "return_mean"] = float("inf")
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    assert not report.scores["run_id"].isin([1, 2, 3]).any()
    assert "Left out 2 runs whose stored config does not read as one" in " ".join(report.notes)
    assert "Left out 1 run whose final score is not a finite number" in " ".join(report.notes)
    assert np.isfinite(report.cells["mean"]).all()


def test_one_seed_per_env_gives_no_claim_and_no_bold():
    report = build_report(*make_frames(seeds=1, factors={"dense": 1.0, "1:8": 0.5}), last_k=LAST_K, reps=REPS)
    caption = render(report, "markdown")
    assert "Too few runs for any claim of improvement." in caption and "underperform" not in caption
    assert not report.aggregate["best"].any()


def test_a_key_that_differs_only_between_envs_is_noted_and_cannot_be_a_by_key():
    runs, evals, stats = make_frames(seeds=5)
    hopper = runs["env"] == "Hopper-v5"
    runs.loc[hopper, "config"] = [json.dumps(json.loads(c) | {"lr": 1e-3}) for c in runs.loc[hopper, "config"]]
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    assert "Settings that differ between envs: lr (Ant-v5: 0.0003; Hopper-v5: 0.001)" in " ".join(report.notes)
    assert report.labels["2:4"] == "2:4 (50%)"  # each env is one setting: no column split
    with pytest.raises(UsageError, match="it differs only between envs"):
        build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, by="lr")


def test_an_aggregate_over_fewer_envs_is_noted():
    runs, evals, stats = make_frames(seeds=5)
    keep = ~((runs["env"] == "Ant-v5") & (runs["pattern"] == "1:8"))
    report = build_report(runs[keep], evals, stats, last_k=LAST_K, reps=REPS)
    assert "not comparable with the others: 1:8 (87.5%) (1 of 2)." in " ".join(report.notes)


@pytest.mark.parametrize("kwargs, message", [
    (dict(last_k=10**21), "--last-k must be from 1 to 1,000,000"),
    (dict(seed=-1), "--seed must be from 0"),
    (dict(reps=10**9), "--reps must be from 100 to 1,000,000"),
    (dict(by=" "), "--by needs a config key"),
])
def test_absurd_numbers_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        build_report(*make_frames(seeds=1), **kwargs)


@pytest.mark.parametrize("option, target, message", [
    ("--out", "{db}", "is a database: writing there would destroy it"),
    ("--out", "{tmp}", "is a folder: give a file name"),
    ("--out", "{tmp}/no/such/t.md", "the folder"),
    ("--out", "{tmp}/checkpoint.pt", "would overwrite a run's checkpoint.pt"),
    ("--plots", "{db}", "exists and is not a folder"),
])
def test_an_output_that_would_destroy_or_cannot_be_written_is_refused_before_any_work(tmp_path: Path, option: str,
                                                                                         target: str, message: str):
    db = sweep_db(tmp_path)
    before = db.read_bytes()
    target = target.format(db=db, tmp=tmp_path)
    result = CliRunner().invoke(app, ["report", "--db", str(db), option, target, "--reps", str(REPS)])
    assert message in str(result.exception), result.output
    assert db.read_bytes() == before and not (tmp_path / "checkpoint.pt").exists()


def test_a_report_writes_nothing_to_its_database(tmp_path: Path):
    """Reading is read-only: the bytes, the journal mode and the folder stay as they were."""
    import sqlite3

    db = sweep_db(tmp_path)
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    before, files = db.read_bytes(), sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--reps", str(REPS), "--last-k", "3"])
    assert result.exit_code == 0, result.output
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == files


def test_a_table_file_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch):
    """A full disk mid-write leaves the previous table, not one cut short, and no temporary file."""
    import errno

    from rnmtd3.folders import write_text_atomic

    table = tmp_path / "table.md"
    write_text_atomic(table, "old\n")

    def full(self, *args, **kwargs):
        self.open("w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(UsageError, match="cannot write .*table.md: No space left on device"):
        write_text_atomic(table, "new\n" * 1000)
    assert table.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
