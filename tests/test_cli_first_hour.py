"""Issue 13, the first hour of a researcher with rnm: traps that train nothing warned about, errors and help in the
tool's own voice, tables on stdout and messages on stderr, and the training statistics exported.

Every case calls the console script's entry point (`rnm_cli.main.main`) in this process, so that it costs its checks
and not an import of torch; `rnm train` runs a stub of the trainer, since what is tested is what the CLI says.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

import rnmtd3.runs as runs
from rnm_cli.main import COMMANDS
from rnmtd3.registry import CANCELLED, QUEUED, open_registry
from rnmtd3.trainer import TrainResult

from helpers_registry import rnm_here, snapshot, tiny_config

QUEUE = ["queue", "--envs", "Hopper", "--patterns", "2:4", "--seeds", "1", "--no-baseline"]


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def db(tmp_path):
    """A registry with two queued tiny runs."""
    path = tmp_path / "rnm.db"
    with open_registry(path) as registry:
        registry.enqueue([tiny_config(seed=seed) for seed in range(2)])
    return path


def statuses(db) -> list[str]:
    with open_registry(db, create=False) as registry:
        return list(registry.runs_frame()["status"])


@pytest.fixture
def trained(monkeypatch):
    """`rnm train` with a stub trainer: the configs it was given, in order."""
    given = []

    def stub(config, out, **callbacks):  # noqa: ARG001 - the CLI's progress callbacks are not needed here
        given.append(config)
        return TrainResult(config.steps, True, 0, 1.0)

    monkeypatch.setattr(runs, "train_foreground", stub)
    return given


# -- 2a: steps at or below start_steps ------------------------------------------------------------------------

@pytest.mark.parametrize("steps", ["1e4", "25000"])
def test_queue_warns_when_steps_leave_no_gradient_update_and_still_queues(steps, tmp_path, monkeypatch, capsys):
    code, _, err = rnm_here([*QUEUE, "--steps", steps, "--db", tmp_path / "rnm.db"], monkeypatch, capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1, err
    assert "start_steps (25,000)" in warning[0] and f"--set start_steps={int(float(steps)) // 10}" in warning[0]
    assert statuses(tmp_path / "rnm.db") == [QUEUED]


def test_queue_does_not_warn_when_steps_pass_start_steps(tmp_path, monkeypatch, capsys):
    for args in (["--steps", "25001"], ["--steps", "1e4", "--set", "start_steps=1000"]):
        code, _, err = rnm_here([*QUEUE, *args, "--dry-run", "--db", tmp_path / "rnm.db"], monkeypatch, capsys)
        assert code == 0 and "warning" not in err, err


def test_train_warns_when_steps_leave_no_gradient_update_and_still_trains(trained, tmp_path, monkeypatch, capsys):
    args = ["train", "--env", "Hopper", "--steps", "2e4", "--out", tmp_path / "run"]
    code, _, err = rnm_here(args, monkeypatch, capsys)
    assert code == 0, err
    assert "steps (20,000) <= start_steps (25,000)" in err and "--set start_steps=2000" in err
    assert [config.steps for config in trained] == [20_000]
    code, _, err = rnm_here([*args, "--set", "start_steps=2000"], monkeypatch, capsys)
    assert code == 0 and "warning" not in err, err


# -- 2b: a sweep list that repeats a value ----------------------------------------------------------------------

def test_train_refuses_hidden_256_comma_256_and_explains_256x256(trained, tmp_path, monkeypatch, capsys):
    code, _, err = rnm_here(["train", "--env", "Hopper", "--set", "hidden=256,256", "--out", tmp_path / "run"],
                            monkeypatch, capsys)
    assert code == 2
    assert "256 twice" in one_line(err) and "hidden=256x256" in err
    assert trained == [] and list(tmp_path.iterdir()) == []


def test_a_repeated_network_of_several_layers_is_refused_without_suggesting_one_network(tmp_path, monkeypatch, capsys):
    code, _, err = rnm_here([*QUEUE, "--set", "hidden=64x64,64x64", "--db", tmp_path / "rnm.db"], monkeypatch, capsys)
    assert code == 2 and "64x64 twice" in one_line(err) and "written with x" not in err
    assert list(tmp_path.iterdir()) == []


# -- 4: tables on stdout, messages on stderr ------------------------------------------------------------------

def test_the_queue_table_is_on_stdout_and_the_summary_on_stderr(tmp_path, monkeypatch, capsys):
    for dry_run in (["--dry-run"], []):
        code, out, err = rnm_here([*QUEUE, *dry_run, "--db", tmp_path / "rnm.db"], monkeypatch, capsys)
        assert code == 0, err
        assert "Hopper-v5" in out and "new runs" in out and "Hopper-v5" not in err
        assert "add" in one_line(err)


@pytest.mark.parametrize("args, needle", [(["status"], "Pendulum-v1"), (["keys"], "start_steps"),
                                          (["export", "runs"], "run_id"), (["export", "evals"], "return_mean"),
                                          (["export", "stats"], "value")])
def test_every_table_is_on_stdout_with_nothing_on_stderr(args, needle, db, monkeypatch, capsys):
    code, out, err = rnm_here([*args, "--db", db] if args != ["keys"] else args, monkeypatch, capsys)
    assert code == 0, err
    assert needle in out and err == ""


# -- 4: cancel needs ids or --all --------------------------------------------------------------------------------

def test_cancel_without_ids_asks_for_all_and_cancels_nothing(db, monkeypatch, capsys):
    before = snapshot(db.parent)
    code, _, err = rnm_here(["cancel", "--db", db], monkeypatch, capsys)
    assert code == 2 and "--all" in one_line(err)
    code, _, err = rnm_here(["cancel", "1", "--all", "--db", db], monkeypatch, capsys)
    assert code == 2 and "not both" in one_line(err)
    assert snapshot(db.parent) == before
    code, _, err = rnm_here(["cancel", "--all", "--db", db], monkeypatch, capsys)
    assert code == 0 and "2 run(s) cancelled" in err
    assert statuses(db) == [CANCELLED, CANCELLED]


def test_cancel_with_ids_cancels_those_only(db, monkeypatch, capsys):
    code, _, err = rnm_here(["cancel", "2", "--db", db], monkeypatch, capsys)
    assert code == 0, err
    assert statuses(db) == [QUEUED, CANCELLED]


# -- 4: help ---------------------------------------------------------------------------------------------------

def test_rnm_h_and_rnm_alone_print_the_help_with_the_commands_in_workflow_order(monkeypatch, capsys):
    outputs = []
    for args in (["-h"], ["--help"], []):
        code, out, err = rnm_here(args, monkeypatch, capsys)
        assert code == 0 and err == "", err
        outputs.append(out)
    assert outputs[0] == outputs[1] == outputs[2].rstrip("\n") + "\n"
    listed = outputs[0].split("Commands:")[1].split()
    order = [listed.index(name) for name in ("queue", "run-workers", "status", "report", "train", "export")]
    assert order == sorted(order)


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_read_as_flags_in_every_commands_help(command, monkeypatch, capsys):
    code, out, _ = rnm_here([command, "-h"], monkeypatch, capsys)
    assert code == 0 and "Usage: rnm" in out
    assert "<bool>" not in out and "--help" in out


def test_queue_help_shows_dry_run_as_a_flag(monkeypatch, capsys):
    _, out, _ = rnm_here(["queue", "-h"], monkeypatch, capsys)
    assert "  --dry-run  " in out and "--baseline / --no-baseline  " in out


# -- 4: usage errors of the CLI framework in the tool's voice ---------------------------------------------------

USAGE_ERRORS = {
    "--seeds x": ([*QUEUE[:5], "--seeds", "x"], ["--seeds", "count", "seeds 0..4", "a range (5-9)"]),
    "--set without a value": ([*QUEUE, "--set"], ["--set", "key=value"]),
    "--set without =": ([*QUEUE, "--set", "lr"], ["bad --set 'lr'", "key=value"]),
    "missing --patterns": (["queue", "--envs", "Hopper"], ["--patterns", "`rnm queue -h`"]),
    "unknown option": (["status", "--bogus"], ["--bogus", "`rnm status -h` lists the options"]),
    "unknown command": (["quue"], ["'quue'", "did you mean 'queue'", "`rnm -h` lists the commands"]),
    "-j x": (["run-workers", "-j", "x"], ["-j", "`rnm run-workers -h`"]),
}


@pytest.mark.parametrize("args, needles", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_of_the_cli_framework_are_one_line_with_a_hint(args, needles, tmp_path, monkeypatch, capsys):
    code, out, err = rnm_here([args[0], "--db", tmp_path / "rnm.db", *args[1:]], monkeypatch, capsys)
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("rnm: error: ") and "Usage:" not in line
    for needle in needles:
        assert needle.lower() in line.lower(), line
    assert list(tmp_path.iterdir()) == []


# -- 5b: export stats --------------------------------------------------------------------------------------------

def test_export_stats_gives_every_training_statistic_the_registry_holds(db, tmp_path, monkeypatch, capsys):
    with open_registry(db, create=False) as registry:
        claim = registry.claim()
        registry.record_stats(claim, 100, {"critic_loss": 1.5, "steps_per_sec": 800.0, "density_actor": 0.5})
        registry.record_stats(claim, 200, {"sad_actor": 0.25})
    code, out, err = rnm_here(["export", "stats", "--format", "csv", "--db", db], monkeypatch, capsys)
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns) == ["run_id", "env", "pattern", "seed", "step", "name", "value"]
    assert list(table.itertuples(index=False, name=None)) == [
        (1, "Pendulum-v1", "2:4", 0, 100, "critic_loss", 1.5), (1, "Pendulum-v1", "2:4", 0, 100, "density_actor", 0.5),
        (1, "Pendulum-v1", "2:4", 0, 100, "steps_per_sec", 800.0), (1, "Pendulum-v1", "2:4", 0, 200, "sad_actor", 0.25)]
    code, out, err = rnm_here(["export", "stats", "--out", tmp_path / "stats.csv", "--db", db], monkeypatch, capsys)
    assert code == 0 and out == "" and "wrote 4 row(s)" in err
    assert pd.read_csv(tmp_path / "stats.csv").equals(table)
