"""What `rnm status` and `rnm export runs` compute from the registry's frames: notes, speed, measured densities,
and the provenance of each run's latest attempt. The attempts frame is built here in the registry's data contract."""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import closing
from importlib import metadata
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from rnm_cli.main import app
from rnmtd3.provenance import KEYS, collect
from rnmtd3.registry import open_registry
from rnmtd3.summary import (DENSITY_RANGES, DENSITY_STATS, measured_densities, run_densities, runs_export,
                            summarize)
from rnmtd3.sweep import make_config
from rnmtd3.td3 import TD3Agent


def provenance(run_id: int, attempt: int, started_at: float, torch: str) -> dict:
    return dict(run_id=run_id, attempt=attempt, started_at=started_at, worker_pid=100 + attempt,
                rnm_version="0.1.0", git_commit=None, python="3.11.7", torch=torch, gymnasium="1.0.0",
                mujoco="3.2.0", host="node1", cpu="AMD EPYC 7763", threads=2)


RUN1_DENSITIES = (0.503, 0.504, 0.505)


def registry_frames(db: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and their measured densities. Three runs: 1 running at 800 steps/s with two notes, its provenance
    and its densities recorded (an older measurement, then RUN1_DENSITIES), 2 failed after reporting 300 steps/s,
    3 queued."""
    registry = open_registry(db, create=True)
    try:
        registry.enqueue([make_config("Hopper", "2:4", seed, {"steps": 1000}) for seed in range(3)],
                         max_attempts=1)
        running, failed = registry.claim(), registry.claim()
        registry.record_attempt(running, collect(threads=2))
        registry.heartbeat(running, steps_done=500, steps_per_sec=800.0)
        registry.record_stats(running, 1000, dict(zip(DENSITY_STATS, (0.9, 0.9, 0.9)), critic_loss=1.0))
        registry.record_stats(running, 2000, dict(zip(DENSITY_STATS, RUN1_DENSITIES), critic_loss=2.0))
        registry.note(running, "first note")
        registry.note(running, "checkpoint from another database; restarted from step 0")
        registry.heartbeat(failed, steps_done=100, steps_per_sec=300.0)
        registry.fail(failed, "RuntimeError: boom")
        return registry.runs_frame(), measured_densities(registry)
    finally:
        registry.close()


def expected_density(n: int, m: int, obs: int, act: int, hidden: tuple[int, ...], sparse_io: bool) -> float:
    """MISSION.md's rule, written out: each row of a sparse layer is cut into groups of M inputs, a group keeps N
    and a trailing group of r < M keeps min(N, r); the actor (obs -> hidden -> act) and one critic (obs + act ->
    hidden -> 1), whose first and last layers are sparse only with sparse_io."""
    kept = total = 0
    for widths in ([obs, *hidden, act], [obs + act, *hidden, 1]):
        layers = list(zip(widths[:-1], widths[1:]))
        for i, (inputs, outputs) in enumerate(layers):
            sparse = sparse_io or 0 < i < len(layers) - 1
            per_row = (inputs // m) * n + min(n, inputs % m) if sparse else inputs
            kept += outputs * per_row
            total += outputs * inputs
    return kept / total


def test_run_densities_are_measured_on_each_runs_env_and_networks():
    """Hopper-v5 has 11 observations and 3 actions, Ant-v5 105 and 8."""
    cases = [("Hopper", "1:8", {"hidden": [16, 16]}, (1, 8, 11, 3, (16, 16), True)),
             ("Hopper", "2:4", {"hidden": [16, 16], "sparse_io": False}, (2, 4, 11, 3, (16, 16), False)),
             ("Ant", "1:8", {}, (1, 8, 105, 8, (256, 256), True))]
    runs = pd.DataFrame({"config": [make_config(env, pattern, 0, changes).to_json()
                                    for env, pattern, changes, _ in cases]})
    expected = [expected_density(*args) for *_, args in cases]
    assert list(run_densities(runs)) == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(136 / 976) and expected[0] > 1 / 8  # 1:8 keeps 13.9% of these networks


def test_a_run_that_cannot_be_judged_has_no_density():
    hopper = json.loads(make_config("Hopper", "2:4", 0, {}).to_json())
    configs = [hopper | {"env": "NoSuchEnv-v0"}, hopper | {"a_key_from_a_newer_rnm": 1}, hopper]
    densities = run_densities(pd.DataFrame({"config": [json.dumps(c) for c in configs]}))
    assert math.isnan(densities[0]) and math.isnan(densities[1]) and densities[2] > 0.5


def test_summary_counts_the_speed_of_running_runs_only_and_keeps_each_runs_last_note(tmp_path: Path):
    summary = summarize(*registry_frames(tmp_path / "rnm.db"))
    assert summary.running == 1 and summary.speed == 800.0
    assert summary.eta_s == (1000 - 500 + 1000) / 800.0
    assert summary.notes.to_dict("records") == [
        dict(run_id=1, env="Hopper-v5", pattern="2:4", seed=0,
             note="checkpoint from another database; restarted from step 0")]


def test_runs_export_has_notes_speed_and_the_latest_attempts_provenance(tmp_path: Path):
    runs, densities = registry_frames(tmp_path / "rnm.db")
    # run 1 was retried: its attempt count restarted, so the latest attempt is the latest to start, not number 2
    attempts = pd.DataFrame([provenance(1, 2, 10.0, "2.5.1"), provenance(1, 1, 20.0, "2.6.0"),
                             provenance(2, 1, 15.0, "2.5.1")])
    table = runs_export(runs, attempts, densities).set_index("run_id")
    assert list(table.columns[:7]) == ["env", "pattern", "seed", "status", "attempts", "steps_done", "checkpoint"]
    assert set(KEYS) <= set(table.columns)
    assert table.loc[1, "torch"] == "2.6.0" and table.loc[1, "worker_pid"] != 101
    assert table.loc[2, "torch"] == "2.5.1" and table.loc[2, "cpu"] == "AMD EPYC 7763"
    assert table[list(KEYS)].loc[3].isna().all()  # queued: no attempt yet
    assert table.loc[1, "notes"].endswith("restarted from step 0") and table.loc[1, "steps_per_sec"] == 800.0
    csv = pd.read_csv(io.StringIO(table.to_csv()), dtype=str).set_index("run_id")
    assert csv.loc["1", "threads"] == "2" and csv.loc["1", "worker_pid"].isdigit()  # no 2.0 beside a missing value


def test_runs_export_of_a_database_without_attempts(tmp_path: Path):
    runs, densities = registry_frames(tmp_path / "rnm.db")
    empty = pd.DataFrame(columns=["run_id", "attempt", "started_at", "worker_pid", *KEYS])
    table = runs_export(runs, empty, densities)
    assert len(table) == 3 and set(KEYS) <= set(table.columns) and table[list(KEYS)].isna().all().all()


def test_cli_export_runs_has_the_notes_speed_and_provenance_columns(tmp_path: Path):
    registry_frames(tmp_path / "rnm.db")
    result = CliRunner().invoke(app, ["export", "runs", "--db", str(tmp_path / "rnm.db")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout)).set_index("run_id")
    assert {"notes", "steps_per_sec", *KEYS} <= set(table.columns)
    assert table.loc[1, "notes"] == "first note\ncheckpoint from another database; restarted from step 0"
    assert table.loc[1, "steps_per_sec"] == 800.0
    assert table.loc[1, "rnm_version"] == metadata.version("rnmtd3") and table.loc[1, "threads"] == 2
    assert table.loc[2, list(KEYS)].isna().all()


def test_export_runs_has_each_runs_latest_measured_densities_and_blanks_before_any(tmp_path: Path):
    registry_frames(tmp_path / "rnm.db")
    result = CliRunner().invoke(app, ["export", "runs", "--db", str(tmp_path / "rnm.db")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout), dtype=str, keep_default_na=False).set_index("run_id")
    assert [float(v) for v in table.loc["1", list(DENSITY_STATS)]] == list(RUN1_DENSITIES)
    assert (table.loc[["2", "3"], list(DENSITY_STATS)] == "").all().all()


def test_the_densities_read_are_the_ones_the_agent_reports():
    agent = TD3Agent(make_config("Pendulum-v1", "2:4", 0, {"hidden": (16, 16)}), 3, 1, -2 * torch.ones(1),
                     2 * torch.ones(1))
    reported = agent.densities()
    assert tuple(reported) == DENSITY_STATS and all(0 < value <= 1 for value in reported.values())


def test_status_summary_ranges_actors_and_critics_over_a_groups_measured_runs():
    """Both critics of a run pool into the critics' range; a run not measured yet is left out of it."""
    runs = pd.DataFrame({"run_id": [1, 2, 3, 4], "env": ["Hopper-v5"] * 3 + ["Ant-v5"], "pattern": ["2:4"] * 4,
                         "seed": [0, 1, 2, 0], "status": ["running"] * 4, "attempts": 1, "steps_done": 0, "steps_total": 10,
                         "steps_per_sec": math.nan, "error": None, "notes": None, "retry_at": math.nan,
                         "transient_failures": 0,
                         "config": [make_config(env, "2:4", 0).to_json() for env in ["Hopper"] * 3 + ["Ant"]]})
    densities = pd.DataFrame({"run_id": [1, 2, 3, 4], "density_actor": [0.5, 0.6, math.nan, math.nan],
                              "density_critic1": [0.4, 0.7, math.nan, math.nan],
                              "density_critic2": [0.45, 0.8, math.nan, math.nan]})
    counts = summarize(runs, densities).counts.set_index("env")
    assert counts.loc["Hopper-v5", list(DENSITY_RANGES)].tolist() == [0.5, 0.6, 0.4, 0.8]
    assert counts.loc["Ant-v5", list(DENSITY_RANGES)].isna().all()


def test_status_rows_are_methods_so_rules_of_one_pattern_stand_apart(tmp_path: Path):
    """A sweep over mask rules and inits of one pattern shows one row per method, in the report's order, each with
    its own counts; a config that does not read still has a row, under its pattern."""
    registry = open_registry(tmp_path / "rnm.db", create=True)
    try:
        registry.enqueue([make_config("Hopper", pattern, seed, values) for seed in (0, 1) for pattern, values in (
            ("1:4", {"mask_rule": "rigl"}), ("1:4", {}), ("1:8", {"sparse_init": "scaled"}), ("dense", {}))])
        runs = registry.runs_frame()
    finally:
        registry.close()
    counts = summarize(runs, pd.DataFrame(columns=["run_id", *DENSITY_STATS])).counts
    assert counts["method"].tolist() == ["dense", "1:4", "1:4+rigl", "1:8+scaled"]
    assert counts["queued"].tolist() == [2, 2, 2, 2]
    broken = runs.assign(config=runs["config"].where(runs["pattern"] != "1:8", "garbage"))
    assert "1:8" in summarize(broken, pd.DataFrame(columns=["run_id", *DENSITY_STATS])).counts["method"].tolist()


def test_export_runs_and_status_show_an_unreadable_stored_config_as_blank(tmp_path: Path):
    """A config edited by hand or cut short is one row with blank config columns, not a crash of the export."""
    registry_frames(tmp_path / "rnm.db")
    with closing(sqlite3.connect(tmp_path / "rnm.db")) as conn, conn:
        conn.execute("UPDATE runs SET config = 'garbage' WHERE id = 2")
        conn.execute("UPDATE runs SET config = '[1, 2]' WHERE id = 3")
    result = CliRunner().invoke(app, ["export", "runs", "--db", str(tmp_path / "rnm.db")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout)).set_index("run_id")
    assert table.loc[1, "hidden"] == "256x256" and table.loc[1, "steps"] == 1000
    assert table.loc[[2, 3], ["hidden", "steps", "lr"]].isna().all().all()
    assert table.loc[2, "status"] == "failed" and table.loc[3, "env"] == "Hopper-v5"
    status = CliRunner().invoke(app, ["status", "--db", str(tmp_path / "rnm.db")], env={"COLUMNS": "80"})
    assert status.exit_code == 0 and "Hopper-v5" in status.stdout, status.output


def test_export_runs_gives_a_run_queued_before_a_key_existed_that_keys_default(tmp_path: Path):
    """A stored config without mask_rule (queued before the key) ran with its default, and exports as such, so a
    filter `mask_rule == 'magnitude'` keeps it."""
    registry_frames(tmp_path / "rnm.db")
    with closing(sqlite3.connect(tmp_path / "rnm.db")) as conn, conn:
        config = json.loads(conn.execute("SELECT config FROM runs WHERE id = 1").fetchone()[0])
        old = {k: v for k, v in config.items() if k not in ("mask_rule", "drop_fraction", "mask_end", "sparse_init")}
        conn.execute("UPDATE runs SET config = ? WHERE id = 1", (json.dumps(old),))
    result = CliRunner().invoke(app, ["export", "runs", "--db", str(tmp_path / "rnm.db")])
    table = pd.read_csv(io.StringIO(result.stdout)).set_index("run_id")
    assert table.loc[1, ["mask_rule", "sparse_init", "drop_fraction", "mask_end"]].tolist() == [
        "magnitude", "dense", 0.3, 1.0]


def test_export_runs_says_when_a_waiting_run_retries_and_how_often_it_failed_in_passing(tmp_path: Path):
    registry = open_registry(tmp_path / "rnm.db", create=True)
    try:
        registry.enqueue([make_config("Hopper", "2:4", seed, {"steps": 1000}) for seed in range(2)])
        before = registry.now()
        registry.fail(registry.claim(), "OSError: [Errno 28] No space left on device", transient=True)
        after = registry.now()
    finally:
        registry.close()
    result = CliRunner().invoke(app, ["export", "runs", "--db", str(tmp_path / "rnm.db")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout), parse_dates=["retry_at", "created_at"]).set_index("run_id")
    assert list(table["transient_failures"]) == [1, 0] and list(table["status"]) == ["queued", "queued"]
    retry_at = table.loc[1, "retry_at"].timestamp()
    slack = 1e-3  # the database clock is a julianday float: its seconds round differently in each expression
    assert before + 30 - slack <= retry_at <= after + 30 + slack and str(table.loc[1, "retry_at"].tz) == "UTC"
    assert pd.isna(table.loc[2, "retry_at"])


def test_status_rows_name_the_values_that_set_two_settings_apart(tmp_path: Path):
    """Two mask intervals of 2:4 are two rows, never one; the dense baseline (which ignores them) is one."""
    from rnmtd3.sweep import expand

    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue(expand(["Hopper"], ["2:4"], 2, ["mask_interval=1000,10000"], steps=1000))
    runs = registry.runs_frame()
    registry.close()
    counts = summarize(runs, pd.DataFrame(columns=["run_id", *DENSITY_STATS])).counts
    assert counts["label"].tolist() == ["dense", "2:4 (50%), mask_interval=1000", "2:4 (50%), mask_interval=10000"]
    assert counts["queued"].tolist() == [2, 2, 2]
