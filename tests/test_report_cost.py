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


def ramp_checkpoint(folder, pattern="2:4", zero_one_kept=False, **changes):
    """A checkpoint.pt of hidden 8x8 networks with weights falling along each row (module docstring); policy_delay 2.
    `zero_one_kept` sets one kept weight of the actor's middle layer to exactly 0 (a run with one fewer nonzero)."""
    config = RunConfig(env="Hopper-v5", pattern=Pattern.parse(pattern), seed=0, hidden=(8, 8), batch_size=BATCH,
                       policy_delay=2, **changes)
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
    return ckpt.save_public(folder, networks, config, 7, ckpt.owner_of(config)), config


def runs_of(*checkpoints):
    """A registry-like runs frame: one run per (path or None, config)."""
    return pd.DataFrame({
        "run_id": range(1, len(checkpoints) + 1), "env": "Hopper-v5",
        "pattern": [str(config.pattern) for _, config in checkpoints],
        "config": [config.to_json() for _, config in checkpoints],
        "checkpoint": [None if path is None else str(path) for path, _ in checkpoints],
    })


def costs_of(tmp_path, pattern="2:4", **changes) -> pd.Series:
    row = run_costs(runs_of(ramp_checkpoint(tmp_path / "run", pattern, **changes))).iloc[0]
    assert row["checkpoint_found"]
    return row


def test_nonzero_counts_equal_a_direct_count_from_a_trained_checkpoint(tmp_path):
    agent = make_agent("2:4", hidden=(8, 8), batch_size=8)
    for batch, noise in batches(agent, 4):
        agent.update(batch, noise)
    path = ckpt.save_public(tmp_path, agent.forward_state_dicts(), agent.config, 4, ckpt.owner_of(agent.config))
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


def test_missing_or_unreadable_checkpoints_give_missing_figures(tmp_path, monkeypatch):
    path, config = ramp_checkpoint(tmp_path / "run")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    monkeypatch.chdir(tmp_path)
    runs = runs_of((path, config), (None, config), (tmp_path / "gone" / ckpt.CHECKPOINT, config), (corrupt, config),
                   (tmp_path, config), ("run/checkpoint.pt", config))
    costs = run_costs(runs)
    assert costs["checkpoint_found"].tolist() == [True, False, False, False, False, True]
    assert costs.loc[1:4, FIGURES].isna().all().all()
    assert costs.loc[5, "action_macs_sparse"] == 92  # a relative path, from the current folder
    assert run_costs(runs.iloc[5:], root=tmp_path / "gone")["checkpoint_found"].tolist() == [False]
    assert costs["run_id"].tolist() == runs["run_id"].tolist()


def test_cost_cells_average_counts_and_take_ratios_of_the_means(tmp_path):
    """Two 2:4 seeds (one with a nonzero fewer) and a missing one: the cell averages the counts of the two found
    and divides the means (176 / 91.5), not the mean of each run's ratio."""
    full = ramp_checkpoint(tmp_path / "a")
    fewer = ramp_checkpoint(tmp_path / "b", zero_one_kept=True)
    dense = ramp_checkpoint(tmp_path / "d", "dense")
    runs = runs_of(full, fewer, (None, full[1]), dense)
    cells = cost_cells(run_costs(runs), run_variants(runs))
    assert cells["label"].tolist() == ["dense", "2:4 (50%)"]
    sparse = cells.iloc[1]
    assert (sparse["n_runs"], sparse["n_checkpoints"]) == (3, 2)
    assert sparse["action_macs_sparse"] == 91.5
    assert sparse["action_speedup"] == 176 / 91.5
    assert cells.iloc[0]["update_speedup"] == 1.0
