"""Mask rules (magnitude, SET, RigL) on every pattern (N:M, unstructured), sparse_init and measured density.

Each rule is checked against an independent numpy reference or a hand-built case whose answer is known, and through
the agent and the trainer on the real input widths: the invariant on all six networks and in the checkpoint, grown
weights from zero with fresh Adam moments, the cosine drop fraction and mask_end, and resume of a dynamic-rule run.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnmtd3 import checkpoint as ckpt
from rnmtd3.config import RunConfig
from rnmtd3.patterns import Pattern
from rnmtd3.sinks import MemorySink
from rnmtd3.sparsity import (RULES, Groups, LayerUpdate, MaskRule, SparseParams, drop_fraction_at, magnitude_mask,
                             satisfies)
from rnmtd3.td3 import NETWORKS, ONLINE, TD3Agent
from test_td3 import batches
from test_td3 import make_agent as td3_agent
from rnmtd3.trainer import train

PATTERNS = ["2:4", "1:4", "1:8", "unstructured:0.5", "unstructured:0.875"]
DYNAMIC = ["set", "rigl"]
# obs_dim, act_dim: the actor's first layer is obs_dim wide, the critics' obs_dim + act_dim, so Hopper-v5, Ant-v5
# and Humanoid-v5 give the real widths 11, 14, 105, 113 and 348.
DIMS = {"hopper": (11, 3), "ant": (105, 8), "humanoid": (348, 17)}


# -- independent references ----------------------------------------------------------------------------------
def budget(pattern: Pattern, out_features: int, in_features: int) -> np.ndarray:
    """What each group must keep, written from MISSION.md, not from Pattern.kept: per row and group of m,
    min(n, r) for N:M (r the group's real width); one group of round((1 - s) * out * in) for unstructured."""
    if pattern.is_unstructured:
        return np.array([max(1, round((1 - pattern.s) * out_features * in_features))])
    per_row = [min(pattern.n, in_features - start) for start in range(0, in_features, pattern.m)]
    return np.tile(per_row, out_features)


def group_ids(pattern: Pattern, shape: tuple[int, int]) -> np.ndarray:
    """The group of each weight, numbered row by row (unstructured: one group, the layer)."""
    out_features, in_features = shape
    if pattern.is_unstructured:
        return np.zeros(shape, dtype=int)
    groups_per_row = -(-in_features // pattern.m)
    return np.arange(out_features)[:, None] * groups_per_row + np.arange(in_features)[None, :] // pattern.m


def group_counts(values: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Nonzero (or True) entries of each group, in group_ids order."""
    ids = group_ids(pattern, values.shape)
    return np.bincount(ids.ravel(), weights=(values != 0).ravel(), minlength=ids.max() + 1).astype(int)


def reference_top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Keep the `keep` highest of a flat array, ties to the lowest index (rank = larger ones + equal ones before)."""
    flat = scores.ravel()
    ranks = np.array([(flat > v).sum() + (flat[:i] == v).sum() for i, v in enumerate(flat)])
    return (ranks < keep).reshape(scores.shape)


def reference_drop_and_grow(latent: np.ndarray, mask: np.ndarray, pattern: Pattern, fraction: float,
                            score: np.ndarray) -> np.ndarray:
    """Issue 11's drop and grow, with loops: drop the round(fraction * active) smallest |latent| active weights of the
    layer (ties to the lowest index), then each group grows as many as it lost, its not-kept weights (the ones just
    dropped included) with the highest score (ties to the lowest index)."""
    active = np.flatnonzero(mask.ravel())
    n_drop = round(fraction * len(active))
    dropped = sorted(active, key=lambda i: (abs(latent.ravel()[i]), i))[:n_drop]
    kept = mask.ravel().copy()
    kept[dropped] = False
    new = kept.copy()
    ids = group_ids(pattern, mask.shape).ravel()
    for group in np.unique(ids):
        members = np.flatnonzero(ids == group)
        lost = int(np.isin(members, dropped).sum())
        candidates = sorted((i for i in members if not kept[i]), key=lambda i: (-score.ravel()[i], i))
        new[candidates[:lost]] = True
    return new.reshape(mask.shape)


def rule_mask(rule: str, latent, mask, pattern: Pattern, fraction: float, dense_grad=None, generator=None):
    latent, mask = torch.as_tensor(latent), torch.as_tensor(mask)
    grad = None if dense_grad is None else torch.as_tensor(dense_grad)
    update = LayerUpdate(latent, mask, Groups.of(pattern, tuple(latent.shape)), fraction, grad, generator)
    return RULES[rule].new_mask(update)


# -- agents ---------------------------------------------------------------------------------------------------
def make_agent(pattern: str, dims=DIMS["hopper"], **changes) -> TD3Agent:
    """test_td3's agent, smaller, with a high lr and frequent mask updates so that masks move within a few steps."""
    return td3_agent(pattern, dims, **{"hidden": (32, 32), "lr": 1e-2, "mask_interval": 3, **changes})


def sparse_layers(module: nn.Module, sparse_io: bool = True) -> list[nn.Linear]:
    layers = [layer for layer in module.modules() if isinstance(layer, nn.Linear)]
    return layers if sparse_io else layers[1:-1]


def online_of(name: str) -> str:
    return name.removesuffix("_target")


def assert_invariant(agent: TD3Agent) -> None:
    """Every sparse layer of all six networks: within its pattern, forward = latent * mask (of the online network),
    and each group's mask holds exactly its budget."""
    pattern = agent.config.pattern
    for name in NETWORKS:
        sp, online = agent.sparse[name], agent.sparse[online_of(name)]
        layers = sparse_layers(getattr(agent, name), agent.config.sparse_io)
        assert len(layers) == len(sp.latent) == len(online.masks) == len(agent.config.hidden) + 1
        for k, (layer, latent, mask) in enumerate(zip(layers, sp.latent, online.masks)):
            weight = layer.weight.detach()
            assert satisfies(weight, pattern), (name, k)
            assert (group_counts(weight.numpy(), pattern) <= budget(pattern, *weight.shape)).all(), (name, k)
            assert torch.equal(weight, latent.detach() * mask), (name, k)
            np.testing.assert_array_equal(group_counts(mask.numpy(), pattern), budget(pattern, *weight.shape),
                                          err_msg=f"{name} layer {k}")


# -- the invariant through training, every pattern and rule, real widths --------------------------------------
@pytest.mark.parametrize("rule", ["magnitude", *DYNAMIC])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dims", DIMS.values(), ids=DIMS.keys())
def test_invariant_holds_on_six_networks_through_mask_updates(tmp_path, dims, pattern, rule):
    agent = make_agent(pattern, dims, mask_rule=rule)
    assert {linear.in_features for linear in (agent.actor.net[0], agent.critic1.net[0])} == {dims[0], sum(dims)}
    violations, forwards = [], set()

    def check(name):
        def hook(layer, inputs):
            forwards.add(name)
            if not satisfies(layer.weight, agent.config.pattern):
                violations.append(name)
        return hook

    for name in NETWORKS:
        for layer in sparse_layers(getattr(agent, name)):
            layer.register_forward_pre_hook(check(name))
    assert_invariant(agent)
    sad, mask_updates = 0.0, 0
    for batch, noise in batches(agent, 12):
        stats = agent.update(batch, noise)
        mask_updates += "sad_actor" in stats
        sad += sum(v for k, v in stats.items() if k.startswith("sad_"))
        assert_invariant(agent)
    assert not violations
    assert forwards == set(NETWORKS)
    assert mask_updates == 4 and sad > 0  # the masks did move
    # and the checkpoint of these networks passes its own check (the trainer's checkpoints: see the end of the file)
    path = ckpt.save_public(tmp_path, agent.forward_state_dicts(), agent.config, agent.gradient_steps,
                            ckpt.owner_of(agent.config))
    assert ckpt.check_sparsity(path) == {name: True for name in NETWORKS}


# -- magnitude ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.5, 0.875, 0.999])
@pytest.mark.parametrize("in_features", [11, 14, 105, 113, 348])
@pytest.mark.parametrize("levels", [None, 2], ids=["normal", "ties"])
def test_magnitude_on_unstructured_keeps_the_layers_top_weights(in_features, sparsity, levels):
    """Against brute force, ties to the lowest row-major index; `levels` draws weights from a few values (zeros and
    sign flips included) so that ties decide the mask."""
    rng = np.random.default_rng(in_features)
    shape = (7, in_features)
    if levels is None:
        latent = rng.standard_normal(shape).astype(np.float32)
    else:
        latent = rng.integers(-levels, levels + 1, size=shape).astype(np.float32)
    pattern = Pattern.unstructured(sparsity)
    keep = budget(pattern, *shape)[0]
    expected = reference_top(np.abs(latent), keep)
    assert expected.sum() == keep
    np.testing.assert_array_equal(magnitude_mask(torch.from_numpy(latent), pattern).numpy(), expected)
    # the rule sees the same, whatever the old mask and the drop fraction
    old = torch.from_numpy(rng.random(shape) < 0.5)
    np.testing.assert_array_equal(rule_mask("magnitude", latent, old, pattern, 0.3).numpy(), expected)


def test_magnitude_brings_pruned_weights_back_with_their_latent_values():
    agent = make_agent("unstructured:0.875", mask_interval=1000)
    for batch, noise in batches(agent, 6):
        agent.update(batch, noise)
    sp = agent.sparse["critic1"]
    target = agent.sparse["critic1_target"]
    old = [mask.clone() for mask in sp.masks]
    with torch.no_grad():  # let some pruned latents outgrow the active ones
        for latent, mask in zip(sp.latent, sp.masks):
            latent[~mask] *= 50.0
    latents = [latent.detach().clone() for latent in sp.latent]
    targets = [latent.detach().clone() for latent in target.latent]
    sq = [agent.critic_optimizer.state[latent]["exp_avg_sq"].clone() for latent in sp.latent]
    agent.update_masks()
    returned = 0
    for k, layer in enumerate(sparse_layers(agent.critic1)):
        grown = sp.masks[k] & ~old[k]
        returned += int(grown.sum())
        assert (latents[k][grown] != 0).all()
        assert torch.equal(layer.weight.detach()[grown], latents[k][grown])  # back with its latent value
        assert torch.equal(sp.latent[k].detach(), latents[k])
        assert torch.equal(target.latent[k], targets[k])
        assert torch.equal(agent.critic_optimizer.state[sp.latent[k]]["exp_avg_sq"], sq[k])
    assert returned > 0


# -- SET --------------------------------------------------------------------------------------------------------
def set_masks(pattern: str, seed: int, global_seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two SET updates of one layer stack, the generator seeded with `seed`; the global RNG, which SET must not use,
    seeded with `global_seed`. Returns the masks before and after."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(113, 32), nn.ReLU(), nn.Linear(32, 11))
    sp = SparseParams(module, Pattern.parse(pattern), sparse_io=True)
    before = [mask.clone() for mask in sp.masks]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(global_seed)
    for _ in range(2):
        sp.update_masks(None, RULES["set"], 0.3, None, generator)
    return before, [mask.clone() for mask in sp.masks]


@pytest.mark.parametrize("pattern", ["1:4", "unstructured:0.75"])
def test_set_regrows_the_same_weights_for_the_same_seed_and_others_for_another(pattern):
    before, first = set_masks(pattern, seed=1, global_seed=10)
    _, again = set_masks(pattern, seed=1, global_seed=20)
    _, other = set_masks(pattern, seed=2, global_seed=10)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert not all(torch.equal(a, b) for a, b in zip(first, before))
    for mask, old in zip(first, before):
        np.testing.assert_array_equal(group_counts(mask.numpy(), Pattern.parse(pattern)),
                                      group_counts(old.numpy(), Pattern.parse(pattern)))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_set_drops_the_smallest_active_weights_and_regrows_as_many_per_group(pattern):
    pattern = Pattern.parse(pattern)
    rng = np.random.default_rng(3)
    latent = rng.standard_normal((16, 113)).astype(np.float32)
    mask = magnitude_mask(torch.from_numpy(rng.standard_normal(latent.shape).astype(np.float32)), pattern).numpy()
    fraction = 0.3
    new = rule_mask("set", latent, mask, pattern, fraction, generator=torch.Generator().manual_seed(0)).numpy()
    active = np.flatnonzero(mask.ravel())
    n_drop = round(fraction * len(active))
    survivors = sorted(active, key=lambda i: (abs(latent.ravel()[i]), i))[n_drop:]
    assert new.ravel()[survivors].all()  # only the n_drop smallest may go
    np.testing.assert_array_equal(group_counts(new, pattern), group_counts(mask, pattern))
    assert (new & ~mask).sum() > 0.5 * n_drop  # and most of them went for a weight that was pruned


# -- RigL -----------------------------------------------------------------------------------------------------
def hand_case(pattern: str, shape, active, latent, grad, fraction, expected):
    """Layer of `shape`; `active`, `latent`, `grad` and `expected` name flat indices (unnamed latents are 1.0, unnamed
    gradients 0.0)."""
    mask = np.zeros(shape, dtype=bool)
    mask.flat[active] = True
    latent_array = np.ones(shape, dtype=np.float32)
    grad_array = np.zeros(shape, dtype=np.float32)
    for i, value in latent.items():
        latent_array.flat[i] = value
    for i, value in grad.items():
        grad_array.flat[i] = value
    want = np.zeros(shape, dtype=bool)
    want.flat[expected] = True
    return pytest.param(pattern, latent_array, mask, grad_array, fraction, want)


RIGL_CASES = [
    # unstructured 2x4 at 50%: 4 active, drop_fraction 0.5 drops the two smallest (0 and 5) and grows the two
    # pruned weights with the largest |gradient| (2 by its negative gradient, then 7), not active 3 and 6
    hand_case("unstructured:0.5", (2, 4), active=[0, 3, 5, 6], latent={0: 0.1, 3: -3.0, 5: 0.2, 6: 4.0},
              grad={1: 0.3, 2: -2.0, 3: 99.0, 4: 0.1, 6: 99.0, 7: 1.5}, fraction=0.5, expected=[2, 3, 6, 7]),
    # the same, but the dropped weight 0 has the largest gradient: it wins its place back
    hand_case("unstructured:0.5", (2, 4), active=[0, 3, 5, 6], latent={0: 0.1, 3: -3.0, 5: 0.2, 6: 4.0},
              grad={0: 5.0, 1: 0.3, 2: -2.0, 4: 0.1, 7: 1.5}, fraction=0.5, expected=[0, 2, 3, 6]),
    # 1:4 on 2x8: each group holds one weight. The layer-wide drop (0.5 of 4) takes both of row 0 (1 and 6, the
    # smallest), none of row 1; each of row 0's groups grows its largest |gradient| (2, then 5); row 1 keeps 8 and
    # 13 although its pruned weights have the largest gradients of the layer
    hand_case("1:4", (2, 8), active=[1, 6, 8, 13], latent={1: 0.1, 6: -0.2, 8: 5.0, 13: 6.0},
              grad={0: 0.3, 1: 0.05, 2: -0.8, 3: 0.5, 4: 0.1, 5: 0.2, 7: -0.15, 9: 10.0, 10: -10.0, 11: 10.0,
                    12: 10.0, 14: 10.0, 15: 10.0}, fraction=0.5, expected=[2, 5, 8, 13]),
    # 2:4 on 2x11 (groups of 4, 4 and a trailing 3): 12 active, drop 0.25 -> 3: both of row 0's first group (0, 1)
    # and row 1's trailing 21; row 0's first group grows 2 (2, 3), row 1's trailing group 1 (19; not 21, whose
    # gradient is smaller). Row 0's second group has a pruned weight with a huge gradient and lost nothing.
    hand_case("2:4", (2, 11), active=[0, 1, 4, 5, 8, 9, 13, 14, 17, 18, 20, 21],
              latent={0: 0.01, 1: -0.02, 21: 0.03, 2: 0.001, 3: 0.001},
              grad={0: 0.1, 1: 0.2, 2: -0.9, 3: 0.8, 6: 100.0, 19: 0.4, 21: 0.3, 11: 50.0},
              fraction=0.25, expected=[2, 3, 4, 5, 8, 9, 13, 14, 17, 18, 19, 20]),
]


@pytest.mark.parametrize("pattern, latent, mask, grad, fraction, expected", RIGL_CASES)
def test_rigl_grows_the_pruned_weights_with_the_largest_gradient_in_a_hand_built_case(pattern, latent, mask, grad,
                                                                                      fraction, expected):
    pattern = Pattern.parse(pattern)
    np.testing.assert_array_equal(reference_drop_and_grow(latent, mask, pattern, fraction, np.abs(grad)), expected)
    np.testing.assert_array_equal(rule_mask("rigl", latent, mask, pattern, fraction, grad).numpy(), expected)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("in_features", [11, 14, 105, 113, 348])
def test_rigl_matches_the_reference_on_random_layers(in_features, pattern, seed):
    """Odd seeds draw latents and gradients from a few values, so ties decide both the drop and the growth."""
    pattern = Pattern.parse(pattern)
    rng = np.random.default_rng(seed)
    shape = (5, in_features)
    if seed % 2:
        latent, grad = (rng.integers(-2, 3, size=shape).astype(np.float32) for _ in range(2))
    else:
        latent, grad = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    mask = magnitude_mask(torch.from_numpy(rng.standard_normal(shape).astype(np.float32)), pattern).numpy()
    fraction = float(rng.uniform(0.05, 1.0))
    expected = reference_drop_and_grow(latent, mask, pattern, fraction, np.abs(grad))
    np.testing.assert_array_equal(rule_mask("rigl", latent, mask, pattern, fraction, grad).numpy(), expected)
    np.testing.assert_array_equal(group_counts(expected, pattern), budget(pattern, *shape))


@pytest.mark.parametrize("pattern", ["2:4", "unstructured:0.75"])
def test_agent_rigl_grows_by_the_dense_gradient_of_each_networks_loss(pattern):
    """The agent's RigL scores are d(loss)/d(forward weight) at this step's batch, dense where the weight is zero:
    the critics' clipped double-Q loss, the actor's -Q1."""
    agent = make_agent(pattern, DIMS["ant"], mask_rule="rigl", mask_interval=1000)
    data = list(batches(agent, 5))
    for batch, noise in data[:-1]:
        agent.update(batch, noise)
    batch, noise = data[-1]
    weights = {name: [layer.weight for layer in sparse_layers(getattr(agent, name))] for name in ONLINE}
    critic_grads = torch.autograd.grad(agent.critic_loss(batch, noise), weights["critic1"] + weights["critic2"])
    grads = {"critic1": critic_grads[:3], "critic2": critic_grads[3:],
             "actor": torch.autograd.grad(agent.actor_loss(batch), weights["actor"])}
    fraction = drop_fraction_at(agent.config.drop_fraction, agent.gradient_steps, agent.mask_end_step)
    expected = {name: [reference_drop_and_grow(latent.detach().numpy(), mask.numpy(), agent.config.pattern, fraction,
                                               grad.abs().numpy())
                       for latent, mask, grad in zip(agent.sparse[name].latent, agent.sparse[name].masks, grads[name])]
                for name in ONLINE}
    assert any((grad[layer.weight == 0] != 0).any() for name in ONLINE
               for grad, layer in zip(grads[name], sparse_layers(getattr(agent, name))))
    agent.update_masks(batch, noise)
    for name in ONLINE:
        for k, (mask, want) in enumerate(zip(agent.sparse[name].masks, expected[name])):
            np.testing.assert_array_equal(mask.numpy(), want, err_msg=f"{name} layer {k}")


# -- grown weights start at zero ------------------------------------------------------------------------------
def layer_state(agent: TD3Agent, name: str) -> list[dict[str, torch.Tensor]]:
    """Copies of what a mask update may touch in each sparse layer of an online network."""
    sp, target = agent.sparse[name], agent.sparse[f"{name}_target"]
    optimizer = agent.actor_optimizer if name == "actor" else agent.critic_optimizer
    return [{"mask": mask.clone(), "latent": latent.detach().clone(), "target": target_latent.clone(),
             "exp_avg": optimizer.state[latent]["exp_avg"].clone(),
             "exp_avg_sq": optimizer.state[latent]["exp_avg_sq"].clone()}
            for mask, latent, target_latent in zip(sp.masks, sp.latent, target.latent)]


@pytest.mark.parametrize("pattern", ["1:4", "unstructured:0.75"])
@pytest.mark.parametrize("rule", DYNAMIC)
def test_grown_weights_start_at_zero_with_zero_adam_moments(rule, pattern):
    agent = make_agent(pattern, mask_rule=rule, mask_interval=1000)
    data = batches(agent, 24)
    grown_total = grown_with_moments = 0
    for _ in range(4):  # several mask updates, so that some grown weights were active (and had moments) before
        for _ in range(5):
            agent.update(*next(data))
        before = {name: layer_state(agent, name) for name in ONLINE}
        agent.update_masks(*next(data))
        for name in ONLINE:
            for k, (old, new) in enumerate(zip(before[name], layer_state(agent, name))):
                grown = new["mask"] & ~old["mask"]
                grown_total += int(grown.sum())
                grown_with_moments += int((old["exp_avg_sq"][grown] != 0).sum())
                for key in ("latent", "target", "exp_avg", "exp_avg_sq"):
                    assert (new[key][grown] == 0).all(), (name, k, key)
                    if key != "exp_avg":  # nothing else moved
                        assert torch.equal(new[key][~grown], old[key][~grown]), (name, k, key)
                # the first moment is kept where active and cleared where pruned
                kept = new["mask"] & ~grown
                assert torch.equal(new["exp_avg"][kept], old["exp_avg"][kept])
                assert (new["exp_avg"][~new["mask"]] == 0).all()
        assert_invariant(agent)
    assert grown_total > 0 and grown_with_moments > 0


# -- drop fraction and mask_end -------------------------------------------------------------------------------
def test_drop_fraction_follows_its_cosine_to_zero_at_the_end():
    end = 1000
    assert drop_fraction_at(0.3, 0, end) == pytest.approx(0.3)
    assert drop_fraction_at(0.3, 250, end) == pytest.approx(0.3 * (1 + math.sqrt(0.5)) / 2)
    assert drop_fraction_at(0.3, 500, end) == pytest.approx(0.15)
    assert drop_fraction_at(0.3, 750, end) == pytest.approx(0.3 * (1 - math.sqrt(0.5)) / 2)
    assert drop_fraction_at(0.3, end, end) == 0.0
    assert drop_fraction_at(0.3, 5 * end, end) == 0.0
    values = [drop_fraction_at(0.5, step, end) for step in range(0, end + 1, 10)]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("rule", ["magnitude", *DYNAMIC])
def test_masks_move_by_the_cosine_until_mask_end_and_then_stay(rule):
    # 40 gradient steps (steps - start_steps), mask_end 0.5: masks move at gradient steps 3, 6, ..., 18 only
    agent = make_agent("2:4", mask_rule=rule, steps=140, start_steps=100, mask_end=0.5, drop_fraction=0.4)
    seen: list[tuple[int, float]] = []
    rule_of = agent.mask_rule

    def recording(update: LayerUpdate) -> torch.Tensor:
        seen.append((agent.gradient_steps, update.drop_fraction))
        return rule_of.new_mask(update)

    agent.mask_rule = MaskRule(recording, rule_of.regrows_from_zero, rule_of.needs_dense_grad)
    end = 0.5 * 40
    sad_steps, sad, frozen = [], 0.0, None
    for step, (batch, noise) in enumerate(batches(agent, 40), start=1):
        stats = agent.update(batch, noise)
        if "sad_actor" in stats:
            sad_steps.append(step)
            sad += sum(v for k, v in stats.items() if k.startswith("sad_"))
        if step > end:
            masks = [mask.clone() for name in ONLINE for mask in agent.sparse[name].masks]
            frozen = frozen or masks
            assert all(torch.equal(a, b) for a, b in zip(frozen, masks))
    assert sad_steps == [s for s in range(1, 41) if s % 3 == 0 and s <= end]
    assert sad > 0
    layers = 3 * len(agent.sparse["actor"].latent)  # the rule runs once per sparse layer of each online network
    assert [step for step, _ in seen] == [s for s in sad_steps for _ in range(layers)]
    for step, fraction in seen:
        assert fraction == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * step / end)))


# -- sparse_init ------------------------------------------------------------------------------------------------
def white_variance(weight: torch.Tensor, inputs: torch.Tensor) -> float:
    """Mean over units of the output variance of `weight` on the inputs (the bias shifts, it does not spread)."""
    return float((inputs @ weight.detach().T).var(dim=0).mean())


@pytest.mark.parametrize("pattern", ["2:4", "1:8", "unstructured:0.875"])
@pytest.mark.parametrize("dims", DIMS.values(), ids=DIMS.keys())
def test_scaled_init_starts_each_sparse_layer_at_the_dense_layers_output_variance(dims, pattern):
    dense, scaled, pruned = (make_agent(p, dims, sparse_init=init)
                             for p, init in (("dense", "dense"), (pattern, "scaled"), (pattern, "dense")))
    generator = torch.Generator().manual_seed(0)
    for name in ONLINE:
        layers = (sparse_layers(getattr(agent, name)) for agent in (dense, scaled, pruned))
        for layer, scaled_layer, pruned_layer in zip(*layers):
            inputs = torch.randn(4096, layer.in_features, generator=generator)
            reference = white_variance(layer.weight, inputs)
            assert white_variance(scaled_layer.weight, inputs) == pytest.approx(reference, rel=0.1), name
            # pruning alone loses a fifth (2:4) to two thirds (1:8) of it: the test tells the two apart
            assert white_variance(pruned_layer.weight, inputs) < 0.9 * reference, name
            # rescaled, not re-pruned: the same weights kept
            assert torch.equal(scaled_layer.weight != 0, pruned_layer.weight != 0)
    for name in ONLINE:  # the targets start as their online networks
        targets = sparse_layers(getattr(scaled, f"{name}_target"))
        assert all(torch.equal(a.weight, b.weight) for a, b in zip(sparse_layers(getattr(scaled, name)), targets))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dense_init_is_the_pruned_dense_initialization(pattern):
    """sparse_init=dense is the behaviour before it existed: each forward weight is the dense init (same seed)
    masked by magnitude_mask of itself, and the latent weight is the dense init."""
    dense, sparse = make_agent("dense", DIMS["ant"]), make_agent(pattern, DIMS["ant"], sparse_init="dense")
    for name in NETWORKS:
        for k, (layer, sparse_layer) in enumerate(zip(sparse_layers(getattr(dense, name)),
                                                      sparse_layers(getattr(sparse, name)))):
            init = layer.weight.detach()
            assert torch.equal(sparse_layer.weight.detach(), init * magnitude_mask(init, Pattern.parse(pattern)))
            assert torch.equal(sparse.sparse[name].latent[k].detach(), init)


# -- measured density -----------------------------------------------------------------------------------------
def measured(module: nn.Module, sparse_io: bool) -> float:
    weights = [layer.weight for layer in sparse_layers(module, sparse_io)]
    return sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@pytest.mark.parametrize("sparse_io", [True, False])
@pytest.mark.parametrize("pattern, rule", [("1:4", "rigl"), ("unstructured:0.75", "set"), ("2:4", "magnitude")])
def test_measured_density_is_nonzeros_over_weights_of_the_sparse_layers(pattern, rule, sparse_io):
    agent = make_agent(pattern, mask_rule=rule, sparse_io=sparse_io, mask_interval=4)
    for batch, noise in batches(agent, 4):  # the last step updates the masks: grown weights are still zero
        agent.update(batch, noise)
    densities = agent.densities()
    assert set(densities) == {f"density_{name}" for name in ONLINE}
    for name in ONLINE:
        expected = measured(getattr(agent, name), sparse_io)
        assert densities[f"density_{name}"] == expected == agent.sparse[name].density()
        assert agent.sparse[f"{name}_target"].density() == measured(getattr(agent, f"{name}_target"), sparse_io)
        kept = sum(int(mask.sum()) for mask in agent.sparse[name].masks)
        nominal = kept / sum(mask.numel() for mask in agent.sparse[name].masks)
        if rule == "magnitude":
            assert expected == nominal
        else:
            assert expected < nominal  # the weights grown at step 4 are still zero


def test_measured_density_of_a_dense_agent_counts_every_layer():
    agent = make_agent("dense")
    with torch.no_grad():
        agent.critic2.net[2].weight[0, :5] = 0.0
    assert agent.densities()["density_actor"] == 1.0
    assert agent.densities()["density_critic2"] == measured(agent.critic2, True) < 1.0


# -- through the trainer: checkpoints and resume of a dynamic-rule run ----------------------------------------
RUN = {"steps": 1000, "start_steps": 200, "eval_interval": 250, "eval_episodes": 1, "checkpoint_interval": 400,
       "hidden": (32, 32), "batch_size": 32, "mask_interval": 100}
RUNS = [("1:4", "rigl"), ("unstructured:0.875", "set")]


@pytest.fixture(scope="module", params=RUNS, ids=[f"{p}-{r}" for p, r in RUNS])
def straight_run(request, tmp_path_factory):
    pattern, rule = request.param
    config = RunConfig(env="Hopper-v5", pattern=Pattern.parse(pattern), seed=0, mask_rule=rule, **RUN)
    folder = tmp_path_factory.mktemp("straight")
    sink = MemorySink()
    result = train(config, folder, sink, resume=False)
    return config, sink, result, folder


def sads(sink: MemorySink, after: int = -1) -> list[tuple[int, dict[str, float]]]:
    return [(step, stats) for step, stats in sink.stats if "sad_actor" in stats and step > after]


@pytest.mark.slow
def test_checkpoint_of_a_dynamic_rule_run_satisfies_its_pattern(straight_run, tmp_path):
    config, sink, result, folder = straight_run
    assert result.finished
    path = folder / ckpt.CHECKPOINT
    assert ckpt.check_sparsity(path) == {name: True for name in NETWORKS}
    data = torch.load(path, weights_only=True)
    for name in NETWORKS:
        for key, weight in data[name].items():
            if key.endswith("weight"):
                assert (group_counts(weight.numpy(), config.pattern) <= budget(config.pattern, *weight.shape)).all()
    # the densities of the last stats (step 1000, the end) are those of the saved weights
    last = [stats for step, stats in sink.stats if step == config.steps and "density_actor" in stats][-1]
    for name in ONLINE:
        weights = [t for k, t in data[name].items() if k.endswith("weight")]
        density = sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert last[f"density_{name}"] == density
    # fill the first group of one layer (row 0's first m, or the whole unstructured layer) to its budget: still
    # fine; one weight more, and the check names that network alone
    for extra, ok in ((0, True), (1, False)):
        tampered = {k: ({kk: vv.clone() for kk, vv in v.items()} if k in NETWORKS else v) for k, v in data.items()}
        weight = tampered["critic2_target"]["net.2.weight"]
        first = group_ids(config.pattern, weight.shape).ravel() == 0
        room = budget(config.pattern, *weight.shape)[0] - group_counts(weight.numpy(), config.pattern)[0]
        zeros = np.flatnonzero(first & (weight.numpy().ravel() == 0))
        weight.view(-1)[zeros[:room + extra]] = 1.0
        torch.save(tampered, tmp_path / "tampered.pt")
        assert ckpt.check_sparsity(tmp_path / "tampered.pt") == {n: ok or n != "critic2_target" for n in NETWORKS}


@pytest.mark.slow
def test_resume_after_a_stop_mid_run_gives_the_same_curve(straight_run, tmp_path):
    config, straight, straight_result, folder = straight_run
    stopping = MemorySink(stop_after_checkpoint=True)
    stopped = train(config, tmp_path, stopping, resume=False)
    assert not stopped.finished and config.checkpoint_interval <= stopped.steps_done < config.steps
    # masks moved before the stop and move after it (drop fraction still well above zero)
    assert sads(straight, stopped.steps_done) and len(sads(straight)) > len(sads(straight, stopped.steps_done))
    resuming = MemorySink()
    resumed = train(config, tmp_path, resuming, resume=True)
    assert resumed.finished and resumed.resumed_from == stopped.steps_done
    assert resuming.evals == straight.evals
    assert [step for step, _, _ in straight.evals] == list(range(0, config.steps + 1, config.eval_interval))
    assert sads(resuming, stopped.steps_done) == sads(straight, stopped.steps_done)
    ours, theirs = (torch.load(f / ckpt.CHECKPOINT, weights_only=True) for f in (tmp_path, folder))
    for name in NETWORKS:
        assert all(torch.equal(ours[name][k], theirs[name][k]) for k in theirs[name]), name


def test_every_rule_a_config_accepts_has_its_code():
    """config.MASK_RULES is what queue accepts (torch-free); sparsity.RULES holds the code: one without the other would
    queue runs that fail at their first step."""
    from rnmtd3.config import MASK_RULES

    assert set(MASK_RULES) == set(RULES)


def test_rigl_mask_update_without_a_batch_is_refused():
    config = RunConfig(env="Hopper-v5", pattern=Pattern(1, 4), seed=0, hidden=(8, 8), mask_rule="rigl")
    agent = TD3Agent(config, 11, 3, -torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="batch"):
        agent.update_masks()
