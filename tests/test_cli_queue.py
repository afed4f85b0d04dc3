"""`rnm queue` refuses at queue time whatever can be known then (issue 10, item 5): one line, exit 2, and nothing
written, neither to an existing registry nor a new file.

One case runs the installed console script; the others call the same entry point (`rnm_cli.main.main`) in this
process, so that each costs its checks and not an import of torch.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

import rnmtd3.resources as resources
from rnmtd3.registry import open_registry
from rnmtd3.sweep import MAX_RUNS

from helpers_registry import assert_usage_error, rnm_here, rnm_many, snapshot, tiny_config

QUEUE = ["queue", "--envs", "Hopper", "--patterns", "2:4", "--seeds", "1", "--no-baseline"]
INT32_MAX = 2**31 - 1


@pytest.fixture
def folders(tmp_path):
    """An existing registry (one queued run) in one folder, and an empty folder where a new one would go."""
    existing, fresh = tmp_path / "existing", tmp_path / "fresh"
    existing.mkdir()
    fresh.mkdir()
    registry = open_registry(existing / "rnm.db")
    registry.enqueue([tiny_config()])
    registry.close()
    return existing, fresh


def assert_refused(args, folders, monkeypatch, capsys, *needles) -> str:
    """Refused with one line naming `needles`; the existing registry byte for byte the same, no new file."""
    existing, fresh = folders
    before = snapshot(existing)
    lines = []
    for db in (existing / "rnm.db", fresh / "new.db"):
        code, out, err = rnm_here([*args, "--db", db], monkeypatch, capsys)
        assert code == 2, (code, out, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(needle.lower() in err.lower() for needle in needles), err
        lines.append(err.strip())
    assert snapshot(existing) == before
    assert list(fresh.iterdir()) == []
    return lines[0]


@pytest.mark.slow
def test_a_short_discrete_env_name_is_refused_like_its_full_id(folders):
    existing, fresh = folders
    before = snapshot(existing)
    commands = [[*QUEUE[:2], "CartPole", *QUEUE[3:], "--db", folder / "rnm.db"] for folder in (existing, fresh)]
    for result in rnm_many(commands, existing):
        assert_usage_error(result, "CartPole-v1", "discrete action space")
    assert snapshot(existing) == before
    assert list(fresh.iterdir()) == []


REFUSALS = {
    "batch larger than buffer_size": (["--set", "batch_size=512", "--set", "buffer_size=256"],
                                      ["batch_size=512", "replay capacity"]),
    "batch larger than steps": (["--steps", "100"], ["batch_size=256", "replay capacity", "= 100"]),
    "steps 1e12": (["--steps", "1e12"], ["steps=1000000000000", f"at most {INT32_MAX}"]),
    "steps past int32": (["--steps", str(INT32_MAX + 1)], ["steps=", f"at most {INT32_MAX}"]),
    "eval_interval past int32": (["--set", "eval_interval=3e9"], ["eval_interval=3000000000", f"at most {INT32_MAX}"]),
    "max-attempts past int32": (["--max-attempts", "3000000000"], ["--max-attempts", str(INT32_MAX)]),
    "networks larger than any machine": (["--set", "hidden=100000x100000"], ["hidden=100000x100000", "GiB",
                                                                             "lower hidden"]),
    "seeds beyond the sweep cap": (["--seeds", str(MAX_RUNS + 1)], [f"{MAX_RUNS + 1:,} runs", f"{MAX_RUNS:,}"]),
    "set lists beyond the sweep cap": (["--seeds", "1000", "--set", f"lr={','.join(f'{i}e-5' for i in range(1, 102))}"],
                                       ["101,000 runs"]),
    "hidden=256,256 (one layer, twice)": (["--set", "hidden=256,256"], ["hidden=256,256", "256 twice",
                                                                       "hidden=256x256"]),
    "hidden=64,128,64": (["--set", "hidden=64,128,64"], ["64 twice", "hidden=64x128x64"]),
    "hidden=64x64,64x64": (["--set", "hidden=64x64,64x64"], ["64x64 twice"]),
    "lr=1e-3,0.001": (["--set", "lr=1e-3,0.001"], ["lr=1e-3,0.001", "0.001 twice"]),
    "sparse_io=false, one hidden layer": (["--set", "sparse_io=false", "--set", "hidden=256"],
                                          ["sparse_io=false", "one hidden layer"]),
    "unstructured:0": (["--patterns", "unstructured:0"], ["unstructured:0", "0 < S < 1"]),
    "unstructured:1": (["--patterns", "2:4,unstructured:1"], ["unstructured:1", "0 < S < 1"]),
    "unstructured:x": (["--patterns", "unstructured:x"], ["unstructured:x", "0 < S < 1"]),
    "rigl with ste": (["--set", "mask_rule=rigl", "--set", "grad_mode=ste"], ["mask_rule=rigl", "grad_mode=masked"]),
    "set with srste, in a sweep": (["--set", "mask_rule=magnitude,set", "--set", "grad_mode=srste"],
                                   ["mask_rule=set", "grad_mode=masked"]),
    "drop_fraction=0": (["--set", "drop_fraction=0"], ["drop_fraction=0", "(0, 1]"]),
    "drop_fraction=1.5": (["--set", "mask_rule=set", "--set", "drop_fraction=1.5"], ["drop_fraction=1.5", "(0, 1]"]),
}


@pytest.mark.parametrize("change, needles", REFUSALS.values(), ids=REFUSALS.keys())
def test_what_cannot_run_is_refused_at_queue_time(change, needles, folders, monkeypatch, capsys):
    assert_refused([*QUEUE, *change], folders, monkeypatch, capsys, *needles)


def test_a_run_larger_than_the_machine_is_refused_saying_which_buffer_size_fits(folders, monkeypatch, capsys):
    monkeypatch.setattr(resources, "total_memory", lambda: 4 * resources.GIB)
    line = assert_refused([*QUEUE, "--envs", "Humanoid"], folders, monkeypatch, capsys,
                          "Humanoid-v5", "buffer_size=1000000", "this machine has 4.0 GiB")
    fits = int(line.split("buffer_size=")[-1].split()[0])
    assert 0.6e6 < fits < 1e6  # two copies of 2.9 GB do not fit in 4 GiB, two of 1.9 do
    existing, _ = folders
    code, _, err = rnm_here([*QUEUE, "--envs", "Humanoid", "--set", f"buffer_size={fits}", "--dry-run", "--db",
                             existing / "rnm.db"], monkeypatch, capsys)
    assert code == 0, err
    assert_refused([*QUEUE, "--envs", "Humanoid", "--set", f"buffer_size={fits + 1}"], folders, monkeypatch, capsys,
                   "4.0 GiB")


def test_steps_take_the_same_notation_as_set(folders, monkeypatch, capsys):
    existing, _ = folders
    code, _, err = rnm_here([*QUEUE, "--steps", "1e5", "--db", existing / "rnm.db"], monkeypatch, capsys)
    assert code == 0, err
    registry = open_registry(existing / "rnm.db", create=False)
    runs = registry.runs_frame()
    registry.close()
    assert sorted(runs["steps_total"]) == [400, 100_000]


def queued(db) -> pd.DataFrame:
    """The runs of `db` with their pattern, seed and the mask keys of their stored config."""
    with open_registry(db, create=False) as registry:
        runs = registry.runs_frame()
    configs = [json.loads(text) for text in runs["config"]]
    return runs[["pattern", "seed"]].assign(mask_rule=[c["mask_rule"] for c in configs],
                                            drop_fraction=[c["drop_fraction"] for c in configs])


def test_unstructured_patterns_queue_beside_n_m_with_one_dense_baseline(tmp_path, monkeypatch, capsys):
    """Issue 11's sweep: N:M and unstructured side by side, one dense baseline; the same sparsity written twice
    (0.5, 0.50) is one pattern, and queueing it all again adds nothing."""
    args = ["queue", "--envs", "Hopper", "--patterns", "2:4,1:4,unstructured:0.5,unstructured:0.75,unstructured:0.50",
            "--seeds", "2", "--steps", "1000", "--db", tmp_path / "rnm.db"]
    code, _, err = rnm_here(args, monkeypatch, capsys)
    assert code == 0, err
    runs = queued(tmp_path / "rnm.db")
    assert Counter(runs["pattern"]) == {"dense": 2, "2:4": 2, "1:4": 2, "unstructured:0.5": 2, "unstructured:0.75": 2}
    assert set(runs["seed"]) == {0, 1}
    code, _, err = rnm_here(args, monkeypatch, capsys)
    assert code == 0 and "added 0 run(s)" in err, err
    assert len(queued(tmp_path / "rnm.db")) == 10


def test_a_mask_rule_sweep_queues_drop_fraction_only_where_it_means_something(tmp_path, monkeypatch, capsys):
    """magnitude drops nothing by fraction: its runs of drop_fraction 0.1 and 0.3 are one run (at the default),
    and a later magnitude run at any drop_fraction is that run; rigl keeps one run per drop_fraction; 1 is allowed."""
    db = tmp_path / "rnm.db"
    sweep = [*QUEUE, "--steps", "1000", "--set", "mask_rule=magnitude,rigl", "--set", "drop_fraction=0.1,0.3",
             "--db", db]
    code, _, err = rnm_here(sweep, monkeypatch, capsys)
    assert code == 0, err
    runs = queued(db)
    assert sorted(zip(runs["mask_rule"], runs["drop_fraction"])) == [("magnitude", 0.3), ("rigl", 0.1), ("rigl", 0.3)]
    again = [*QUEUE, "--steps", "1000", "--set", "drop_fraction=0.7,1", "--db", db]
    code, _, err = rnm_here(again, monkeypatch, capsys)
    assert code == 0 and "added 0 run(s)" in err and "1 already there" in err, err
    code, _, err = rnm_here([*again[:-4], "--set", "mask_rule=set", *again[-4:]], monkeypatch, capsys)
    assert code == 0 and "added 2 run(s)" in err, err


def test_rnm_queue_stores_the_longest_patterns_on_postgresql(pg_url, monkeypatch, capsys):
    """PostgreSQL enforces runs.pattern's length (unstructured:0.875 is 18 characters); status shows both labels."""
    code, _, err = rnm_here([*QUEUE, "--patterns", "unstructured:0.875,unstructured:0.96875", "--db", pg_url],
                            monkeypatch, capsys)
    assert code == 0, err
    assert sorted(queued(pg_url)["pattern"]) == ["unstructured:0.875", "unstructured:0.96875"]
    code, out, err = rnm_here(["status", "--db", pg_url], monkeypatch, capsys)
    assert code == 0 and "87.5%" in out and "96.875%" in out, out + err


def test_dry_run_names_the_values_that_differ_between_the_runs_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """A sweep can be checked before it runs: each row is a method with the values that set it apart, and the
    dense baseline, which mask_interval does not touch, is one row."""
    db = tmp_path / "rnm.db"
    code, out, err = rnm_here(["queue", "--envs", "Hopper", "--patterns", "2:4", "--seeds", "2", "--steps", "1000",
                               "--set", "mask_interval=1000,10000", "--dry-run", "--db", db], monkeypatch, capsys)
    assert code == 0, err
    rows = [" ".join(line.strip("│ ").split()) for line in out.splitlines() if "Hopper-v5" in line]
    assert rows == ["Hopper-v5 │ dense │ 2 │ 0", "Hopper-v5 │ 2:4 (50%), mask_interval=1000 │ 2 │ 0",
                    "Hopper-v5 │ 2:4 (50%), mask_interval=10000 │ 2 │ 0"]
    assert "would add 6 run(s)" in err and not db.exists()


@pytest.mark.parametrize("sets, warned", [
    (["srste_decay=0.1,0.2"], "srste_decay acts only with grad_mode=srste: in 2 of the 2 sparse run(s)"),
    (["drop_fraction=0.1,0.5"], "drop_fraction acts only with mask_rule=set or rigl: in 1 of the 1 sparse run(s)"),
    (["drop_fraction=0.1,0.5", "mask_rule=rigl"], None),
    (["srste_decay=0.1,0.2", "grad_mode=srste"], None),
])
def test_a_sweep_over_a_key_that_cannot_act_is_named_before_it_runs(sets, warned, tmp_path, monkeypatch, capsys):
    args = ["queue", "--envs", "Hopper", "--patterns", "2:4", "--seeds", "1", "--steps", "1000", "--dry-run",
            "--db", tmp_path / "rnm.db"]
    for item in sets:
        args += ["--set", item]
    code, _, err = rnm_here(args, monkeypatch, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("rnm: warning:") and "start_steps" not in line]
    assert (warnings == []) if warned is None else (len(warnings) == 1 and warned in warnings[0]), err
