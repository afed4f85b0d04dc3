"""The cost table (report.cost): counts from real checkpoint files, MACs and bytes against hand computations.

The hand computations use Hopper's dims (11 observations, 3 actions) and hidden 8x8, with weights that fall along
each row (1, 1/2, 1/3, ...), so every N:M group keeps its first N columns and each count is known in advance:
- actor 11 -> 8 -> 8 -> 3: weights 88 + 64 + 24 = 176, biases 8 + 8 + 3 = 19; at 2:4 the rows of 11 split into
  groups of 4, 4, 3 that keep 2 each (6 of 11), so nonzeros 8*6 + 8*4 + 3*4 = 48 + 32 + 12 = 92;
- critic 14 -> 8 -> 8 -> 1: weights 112 + 64 + 8 = 184; rows of 14 are groups of 4, 4, 4, 2 keeping 8, so nonzeros
  64 + 32 + 4 = 100; of the action's columns 11, 12, 13, column 11 is the last of its group (pruned) and 12, 13 make
  the trailing group of 2 (both kept): 8 * 2 = 16 nonzeros, against 8 * 3 = 24 weights.
"""

import math

import pandas as pd
import pytest
import torch
from test_td3 import batches, linears, make_agent

from rnmtd3 import checkpoint as ckpt
from rnmtd3.config import RunConfig
from rnmtd3.networks import Actor, Critic
from rnmtd3.patterns import Pattern
from rnmtd3.report.cost import FIGURES, cost_cells, run_costs
from rnmtd3.sparsity import SparseParams
from rnmtd3.td3 import NETWORKS
from rnmtd3.variants import run_variants

OBS, ACT = 11, 3
BATCH = 4


def ramp_config(pattern="2:4", **changes) -> RunConfig:
    """Hopper with hidden 8x8 (module docstring), batch_size 4 and policy_delay 2, seed 0, unless `changes` say."""
    keys = {"seed": 0, "hidden": (8, 8), "batch_size": BATCH, "policy_delay": 2} | changes
    return RunConfig(env="Hopper-v5", pattern=Pattern.parse(pattern), **keys)


def ramp_checkpoint(folder, config, run_id=1, database_id="db", zero_one_kept=False):
    """A checkpoint.pt of `config`'s networks with weights falling along each row (module docstring), as the worker
    of run `run_id` of database `database_id` writes it: (its path, `config`). `zero_one_kept` sets one kept weight
    of the actor's middle layer to exactly 0 (a run with one fewer nonzero)."""
    networks = {}
    for name in NETWORKS:
        module = (Actor(OBS, ACT, config.hidden, -torch.ones(ACT), torch.ones(ACT)) if "actor" in name
                  else Critic(OBS, ACT, config.hidden))
        with torch.no_grad():
            for layer in linears(module):
                layer.weight.copy_(1.0 / torch.arange(1, layer.in_features + 1).expand_as(layer.weight))
                layer.bias.fill_(0.1)
        SparseParams(module, config.pattern, config.sparse_io)
        if zero_one_kept and name == "actor":
            with torch.no_grad():
                module.net[2].weight[0, 0] = 0.0
        networks[name] = module.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    return ckpt.save_public(folder, networks, config, 7, ckpt.owner_of(config, database_id, run_id)), config


def runs_of(*checkpoints, database_id=None):
    """A registry-like runs frame: run i + 1 per (path or None, config) i, of database `database_id` where given."""
    runs = pd.DataFrame({
        "run_id": range(1, len(checkpoints) + 1), "env": "Hopper-v5",
        "pattern": [str(config.pattern) for _, config in checkpoints],
        "config": [config.to_json() for _, config in checkpoints],
        "config_hash": [config.hash for _, config in checkpoints],
        "checkpoint": [None if path is None else str(path) for path, _ in checkpoints],
    })
    return runs if database_id is None else runs.assign(database_id=database_id)


def costs_of(tmp_path, pattern="2:4", **changes) -> pd.Series:
    row = run_costs(runs_of(ramp_checkpoint(tmp_path / "run", ramp_config(pattern, **changes)))).iloc[0]
    assert row["checkpoint_found"] and pd.isna(row["checkpoint_problem"])
    return row


def test_nonzero_counts_equal_a_direct_count_from_a_trained_checkpoint(tmp_path):
    agent = make_agent("2:4", hidden=(8, 8), batch_size=8)
    for batch, noise in batches(agent, 4):
        agent.update(batch, noise)
    path = ckpt.save_public(tmp_path, agent.forward_state_dicts(), agent.config, 4,
                            ckpt.owner_of(agent.config, "db", 1))
    row = run_costs(runs_of((path, agent.config))).iloc[0]

    saved = torch.load(path, map_location="cpu", weights_only=True)
    for network, column in (("actor", "actor"), ("critic1", "critic")):
        weights = [t for key, t in saved[network].items() if key.endswith("weight")]
        assert row[f"{column}_nonzeros"] == sum(int(w.count_nonzero()) for w in weights)
        assert row[f"{column}_weights"] == sum(w.numel() for w in weights)
        assert row[f"{column}_density"] == row[f"{column}_nonzeros"] / row[f"{column}_weights"]
    assert (row["actor_nonzeros"], row["critic_nonzeros"]) == (92, 100)  # the pattern's budget, met exactly
    assert row["checkpoint_step"] == 4


def test_macs_equal_a_hand_computation_at_2_4(tmp_path):
    row = costs_of(tmp_path)
    assert (row["action_macs_dense"], row["action_macs_sparse"]) == (176, 92)
    # critic step: forward of actor_target + 4 critics, backward of 2 critics (weight grads + input grads of
    # layers 2 and 3: 64 + 8 dense, 32 + 4 sparse)
    critic_dense = 176 + 4 * 184 + 2 * (184 + 64 + 8)
    critic_sparse = 92 + 4 * 100 + 2 * (100 + 32 + 4)
    # actor step: forward of actor and critic1; critic1's input grads (layers 2, 3 and the action's columns of
    # layer 1); actor's weight grads and input grads of layers 2 and 3 (64 + 24 dense, 32 + 12 sparse)
    actor_dense = 176 + 184 + (64 + 8 + 24) + (176 + 64 + 24)
    actor_sparse = 92 + 100 + (32 + 4 + 16) + (92 + 32 + 12)
    assert (critic_dense, critic_sparse, actor_dense, actor_sparse) == (1424, 764, 720, 380)
    assert row["update_macs_dense"] == BATCH * (critic_dense + actor_dense / 2) == 7136
    assert row["update_macs_sparse"] == BATCH * (critic_sparse + actor_sparse / 2) == 3816
    assert row["update_speedup"] == pytest.approx(7136 / 3816)
    assert row["action_speedup"] == pytest.approx(176 / 92)


@pytest.mark.parametrize("grad_mode", ["ste", "srste"])
def test_straight_through_weight_gradients_are_dense(tmp_path, grad_mode):
    """Under ste and srste every latent weight gets a gradient: the weight-gradient passes of the two critics
    (100 -> 184 each) and of the actor (92 -> 176, half the time) are dense; all else is as under masked."""
    row = costs_of(tmp_path, grad_mode=grad_mode)
    assert row["update_macs_sparse"] == BATCH * (764 + 2 * 84 + (380 + 84) / 2) == 4656
    assert row["update_macs_dense"] == 7136


def test_actor_bytes_equal_a_hand_computation_at_2_4(tmp_path):
    row = costs_of(tmp_path)
    assert row["actor_bytes_dense"] == 4 * (176 + 19) == 780
    # fp32 values of the kept slots, 2 index bits each (whole bytes per layer), fp32 biases
    index = math.ceil(48 * 2 / 8) + math.ceil(32 * 2 / 8) + math.ceil(12 * 2 / 8)
    assert row["actor_bytes_compressed"] == 4 * 92 + index + 4 * 19 == 467
    assert row["actor_compression"] == pytest.approx(780 / 467)


def test_trailing_group_index_bits_at_1_8(tmp_path):
    """1:8 keeps 1 of each row's 8 + 3 inputs (2 of 11), 1 of 8 and 1 of 8: 16 + 8 + 3 = 27 slots of 3 index bits."""
    row = costs_of(tmp_path, "1:8")
    assert row["actor_nonzeros"] == 27
    index = math.ceil(16 * 3 / 8) + math.ceil(8 * 3 / 8) + math.ceil(3 * 3 / 8)
    assert row["actor_bytes_compressed"] == 4 * 27 + index + 4 * 19


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_unstructured_actor_is_stored_as_csr(tmp_path):
    """unstructured:0.75 keeps round(0.25 * weights) per layer: 22, 16 and 6; CSR adds an int32 column index per
    value and rows + 1 int32 row pointers, which torch's own CSR tensors of the saved weights also hold."""
    row = costs_of(tmp_path, "unstructured:0.75")
    csr = (8 * 22 + 4 * 9) + (8 * 16 + 4 * 9) + (8 * 6 + 4 * 4)
    assert row["actor_bytes_compressed"] == csr + 4 * 19 == 516
    saved = torch.load(tmp_path / "run" / ckpt.CHECKPOINT, weights_only=True)["actor"]
    stored = 0
    for key in ("net.0.weight", "net.2.weight", "net.4.weight"):
        matrix = saved[key].to_sparse_csr()
        stored += sum(4 * t.numel() for t in (matrix.values(), matrix.col_indices(), matrix.crow_indices()))
    assert stored == csr
    assert row["actor_nonzeros"] == 44


def test_sparse_io_false_keeps_first_and_last_layer_dense(tmp_path):
    row = costs_of(tmp_path, sparse_io=False)
    assert row["action_macs_sparse"] == 88 + 32 + 24
    assert row["actor_density"] == row["critic_density"] == 0.5  # the middle layer only: 32 of 64
    assert row["actor_bytes_compressed"] == 4 * 88 + (4 * 32 + 8) + 4 * 24 + 4 * 19


def test_dense_run_costs_what_it_would_dense(tmp_path):
    row = costs_of(tmp_path, "dense")
    assert row["action_macs_sparse"] == row["action_macs_dense"] == 176
    assert row["update_macs_sparse"] == row["update_macs_dense"] == 7136
    assert row["actor_bytes_compressed"] == row["actor_bytes_dense"] == 780
    assert row["update_speedup"] == row["action_speedup"] == row["actor_compression"] == 1.0
    assert row["actor_density"] == row["critic_density"] == 1.0


def tampered(path, folder, **entries):
    """A copy of the checkpoint.pt at `path` in `folder`, with `entries` in place of its own (None: without it)."""
    data = torch.load(path, weights_only=True)
    for key, value in entries.items():
        data.pop(key) if value is None else data.update({key: value})
    folder.mkdir(parents=True)
    torch.save(data, folder / ckpt.CHECKPOINT)
    return folder / ckpt.CHECKPOINT


def test_missing_or_unreadable_checkpoints_give_missing_figures(tmp_path, monkeypatch):
    path, config = ramp_checkpoint(tmp_path / "run", ramp_config())
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    monkeypatch.chdir(tmp_path)
    runs = runs_of(("run/checkpoint.pt", config), (None, config), (tmp_path / "gone" / ckpt.CHECKPOINT, config),
                   (corrupt, config), (tmp_path, config), (listed, config),
                   (tampered(path, tmp_path / "no-actor", actor=None), config)).assign(run_id=1)
    costs = run_costs(runs)
    assert costs["checkpoint_found"].tolist() == [True] + [False] * 6
    assert costs["checkpoint_problem"].tolist() == [pd.NA] + ["missing"] * 2 + ["unreadable"] * 4
    assert costs.loc[1:, FIGURES].isna().all().all()
    assert costs.loc[0, "action_macs_sparse"] == 92  # a relative path, from the current folder
    missing = run_costs(runs.iloc[:1], root=tmp_path / "gone")
    assert missing["checkpoint_found"].tolist() == [False] and missing["checkpoint_problem"].tolist() == ["missing"]
    assert costs["run_id"].tolist() == runs["run_id"].tolist()


def test_another_runs_checkpoint_does_not_count(tmp_path):
    """A run's checkpoint column can name another run's file (a copied path, a reused folder): run 3 names the dense
    run 2's, run 4 names run 1's (the same layout, another seed), run 5's file is run 5 of another database, run 6's
    is of another shape, run 7's a foreground run's. Counted, their figures would fill the 2:4 cell under its
    name; none counts, each with its reason, and the cell averages run 1 alone."""
    seeds = {k: ramp_config(seed=k) for k in (1, 3, 4, 5, 6, 7)}
    own, _ = ramp_checkpoint(tmp_path / "1", seeds[1])
    dense = ramp_checkpoint(tmp_path / "2", ramp_config("dense"), run_id=2)
    other_database, _ = ramp_checkpoint(tmp_path / "5", seeds[5], run_id=5, database_id="other")
    wider, _ = ramp_checkpoint(tmp_path / "6", ramp_config(seed=6, hidden=(16, 16)), run_id=6)
    foreground = tampered(own, tmp_path / "7", config=seeds[7].to_dict(), owner=ckpt.owner_of(seeds[7]))
    runs = runs_of((own, seeds[1]), dense, (dense[0], seeds[3]), (own, seeds[4]), (other_database, seeds[5]),
                   (wider, seeds[6]), (foreground, seeds[7]), database_id="db")
    costs = run_costs(runs)
    assert costs["checkpoint_found"].tolist() == [True, True, False, False, False, False, False]
    assert costs["checkpoint_problem"].tolist() == [pd.NA, pd.NA] + ["another run's"] * 5
    assert costs.loc[2:, FIGURES].isna().all().all()
    cells = cost_cells(costs, run_variants(runs)).set_index("label")
    assert cells.loc["2:4 (50%)", ["n_runs", "n_checkpoints"]].tolist() == [6, 1]
    assert cells.loc["2:4 (50%)", "actor_nonzeros"] == 92
    # Where the frame does not name its database, run 5's file is its own by run id and config
    unnamed = run_costs(runs.drop(columns="database_id"))
    assert unnamed["checkpoint_found"].tolist() == [True, True, False, False, True, False, False]


def test_a_checkpoint_whose_config_is_not_the_runs_does_not_count(tmp_path):
    """The figures come from the checkpoint's own config, so one tampered there (a batch_size of -5 would give
    negative MACs, a policy_delay of 0 a division by zero) or of another run's hash is not counted, never raised;
    nor are tensors of another width than the config's, however well the rest of the file reads."""
    path, config = ramp_checkpoint(tmp_path / "run", ramp_config())
    saved = config.to_dict()
    configs = {"negative": saved | {"batch_size": -5}, "zero": saved | {"policy_delay": 0},
               "another": saved | {"batch_size": 2}, "unknown": saved | {"batch": 4}, "text": "batch_size=4",
               "gone": None}
    files = [tampered(path, tmp_path / name, config=value) for name, value in configs.items()]
    wider, _ = ramp_checkpoint(tmp_path / "wide", ramp_config(hidden=(16, 16)))
    files.append(tampered(wider, tmp_path / "wide-tampered", config=saved, owner=ckpt.owner_of(config, "db", 1)))
    costs = run_costs(runs_of(*((file, config) for file in files)).assign(run_id=1))
    assert costs["checkpoint_problem"].tolist() == ["invalid config"] * 6 + ["unreadable"]
    assert not costs["checkpoint_found"].any() and costs[FIGURES].isna().all().all()


def test_cost_cells_average_counts_and_take_ratios_of_the_means(tmp_path):
    """Two 2:4 seeds (one with a nonzero fewer) and a missing one: the cell averages the counts of the two found
    and divides the means (176 / 91.5), not the mean of each run's ratio."""
    full = ramp_checkpoint(tmp_path / "a", ramp_config(seed=0))
    fewer = ramp_checkpoint(tmp_path / "b", ramp_config(seed=1), run_id=2, zero_one_kept=True)
    dense = ramp_checkpoint(tmp_path / "d", ramp_config("dense"), run_id=4)
    runs = runs_of(full, fewer, (None, ramp_config(seed=2)), dense)
    cells = cost_cells(run_costs(runs), run_variants(runs))
    assert cells["label"].tolist() == ["dense", "2:4 (50%)"]
    sparse = cells.iloc[1]
    assert (sparse["n_runs"], sparse["n_checkpoints"]) == (3, 2)
    assert sparse["action_macs_sparse"] == 91.5
    assert sparse["action_speedup"] == 176 / 91.5
    assert cells.iloc[0]["update_speedup"] == 1.0
