"""Issue 13, item 1: `rnm run-workers` writes a log that can be followed. Where its output is not a terminal, each
event is one timestamped line, written when it happens (worker_events.EventLog); a terminal keeps the live board.

The EventLog cases feed it updates with a fake clock; one case runs the installed script with real workers and
reads its log file while they still run."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime

import pytest
from rich.console import Console

import rnm_cli.workers_cmd as workers_cmd
from rnmtd3.registry import open_registry
from rnmtd3.worker_events import EventLog, died, timestamp
from rnmtd3.workers import WorkerUpdate

from helpers_registry import RNM, cli_env, kill_quietly, queue_tiny, rnm_here, tiny_config, wait_for

STAMP = r"(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d)"


START = 1_700_000_000.0


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path):
    """Runs 1-2: 2:4 with mask_interval 10 and 20 (a varying key, so it names the variant); run 3: dense."""
    with open_registry(tmp_path / "rnm.db") as registry:
        registry.enqueue([tiny_config(mask_interval=10), tiny_config(mask_interval=20), tiny_config(pattern="dense")])
        yield registry


@pytest.fixture
def clock():
    return Clock()


def texts(log: EventLog, clock: Clock, updates: list[WorkerUpdate]) -> list[str]:
    """The lines without their timestamps, after checking that each has the clock's."""
    lines = [line for update in updates for line in log.lines(update)]
    assert all(line.startswith(timestamp(clock.now) + " ") for line in lines), lines
    return [line.split(" ", 1)[1] for line in lines]


def test_a_timestamp_is_local_time_with_its_utc_offset():
    parsed = datetime.fromisoformat(timestamp(START))
    assert parsed.tzinfo is not None and parsed.timestamp() == START


def test_claims_name_env_variant_and_seed_and_a_second_holder_is_a_takeover(registry, clock):
    log = EventLog(registry.runs_frame, clock=clock)
    assert texts(log, clock, [
        WorkerUpdate(0, "claimed", 1, "#1", 0, 400, attempt=1),
        WorkerUpdate(1, "claimed", 3, "#3", 0, 400, attempt=1),
        WorkerUpdate(2, "claimed", 1, "#1", 0, 400, attempt=2),  # worker 0 went silent: its lease expired
        WorkerUpdate(0, "lost", 1, "#1"),
        WorkerUpdate(2, "started", 1, "#1", 200, 400, attempt=2),
        *(WorkerUpdate(2, "eval", 1, "#1", step, 400, 0.0, -5.0) for step in (0, 100, 200)),  # the saved curve again
        WorkerUpdate(2, "eval", 1, "#1", 300, 400, 90.0, -4.0),
        WorkerUpdate(1, "started", 3, "#3", 0, 400, attempt=1),
        WorkerUpdate(1, "eval", 3, "#3", 0, 400, 0.0, -3.0),
        WorkerUpdate(1, "failed", 3, "#3", message="RuntimeError: boom"),
        WorkerUpdate(2, "finished", 1, "#1", 400, 400, 50.0, -123.44),
        WorkerUpdate(1, "claimed", 2, "#2", 0, 400, attempt=3),
        WorkerUpdate(1, "started", 2, "#2", 0, 400, message="checkpoint /x/checkpoint.pt is gone; restarted from "
                     "step 0", attempt=3),
        WorkerUpdate(1, "released", 2, "#2", 100, 400),
    ]) == [
        "claim run 1 Pendulum-v1 2:4 mask_interval=10 seed 0 (worker 0)",
        "claim run 3 Pendulum-v1 dense seed 0 (worker 1)",
        "takeover run 1 Pendulum-v1 2:4 mask_interval=10 seed 0 (worker 2, from worker 0, attempt 2)",
        "lost run 1 (worker 0): taken over or cancelled, stopped without writing more",
        "resume run 1 at step 200/400 (worker 2)",
        "run 1 step 300/400 return -4.0 (90 steps/s)",
        "run 3 step 0/400 return -3.0",
        "failed run 3 Pendulum-v1 dense seed 0 (worker 1): RuntimeError: boom",
        "done run 1 Pendulum-v1 2:4 mask_interval=10 seed 0: step 400/400, return -123.4 (worker 2)",
        "claim run 2 Pendulum-v1 2:4 mask_interval=20 seed 0 (worker 1, attempt 3)",
        "restart run 2 (worker 1): checkpoint /x/checkpoint.pt is gone; restarted from step 0",
        "released run 2 at step 100/400 (worker 1): back in the queue",
    ]


def test_a_run_queued_after_the_first_read_is_named_too(registry, clock):
    log = EventLog(registry.runs_frame, clock=clock)
    texts(log, clock, [WorkerUpdate(0, "claimed", 1, "#1", 0, 400, attempt=1)])
    registry.enqueue([tiny_config(seed=7, mask_interval=10)])
    assert texts(log, clock, [WorkerUpdate(0, "claimed", 4, "#4", 0, 400, attempt=1)]) == [
        "claim run 4 Pendulum-v1 2:4 mask_interval=10 seed 7 (worker 0)"]


@pytest.mark.parametrize("every, expected", [(60.0, [0, 300]), (0.0, [0, 100, 200, 300])])
def test_evaluation_lines_are_at_most_one_per_run_per_interval(registry, clock, every, expected):
    log = EventLog(registry.runs_frame, every=every, clock=clock)
    texts(log, clock, [WorkerUpdate(0, "claimed", 1, "#1", 0, 400, attempt=1)])
    shown = []
    for step, seconds in ((0, 0.0), (100, 20.0), (200, 59.0), (300, 61.0)):
        clock.now = START + seconds
        rate = 180.0 if step else 0.0  # no rate before the first progress report
        lines = texts(log, clock, [WorkerUpdate(0, "progress", 1, "#1", step, 400, rate),
                                   WorkerUpdate(0, "eval", 1, "#1", step, 400, rate, -1.25 * step - 1)])
        shown += [int(re.match(r"run 1 step (\d+)/400", line).group(1)) for line in lines]
        if lines:
            speed = " (180 steps/s)" if step else ""
            assert lines == [f"run 1 step {step}/400 return {-1.25 * step - 1:.1f}{speed}"]
    assert shown == expected


def test_idle_workers_say_so_once_per_spell_and_exits_and_deaths_are_lines(registry, clock):
    log = EventLog(registry.runs_frame, clock=clock)
    assert texts(log, clock, [
        WorkerUpdate(0, "idle"), WorkerUpdate(0, "idle"), WorkerUpdate(0, "idle", message="next retry in 30 s"),
        WorkerUpdate(0, "claimed", 1, "#1", 0, 400, attempt=1), WorkerUpdate(0, "idle"),
        WorkerUpdate(1, "exited"), WorkerUpdate(2, "exited", message="DatabaseError: gone"),
    ]) == [
        "worker 0 idle: waiting for runs", "worker 0 idle: next retry in 30 s",
        "claim run 1 Pendulum-v1 2:4 mask_interval=10 seed 0 (worker 0)", "worker 0 idle: waiting for runs",
        "worker 1 exited", "worker 2 exited: DatabaseError: gone",
    ]
    end = log.end(list(died([0, -9, 1]).values()), {"done": 2, "failed": 1})
    assert [line.split(" ", 1)[1] for line in end] == [
        "worker 1 died (killed by SIGKILL)", "worker 2 died (exit code 1)",
        "all workers exited; runs: done 2, failed 1"]


@pytest.mark.parametrize("stdout_tty, stderr_tty, stream", [
    (False, False, "stdout"),  # > workers.log 2>&1, nohup, a batch job
    (False, True, "stdout"),   # > workers.log: the board stays on the terminal
    (True, False, "stderr"),   # 2> workers.log
    (True, True, None),        # the board alone
])
def test_the_event_log_goes_to_the_redirected_stream(monkeypatch, stdout_tty, stderr_tty, stream):
    monkeypatch.setattr(workers_cmd, "out", Console(force_terminal=stdout_tty))
    monkeypatch.setattr(workers_cmd, "err", Console(stderr=True, force_terminal=stderr_tty))
    assert workers_cmd._log_stream() is (None if stream is None else getattr(sys, stream))


@pytest.mark.parametrize("every", ["-1", "nan"])
def test_a_negative_log_interval_is_refused(every, tmp_path, monkeypatch, capsys):
    with open_registry(tmp_path / "rnm.db") as registry:
        registry.enqueue([tiny_config()])
    code, out, err = rnm_here(["run-workers", "--log-every", every, "--db", tmp_path / "rnm.db"], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "--log-every" in err, (code, out, err)


@pytest.mark.slow  # real workers: the worker processes' start (torch, gymnasium) is most of its 15 s
def test_run_workers_into_a_file_writes_each_event_while_it_runs(tmp_path):
    db = tmp_path / "rnm.db"
    queue_tiny(db, tmp_path, seeds=2, steps=200)
    path = tmp_path / "workers.log"
    env = {k: v for k, v in cli_env().items() if k != "PYTHONUNBUFFERED"}  # a user's stdout to a file is buffered
    with path.open("w") as log:  # rnm run-workers > workers.log 2>&1
        proc = subprocess.Popen([str(RNM), "run-workers", "-j", "2", "--db", str(db)], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    claim = re.compile(rf"^{STAMP} claim run [12] Pendulum-v1 2:4 seed [01] \(worker [01]\)$", re.M)

    def log_with_a_claim():
        text = path.read_text()  # read first: what is read before poll() says running was written while it ran
        assert proc.poll() is None, f"run-workers ended before any claim line was read:\n{text}"
        return text if claim.search(text) else None

    try:
        text = wait_for(log_with_a_claim, timeout=60, what="a claim line")
        # The runs take seconds: a log written only at the end (a buffer flushed at exit) would show them done.
        assert "done run" not in text and "exited" not in text, text
        stamp = claim.search(text)["stamp"]
        assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 30, text
        assert proc.wait(timeout=120) == 0, path.read_text()
    finally:
        kill_quietly(proc)
    text = path.read_text()
    for run_id, seed in ((1, 0), (2, 1)):
        done = (rf"^{STAMP} done run {run_id} Pendulum-v1 2:4 seed {seed}: "
                rf"step 200/200, return -?\d+\.\d \(worker [01]\)$")
        assert re.search(done, text, re.M), text
    assert re.search(rf"^{STAMP} all workers exited; runs: done 2$", text, re.M), text
    assert "┃" not in text and "exited │" not in text, text  # no board in a file
