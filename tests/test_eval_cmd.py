"""`rnm eval`: a saved actor rolled out by the evaluation protocol gives back the run's last recorded evaluation;
a run is named by its folder or its id; what cannot be done is one line and exit 2."""

from __future__ import annotations

import builtins
import csv
from pathlib import Path

import pytest
import torch

from rnmtd3.checkpoint import CHECKPOINT
from rnmtd3.registry import open_registry
from rnmtd3.rollout import Source, rollout

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
    result = rollout(Source(trained / CHECKPOINT))
    assert (result.step, result.seed, len(result.returns)) == (step, 100, 3)
    assert float(result.returns.mean()) == mean and float(result.returns.std()) == std
    code, out, err = rnm_here(["eval", trained], monkeypatch, capsys)
    assert code == 0, err
    assert out == f"{mean:.2f} ± {std:.2f}\n"
    assert "from seed 100: Pendulum-v1 2:4 (50%) seed 0 at step 400" in err
    other = rollout(Source(trained / CHECKPOINT), episodes=2, seed=7)
    assert len(other.returns) == 2 and other.seed == 7 and float(other.returns.mean()) != mean


def test_a_run_id_finds_its_own_checkpoint_in_the_database(tmp_path: Path, monkeypatch, capsys):
    """A worker's run is found by its id, and a checkpoint.pt that is not the run's own (a file copied into its
    folder) is refused, as the report's cost table refuses it."""
    from rnmtd3 import checkpoint as ckpt
    from rnmtd3.td3 import TD3Agent

    db = tmp_path / "rnm.db"
    with open_registry(db) as registry:
        registry.enqueue([tiny_config(seed=0), tiny_config(seed=1)])
        for seed in (0, 1):
            claim = registry.claim()
            agent = TD3Agent(claim.config, 3, 1, -2.0 * torch.ones(1), 2.0 * torch.ones(1))
            owner = ckpt.owner_of(claim.config, registry.database_id, claim.run_id if seed == 0 else 99)
            (tmp_path / f"run{seed}").mkdir()
            path = ckpt.save_public(tmp_path / f"run{seed}", agent.forward_state_dicts(), claim.config, 400, owner)
            registry.record_checkpoint(claim, 400, str(path))
    code, out, err = rnm_here(["eval", "1", "--db", db, "--episodes", "1"], monkeypatch, capsys)
    assert code == 0 and " ± " in out, err
    code, out, err = rnm_here(["eval", "2", "--db", db, "--episodes", "1"], monkeypatch, capsys)
    assert code == 2 and out == "" and "is not run 2's own checkpoint (its owner is run 99)" in err


@pytest.mark.parametrize("args, message", [
    (["eval", "99"], "no run 99 in the database"),
    (["eval", "no/such/folder"], "no checkpoint at 'no/such/folder'"),
    (["eval", "{trained}", "--episodes", "0"], "--episodes must be from 1 to 10,000"),
    (["eval", "{trained}", "--episodes", "1000000000"], "--episodes must be from 1 to 10,000"),
    (["eval", "{trained}", "--seed", "-1"], "--seed must be from 0"),
    (["eval", "{trained}/evals.csv"], "is not an rnm checkpoint.pt"),
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case is a machine without a GPU")
def test_a_run_trained_on_a_gpu_is_rolled_out_on_the_cpu_with_a_note(trained: Path, tmp_path: Path, monkeypatch,
                                                                     capsys):
    saved = torch.load(trained / CHECKPOINT, weights_only=True)
    saved["config"]["device"] = "cuda"
    torch.save(saved, tmp_path / CHECKPOINT)
    code, out, err = rnm_here(["eval", tmp_path], monkeypatch, capsys)
    assert code == 0 and out == f"{last_evaluation(trained)[1]:.2f} ± {last_evaluation(trained)[2]:.2f}\n", err
    assert "rolled out on cpu: the run trained on cuda" in err
