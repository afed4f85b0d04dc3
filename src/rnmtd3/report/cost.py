"""The cost table: what a run's sparsity buys, measured from its checkpoint.pt (the six forward-pass state_dicts,
pruned entries exactly zero, and the run's config), as pure functions; tables render the frame and compute nothing.

Definitions, in one place so that the caption, the tables and the tests agree:
- a network's *weights* are the entries of its linear layers' weight matrices (biases excluded), its *nonzeros*
  those that are not exactly zero in the checkpoint; "the critic" is critic1 (critic2 and the targets have the
  same shapes and masks);
- a layer is *sparse* when the run's pattern is not dense and sparse_io is true or the layer is neither the
  network's first nor its last; other layers are dense;
- *density* is nonzeros / weights over a network's sparse layers (over all its layers for a dense run, as the
  trainer's density statistic);
- a *MAC* is one multiply-accumulate of a product with a weight matrix; biases, activations, the loss and the
  optimizer are not counted, and neither are the target networks' Polyak updates or the mask updates (every
  mask_interval steps, RigL's extra dense backward pass among them). Per sample, a layer's forward pass, its
  input-gradient pass and its weight-gradient pass each cost its weights, or its nonzeros for a sparse layer in
  the *sparse* count; under grad_mode ste and srste the pruned latent weights get a gradient too, so there the
  weight-gradient pass of a sparse layer costs its weights in both counts;
- *MACs of one action*: the actor's forward pass for one observation;
- *MACs of one update*: every pass of one TD3 update of a batch of batch_size, the actor's part counted
  1/policy_delay of the time. The critic part: forward passes of actor_target, critic1_target and critic2_target
  (the target), of critic1 and critic2, and the backward passes of critic1 and critic2 (weight gradients, and input
  gradients of all layers but the first). The actor part: forward passes of the actor and of critic1, critic1's
  input gradients (all layers but the first, and the first toward the action's columns only, as the gradient
  flows to the action and no further; no weight gradients, as only the actor's parameters are differentiated),
  and the actor's backward pass (weight gradients, input gradients of all layers but the first);
- the *speedup* is the dense count over the sparse count: what an accelerator that skips every zero could reach
  at most; 1.0 for a dense run;
- *bytes of the actor*: dense, 4 bytes (fp32) per weight and bias of its linear layers; compressed, a dense layer
  and every bias as dense, and each sparse layer as: for N:M, each group's kept slots (N, or min(N, r) for a
  trailing group of r < M weights) as fp32 values plus ceil(log2 M) bits of in-group index per value, rounded up to
  whole bytes per layer; for unstructured, CSR: an fp32 value and an int32 column index per nonzero, and rows + 1
  int32 row pointers. The *compression* is dense bytes over compressed bytes.

torch is imported only to read a checkpoint, so a report without the cost table does not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import RunConfig
from ..errors import RnmError
from ..patterns import Pattern
from ..variants import Variant, variant_order

FP32 = 4
INT32 = 4
COUNTS = ["actor_weights", "actor_nonzeros", "critic_weights", "critic_nonzeros", "action_macs_dense",
          "action_macs_sparse", "actor_bytes_dense", "actor_bytes_compressed"]
"""Whole numbers of each run (nullable integers, <NA> where the checkpoint is missing)."""
RATIOS = {"action_speedup": ("action_macs_dense", "action_macs_sparse"),
          "update_speedup": ("update_macs_dense", "update_macs_sparse"),
          "actor_compression": ("actor_bytes_dense", "actor_bytes_compressed")}
"""Each ratio as (numerator, denominator) columns, so that an average recomputes it from averaged counts."""
FIGURES = ["actor_weights", "actor_nonzeros", "actor_density", "critic_weights", "critic_nonzeros", "critic_density",
           "action_macs_dense", "action_macs_sparse", "action_speedup", "update_macs_dense", "update_macs_sparse",
           "update_speedup", "actor_bytes_dense", "actor_bytes_compressed", "actor_compression"]
LAYOUT_ERRORS = (LookupError, TypeError, ValueError, AttributeError, RuntimeError)
"""What the figures of a loaded checkpoint raise where its tensors are not the six networks of its config."""
MISSING, UNREADABLE, FOREIGN, INVALID_CONFIG = "missing", "unreadable", "another run's", "invalid config"
PROBLEMS = (MISSING, UNREADABLE, FOREIGN, INVALID_CONFIG)
"""Why a run's checkpoint does not count (run_costs' checkpoint_problem): no file named or none there; a file that
cannot be read as a checkpoint of six networks; one written by another run (run id, config hash or database); one
whose config is not a valid config of the run's hash."""


@dataclass(frozen=True)
class LayerCost:
    """One linear layer as the costs see it: its shape, its bias count, the nonzero weights of each input column
    (the actor update's gradient toward critic1's input stops at the action's columns), and whether it is sparse."""

    out_features: int
    in_features: int
    biases: int
    column_nonzeros: tuple[int, ...]
    sparse: bool

    @property
    def weights(self) -> int:
        return self.out_features * self.in_features

    @property
    def nonzeros(self) -> int:
        return sum(self.column_nonzeros)

    def macs(self, sparse: bool, first_column: int = 0) -> int:
        """Per-sample MACs of one product with this weight matrix restricted to the input columns from
        `first_column` on: its nonzeros there when `sparse` and the layer is sparse, else all its weights there."""
        if sparse and self.sparse:
            return sum(self.column_nonzeros[first_column:])
        return self.out_features * (self.in_features - first_column)


def network_costs(state_dict: Mapping[str, Any], pattern: Pattern, sparse_io: bool) -> list[LayerCost]:
    """The linear layers of one network's state_dict in forward order (each `<name>.weight` matrix with its
    `<name>.bias`; the actor's action_scale and action_bias buffers are no layer), with which of them are sparse by
    the rule of SparseParams."""
    names = [key[:-len("weight")] for key, value in state_dict.items() if key.endswith("weight") and value.dim() == 2]
    layers = []
    for i, name in enumerate(names):
        weight = state_dict[f"{name}weight"]
        sparse = not pattern.is_dense and (sparse_io or 0 < i < len(names) - 1)
        columns = tuple(int(n) for n in (weight != 0).sum(dim=0).tolist())
        layers.append(LayerCost(*weight.shape, state_dict[f"{name}bias"].numel(), columns, sparse))
    return layers


def forward_macs(layers: Sequence[LayerCost], sparse: bool) -> int:
    """Per-sample MACs of a network's forward pass."""
    return sum(layer.macs(sparse) for layer in layers)


def input_grad_macs(layers: Sequence[LayerCost], sparse: bool, first_column: int | None = None) -> int:
    """Per-sample MACs of the gradients toward each layer's input: all but the first layer's, whose input is the
    network's own and needs none unless the gradient flows on from its columns `first_column` onward."""
    first, *rest = layers
    inputs = 0 if first_column is None else first.macs(sparse, first_column)
    return inputs + sum(layer.macs(sparse) for layer in rest)


def weight_grad_macs(layers: Sequence[LayerCost], sparse: bool) -> int:
    """Per-sample MACs of the weight gradients (`sparse` false where every latent weight gets one: ste, srste)."""
    return sum(layer.macs(sparse) for layer in layers)


def update_macs(nets: Mapping[str, Sequence[LayerCost]], batch_size: int, policy_delay: int, sparse: bool,
                dense_weight_grads: bool) -> float:
    """MACs of one TD3 update (td3.TD3Agent.update): the critic step, and the actor step every policy_delay-th."""
    weight_sparse = sparse and not dense_weight_grads
    critic = sum(forward_macs(nets[name], sparse) for name in
                 ("actor_target", "critic1_target", "critic2_target", "critic1", "critic2"))
    critic += sum(weight_grad_macs(nets[name], weight_sparse) + input_grad_macs(nets[name], sparse)
                  for name in ("critic1", "critic2"))
    obs_dim = nets["actor"][0].in_features  # critic1's first columns are the observation, then the action
    actor = forward_macs(nets["actor"], sparse) + forward_macs(nets["critic1"], sparse)
    actor += input_grad_macs(nets["critic1"], sparse, first_column=obs_dim)
    actor += weight_grad_macs(nets["actor"], weight_sparse) + input_grad_macs(nets["actor"], sparse)
    return batch_size * (critic + actor / policy_delay)


def dense_bytes(layers: Sequence[LayerCost]) -> int:
    return FP32 * sum(layer.weights + layer.biases for layer in layers)


def compressed_bytes(layers: Sequence[LayerCost], pattern: Pattern) -> int:
    return sum(_layer_bytes(layer, pattern) for layer in layers)


def _layer_bytes(layer: LayerCost, pattern: Pattern) -> int:
    """A layer's stored size (module docstring); N:M stores its group budget, whatever the values in the slots."""
    biases = FP32 * layer.biases
    if not layer.sparse:
        return FP32 * layer.weights + biases
    if pattern.is_unstructured:
        return (FP32 + INT32) * layer.nonzeros + INT32 * (layer.out_features + 1) + biases
    kept = pattern.kept(layer.out_features, layer.in_features)
    index_bits = (pattern.m - 1).bit_length()  # ceil(log2 M), exactly
    return FP32 * kept + math.ceil(kept * index_bits / 8) + biases


def density(layers: Sequence[LayerCost]) -> float:
    """Over the sparse layers only, where the pattern acts (over all layers of a dense run, as SparseParams.density),
    so that a dense first and last layer (sparse_io=false) do not hide what the pattern keeps."""
    counted = [layer for layer in layers if layer.sparse] or list(layers)
    return sum(layer.nonzeros for layer in counted) / sum(layer.weights for layer in counted)


def checkpoint_costs(data: Mapping[str, Any], config: RunConfig) -> dict[str, Any]:
    """Every figure of one loaded checkpoint.pt (FIGURES, and checkpoint_step), of the run `config` whose tensors
    they are (its batch_size and policy_delay scale an update); ValueError where the tensors are not its networks."""
    nets = {name: network_costs(data[name], config.pattern, config.sparse_io) for name in
            ("actor", "critic1", "critic2", "actor_target", "critic1_target", "critic2_target")}
    check_layout(nets, config)
    actor, critic = nets["actor"], nets["critic1"]
    dense_grads = config.grad_mode != "masked"
    figures: dict[str, Any] = {
        "checkpoint_step": int(data["step"]),
        "actor_weights": sum(layer.weights for layer in actor),
        "actor_nonzeros": sum(layer.nonzeros for layer in actor),
        "actor_density": density(actor),
        "critic_weights": sum(layer.weights for layer in critic),
        "critic_nonzeros": sum(layer.nonzeros for layer in critic),
        "critic_density": density(critic),
        "action_macs_dense": forward_macs(actor, sparse=False),
        "action_macs_sparse": forward_macs(actor, sparse=True),
        "actor_bytes_dense": dense_bytes(actor),
        "actor_bytes_compressed": compressed_bytes(actor, config.pattern),
    }
    for kind, sparse in (("dense", False), ("sparse", True)):
        figures[f"update_macs_{kind}"] = update_macs(nets, config.batch_size, config.policy_delay, sparse, dense_grads)
    return figures | ratios(figures)


def check_layout(nets: Mapping[str, Sequence[LayerCost]], config: RunConfig) -> None:
    """ValueError unless the six networks are an actor and critics of `config`'s hidden widths for one pair of
    observation and action sizes (the actor's own), targets shaped as their networks: tensors of another shape
    (tampered, or of another layout) would give another network's counts under this run's name."""
    obs, act = nets["actor"][0].in_features, nets["actor"][-1].out_features
    widths = {"actor": (obs, *config.hidden, act), "critic": (obs + act, *config.hidden, 1)}
    for name, layers in nets.items():
        sizes = widths["actor" if "actor" in name else "critic"]
        expected = [(out, into, out) for into, out in zip(sizes, sizes[1:])]
        if [(layer.out_features, layer.in_features, layer.biases) for layer in layers] != expected:
            raise ValueError(f"{name} is not a network of hidden={config.hidden}")


def ratios(counts: Mapping[str, Any]) -> dict[str, float]:
    """Each RATIOS figure from its two counts (numbers of one run, or columns of averages)."""
    return {name: counts[top] / counts[bottom] for name, (top, bottom) in RATIOS.items()}


def checkpoint_path(value: Any, root: Path | None = None) -> Path | None:
    """The checkpoint.pt a runs frame's `checkpoint` cell names (None where the run has none): the registry holds
    the file's path as its worker wrote it, absolute from the CLI; a relative one (a worker started from Python with
    a relative folder) is taken from `root`, by default the current folder."""
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (root or Path.cwd()) / path


def run_costs(runs: pd.DataFrame, root: Path | None = None) -> pd.DataFrame:
    """One row per run of `runs` (the registry's runs frame: run_id, env, pattern, config_hash, checkpoint, and
    database_id where the caller knows it), in its order: run_id, env, pattern, checkpoint_found,
    checkpoint_problem (PROBLEMS, <NA> where found), checkpoint_step and FIGURES. A checkpoint counts only where it is
    the run's own (own_checkpoint); else checkpoint_found is false and the figures missing, never an error: the
    report still renders."""
    databases = runs["database_id"] if "database_id" in runs else [None] * len(runs)
    rows = []
    for run_id, config_hash, database_id, value in zip(runs["run_id"], runs["config_hash"], databases,
                                                       runs["checkpoint"]):
        found = own_checkpoint(checkpoint_path(value, root), owner_of_run(run_id, config_hash, database_id))
        rows.append({"checkpoint_problem": found} if isinstance(found, str) else {"checkpoint_found": True, **found})
    columns = ["checkpoint_found", "checkpoint_problem", "checkpoint_step", *FIGURES]
    figures = pd.DataFrame(rows, index=runs.index, columns=columns)
    figures["checkpoint_found"] = figures["checkpoint_found"].eq(True)
    figures = figures.astype({"checkpoint_problem": "string"})
    figures = figures.astype({column: "Int64" for column in ("checkpoint_step", *COUNTS)})
    figures = figures.astype({column: float for column in FIGURES if column not in COUNTS})
    return pd.concat([runs[["run_id", "env", "pattern"]], figures], axis=1).reset_index(drop=True)


def owner_of_run(run_id: Any, config_hash: Any, database_id: Any = None) -> dict[str, Any]:
    """The owner (checkpoint.owner_of) that a registry run's worker stamps on its files; the database only where
    it is known."""
    owner = {"run": int(run_id), "config": config_hash}
    return owner if database_id is None else owner | {"database": database_id}


def own_checkpoint(path: Path | None, owner: Mapping[str, Any]) -> dict[str, Any] | str:
    """The figures of the checkpoint.pt at `path` where it is the run's own: written for `owner` (its run id, config
    hash and, where given, database), its config a valid RunConfig of that hash, its tensors that config's networks;
    else the PROBLEMS reason it does not count. Another run's file (a copied path, a reused folder) would put its
    figures in this run's cell, and a tampered config would scale them at will."""
    from ..checkpoint import load, owned_by  # torch, only when a cost table is asked for

    if path is None:
        return MISSING
    try:
        data = load(path)
    except FileNotFoundError:
        return MISSING
    except (RnmError, OSError):
        return UNREADABLE
    if not isinstance(data, dict):
        return UNREADABLE
    if not owned_by(data, dict(owner)):
        return FOREIGN
    try:
        config = RunConfig.from_dict(data["config"])
    except Exception:  # noqa: BLE001 - whatever a tampered config raises, it is not the run's
        return INVALID_CONFIG
    if config.hash != owner["config"]:
        return INVALID_CONFIG
    try:
        return checkpoint_costs(data, config)
    except LAYOUT_ERRORS:
        return UNREADABLE


def cost_cells(costs: pd.DataFrame, variants: Sequence[Variant]) -> pd.DataFrame:
    """One row per env and variant (`variants` aligned with the rows of `costs`, as variants.run_variants gives
    them), in report order: env, variant, label, n_runs, n_checkpoints, and the mean of each figure over the runs
    with a checkpoint, each ratio recomputed from the mean counts (the ratio of means, not the mean of ratios)."""
    frame = costs.assign(variant=list(variants))
    counts = [column for column in FIGURES if column not in RATIOS]
    grouped = frame.groupby(["env", "variant"], sort=False)
    cells = grouped[counts].mean().astype(float).reset_index()
    cells.insert(2, "n_runs", grouped.size().to_numpy())
    cells.insert(3, "n_checkpoints", grouped["checkpoint_found"].sum().astype(int).to_numpy())
    cells = cells.assign(**ratios(cells))
    cells.insert(2, "label", [variant.label() for variant in cells["variant"]])
    rank = {variant: i for i, variant in enumerate(variant_order(cells["variant"]))}
    cells = cells.iloc[sorted(range(len(cells)), key=lambda i: (cells["env"].iat[i], rank[cells["variant"].iat[i]]))]
    return cells[["env", "variant", "label", "n_runs", "n_checkpoints", *FIGURES]].reset_index(drop=True)
