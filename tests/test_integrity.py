"""Every number is what it claims to be: a run's artifacts belong to its database and run, a curve comes from one
attempt and is complete before a run is done, run identity survives new config keys, and failures are classified."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from sqlalchemy import text

from rnmtd3 import checkpoint as ckpt
from rnmtd3 import workers
from rnmtd3.config import RunConfig
from rnmtd3.errors import IncompleteCurve, UsageError
from rnmtd3.registry import FAILED, QUEUED, RUNNING, open_registry
from rnmtd3.sinks import MemorySink
from rnmtd3.trainer import train

from helpers_registry import describe, queue_tiny, rnm, tiny_config

DATA = Path(__file__).parent / "data"


def expected_steps(config: RunConfig) -> list[int]:
    return list(range(0, config.steps + 1, config.eval_interval))


def curve_steps(registry, run_id: int) -> list[int]:
    evals = registry.evals_frame()
    return evals.loc[evals["run_id"] == run_id, "step"].tolist()


# -- artifacts belong to one database and one run ---------------------------------------------------------------
def test_two_databases_sharing_one_artifacts_folder_both_finish_with_full_independent_curves(tmp_path):
    for name in ("pilot.db", "final.db"):
        queue_tiny(tmp_path / name, tmp_path, seeds=2)
    for name in ("pilot.db", "final.db"):  # the second runs after the first has finished checkpoints in the folder
        result = rnm(["run-workers", "-j", "2", "--db", tmp_path / name], tmp_path)
        assert result.returncode == 0, describe(result)
    folders = set()
    for name in ("pilot.db", "final.db"):
        registry = open_registry(tmp_path / name, create=False)
        runs = registry.runs_frame()
        assert (runs["status"] == "done").all() and (runs["attempts"] == 1).all()
        for run in runs.itertuples():
            config = RunConfig.from_dict(json.loads(run.config))
            assert curve_steps(registry, run.run_id) == expected_steps(config)
            assert not (run.notes or "")  # nothing was restarted: each database had folders of its own
            folder = Path(run.checkpoint).parent
            assert ckpt.load(run.checkpoint)["owner"] == {"database": registry.database_id, "run": run.run_id,
                                                          "config": config.hash}
            folders.add(folder)
        registry.close()
    assert len(folders) == 4


def test_a_copied_database_takes_an_identity_of_its_own_and_never_resumes_the_originals_runs(tmp_path):
    queue_tiny(tmp_path / "pilot.db", tmp_path, steps=600, extra=["checkpoint_interval=200"])
    pilot = open_registry(tmp_path / "pilot.db")
    claim = pilot.claim()
    run_dir = workers.run_folder(claim, tmp_path / "rnm-artifacts", pilot.database_id)
    sink = MemorySink(stop_after_checkpoint=True)
    train(claim.config, run_dir, sink, owner=ckpt.owner_of(claim.config, pilot.database_id, claim.run_id))
    pilot.record_checkpoint(claim, sink.checkpoints[-1], str(run_dir / ckpt.CHECKPOINT))
    pilot.close()
    shutil.copy(tmp_path / "pilot.db", tmp_path / "final.db")  # the copy holds the same run, held, at step 200
    final = open_registry(tmp_path / "final.db")
    assert final.database_id != open_registry(tmp_path / "pilot.db").database_id
    with final.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET lease_expires = 0"))
    taken = final.claim()
    assert workers.run_folder(taken, tmp_path / "rnm-artifacts", final.database_id) != run_dir
    assert open_registry(tmp_path / "pilot.db").database_id == pilot.database_id  # the original keeps its own


def test_copies_made_before_any_worker_ran_take_identities_of_their_own_and_a_moved_database_keeps_its_own(tmp_path):
    queue_tiny(tmp_path / "template.db", tmp_path)
    for name in ("a.db", "b.db"):
        shutil.copy(tmp_path / "template.db", tmp_path / name)
    ids = {}
    for name in ("template.db", "a.db", "b.db"):
        with open_registry(tmp_path / name) as registry:
            ids[name] = registry.database_id
    assert len(set(ids.values())) == 3
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "a.db", tmp_path / "elsewhere" / "a.db")
    with open_registry(tmp_path / "elsewhere" / "a.db") as registry:
        assert registry.database_id == ids["a.db"]


def test_a_copy_whose_original_was_renamed_still_has_an_identity_of_its_own(tmp_path):
    queue_tiny(tmp_path / "a.db", tmp_path)
    with open_registry(tmp_path / "a.db") as registry:
        original = registry.database_id
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    (tmp_path / "a.db").rename(tmp_path / "a-old.db")
    with open_registry(tmp_path / "b.db") as copy, open_registry(tmp_path / "a-old.db") as renamed:
        assert copy.database_id != original and renamed.database_id == original


def test_a_foreign_resume_state_is_never_resumed_from(tmp_path):
    config = tiny_config(steps=400)
    mine, theirs = (ckpt.owner_of(config, db, 1) for db in ("a" * 32, "b" * 32))
    train(config, tmp_path, MemorySink(), owner=theirs)  # a finished run of another database in this folder
    sink = MemorySink()
    result = train(config, tmp_path, sink, owner=mine)
    assert result.resumed_from == 0 and result.finished
    assert [e[0] for e in sink.evals] == expected_steps(config)
    assert len(sink.notes) == 1 and "belongs to another run" in sink.notes[0] and "restarted from step 0" in sink.notes[0]
    assert ckpt.load(tmp_path / ckpt.RESUME)["owner"] == mine


def test_a_corrupt_resume_state_restarts_from_step_0_with_one_note(tmp_path):
    config = tiny_config(steps=400)
    (tmp_path / ckpt.RESUME).write_bytes(b"PK\x03\x04 this is not a checkpoint")
    sink = MemorySink()
    result = train(config, tmp_path, sink)
    assert result.finished and result.resumed_from == 0
    assert [e[0] for e in sink.evals] == expected_steps(config)
    assert len(sink.notes) == 1 and "cannot load checkpoint" in sink.notes[0]


@pytest.mark.parametrize("damage", ["empty", "not whole"])
def test_an_empty_or_partial_resume_state_restarts_from_step_0_with_one_note(tmp_path, damage):
    config = tiny_config(steps=600)
    assert not train(config, tmp_path, MemorySink(stop_after_checkpoint=True)).finished
    if damage == "empty":
        (tmp_path / ckpt.RESUME).write_bytes(b"")
    else:
        state = ckpt.load(tmp_path / ckpt.RESUME)
        state["agent"] = {}
        ckpt.atomic_save(state, tmp_path / ckpt.RESUME)
    sink = MemorySink()
    result = train(config, tmp_path, sink)
    assert result.finished and result.resumed_from == 0
    assert [e[0] for e in sink.evals] == expected_steps(config)
    assert len(sink.notes) == 1 and "restarted from step 0" in sink.notes[0]
    fresh = MemorySink()
    train(config, tmp_path / "fresh", fresh)
    assert sink.evals == fresh.evals  # the restart is a fresh run, not one half-loaded from the bad state


def test_a_checkpoint_without_its_resume_state_is_not_overwritten_by_another_config(tmp_path):
    config = tiny_config(steps=200)
    train(config, tmp_path, MemorySink())
    (tmp_path / ckpt.RESUME).unlink()
    before = (tmp_path / ckpt.CHECKPOINT).read_bytes()
    with pytest.raises(UsageError, match="another config"):
        train(config.replace(pattern=tiny_config(pattern="1:4").pattern), tmp_path, MemorySink())
    assert (tmp_path / ckpt.CHECKPOINT).read_bytes() == before
    sink = MemorySink()
    assert train(config, tmp_path, sink).resumed_from == 0
    assert sink.notes == [f"{tmp_path / ckpt.RESUME} is missing beside checkpoint.pt; restarted from step 0"]


def test_a_foreground_run_refuses_a_workers_run_folder(tmp_path):
    config = tiny_config(steps=200)
    train(config, tmp_path, MemorySink(), owner=ckpt.owner_of(config, "a" * 32, 7))
    with pytest.raises(UsageError, match="holds run 7 of database"):
        train(config, tmp_path, MemorySink())


def test_a_resumed_run_reports_its_whole_curve_again(tmp_path):
    """The resume state carries the curve, so a sink that lost it (or a new one) still ends with every point."""
    config = tiny_config(steps=600)
    first = MemorySink(stop_after_checkpoint=True)
    assert not train(config, tmp_path, first).finished
    second = MemorySink()
    result = train(config, tmp_path, second)
    assert result.resumed_from > 0
    assert [e[0] for e in second.evals] == expected_steps(config)


# -- a restart is a restart ---------------------------------------------------------------------------------------
def test_a_restart_from_step_0_removes_the_earlier_attempts_curve_and_stats(tmp_path):
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue([tiny_config()])
    first = registry.claim()
    for step, value in ((0, -1500.0), (100, -1400.0)):
        assert registry.record_eval(first, step, value, 1.0, 0.0)
    assert registry.record_stats(first, 100, {"critic_loss": 3.0})
    registry.fail(first, "boom")
    second = registry.claim()
    assert registry.begin_attempt(second, 0, "why it restarted")
    assert curve_steps(registry, second.run_id) == []
    assert registry.stats_frame().empty
    run = registry.runs_frame().iloc[0]
    assert run["last_return"] != run["last_return"]  # NaN: no curve, no last return
    assert run["notes"] == "why it restarted"


def test_a_resume_keeps_the_curve_up_to_its_checkpoint_and_last_return_follows_it(tmp_path):
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue([tiny_config()])
    first = registry.claim()
    for step in (0, 100, 200, 300):
        assert registry.record_eval(first, step, -float(step), 1.0, 0.0)
    registry.fail(first, "boom")
    second = registry.claim()
    assert registry.begin_attempt(second, 200)
    assert curve_steps(registry, second.run_id) == [0, 100, 200]
    assert registry.runs_frame().iloc[0]["last_return"] == -200.0


def test_a_run_is_done_only_with_its_complete_curve(tmp_path):
    registry = open_registry(tmp_path / "rnm.db")
    config = tiny_config(steps=400)
    registry.enqueue([config])
    claim = registry.claim()
    for step in (0, 100, 400):
        registry.record_eval(claim, step, 0.0, 0.0, 0.0)
    with pytest.raises(IncompleteCurve, match="2 of 5 evaluations missing"):
        registry.finish(claim, 400)
    assert registry.runs_frame().iloc[0]["status"] == RUNNING
    for step in (200, 300):
        registry.record_eval(claim, step, 0.0, 0.0, 0.0)
    assert registry.finish(claim, 400)


# -- run identity survives new keys -------------------------------------------------------------------------------
def test_adding_a_config_key_with_a_default_changes_no_hash():
    extended = dataclasses.make_dataclass(
        "RunConfigWithANewKey", [("new_key", int, dataclasses.field(default=3, metadata={"help": "a new key"}))],
        bases=(RunConfig,), frozen=True)
    config = tiny_config(seed=4)
    same = extended(**{f.name: getattr(config, f.name) for f in dataclasses.fields(RunConfig)})
    assert same.hash == config.hash
    assert dataclasses.replace(same, new_key=4).hash != config.hash


def test_an_old_database_is_migrated_and_requeueing_its_sweep_adds_nothing(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(DATA / "registry-0001.db", db)
    registry = open_registry(db)
    configs = [RunConfig.from_dict(json.loads(c)) for c in registry.runs_frame()["config"]]
    assert configs and registry.database_id
    result = registry.enqueue(configs)
    assert result.added == [] and len(result.existing) == len(configs)


def test_hash_rule_of_migration_0003_matches_the_config():
    """0003 rehashed configs as they were stored then (its keys only); the same config gets the same hash today, and
    no key of 0003 has changed its default since (that would change every identity that leaves it out)."""
    from importlib import import_module

    migration = import_module("rnmtd3.migrations.versions.0003_integrity")
    keys_at_0003 = {"env", "pattern", "seed", *migration.DEFAULTS_AT_0003}
    for config in (tiny_config(), tiny_config(pattern="dense", seed=3), RunConfig(env="Hopper-v5",
                                                                                   pattern=tiny_config().pattern,
                                                                                   seed=0)):
        stored_at_0003 = {k: v for k, v in config.to_dict().items() if k in keys_at_0003}
        assert migration.identity_hash(stored_at_0003) == config.hash
    defaults = RunConfig(env="x", pattern=tiny_config().pattern, seed=0).to_dict()
    assert migration.DEFAULTS_AT_0003 == {k: defaults[k] for k in migration.DEFAULTS_AT_0003}


# -- failures are classified --------------------------------------------------------------------------------------
def run_work_with(tmp_path, fake_train, runs: int = 1):
    """Drive workers.work in this process with the trainer replaced, until it has nothing to claim now."""
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue([tiny_config(seed=s) for s in range(runs)])
    stop = threading.Event()
    calls = []

    def train_once(config, run_dir, sink, **kwargs):
        calls.append(config.seed)
        if len(calls) >= runs:
            stop.set()
        return fake_train(config, run_dir, sink, **kwargs)

    import rnmtd3.trainer
    original = rnmtd3.trainer.train
    rnmtd3.trainer.train = train_once
    try:
        workers.work(str(tmp_path / "rnm.db"), 0, lambda update: None, stop, tmp_path / "artifacts", 60.0)
    finally:
        rnmtd3.trainer.train = original
    return registry, calls


def test_a_full_disk_backs_off_without_using_attempts(tmp_path):
    def disk_full(config, run_dir, sink, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    registry, _ = run_work_with(tmp_path, disk_full)
    run = registry.runs_frame().iloc[0]
    assert run["status"] == QUEUED and run["attempts"] == 0
    with registry.engine.connect() as conn:
        transient, retry_at = conn.execute(text("SELECT transient_failures, retry_at FROM runs")).one()
    assert transient == 1 and retry_at - registry.now() > 20
    assert registry.claim() is None  # nothing is claimable during the back-off
    assert 20 < registry.next_retry_in() <= 30


def test_a_usage_error_fails_the_run_at_once_and_the_others_are_still_claimed(tmp_path):
    def cuda_missing(config, run_dir, sink, **kwargs):
        if config.seed == 0:
            raise UsageError("device=cuda but this torch sees no CUDA device")
        raise RuntimeError("some other failure")

    registry, calls = run_work_with(tmp_path, cuda_missing, runs=2)
    assert calls == [0, 1]
    runs = registry.runs_frame().set_index("seed")
    assert runs.loc[0, "status"] == FAILED and runs.loc[0, "attempts"] == 1
    assert runs.loc[0, "error"] == "UsageError: device=cuda but this torch sees no CUDA device"
    assert runs.loc[1, "status"] == QUEUED and runs.loc[1, "attempts"] == 1  # an unknown error is retried


@pytest.mark.parametrize("change", [{"key_from_the_future": 1}, {"env": 5}, {"seed": 1.5}, {"steps": 400.0},
                                    {"hidden": "16x16"}])
def test_an_unreadable_queued_config_fails_alone_and_the_next_run_is_claimed(tmp_path, change):
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue([tiny_config(seed=0), tiny_config(seed=1)])
    with registry.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET config = :c WHERE id = 1"),
                     {"c": json.dumps({**tiny_config().to_dict(), **change})})
    claim = registry.claim()
    assert claim is not None and claim.run_id == 2
    bad = registry.runs_frame().set_index("run_id").loc[1]
    assert bad["status"] == FAILED and bad["attempts"] == 1 and next(iter(change)) in bad["error"]


def test_a_queued_run_too_large_for_this_machine_fails_at_claim(tmp_path):
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue([tiny_config(seed=0, buffer_size=2_000_000_000, steps=2_000_000_000)])

    def never(config, run_dir, sink, **kwargs):
        raise AssertionError("a run that cannot fit must not start")

    registry, calls = run_work_with(tmp_path, never, runs=0)
    run = registry.runs_frame().iloc[0]
    assert run["status"] == FAILED and run["attempts"] == 1 and "this machine has" in run["error"]


def test_illegal_moves_raise_instead_of_answering_as_a_lost_race(tmp_path):
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue([tiny_config(seed=0), tiny_config(seed=1)])
    claim = registry.claim()
    with pytest.raises(UsageError, match=f"run {claim.run_id} is running"):
        registry.retry_failed([claim.run_id])
    with pytest.raises(UsageError, match="no run 99"):
        registry.retry_failed([99])
    with pytest.raises(UsageError, match="needs --running"):
        registry.cancel([claim.run_id])
    assert registry.cancel([2]) == 1


def test_run_workers_exits_non_zero_and_counts_the_failed_runs(tmp_path):
    queue_tiny(tmp_path / "rnm.db", tmp_path, more=["--max-attempts", "1"], extra=["device=cuda"])
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: device=cuda runs")
    result = rnm(["run-workers", "--db", tmp_path / "rnm.db"], tmp_path)
    assert result.returncode == 1, describe(result)
    assert "1 run(s) failed: 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dead_pid_of_another_pid_namespace_is_not_taken_for_a_dead_worker(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: this pid is free, as a worker in another container's namespace could be using it
    registry = open_registry(tmp_path / "rnm.db")
    registry.enqueue([tiny_config(seed=0), tiny_config(seed=1)])
    mine, theirs = registry.claim(pid=dead.pid), registry.claim(pid=dead.pid)
    with registry.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET worker_ns = 'another-boot/4026531836' WHERE id = :id"),
                     {"id": theirs.run_id})
    assert registry.expire_dead_local() == [mine.run_id]


@pytest.mark.slow
def test_workers_of_a_killed_run_workers_hand_their_runs_back(tmp_path):
    import os
    import signal

    from helpers_registry import kill_quietly, pid_alive, start_workers, wait_for

    queue_tiny(tmp_path / "rnm.db", tmp_path, steps=20_000)
    registry = open_registry(tmp_path / "rnm.db")
    proc, _, _ = start_workers(tmp_path / "rnm.db", tmp_path, 1)
    try:
        def run_in(status):
            run = registry.runs_frame().iloc[0].to_dict()
            return run if run["status"] == status else None

        worker = int(wait_for(lambda: run_in(RUNNING), timeout=120, what="the claim")["worker_pid"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        run = wait_for(lambda: run_in(QUEUED), timeout=60, what="the run handed back")
        wait_for(lambda: not pid_alive(worker), timeout=60, what="the orphaned worker to exit")
    finally:
        kill_quietly(proc)
    assert run["attempts"] == 0  # handed back cleanly, as on Ctrl-C: the attempt does not count
    registry.close()
