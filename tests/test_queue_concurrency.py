"""Several `rnm queue` at once on one database (a cluster script that queues from every node, two people queueing
the same sweep): each exits cleanly, each run is there exactly once, and the "added" counts tell the truth.

On PostgreSQL two transactions that both read a hash as absent both insert it; on a new database, both create the
schema. Either used to end one of them on a unique-constraint error.
"""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest

from rnmtd3.registry import open_registry

from helpers_registry import describe, rnm_many, tiny_config

# Overlapping sweeps (patterns, seeds): they share runs, and some have runs of their own.
SWEEPS = [("2:4,1:4", 10), ("1:4,1:8", 10), ("2:4,1:4", 12), ("2:4,1:4", 10)]
# What `rnm queue` makes of them, the dense baseline included
UNION = {("Pendulum-v1", p, s) for patterns, seeds in SWEEPS for p in ["dense", *patterns.split(",")]
         for s in range(seeds)}


@pytest.mark.slow
def test_concurrent_queue_commands_add_each_run_once(tmp_path, db_url):
    """Four `rnm queue` processes on a database that does not exist yet: the first use creates it, concurrently."""
    results = rnm_many([["queue", "--envs", "Pendulum-v1", "--patterns", patterns, "--seeds", seeds, "--steps", 1000,
                         "--db", db_url] for patterns, seeds in SWEEPS], tmp_path, timeout=120)
    for result in results:
        assert result.returncode == 0, describe(result)
        assert "error" not in result.stderr.lower(), describe(result)
    added = [int(re.search(r"added (\d+) run", result.stderr).group(1)) for result in results]
    registry = open_registry(db_url, create=False)
    runs = registry.runs_frame()
    registry.close()
    keys = Counter(zip(runs["env"], runs["pattern"], runs["seed"]))
    assert set(keys) == UNION and set(keys.values()) == {1}, {k: n for k, n in keys.items() if n != 1}
    assert runs["config_hash"].is_unique
    assert sum(added) == len(UNION), added  # each run was added by exactly one of them


def test_concurrent_enqueue_of_overlapping_sweeps_adds_each_run_once(db_url):
    """Library-level and released at once by a barrier, so the read-then-insert race is hit on every run."""
    open_registry(db_url).close()
    sweeps = [[tiny_config(seed=s, pattern=p) for p in patterns.split(",") for s in range(seeds)]
              for patterns, seeds in SWEEPS] * 2
    registries = [open_registry(db_url, create=False) for _ in sweeps]
    results: list = [None] * len(sweeps)
    barrier = threading.Barrier(len(sweeps))

    def enqueue(i: int) -> None:
        barrier.wait()
        try:
            results[i] = registries[i].enqueue(sweeps[i])
        except Exception as exc:  # noqa: BLE001 - reported below with the others
            results[i] = exc

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(len(sweeps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    runs = registries[0].runs_frame()
    for registry in registries:
        registry.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    for sweep, result in zip(sweeps, results):
        assert sorted(c.hash for c in result.added + result.existing) == sorted(c.hash for c in sweep)
    union = {c.hash for sweep in sweeps for c in sweep}
    added = Counter(c.hash for result in results for c in result.added)
    assert set(added) == union and set(added.values()) == {1}
    assert sorted(runs["config_hash"]) == sorted(union)
