"""`rnm export tensorboard`: the event files read back, with TensorBoard's own reader, to the exported curves; their
folders tell a sweep's variants apart; a previous export is replaced and anything else refused; without tensorboard,
one line says how to install it and nothing is written."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnmtd3.registry import open_registry
from rnmtd3.tensorboard_export import scalars

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


def test_long_variant_labels_make_short_readable_folders_that_stay_apart(tmp_path, monkeypatch, capsys):
    """Nine swept keys of long values make labels of 256 and 131 characters (255 bytes is a folder name's limit);
    each folder name is cut to 100 characters that begin as the label does and end in a hash of the whole label,
    which keeps apart two labels that differ only at their end (tau)."""
    db, out = tmp_path / "rnm.db", tmp_path / "tb"
    long = dict(lr=0.000312345678901234, gamma=0.981234567890123, tau=0.00512345678901234,
                expl_noise=0.112345678901234, policy_noise=0.212345678901234, noise_clip=0.512345678901234,
                drop_fraction=0.312345678901234, mask_end=0.812345678901234, srste_decay=0.000212345678901234)
    record(db, [tiny_config(seed=0, **long), tiny_config(seed=0, **(long | {"tau": 0.00612345678901234})),
                tiny_config(seed=0)])
    code, _, err = rnm_here(["export", "tensorboard", "--out", out, "--db", db], monkeypatch, capsys)
    assert code == 0 and "3 run(s)" in err, err
    variants = [Path(folder).parts[1] for folder in read_back(out)]
    assert len(set(variants)) == 3 and all(len(name) == 100 for name in variants)
    assert all(name.startswith("2-4_drop_fraction=0.3") for name in variants)
    assert len({name[:91] for name in variants}) == 2  # two differ only in their hashes
    assert all(re.fullmatch(r".{91}~[0-9a-f]{8}", name) for name in variants)


def test_an_out_too_long_for_the_filesystem_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    db = tmp_path / "rnm.db"
    record(db, [tiny_config(seed=0)])
    deep = tmp_path.joinpath(*["d" * 200] * ((4090 - len(str(tmp_path))) // 201))  # the event file would pass 4096
    before = snapshot(tmp_path)
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", deep, "--db", db], monkeypatch, capsys)
    assert code == 2 and stdout == "" and len(err.splitlines()) == 1 and "too deep" in err, err
    assert snapshot(tmp_path) == before and not (tmp_path / ("d" * 200)).exists()


def test_an_out_inside_a_previous_export_or_holding_one_below_its_top_is_refused(tmp_path, monkeypatch, capsys):
    """A folder of an export (a new one below it, or one of its env folders) would nest a second export in the
    first, and the env folder's files would be taken for a previous export and deleted; a folder holding an export
    below its top is no export either. Each is one line, exit 2, and nothing changes."""
    db, out = tmp_path / "rnm.db", tmp_path / "all" / "tb"
    record(db, [tiny_config(seed=0)])
    code, _, err = rnm_here(["export", "tensorboard", "--out", out, "--db", db], monkeypatch, capsys)
    assert code == 0, err
    before = snapshot(tmp_path)
    for inside in (out / "Pendulum-v1", out / "Pendulum-v1" / "new", out / "new"):
        code, stdout, err = rnm_here(["export", "tensorboard", "--out", inside, "--db", db], monkeypatch, capsys)
        assert code == 2 and stdout == "" and len(err.splitlines()) == 1, err
        assert f"lies inside the rnm TensorBoard export {out}" in err
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", out.parent, "--db", db], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "not an rnm TensorBoard export" in err, err
    (out / "rnm-tensorboard.txt").unlink()  # without the marker, a folder of an export is still no export
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", out / "Pendulum-v1", "--db", db],
                                 monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "not an rnm TensorBoard export" in err, err
    assert snapshot(tmp_path) == {k: v for k, v in before.items() if not k.endswith("rnm-tensorboard.txt")}
    assert not (out / "new").exists() and not (out / "Pendulum-v1" / "new").exists()


def test_an_empty_out_a_system_folder_or_an_unreadable_one_is_refused(tmp_path, monkeypatch, capsys):
    """`--out ''` is no folder (as a path it would be the current one); `/` is refused at its first entry out of an
    export's layout, not walked; a folder that cannot be listed is one line too."""
    db = tmp_path / "rnm.db"
    record(db, [tiny_config(seed=0)])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", "", "--db", db], monkeypatch, capsys)
    assert code == 2 and stdout == "" and err.strip() == "rnm: error: --out '' names no file or folder", err
    assert not any(work.iterdir())
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", "/", "--db", db], monkeypatch, capsys)
    assert code == 2 and stdout == "" and len(err.splitlines()) == 1 and "not an rnm TensorBoard export" in err, err

    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    scandir = os.scandir

    def denied(path):
        if Path(path) == locked / "inner":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    code, stdout, err = rnm_here(["export", "tensorboard", "--out", locked, "--db", db], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "cannot be read: Permission denied" in err, err


@pytest.mark.filterwarnings("error")
def test_a_registry_without_training_statistics_exports_without_a_warning(tmp_path):
    """Evaluations but no statistics: the empty statistics frame must not make pandas warn on every export."""
    with open_registry(tmp_path / "rnm.db") as registry:
        registry.enqueue([tiny_config(seed=0)])
        claim = registry.claim()
        assert registry.record_eval(claim, 0, -1000.0, 10.0, 1.0)
        points = scalars(registry.evals_frame(), registry.stats_frame())
    assert points["tag"].tolist() == ["eval/return_mean", "eval/return_std"]
    assert points.dtypes.to_dict() == {"run_id": np.int64, "step": np.int64, "tag": object, "value": np.float64}
