"""Issue 13 item 3: `rnm train` on a folder it has used before. A complete run is left as it is; another config is
refused with the keys that differ; a larger --steps continues the run, with the curve of the longer run trained from
the start; Ctrl-C exits 130 and the run resumes exactly.

Training runs go through the console script's entry point in this process (no import of torch per call), except
Ctrl-C, which needs a process of its own to signal. Refusals are tested on folders written by checkpoint.save_public
and need no training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from rnmtd3 import checkpoint as ckpt
from rnmtd3.replay import ReplayBuffer
from rnmtd3.runs import train_foreground
from rnmtd3.sweep import make_config

from helpers_registry import RNM, TINY_VALUES, cli_env, rnm_here, tiny_set_args, wait_for

# Pendulum episodes are 200 steps long, so a run of 1,100 steps ends in mid-episode, which a longer run continues.
SHORT, LONG = 1_100, 2_000


def train_args(out: Path, steps: int, *extra: str) -> list:
    return ["train", "--env", "Pendulum-v1", "--pattern", "2:4", "--seed", "0", "--steps", steps, *tiny_set_args(),
            *extra, "--out", out]


def config_of(steps: int, **changes):
    return make_config("Pendulum-v1", "2:4", 0, {**TINY_VALUES, "steps": steps, **changes})


def files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a folder with its modification time (ns) and bytes."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}


def curve(folder: Path) -> list[tuple]:
    evals = pd.read_csv(folder / "evals.csv")
    return list(evals[["step", "return_mean", "return_std"]].itertuples(index=False, name=None))


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def saved_folder(folder: Path, config, step: int, resume_state: bool = True) -> Path:
    """A folder as `rnm train` of `config` leaves it at `step` (networks left out: the refusals never read them)."""
    folder.mkdir()
    ckpt.save_public(folder, {}, config, step, ckpt.owner_of(config))
    if resume_state:
        ckpt.save_resume(folder, {"config": config.to_dict(), "owner": ckpt.owner_of(config), "step": step})
    return folder


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> list[tuple]:
    """The curve of the run of LONG steps trained from the start, without a stop."""
    folder = tmp_path_factory.mktemp("straight")
    assert train_foreground(config_of(LONG), folder).finished
    return curve(folder)


# -- a complete run -------------------------------------------------------------------------------------------

def test_a_complete_run_says_so_and_changes_no_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = rnm_here(train_args(out, 400), monkeypatch, capsys)
    assert code == 0, err
    before = files(out)
    assert {"checkpoint.pt", "resume.pt", "evals.csv"} <= set(before)
    code, stdout, err = rnm_here(train_args(out, 400), monkeypatch, capsys)
    assert code == 0 and stdout == "", err
    assert "complete" in one_line(err) and "400" in err
    assert files(out) == before
    # with resume.pt deleted, as the README allows once a run is done, it is still complete, not trained again
    (out / "resume.pt").unlink()
    before = files(out)
    code, _, err = rnm_here(train_args(out, 400), monkeypatch, capsys)
    assert code == 0 and "complete" in one_line(err)
    assert files(out) == before


# -- another config -------------------------------------------------------------------------------------------

def test_another_config_is_refused_naming_each_key_that_differs_with_both_values(tmp_path, monkeypatch, capsys):
    out = saved_folder(tmp_path / "run", config_of(SHORT), SHORT)
    before = files(out)
    code, _, err = rnm_here(train_args(out, SHORT, "--set", "lr=0.001", "--set", "hidden=32x32"), monkeypatch,
                            capsys)
    assert code == 2, err
    line = one_line(err)
    assert "lr 0.0003 vs 0.001" in line and "hidden 16x16 vs 32x32" in line, line
    assert "steps" not in line.replace(str(out), "")  # only the keys that differ
    assert files(out) == before


@pytest.mark.parametrize("changes, needle", [
    ({"mask_rule": "set"}, "mask_rule=set"),
    ({"mask_rule": "rigl"}, "mask_rule=rigl"),
    ({"mask_end": 0.5}, "mask_end=0.5"),
], ids=["set", "rigl", "mask_end"])
def test_a_run_whose_masks_follow_its_steps_is_not_extended(changes, needle, tmp_path, monkeypatch, capsys):
    """Their masks moved on the schedule of the shorter run: extended, they would not be the longer run their
    config would then name."""
    out = saved_folder(tmp_path / "run", config_of(SHORT, **changes), SHORT)
    before = files(out)
    extra = [arg for key, value in changes.items() for arg in ("--set", f"{key}={value}")]
    code, _, err = rnm_here(train_args(out, LONG, *extra), monkeypatch, capsys)
    assert code == 2 and "cannot be extended" in one_line(err) and needle in err, err
    assert files(out) == before


def test_a_run_is_not_shortened_nor_extended_to_a_default_or_without_its_resume_state(tmp_path, monkeypatch,
                                                                                       capsys):
    longer = saved_folder(tmp_path / "long", config_of(LONG), LONG)
    before = files(longer)
    code, _, err = rnm_here(train_args(longer, SHORT), monkeypatch, capsys)
    assert code == 2 and "shorten" in one_line(err), err
    without_steps = [arg for arg in train_args(longer, LONG) if arg not in ("--steps", LONG)]  # default 1e6
    code, _, err = rnm_here(without_steps, monkeypatch, capsys)
    assert code == 2 and f"--steps was not given (default 1,000,000): give --steps {LONG}" in one_line(err), err
    assert files(longer) == before
    bare = saved_folder(tmp_path / "bare", config_of(SHORT), SHORT, resume_state=False)
    before = files(bare)
    code, _, err = rnm_here(train_args(bare, LONG), monkeypatch, capsys)
    assert code == 2 and "resume.pt is gone" in one_line(err), err
    assert files(bare) == before


# -- extension ------------------------------------------------------------------------------------------------

def test_a_larger_steps_continues_the_run_with_the_curve_of_the_longer_run(straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = rnm_here(train_args(out, SHORT), monkeypatch, capsys)
    assert code == 0, err
    code, _, err = rnm_here(train_args(out, LONG), monkeypatch, capsys)
    assert code == 0 and f"from {SHORT:,} to {LONG:,} steps" in err, err
    assert [point[0] for point in curve(out)] == list(range(0, LONG + 1, 100))
    assert curve(out) == straight  # the replay buffer grew, and the episode under way went on
    owner = ckpt.owner_of(config_of(LONG))
    for name in (ckpt.CHECKPOINT, ckpt.RESUME):
        saved = torch.load(out / name, weights_only=True)
        assert saved["owner"] == owner and saved["config"]["steps"] == LONG  # the longer run's files now
    code, _, err = rnm_here(train_args(out, LONG), monkeypatch, capsys)
    assert code == 0 and "complete" in one_line(err)


def test_a_grown_replay_buffer_keeps_its_transitions_oldest_first():
    small = ReplayBuffer(1, 1, capacity=4)
    for i in range(6):  # wraps: slots hold 4 5 2 3, the next goes to slot 2
        small.add([i], [i], float(i), [i], False)
    same = ReplayBuffer(1, 1, capacity=4)
    same.load_state(small.state())
    assert same.obs[:, 0].tolist() == [4, 5, 2, 3] and same.pos == 2  # its own capacity: the ring as it was
    grown = ReplayBuffer(1, 1, capacity=8)
    grown.load_state(small.state())
    assert grown.size == 4 and grown.pos == 4
    assert grown.obs[:4, 0].tolist() == [2, 3, 4, 5] and grown.rewards[:4, 0].tolist() == [2, 3, 4, 5]
    with pytest.raises(ValueError):
        ReplayBuffer(1, 1, capacity=3).load_state(small.state())


# -- Ctrl-C ---------------------------------------------------------------------------------------------------

def interrupt(out: Path, presses: int, sig: int = signal.SIGINT) -> tuple[int, str]:
    """`rnm train` into `out`, stopped by `presses` Ctrl-C (or `sig`) once it has evaluated at step 200: (exit code,
    stderr)."""
    err_path = out.with_name(f"{out.name}.err")
    with err_path.open("w") as err_file:
        proc = subprocess.Popen([str(RNM), *map(str, train_args(out, LONG))], cwd=out.parent, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True)
        try:
            wait_for(lambda: (out / "evals.csv").exists() and len(curve(out)) >= 3, timeout=60,
                     what="evaluations at steps 0, 100, 200")
            for _ in range(presses):
                os.killpg(proc.pid, sig)  # what a terminal does on Ctrl-C: the whole foreground group
                time.sleep(0.05)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return code, err_path.read_text()


def test_ctrl_c_exits_130_and_the_run_resumes_exactly(straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, err = interrupt(out, presses=1)
    assert code == 130 and "stopped at step" in err, err
    assert len(curve(out)) < len(straight)  # stopped before its end
    code, _, err = rnm_here(train_args(out, LONG), monkeypatch, capsys)
    assert code == 0 and "finished" in err, err
    assert curve(out) == straight


def test_sigterm_from_a_batch_scheduler_exits_143_and_the_run_resumes_exactly(straight, tmp_path, monkeypatch,
                                                                             capsys):
    out = tmp_path / "run"
    code, err = interrupt(out, presses=1, sig=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM and "stopped at step" in err, err
    code, _, err = rnm_here(train_args(out, LONG), monkeypatch, capsys)
    assert code == 0 and curve(out) == straight


def test_a_second_ctrl_c_before_the_checkpoint_also_exits_130_in_one_line(tmp_path):
    code, err = interrupt(tmp_path / "run", presses=2)
    assert code == 130 and "Traceback" not in err, err
    assert "interrupted before a checkpoint" in err or "stopped at step" in err, err
