"""Shared helpers of the registry, worker and CLI tests: the `rnm` console script, tiny runs, polling, snapshots.

Every CLI call is a real subprocess of the installed console script (`.venv/bin/rnm`), run in a test's tmp_path
with an explicit --db, so what is tested is what a user runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
import pytest
from sqlalchemy import update

from rnm_cli.main import main
from rnmtd3.config import RunConfig
from rnmtd3.patterns import Pattern
from rnmtd3.registry import Registry
from rnmtd3.registry.models import Run
from rnmtd3.registry.store import _pid_alive

RNM = Path(sys.executable).parent / "rnm"

# A run of a few seconds: Pendulum episodes are 200 steps, so checkpoints fall on episode boundaries every 200 steps.
TINY_SET = ["start_steps=100", "eval_interval=100", "eval_episodes=1", "hidden=16x16", "checkpoint_interval=200",
            "batch_size=64"]
TINY_VALUES = dict(start_steps=100, eval_interval=100, eval_episodes=1, hidden=(16, 16), checkpoint_interval=200,
                   batch_size=64)


def tiny_set_args(extra: Iterable[str] = ()) -> list[str]:
    """`--set` options of a tiny run; `extra` items (key=value) replace the tiny value of their key."""
    items = {item.partition("=")[0]: item for item in TINY_SET}
    items.update({item.partition("=")[0]: item for item in extra})
    args: list[str] = []
    for item in items.values():
        args += ["--set", item]
    return args


def tiny_config(seed: int = 0, steps: int = 400, pattern: str = "2:4", env: str = "Pendulum-v1", **changes) -> RunConfig:
    return RunConfig(env=env, pattern=Pattern.parse(pattern), seed=seed, **{**TINY_VALUES, "steps": steps, **changes})


def cli_env() -> dict[str, str]:
    """The caller's environment without the variables that would change which database or error mode is used."""
    env = {k: v for k, v in os.environ.items() if k not in ("RNM_DB", "RNM_DEBUG")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def rnm_here(args, monkeypatch, capsys):
    """`rnm ARGS` through the console script's entry point, in-process: (exit code, stdout, stderr)."""
    monkeypatch.delenv("RNM_DB", raising=False)
    monkeypatch.delenv("RNM_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["rnm", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def rnm(args: Sequence[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `rnm ARGS` in `cwd` and capture its output."""
    return subprocess.run([str(RNM), *map(str, args)], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def rnm_many(commands: Sequence[Sequence[str]], cwd: Path, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Several independent `rnm` calls at once (each pays the torch import, so running them together saves time)."""
    procs = [subprocess.Popen([str(RNM), *map(str, args)], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    results = []
    for args, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess([str(RNM), *map(str, args)], proc.returncode, out, err))
    return results


def queue_tiny(db: Path, cwd: Path, seeds: int = 1, steps: int = 400, patterns: str = "2:4",
               extra: Iterable[str] = (), more: Iterable[str] = ()) -> subprocess.CompletedProcess:
    result = rnm(["queue", "--envs", "Pendulum-v1", "--patterns", patterns, "--seeds", seeds, "--steps", steps,
                  *tiny_set_args(extra), "--no-baseline", *more, "--db", db], cwd)
    assert result.returncode == 0, describe(result)
    return result


def start_workers(db: Path, cwd: Path, jobs: int, log_name: str = "workers", extra: Sequence[str] = ()):
    """`rnm run-workers -j JOBS` in the background, in its own session (so a test can signal its process group).

    Output goes to files (not pipes) so a chatty display can never block the process.
    Returns (process, stdout path, stderr path).
    """
    out_path, err_path = cwd / f"{log_name}.out", cwd / f"{log_name}.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([str(RNM), "run-workers", "-j", str(jobs), *extra, "--db", str(db)], cwd=cwd,
                                env=cli_env(), stdout=out, stderr=err, start_new_session=True)
    return proc, out_path, err_path


def describe(result: subprocess.CompletedProcess) -> str:
    return f"{' '.join(map(str, result.args[1:]))}\nexit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def assert_usage_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one line on stderr, no traceback; returns the line."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr + result.stdout, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)  # not stripped first: a blank line before the message counts
    for needle in needles:
        assert needle.lower() in lines[0].lower(), describe(result)
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (a SQLite file and its -wal/-shm included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` is truthy; returns its value. Fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run_row(registry: Registry, run_id: int) -> dict:
    """One run as a dict, a missing value as None (NaN != NaN would make equal rows compare unequal)."""
    runs = registry.runs_frame()
    return {k: (None if pd.isna(v) else v) for k, v in runs[runs["run_id"] == run_id].iloc[0].to_dict().items()}


def expire_lease(registry: Registry, run_id: int) -> None:
    """End a run's lease now, as when its worker has been silent past it: a test that waited for a short lease
    instead would depend on how fast a loaded machine gets from one statement to the next."""
    with registry.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(lease_expires=0.0))


def expected_eval_steps(steps: int, interval: int = 100) -> list[int]:
    return list(range(0, steps + 1, interval))


def eval_steps_by_run(evals: pd.DataFrame) -> dict[int, list[int]]:
    return {int(run_id): [int(s) for s in group["step"]] for run_id, group in evals.groupby("run_id")}


def kill_quietly(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Stop a background `rnm` (and its worker children: same session) if a test left it running."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie, as the registry judges a worker."""
    return _pid_alive(pid)
