"""The report: every number against an independent pandas computation, the LaTeX through pdflatex, the figures
on disk, and the usage errors. Frames are built here in the registry's data contract, so no database is needed."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from rnmtd3.config import RunConfig
from rnmtd3.errors import UsageError
from rnmtd3.report import LATEX_PREAMBLE, build_report, render, write_plots
from rnmtd3.methods import Method

LAST_K = 5
REPS = 1_000  # bootstrap resamples: enough to test the interval, few enough for a fast test
BASE = {"Hopper-v5": 3000.0, "Ant-v5": 4000.0}
FACTOR = {"dense": 1.0, "2:4": 1.1, "1:4": 1.02, "1:8": 0.9}


def make_frames(envs: dict[str, float] = BASE, factors: dict[str, float] = FACTOR, seeds: int = 3,
                n_evals: int = 12, skip: frozenset = frozenset(), status: dict | None = None,
                sad: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Runs, evals and stats frames as the registry returns them, with known, seeded evaluation values.

    `factors` is keyed by method ('2:4', '2:4+rigl', '1:8+scaled'); `skip` leaves out (env, method, seed) runs,
    `status` overrides a run's status (default done).
    """
    rng = np.random.default_rng(7)
    runs, evals, stats = [], [], []
    for env, base in envs.items():
        for name, factor in factors.items():
            method = Method.parse(name)
            pattern = str(method.pattern)
            for seed in range(seeds):
                if (env, name, seed) in skip:
                    continue
                run_id = len(runs) + 1
                config = RunConfig(env=env, pattern=method.pattern, seed=seed, mask_rule=method.rule,
                                   sparse_init=method.init)
                runs.append(dict(run_id=run_id, env=env, pattern=pattern, seed=seed,
                                 status=(status or {}).get((env, name, seed), "done"), attempts=1,
                                 steps_done=n_evals * 5000, steps_total=n_evals * 5000, checkpoint=None,
                                 config_hash=f"hash{run_id}", config=config.to_json()))
                for i in range(n_evals):
                    key = dict(run_id=run_id, env=env, pattern=pattern, seed=seed, step=i * 5000)
                    evals.append(key | dict(return_mean=base * factor * (i + 1) / n_evals + rng.normal(0, 100),
                                            return_std=10.0, wall_time=float(i)))
                    stats.append(key | dict(name="critic_loss", value=1.0))
                    if sad and pattern != "dense" and i:
                        stats += [key | dict(name=name, value=0.2 * math.exp(-i / 4) + rng.uniform(0, 0.02))
                                  for name in ("sad_actor", "sad_critic1", "sad_critic2")]
    # Rows arrive in no particular order from a database: shuffle so that "last k" must sort by step.
    evals_frame = pd.DataFrame(evals).sample(frac=1.0, random_state=3).reset_index(drop=True)
    return pd.DataFrame(runs), evals_frame, pd.DataFrame(stats)


def expected_cells(runs: pd.DataFrame, evals: pd.DataFrame, last_k: int) -> pd.DataFrame:
    """The report's definitions, computed independently: final = mean of the last k evals by step; mean and
    sample std (ddof=1) over seeds; normalized = cell mean / dense mean on the env."""
    finals = {}
    for run_id, group in evals.groupby("run_id"):
        finals[run_id] = group.sort_values("step")["return_mean"].iloc[-last_k:].mean()
    done = runs[runs["status"] == "done"].assign(final=lambda f: f["run_id"].map(finals))
    cells = done.groupby(["env", "pattern"])["final"].agg(["mean", "std", "count"]).reset_index()
    dense = cells[cells["pattern"] == "dense"].set_index("env")["mean"]
    cells["normalized"] = cells["mean"] / cells["env"].map(dense)
    return cells


def read_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


# ---- numbers ----------------------------------------------------------------------------------------------------

def test_every_cell_equals_an_independent_pandas_computation():
    runs, evals, stats = make_frames(skip=frozenset({("Ant-v5", "1:8", 2)}))
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    table = read_csv(render(report, "csv"))
    per_env = table[table["statistic"] == "mean"].set_index(["env", "pattern"])
    expected = expected_cells(runs, evals, LAST_K).set_index(["env", "pattern"])
    assert sorted(per_env.index) == sorted(expected.index)
    for key, row in expected.iterrows():
        got = per_env.loc[key]
        assert got["mean"] == pytest.approx(row["mean"], rel=1e-12)
        assert got["std"] == pytest.approx(row["std"], rel=1e-12)
        assert got["normalized"] == pytest.approx(row["normalized"], rel=1e-12)
        assert got["n_seeds"] == row["count"]
    markdown = render(report, "markdown")
    for (env, pattern), row in expected.iterrows():
        text = f"{row['mean']:.1f} ± {row['std']:.1f}"
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {env} ") and "±" in line)
        assert text in line, (env, pattern, line)


def test_table_layout_bold_best_and_fewer_seed_mark():
    runs, evals, stats = make_frames(skip=frozenset({("Ant-v5", "1:8", 2)}))
    markdown = render(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS), "markdown")
    header = markdown.splitlines()[2]
    assert [h.strip() for h in header.strip("|").split("|")] == ["env", "dense", "2:4 (50%)", "1:4 (75%)",
                                                                 "1:8 (87.5%)"]
    ant = next(line for line in markdown.splitlines() if line.startswith("| Ant-v5") and "±" in line)
    cells = [c.strip() for c in ant.strip("|").split("|")]
    assert cells[2].startswith("**") and cells[2].count("**") == 2  # 2:4 is built to be best
    assert cells[4].endswith("(n=2)") and "(n=" not in "".join(cells[1:4])
    assert "mean ± sample standard deviation over up to 3 seeds" in markdown


def test_single_seed_cell_has_no_std_and_still_plots(tmp_path: Path):
    runs, evals, stats = make_frames(skip=frozenset({("Hopper-v5", "1:8", 1), ("Hopper-v5", "1:8", 2)}))
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    row = read_csv(render(report, "csv")).query("env == 'Hopper-v5' and pattern == '1:8'").iloc[0]
    assert row["n_seeds"] == 1 and math.isnan(row["std"])
    line = next(line for line in render(report, "markdown").splitlines()
                if line.startswith("| Hopper-v5") and "±" in line)
    assert line.rstrip(" |").endswith("(n=1)") and line.count("±") == 3
    assert all(path.stat().st_size > 5_000 for path in write_plots(report, tmp_path))


def test_iqm_is_rliables_over_per_run_normalized_scores_and_reproducible():
    runs, evals, stats = make_frames()
    state = np.random.get_state()
    first = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, seed=3).aggregate.set_index("pattern")
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state))  # global RNG left as found
    np.random.seed(12345)  # a different global state must not change the interval
    again = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, seed=3).aggregate.set_index("pattern")
    pd.testing.assert_frame_equal(first, again)
    finals = {run_id: group.sort_values("step")["return_mean"].iloc[-LAST_K:].mean()
              for run_id, group in evals.groupby("run_id")}
    scored = runs.assign(final=runs["run_id"].map(finals))
    dense = scored[scored["pattern"] == "dense"].groupby("env")["final"].mean()
    for pattern, row in first.iterrows():
        mine = scored[scored["pattern"] == pattern]
        normalized = (mine["final"] / mine["env"].map(dense)).to_numpy()
        assert row["iqm"] == pytest.approx(scipy.stats.trim_mean(normalized, 0.25), rel=1e-12)
        assert row["ci_low"] <= row["iqm"] <= row["ci_high"]
        assert row["n_runs"] == len(mine) and row["n_envs"] == 2


def test_csv_has_one_row_per_env_and_pattern_plus_the_aggregate():
    runs, evals, stats = make_frames()
    table = read_csv(render(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS), "csv"))
    assert {"env", "pattern", "sparsity", "n_seeds", "mean", "std", "normalized"} <= set(table.columns)
    assert len(table[table["statistic"] == "mean"]) == len(BASE) * len(FACTOR)
    assert list(table[table["env"] == "all"]["pattern"]) == ["dense", "2:4", "1:4", "1:8"]
    assert table.set_index(["env", "pattern"]).loc[("Ant-v5", "1:8"), "sparsity"] == 0.875


# ---- partial runs, filters and errors ------------------------------------------------------------------------------

def test_unfinished_runs_are_left_out_and_counted_unless_included():
    status = {("Hopper-v5", "2:4", 0): "failed", ("Ant-v5", "1:4", 1): "running"}
    runs, evals, stats = make_frames(status=status)
    default = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    assert "Left out 2 runs not finished (1 failed, 1 running)." in default.notes
    assert any("--include-partial" in hint for hint in default.hints)
    assert "Left out 2 runs" in render(default, "markdown")
    assert default.cells.set_index(["env", "pattern"]).loc[("Hopper-v5", "2:4"), "n_seeds"] == 2
    partial = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, include_partial=True)
    cell = partial.cells.set_index(["env", "pattern"]).loc[("Hopper-v5", "2:4")]
    assert cell["n_seeds"] == 3 and cell["n_partial"] == 1
    assert "†" in render(partial, "markdown") and r"$^\dagger$" in render(partial, "latex")


def test_filters_resolve_short_env_names_and_keep_the_dense_baseline():
    runs, evals, stats = make_frames()
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, envs=["hopper"], patterns=["1:8"])
    assert report.envs == ("Hopper-v5",) and report.variants == ("dense", "1:8")
    assert report.cells["normalized"].notna().all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(envs=["Walker2d"]), "no runs match --envs Walker2d; the database has: Ant-v5, Hopper-v5"),
    (dict(patterns=["3:4"]), "no runs match --patterns 3:4"),
    (dict(last_k=0), "--last-k must be from 1 to 1,000,000 (got 0)"),
])
def test_a_filter_that_matches_nothing_is_a_usage_error(kwargs, message):
    runs, evals, stats = make_frames(seeds=1)
    with pytest.raises(UsageError, match=re.escape(message)):
        build_report(runs, evals, stats, reps=REPS, **kwargs)


def test_an_empty_database_is_a_usage_error():
    runs, evals, stats = (frame.iloc[0:0] for frame in make_frames(seeds=1))
    with pytest.raises(UsageError, match="no runs yet"):
        build_report(runs, evals, stats)


def test_only_unfinished_runs_is_a_usage_error_naming_include_partial():
    runs, evals, stats = make_frames(seeds=1)
    runs["status"] = "running"
    with pytest.raises(UsageError, match="--include-partial"):
        build_report(runs, evals, stats)


# ---- measured density ---------------------------------------------------------------------------------------------

# Hopper-v5 (11 inputs, 3 actions) at 256x256 with sparse_io: the actor's rows of 11 and the critic's of 14 end in a
# short group. 2:4 keeps 6 of 11 and 8 of 14, 1:8 keeps 2 of 11 and 2 of 14; the 256-wide layers keep exactly N/M.
# Kept over all weights of the actor (11x256, 256x256, 256x3) and one critic (14x256, 256x256, 256x1):
HOPPER_DENSITY = {"dense": "100%", "2:4": "50.3%", "1:8": "12.7%"}  # 69632 and 17536 of 138496


def test_the_measured_density_of_each_cell_in_every_format():
    runs, evals, stats = make_frames(envs={"Hopper-v5": 3000.0}, factors={p: 1.0 for p in HOPPER_DENSITY}, seeds=2)
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    markdown = render(report, "markdown")
    table = markdown[markdown.index("**Density**"):]
    header, _, row = table.splitlines()[2:5]
    assert [c.strip() for c in header.strip("|").split("|")] == ["env", "dense", "2:4 (50%)", "1:8 (87.5%)"]
    assert [c.strip() for c in row.strip("|").split("|")] == ["Hopper-v5", *HOPPER_DENSITY.values()]
    assert r"\label{tab:rnm-density}" in render(report, "latex") and "12.7\\%" in render(report, "latex")
    csv = read_csv(render(report, "csv")).set_index(["env", "pattern"])
    assert csv.loc[("Hopper-v5", "1:8"), "density"] == pytest.approx(17536 / 138496)
    assert csv.loc[("Hopper-v5", "1:8"), "sparsity"] == 0.875 and math.isnan(csv.loc[("all", "1:8"), "density"])


def test_a_run_whose_density_cannot_be_judged_shows_a_dash_and_a_note_and_stays_apart():
    """An env this machine cannot build (another rnm's custom env) and runs with a config key from a newer rnm: the
    report still computes, every run in its own cell, with a dash for the density."""
    runs, evals, stats = make_frames(envs={"Hopper-v5": 3000.0, "My_Env-v1": 1000.0}, seeds=2)
    newer = (runs["env"] == "Hopper-v5") & (runs["pattern"] == "2:4")
    runs.loc[newer, "config"] = [json.dumps(json.loads(c) | {"a_key_from_a_newer_rnm": 1})
                                 for c in runs.loc[newer, "config"]]
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS)
    assert "Kept density is unknown (a dash) where it could not be computed." \
        in report.notes
    density = report.cells.set_index(["env", "pattern"])["density"]
    assert list(density.isna().items()) == [(("Hopper-v5", "dense"), False), (("Hopper-v5", "2:4"), True),
                                            (("Hopper-v5", "1:4"), False), (("Hopper-v5", "1:8"), False),
                                            *((("My_Env-v1", p), True) for p in FACTOR)]
    assert report.cells.groupby("env")["n_seeds"].sum().to_dict() == {"Hopper-v5": 8, "My_Env-v1": 8}
    row = next(line for line in render(report, "markdown").splitlines()[::-1] if line.startswith("| My_Env-v1"))
    assert [c.strip() for c in row.strip("|").split("|")][1:] == ["-"] * 4


# ---- provenance -----------------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def attempts_frame(runs: pd.DataFrame, **changes_by_env: dict) -> pd.DataFrame:
    """One attempt per run, as the registry's attempts frame holds it, with one version set and, per env, changes."""
    rows = []
    for run in runs.itertuples():
        rows.append(dict(run_id=run.run_id, attempt=1, started_at=float(run.run_id), worker_pid=run.run_id,
                         rnm_version="0.1.0", git_commit=COMMIT, python="3.11.7", torch="2.6.0", gymnasium="1.0.0",
                         mujoco="3.2.0", host=f"node{run.run_id % 3}", cpu="AMD EPYC", threads=1)
                    | changes_by_env.get(run.env.split("-")[0], {}))
    return pd.DataFrame(rows)


def test_runs_made_by_different_versions_get_a_note_naming_what_differs():
    runs, evals, stats = make_frames()
    attempts = attempts_frame(runs, Ant={"torch": "2.5.1", "git_commit": f"{COMMIT}-dirty", "host": "other"})
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, attempts=attempts)
    note = ("The runs were made by different versions: git commit 0123456789ab (12 runs), 0123456789ab-dirty "
            "(12 runs); torch 2.5.1 (12 runs), 2.6.0 (12 runs).")
    assert report.notes == (note,)  # host, python and threads may differ: they do not change the numbers
    assert note in render(report, "markdown")
    assert note in render(report, "latex")  # the note has no character that LaTeX escapes


def test_a_run_resumed_under_a_new_version_counts_for_both_and_left_out_runs_do_not_count():
    runs, evals, stats = make_frames(envs={"Hopper-v5": 3000.0}, seeds=2, status={("Hopper-v5", "1:8", 1): "failed"})
    attempts = attempts_frame(runs)
    failed = runs.loc[runs["status"] == "failed", "run_id"].item()
    resumed = dict(attempts.iloc[0]) | dict(attempt=2, started_at=100.0, mujoco="3.3.0")
    attempts = pd.concat([attempts.assign(mujoco=np.where(attempts["run_id"] == failed, "9.9", "3.2.0")),
                          pd.DataFrame([resumed])], ignore_index=True)
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, attempts=attempts)
    assert [n for n in report.notes if "versions" in n] == [
        "The runs were made by different versions: mujoco 3.2.0 (7 runs), 3.3.0 (1 run)."]


def test_runs_without_recorded_versions_beside_runs_with_them_are_noted():
    runs, evals, stats = make_frames()
    attempts = attempts_frame(runs)
    attempts = attempts[attempts["run_id"] > 2]
    report = build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, attempts=attempts)
    assert report.notes == ("2 runs made before rnm recorded versions: whether they match the others' is unknown.",)


def test_one_version_or_no_recorded_versions_gives_no_note():
    runs, evals, stats = make_frames()
    same = attempts_frame(runs)
    empty = same.iloc[0:0]
    for attempts in (same, empty, None):
        assert build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, attempts=attempts).notes == ()


# ---- LaTeX ----------------------------------------------------------------------------------------------------

def test_latex_escapes_and_states_its_preamble():
    runs, evals, stats = make_frames(envs={"My_Env-v1": 1000.0}, seeds=2)
    latex = render(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS), "latex")
    assert latex.startswith(f"% rnm report; needs the preamble: {LATEX_PREAMBLE}")
    assert r"My\_Env-v1" in latex and r"2:4 (50\%)" in latex and "My_Env" not in latex
    assert latex.count(r"\caption{") == 3 and r"\label{tab:rnm-returns}" in latex and r"\toprule" in latex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed "
                    "(apt-get install texlive-latex-base texlive-latex-recommended)")
def test_latex_compiles_with_pdflatex(tmp_path: Path):
    status = {("My_Env-v1", "2:4", 0): "running"}
    runs, evals, stats = make_frames(envs={"My_Env-v1": 1000.0, "Ant-v5": 4000.0}, status=status,
                                     factors=FACTOR | {"unstructured:0.5+rigl": 1.05, "1:8+scaled": 0.95},
                                     skip=frozenset({("Ant-v5", "1:8", 1), ("Ant-v5", "1:8", 2)}))
    latex = render(build_report(runs, evals, stats, last_k=LAST_K, reps=REPS, include_partial=True), "latex")
    document = tmp_path / "report.tex"
    document.write_text(f"{LATEX_PREAMBLE}\n\\begin{{document}}\n{latex}\n\\end{{document}}\n", encoding="utf-8")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 1_000


# ---- figures --------------------------------------------------------------------------------------------------

def fill_registry(db: Path, torch_of_seed: dict[int, str] | None = None) -> None:
    """A small registry written through its public API: Hopper dense and 2:4, two seeds done, one run left queued;
    with `torch_of_seed`, each attempt records this process's provenance with that torch version."""
    from rnmtd3.provenance import collect
    from rnmtd3.registry import open_registry
    from rnmtd3.sweep import make_config

    registry = open_registry(db, create=True)
    try:
        configs = [make_config("Hopper", pattern, seed, {"steps": 1000}) for pattern in ("dense", "2:4")
                   for seed in (0, 1)]
        registry.enqueue([*configs, make_config("Hopper", "2:4", 2, {"steps": 1000})])
        for _ in configs:
            claim = registry.claim()
            if torch_of_seed:
                registry.record_attempt(claim, collect(threads=1) | {"torch": torch_of_seed[claim.config.seed]})
            factor = 1.1 if str(claim.config.pattern) == "2:4" else 1.0
            for i in range(4):
                registry.record_eval(claim, i * 250, factor * (100.0 * i + claim.config.seed), 1.0, float(i))
                if factor > 1 and i:
                    registry.record_stats(claim, i * 250, {"sad_actor": 0.1 / i, "sad_critic1": 0.2 / i})
            registry.finish(claim, 1000)
    finally:
        registry.close()


def test_cli_report_prints_the_table_and_writes_figures(tmp_path: Path):
    from typer.testing import CliRunner

    from rnm_cli.main import app

    db = tmp_path / "rnm.db"
    fill_registry(db)
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--reps", "1000", "--format", "csv", "--last-k", "2",
                                      "--plots", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    table = read_csv(result.stdout).set_index(["env", "pattern"])
    assert table.loc[("Hopper-v5", "dense"), "mean"] == pytest.approx(250.5)  # mean of 200, 300 and 201, 301
    assert table.loc[("Hopper-v5", "2:4"), "normalized"] == pytest.approx(1.1)
    assert "Left out 1 run not finished (1 queued)" in result.stderr
    assert f"written to {tmp_path / 'figs'}" in result.stderr
    assert (tmp_path / "figs" / "sad_Hopper-v5.png").stat().st_size > 5_000
    out = tmp_path / "table.tex"
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--reps", "1000",
                                    "--format", "latex", "--out", str(out)])
    assert result.exit_code == 0 and result.stdout == "" and out.read_text().startswith("% rnm report")


def test_cli_csv_report_writes_the_version_note_to_stderr(tmp_path: Path):
    from typer.testing import CliRunner

    from rnm_cli.main import app

    db = tmp_path / "rnm.db"
    fill_registry(db, torch_of_seed={0: "2.5.1", 1: "2.6.0"})
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--reps", "1000", "--format", "csv", "--last-k", "2"])
    assert result.exit_code == 0, result.output
    assert "made by different versions: torch 2.5.1 (2 runs), 2.6.0 (2 runs)." in " ".join(result.stderr.split())
    assert "versions" not in result.stdout and len(read_csv(result.stdout)) == 2 + 2


def test_cli_empty_database_is_one_line_and_exit_2(tmp_path: Path):
    from rnmtd3.registry import open_registry

    db = tmp_path / "empty.db"
    open_registry(db, create=True).close()
    rnm = Path(sys.executable).with_name("rnm")
    result = subprocess.run([str(rnm), "report", "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "rnm: error: the database has no runs yet: queue some with `rnm queue`, then `rnm run-workers`"]


def test_cli_filter_matching_nothing_raises_the_usage_error_that_main_maps_to_exit_2(tmp_path: Path):
    from typer.testing import CliRunner

    from rnm_cli.main import app

    db = tmp_path / "rnm.db"
    fill_registry(db)
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--patterns", "1:8"])
    assert isinstance(result.exception, UsageError) and result.stdout == ""
    assert str(result.exception) == "no runs match --patterns 1:8; the selected runs have: dense, 2:4"


def test_a_swept_key_splits_columns_and_set_picks_one_setting(tmp_path: Path):
    """Runs that differ in more than the seed are never pooled into one cell: each setting is its own column,
    labelled by the key that differs; --set picks one setting; and a key that dense runs ignore (mask_interval)
    keeps the single dense baseline that the sweep queued, the baseline of both columns."""
    from rnmtd3.registry import open_registry
    from rnmtd3.sweep import expand

    configs = expand(["Hopper"], ["2:4"], 2, ["mask_interval=20,40"], steps=1000)
    assert sum(c.pattern.is_dense for c in configs) == 2  # one dense run per seed, not one per mask_interval
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue(configs)
    while (claim := registry.claim()) is not None:
        base = 200.0 if claim.config.pattern.is_dense else claim.config.mask_interval * 10.0
        for i in range(3):
            registry.record_eval(claim, i * 500, base + claim.config.seed, 1.0, float(i))
        registry.finish(claim, 1000)
    runs, evals, stats = registry.runs_frame(), registry.evals_frame(), registry.stats_frame()
    registry.close()
    split = build_report(runs, evals, stats, last_k=1, reps=REPS)
    assert [split.labels[v] for v in split.variants] == ["dense", "2:4 (50%), mask_interval=20",
                                                         "2:4 (50%), mask_interval=40"]
    cells = split.cells.set_index("label")
    assert cells.loc["2:4 (50%), mask_interval=20", "mean"] == pytest.approx(200.5)
    assert cells.loc["2:4 (50%), mask_interval=40", "mean"] == pytest.approx(400.5)
    assert cells["n_seeds"].tolist() == [2, 2, 2]
    assert "2:4 (50%), mask_interval=40" in render(split, "markdown").splitlines()[2]
    report = build_report(runs, evals, stats, last_k=1, where={"mask_interval": 40}, reps=REPS)
    cells = report.cells.set_index("pattern")
    assert cells.loc["2:4", "mean"] == pytest.approx(400.5) and cells.loc["dense", "mean"] == pytest.approx(200.5)
    assert cells.loc["2:4", "normalized"] == pytest.approx(400.5 / 200.5)
    assert report.labels == {"dense": "dense", "2:4": "2:4 (50%)"}  # one setting left: plain method labels
    with pytest.raises(UsageError, match="no runs match --set mask_interval=7"):
        build_report(runs, evals, stats, where={"mask_interval": 7})
