"""`rnm eval`: a saved actor rolled out by the evaluation protocol gives back the run's last recorded evaluation;
a run is named by its folder or its id; what cannot be done is one line and exit 2."""

from __future__ import annotations

import builtins
import csv
from pathlib import Path

import pytest

from rnmtd3.checkpoint import CHECKPOINT
from rnmtd3.registry import open_registry
from rnmtd3.rollout import rollout

from helpers_registry import rnm_here, tiny_config, tiny_set_args


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished fp32 `rnm train` folder: 400 Pendulum steps, evaluated every 100 over 3 episodes."""
    out = tmp_path_factory.mktemp("run")
    from rnm_cli.main import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["train", "--env", "Pendulum", "--pattern", "2:4", "--steps", "400", "--out",
                                      str(out), *tiny_set_args(["eval_episodes=3"])])
    assert result.exit_code == 0, result.output
    return out


def last_evaluation(folder: Path) -> tuple[int, float, float]:
    with open(folder / "evals.csv", newline="") as handle:
        row = list(csv.DictReader(handle))[-1]
    return int(row["step"]), float(row["return_mean"]), float(row["return_std"])


def test_the_protocols_seed_gives_back_the_last_recorded_evaluation(trained: Path, monkeypatch, capsys):
    step, mean, std = last_evaluation(trained)
    result = rollout(trained / CHECKPOINT)
    assert (result.step, result.seed, len(result.returns)) == (step, 100, 3)
    assert float(result.returns.mean()) == mean and float(result.returns.std()) == std
    code, out, err = rnm_here(["eval", trained], monkeypatch, capsys)
    assert code == 0, err
    assert out == f"{mean:.2f} ± {std:.2f}\n"
    assert "from seed 100: Pendulum-v1 2:4 seed 0 at step 400" in err
    other = rollout(trained / CHECKPOINT, episodes=2, seed=7)
    assert len(other.returns) == 2 and other.seed == 7 and float(other.returns.mean()) != mean


def test_a_run_id_finds_its_checkpoint_in_the_database(trained: Path, tmp_path: Path, monkeypatch, capsys):
    db = tmp_path / "rnm.db"
    with open_registry(db) as registry:
        registry.enqueue([tiny_config()])
        claim = registry.claim()
        registry.record_checkpoint(claim, 400, str(trained / CHECKPOINT))
    code, out, err = rnm_here(["eval", "1", "--db", db], monkeypatch, capsys)
    assert code == 0, err
    assert out == f"{last_evaluation(trained)[1]:.2f} ± {last_evaluation(trained)[2]:.2f}\n"


@pytest.mark.parametrize("args, message", [
    (["eval", "99"], "no run 99 in the database"),
    (["eval", "no/such/folder"], "no checkpoint at 'no/such/folder'"),
    (["eval", "{trained}", "--episodes", "0"], "--episodes must be at least 1"),
])
def test_what_cannot_be_rolled_out_is_one_line_and_exit_2(args, message, trained, tmp_path, monkeypatch, capsys):
    db = tmp_path / "rnm.db"
    open_registry(db).close()
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(trained=trained) for a in args]
    code, out, err = rnm_here([*args, "--db", db], monkeypatch, capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("rnm: error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_video_without_moviepy_says_what_to_install(trained: Path, tmp_path: Path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_moviepy(name, *args, **kwargs):
        if name == "moviepy":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_moviepy)
    code, out, err = rnm_here(["eval", trained, "--video", tmp_path / "videos"], monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.strip() == "rnm: error: --video needs moviepy: pip install moviepy"
    assert not (tmp_path / "videos").exists()
