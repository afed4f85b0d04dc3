"""`rnm export tensorboard`: the event files read back, with TensorBoard's own reader, to the exported curves; their
folders tell a sweep's variants apart; a previous export is replaced and anything else refused; without tensorboard,
one line says how to install it and nothing is written."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnmtd3.registry import open_registry

from helpers_registry import rnm_here, snapshot, tiny_config

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator  # noqa: E402

STATS = {"critic_loss": 1.5, "actor_loss": -3.25, "steps_per_sec": 812.5, "train_return": -900.0,
         "density_actor": 0.5, "density_critic1": 0.5, "density_critic2": 0.5}


def record(db: Path, configs) -> None:
    """Queue `configs` and give every claimed run three evaluations, the trainer's statistics and a SAD step; the
    values differ per run, so a mix-up between runs shows."""
    with open_registry(db) as registry:
        registry.enqueue(configs)
        for k, claim in enumerate(iter(registry.claim, None)):
            for step in (0, 100, 200):
                assert registry.record_eval(claim, step, -1000.0 + step + k / 3, 10.0 + k, 1.25 * step + k)
            assert registry.record_stats(claim, 200, {name: value + k / 7 for name, value in STATS.items()})
            assert registry.record_stats(claim, 150, {"sad_actor": 0.1 + k, "sad_critic1": 0.2, "sad_critic2": 0.3})


def export_table(what: str, db: Path, monkeypatch, capsys) -> pd.DataFrame:
    code, out, err = rnm_here(["export", what, "--db", db], monkeypatch, capsys)
    assert code == 0, err
    return pd.read_csv(io.StringIO(out))


def read_back(out: Path) -> dict[str, pd.DataFrame]:
    """Each TensorBoard run (its folder under `out`) -> run_id, tag, step, value, wall_time, as TensorBoard reads it."""
    runs = {}
    for path in sorted(out.rglob("events.out.tfevents.*")):
        reader = EventAccumulator(str(path.parent), size_guidance={SCALARS: 0})
        reader.Reload()
        rows = [(tag, event.step, event.value, event.wall_time)
                for tag in reader.Tags()["scalars"] for event in reader.Scalars(tag)]
        runs[str(path.parent.relative_to(out))] = pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])
    return runs


def test_event_files_read_back_to_the_exported_curves_and_name_each_variant(tmp_path, monkeypatch, capsys):
    db, out = tmp_path / "rnm.db", tmp_path / "tb"
    record(db, [tiny_config(seed=0, mask_interval=1000), tiny_config(seed=0, mask_interval=5000),
                tiny_config(pattern="dense", seed=0)])
    with open_registry(db) as registry:
        registry.enqueue([tiny_config(seed=1, mask_interval=1000)])  # queued, no data: no folder
        started = registry.runs_frame().set_index("run_id")["started_at"]
    code, _, err = rnm_here(["export", "tensorboard", "--out", out, "--db", db], monkeypatch, capsys)
    assert code == 0 and "3 run(s)" in err and "tensorboard --logdir" in err, err

    runs = read_back(out)
    assert sorted(runs) == ["Pendulum-v1/2-4_mask_interval=1000/seed0_run1",
                            "Pendulum-v1/2-4_mask_interval=5000/seed0_run2", "Pendulum-v1/dense/seed0_run3"]
    evals, stats = export_table("evals", db, monkeypatch, capsys), export_table("stats", db, monkeypatch, capsys)
    for folder, got in runs.items():
        run_id = int(folder.rsplit("_run", 1)[1])
        curve = evals[evals["run_id"] == run_id]
        trained = stats[stats["run_id"] == run_id]
        expected = pd.concat([
            curve.melt(id_vars="step", value_vars=["return_mean", "return_std"], var_name="tag")
                 .assign(tag=lambda frame: "eval/" + frame["tag"]),
            trained.assign(tag=trained["name"].str.replace(r"^(sad|density)_", r"\1/", regex=True)
                           .where(trained["name"].str.match(r"(sad|density)_"), "train/" + trained["name"]))
        ])[["tag", "step", "value"]]
        assert len(expected) == 2 * 3 + len(STATS) + 3
        merged = expected.merge(got, on=["tag", "step"], how="outer", suffixes=("", "_read"), indicator=True)
        assert (merged["_merge"] == "both").all(), merged
        assert np.array_equal(merged["value"].astype(np.float32), merged["value_read"].astype(np.float32)), merged
        # Each evaluation stands at the run's start plus its training seconds; a statistic between two evaluations
        # at the training time interpolated over the step (150: halfway between 100 and 200).
        walls = got.set_index(["tag", "step"])["wall_time"]
        for step, wall_time in zip(curve["step"], curve["wall_time"]):
            assert walls["eval/return_mean", step] == pytest.approx(started[run_id] + wall_time, abs=1e-6)
        assert walls["sad/actor", 150] == pytest.approx(started[run_id] + curve["wall_time"].iloc[1:].mean(), abs=1e-6)

    before = snapshot(out)
    code, _, err = rnm_here(["export", "tensorboard", "--out", out, "--db", db], monkeypatch, capsys)
    assert code == 0, err
    assert snapshot(out) == before  # deterministic: the same registry writes the same bytes


def test_a_previous_export_is_replaced_as_its_folders_are_renamed_and_other_files_are_refused(
        tmp_path, monkeypatch, capsys):
    db, out = tmp_path / "rnm.db", tmp_path / "tb"
    record(db, [tiny_config(seed=0, mask_interval=1000)])
    code, _, err = rnm_here(["export", "tensorboard", "--out", out, "--db", db], monkeypatch, capsys)
    assert code == 0, err
    assert sorted(read_back(out)) == ["Pendulum-v1/2-4/seed0_run1"]  # one setting: the plain method

    record(db, [tiny_config(seed=0, mask_interval=5000)])  # now mask_interval varies: run 1's folder is renamed
    code, _, err = rnm_here(["export", "tensorboard", "--out", out, "--db", db], monkeypatch, capsys)
    assert code == 0 and "deleted 1 stale file(s)" in err, err
    assert sorted(read_back(out)) == ["Pendulum-v1/2-4_mask_interval=1000/seed0_run1",
                                      "Pendulum-v1/2-4_mask_interval=5000/seed0_run2"]
    assert not (out / "Pendulum-v1" / "2-4").exists()

    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", out, "--db", db], monkeypatch, capsys)
    assert code == 2 and stdout == "" and len(err.splitlines()) == 1, err
    assert err.startswith("rnm: error: ") and "notes.txt" in err and "not an rnm TensorBoard export" in err
    assert snapshot(tmp_path) == before


def test_without_tensorboard_one_line_says_how_to_install_it_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    db = tmp_path / "rnm.db"
    record(db, [tiny_config(seed=0)])
    for name in [name for name in sys.modules if name == "tensorboard" or name.startswith("tensorboard.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    before = snapshot(tmp_path)
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", tmp_path / "tb", "--db", db], monkeypatch, capsys)
    assert code == 2 and stdout == "" and len(err.splitlines()) == 1, err
    assert "pip install 'rnmtd3[tensorboard]'" in err and "pip install tensorboard" in err
    assert snapshot(tmp_path) == before and not (tmp_path / "tb").exists()
