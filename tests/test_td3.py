"""TD3Agent: the six networks stay N:M through real updates, the gradient rules, SAD, targets and dense runs."""

import io

import numpy as np
import pytest
import torch
from torch import nn

from rnmtd3.config import RunConfig
from rnmtd3.evaluator import greedy_policy
from rnmtd3.networks import Actor, Critic
from rnmtd3.patterns import Pattern, network_density
from rnmtd3.replay import Batch
from rnmtd3.sparsity import satisfies
from rnmtd3.td3 import NETWORKS, TD3Agent

HOPPER = (11, 3)  # Hopper-v5: critic input 14
ANT = (105, 8)  # Ant-v5: critic input 113
ONLINE = ("actor", "critic1", "critic2")


def make_agent(pattern="2:4", dims=HOPPER, **changes) -> TD3Agent:
    settings = {"seed": 0, "hidden": (64, 64), "batch_size": 32, "mask_interval": 0, **changes}
    config = RunConfig(env="Hopper-v5", pattern=Pattern.parse(pattern), **settings)
    obs_dim, act_dim = dims
    return TD3Agent(config, obs_dim, act_dim, -torch.ones(act_dim), torch.ones(act_dim))


def batches(agent: TD3Agent, count: int, seed: int = 0):
    """`count` random (Batch, noise) pairs shaped for `agent`."""
    obs_dim = agent.actor.net[0].in_features
    act_dim = agent.actor.action_scale.numel()
    size = agent.config.batch_size
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        batch = Batch(
            obs=torch.randn(size, obs_dim, generator=generator),
            actions=torch.rand(size, act_dim, generator=generator) * 2 - 1,
            rewards=torch.randn(size, 1, generator=generator),
            next_obs=torch.randn(size, obs_dim, generator=generator),
            terminated=(torch.rand(size, 1, generator=generator) < 0.1).float(),
        )
        yield batch, torch.randn(size, act_dim, generator=generator)


def linears(module: nn.Module) -> list[nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def reference_mask(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Brute force (see test_sparsity): per group of m, keep rank < n by magnitude, ties to the lowest index."""
    magnitude = np.abs(weight)
    keep = np.zeros(weight.shape, dtype=bool)
    for start in range(0, weight.shape[1], m):
        group = magnitude[:, start:start + m]
        for j in range(group.shape[1]):
            rank = (group > group[:, j:j + 1]).sum(1) + (group[:, :j] == group[:, j:j + 1]).sum(1)
            keep[:, start + j] = rank < n
    return keep


def latents(agent: TD3Agent, name: str) -> list[torch.Tensor]:
    return [latent.detach().clone() for latent in agent.sparse[name].latent]


def masks(agent: TD3Agent, name: str) -> list[torch.Tensor]:
    return [mask.clone() for mask in agent.sparse[name].masks]


def pruned_norm(agent: TD3Agent, name: str) -> float:
    sp = agent.sparse[name]
    return float(torch.sqrt(sum((latent.detach()[~mask] ** 2).sum() for latent, mask in zip(sp.latent, sp.masks))))


def assert_six_networks_nm(agent: TD3Agent) -> None:
    n, m = agent.config.pattern.n, agent.config.pattern.m
    for name in NETWORKS:
        layers = linears(getattr(agent, name))
        assert len(layers) == len(agent.config.hidden) + 1
        for layer in layers:
            assert satisfies(layer.weight, Pattern(n, m)), name
    for name in ONLINE:
        sp = agent.sparse[name]
        target_sp = agent.sparse[f"{name}_target"]
        for online, target, latent, mask in zip(linears(getattr(agent, name)), linears(getattr(agent, f"{name}_target")),
                                                sp.latent, sp.masks):
            # forward weight = latent * mask, and the target has exactly the online zero pattern
            assert torch.equal(online.weight.detach(), latent.detach() * mask)
            assert torch.equal(online.weight != 0, mask)
            assert torch.equal(target.weight != 0, online.weight != 0), name
        for target, latent, mask in zip(linears(getattr(agent, f"{name}_target")), target_sp.latent, sp.masks):
            assert torch.equal(target.weight.detach(), latent.detach() * mask)


# -- the invariant through real updates --------------------------------------------------------------
@pytest.mark.parametrize("grad_mode", ["masked", "ste", "srste"])
@pytest.mark.parametrize("pattern", ["2:4", "1:4", "1:8", "4:8", "1:2"])
@pytest.mark.parametrize("dims", [HOPPER, ANT], ids=["hopper", "ant"])
def test_every_forward_of_six_networks_is_nm(dims, pattern, grad_mode):
    agent = make_agent(pattern, dims, grad_mode=grad_mode, lr=1e-2, mask_interval=4)
    n, m = agent.config.pattern.n, agent.config.pattern.m
    violations, forwards = [], []

    def hook(name):
        def check(layer, inputs):
            forwards.append(name)
            if not satisfies(layer.weight, Pattern(n, m)):
                violations.append(name)
        return check

    for name in NETWORKS:
        for layer in linears(getattr(agent, name)):
            layer.register_forward_pre_hook(hook(name))
    assert_six_networks_nm(agent)
    sad = 0.0
    for batch, noise in batches(agent, 24):
        stats = agent.update(batch, noise)
        sad += sum(v for k, v in stats.items() if k.startswith("sad_"))
        assert_six_networks_nm(agent)
    assert not violations
    assert set(forwards) == set(NETWORKS)  # all six networks ran forward passes
    assert agent.gradient_steps == 24
    assert sad > 0  # masks did change along the way


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "1:8"])
@pytest.mark.parametrize("dims", [HOPPER, ANT], ids=["hopper", "ant"])
def test_exact_number_of_nonzeros(dims, pattern):
    agent = make_agent(pattern, dims, mask_interval=3, lr=1e-2)
    for batch, noise in batches(agent, 6):
        agent.update(batch, noise)
    n, m = agent.config.pattern.n, agent.config.pattern.m
    for name in NETWORKS:
        for layer in linears(getattr(agent, name)):
            out_features, in_features = layer.weight.shape
            per_row = sum(min(n, in_features - s) for s in range(0, in_features, m))
            assert int((layer.weight != 0).sum()) == out_features * per_row, name
    first = linears(agent.critic1)[0]
    assert first.in_features == sum(dims)



@pytest.mark.parametrize("sparse_io", [True, False])
@pytest.mark.parametrize("pattern", ["dense", "2:4", "1:4", "1:8"])
@pytest.mark.parametrize("dims", [HOPPER, ANT, (348, 17)], ids=["hopper", "ant", "humanoid"])
def test_network_density_is_the_agents_kept_fraction(dims, pattern, sparse_io):
    hidden = (64, 48)
    agent = make_agent(pattern, dims, sparse_io=sparse_io, hidden=hidden)
    weights = [layer.weight for name in ("actor", "critic1") for layer in linears(getattr(agent, name))]
    kept = sum(int((weight != 0).sum()) for weight in weights) / sum(weight.numel() for weight in weights)
    assert network_density(agent.config.pattern, *dims, hidden, sparse_io) == pytest.approx(kept, rel=1e-12)


# -- gradient rules -----------------------------------------------------------------------------------
def test_masked_never_moves_pruned_latents_even_across_mask_updates():
    """Adam momentum of a weight that was active and then pruned must not move it afterwards."""
    agent = make_agent("2:4", grad_mode="masked", lr=1e-2, mask_interval=5)
    initial = {name: latents(agent, name) for name in ONLINE}
    ever_active = {name: [mask.clone() for mask in agent.sparse[name].masks] for name in ONLINE}
    total_sad, newly_pruned_with_momentum = 0.0, 0
    for step, (batch, noise) in enumerate(batches(agent, 60), start=1):
        before = {name: (latents(agent, name), masks(agent, name)) for name in ONLINE}
        momentum = {id(p): s["exp_avg"].clone() for opt in (agent.actor_optimizer, agent.critic_optimizer)
                    for p, s in opt.state.items() if "exp_avg" in s}
        stats = agent.update(batch, noise)
        total_sad += sum(v for k, v in stats.items() if k.startswith("sad_"))
        for name in ONLINE:
            old_latents, old_masks = before[name]
            for k, (latent, old_latent, old_mask) in enumerate(zip(agent.sparse[name].latent, old_latents,
                                                                   old_masks)):
                # pruned during this gradient step: bit-identical, whatever the mask update did afterwards
                assert torch.equal(latent.detach()[~old_mask], old_latent[~old_mask]), (name, step, k)
                new_mask = agent.sparse[name].masks[k]
                ever_active[name][k] |= new_mask
                newly_pruned = old_mask & ~new_mask
                if id(latent) in momentum:
                    newly_pruned_with_momentum += int((momentum[id(latent)][newly_pruned] != 0).sum())
    assert total_sad > 0, "the test needs mask updates that change the mask"
    assert newly_pruned_with_momentum > 0, "the test needs pruned weights that had Adam momentum"
    for name in ONLINE:
        for latent, first, active in zip(agent.sparse[name].latent, initial[name], ever_active[name]):
            assert torch.equal(latent.detach()[~active], first[~active])
            assert not torch.equal(latent.detach()[active], first[active])  # active weights do learn


def test_masked_pruned_latents_after_many_updates_static_mask():
    agent = make_agent("1:4", grad_mode="masked", lr=1e-3)
    initial = {name: latents(agent, name) for name in ONLINE}
    for batch, noise in batches(agent, 80):
        agent.update(batch, noise)
    for name in ONLINE:
        for latent, first, mask in zip(agent.sparse[name].latent, initial[name], agent.sparse[name].masks):
            assert torch.equal(latent.detach()[~mask], first[~mask])


@pytest.mark.parametrize("grad_mode", ["ste", "srste"])
def test_ste_and_srste_move_pruned_latents(grad_mode):
    agent = make_agent("2:4", grad_mode=grad_mode)
    initial = {name: latents(agent, name) for name in ONLINE}
    for batch, noise in batches(agent, 10):
        agent.update(batch, noise)
    for name in ONLINE:
        for layer, latent, first, mask in zip(linears(getattr(agent, name)), agent.sparse[name].latent,
                                              initial[name], agent.sparse[name].masks):
            # pruned latents move about as often as active ones (rows of a dead ReLU unit get no gradient)
            moved = latent.detach() != first
            assert moved[~mask].float().mean() > 0.25, name
            assert moved[~mask].float().mean() >= 0.8 * moved[mask].float().mean(), name
            assert (layer.weight.detach()[~mask] == 0).all()


def test_srste_shrinks_pruned_latents_relative_to_ste():
    """Between mask updates the decay touches only pruned latents, which the forward pass never sees: srste's
    active weights follow ste's exactly, and its pruned ones end smaller (1% per step of each network here)."""
    agents, norms = {}, {}
    for mode in ("ste", "srste"):
        agent = agents[mode] = make_agent("2:4", grad_mode=mode, lr=1e-3, srste_decay=10.0)
        for batch, noise in batches(agent, 40):
            agent.update(batch, noise)
        norms[mode] = {name: pruned_norm(agent, name) for name in ONLINE}
    for name in ONLINE:
        assert norms["srste"][name] < 0.9 * norms["ste"][name], (name, norms)
        for ste, srste, mask in zip(agents["ste"].sparse[name].latent, agents["srste"].sparse[name].latent,
                                    agents["srste"].sparse[name].masks):
            assert torch.equal(srste.detach()[mask], ste.detach()[mask])


# -- mask updates and SAD -----------------------------------------------------------------------------
def flip_fraction(old: list[torch.Tensor], new: list[torch.Tensor]) -> float:
    flipped = sum(int((a != b).sum()) for a, b in zip(old, new))
    return flipped / sum(a.numel() for a in old)


@pytest.mark.parametrize("pattern", ["2:4", "1:8"])
def test_mask_update_in_update_reports_sad(pattern):
    agent = make_agent(pattern, grad_mode="ste", lr=1e-2, mask_interval=5)
    n, m = agent.config.pattern.n, agent.config.pattern.m
    seen = 0
    for step, (batch, noise) in enumerate(batches(agent, 15), start=1):
        old = {name: masks(agent, name) for name in ONLINE}
        stats = agent.update(batch, noise)
        if step % 5:
            assert not any(k.startswith("sad_") for k in stats)
            for name in ONLINE:
                assert all(torch.equal(a, b) for a, b in zip(old[name], agent.sparse[name].masks))
            continue
        seen += 1
        assert {"sad_actor", "sad_critic1", "sad_critic2"} <= set(stats)
        for name in ONLINE:
            new = agent.sparse[name].masks
            for latent, mask in zip(agent.sparse[name].latent, new):
                np.testing.assert_array_equal(mask.numpy(), reference_mask(latent.detach().numpy(), n, m))
            assert stats[f"sad_{name}"] == pytest.approx(flip_fraction(old[name], new))
            assert 0 < stats[f"sad_{name}"] <= 1
        assert_six_networks_nm(agent)
    assert seen == 3


def test_update_masks_sad_after_perturbing_latents():
    agent = make_agent("2:4")
    assert agent.update_masks() == {"sad_actor": 0.0, "sad_critic1": 0.0, "sad_critic2": 0.0}
    old = masks(agent, "critic2")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for latent in agent.sparse["critic2"].latent:
            latent.add_(0.1 * torch.randn(latent.shape, generator=generator))
    sad = agent.update_masks()
    assert sad["sad_actor"] == 0.0 and sad["sad_critic1"] == 0.0
    expected = flip_fraction(old, [torch.from_numpy(reference_mask(latent.detach().numpy(), 2, 4))
                                   for latent in agent.sparse["critic2"].latent])
    assert expected > 0
    assert sad["sad_critic2"] == pytest.approx(expected)
    assert sad["sad_critic2"] == pytest.approx(flip_fraction(old, agent.sparse["critic2"].masks))
    assert_six_networks_nm(agent)  # the target follows the new mask at once


def test_static_mask_never_changes():
    agent = make_agent("2:4", grad_mode="ste", lr=1e-2, mask_interval=0)
    old = {name: masks(agent, name) for name in ONLINE}
    for batch, noise in batches(agent, 12):
        stats = agent.update(batch, noise)
        assert not any(k.startswith("sad_") for k in stats)
    for name in ONLINE:
        assert all(torch.equal(a, b) for a, b in zip(old[name], agent.sparse[name].masks))


# -- layouts: sparse_io and dense ---------------------------------------------------------------------
def test_sparse_io_false_keeps_first_and_last_layers_dense():
    agent = make_agent("1:4", dims=ANT, sparse_io=False, mask_interval=3, lr=1e-2, hidden=(64, 64, 32))
    for batch, noise in batches(agent, 7):
        agent.update(batch, noise)
    for name in NETWORKS:
        layers = linears(getattr(agent, name))
        for layer in (layers[0], layers[-1]):
            assert int((layer.weight != 0).sum()) == layer.weight.numel(), name
        for layer in layers[1:-1]:
            assert satisfies(layer.weight, Pattern(1, 4))
            assert float((layer.weight == 0).float().mean()) == pytest.approx(0.75)
        assert len(agent.sparse[name].latent) == len(layers) - 2


def test_sparse_io_true_makes_first_and_last_layers_sparse():
    agent = make_agent("1:4", dims=ANT)
    for name in NETWORKS:
        layers = linears(getattr(agent, name))
        assert len(agent.sparse[name].latent) == len(layers)
        assert satisfies(layers[0].weight, Pattern(1, 4)) and satisfies(layers[-1].weight, Pattern(1, 4))


def test_dense_pattern_has_no_masks_and_nonzero_weights():
    agent = make_agent("dense", dims=ANT, mask_interval=2)
    for name in NETWORKS:
        assert agent.sparse[name].masks == [] and agent.sparse[name].latent == []
    for batch, noise in batches(agent, 6):
        stats = agent.update(batch, noise)
        assert not any(k.startswith("sad_") for k in stats)
    for name in NETWORKS:
        for layer in linears(getattr(agent, name)):
            assert int((layer.weight != 0).sum()) == layer.weight.numel(), name
            assert not satisfies(layer.weight, Pattern(2, 4))
    assert set(agent.update_masks().values()) == {0.0}


# -- TD3 mechanics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["dense", "2:4"])
def test_critic_target_is_clipped_double_q_with_clipped_smoothing(pattern):
    """y = r + gamma * (1 - terminated) * min(Q1'(s', a'), Q2'(s', a')), a' = clip(pi'(s') + clip(0.2 * noise, -0.5,
    0.5) * max_action, low, high); the first update's critic loss is mse(Q1, y) + mse(Q2, y) at the weights
    before it. Actions in [-2, 2] so that `times max_action` counts; noise large enough that the clip does."""
    config = RunConfig(env="Hopper-v5", pattern=Pattern.parse(pattern), seed=3, hidden=(32, 32), batch_size=64,
                       gamma=0.9, mask_interval=0)
    agent = TD3Agent(config, 11, 3, -2 * torch.ones(3), 2 * torch.ones(3))
    batch, _ = next(batches(agent, 1))
    noise = 4 * torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    smoothing = (0.2 * noise).clamp(-0.5, 0.5) * 2
    assert (smoothing.abs() == 1).float().mean() > 0.3  # many noises clipped

    def next_q(smoothing, pick=torch.min):
        with torch.no_grad():
            next_actions = (agent.actor_target(batch.next_obs) + smoothing).clamp(-2, 2)
            return pick(agent.critic1_target(batch.next_obs, next_actions),
                        agent.critic2_target(batch.next_obs, next_actions))

    with torch.no_grad():
        q1, q2 = agent.critic1(batch.obs, batch.actions), agent.critic2(batch.obs, batch.actions)

    def loss(next_q, terminated=batch.terminated):
        target = batch.rewards + 0.9 * (1 - terminated) * next_q
        return float(((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean())

    alternatives = {"max": loss(next_q(smoothing, torch.max)), "unclipped noise": loss(next_q(0.2 * noise * 2)),
                    "no terminal mask": loss(next_q(smoothing), 0 * batch.terminated)}
    expected = loss(next_q(smoothing))
    critic_loss = agent.update(batch, noise)["critic_loss"]
    assert critic_loss == pytest.approx(expected, rel=1e-6)
    for name, other in alternatives.items():  # the test tells these apart
        assert abs(other - critic_loss) > 1e-3 * critic_loss, name


def test_policy_delay_and_polyak_targets():
    agent = make_agent("2:4", grad_mode="ste", tau=0.05)
    stream = batches(agent, 2)
    actor_before = latents(agent, "actor")
    targets_before = {name: [p.detach().clone() for p in agent.sparse[name].optim_params]
                      for name in ("actor_target", "critic1_target", "critic2_target")}
    stats = agent.update(*next(stream))
    assert "actor_loss" not in stats and "critic_loss" in stats
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.sparse["actor"].latent))
    for name, before in targets_before.items():
        assert all(torch.equal(a, b.detach()) for a, b in zip(before, agent.sparse[name].optim_params))
    stats = agent.update(*next(stream))
    assert "actor_loss" in stats
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, agent.sparse["actor"].latent))
    for name, before in targets_before.items():
        online = agent.sparse[name.removesuffix("_target")].optim_params
        for old, new, source in zip(before, agent.sparse[name].optim_params, online):
            torch.testing.assert_close(new.detach(), old + 0.05 * (source.detach() - old))
    assert_six_networks_nm(agent)


def test_targets_start_equal_to_online():
    agent = make_agent("1:8", dims=ANT)
    for name in ONLINE:
        online = agent.forward_state_dicts()[name]
        target = agent.forward_state_dicts()[f"{name}_target"]
        assert online.keys() == target.keys()
        assert all(torch.equal(online[k], target[k]) for k in online)


def test_forward_state_dicts_are_the_forward_weights():
    agent = make_agent("2:4", mask_interval=2, lr=1e-2)
    for batch, noise in batches(agent, 4):
        agent.update(batch, noise)
    views = agent.forward_state_dicts()
    assert tuple(views) == NETWORKS
    for name in NETWORKS:
        module_state = getattr(agent, name).state_dict()
        assert views[name].keys() == module_state.keys()
        for key, value in views[name].items():
            assert value.device.type == "cpu"
            assert torch.equal(value, module_state[key])
            if key.endswith("weight"):
                assert satisfies(value, Pattern(2, 4))


def test_state_round_trip_continues_identically():
    first = make_agent("2:4", mask_interval=3, lr=1e-2)
    stream = list(batches(first, 10))
    for batch, noise in stream[:5]:
        first.update(batch, noise)
    # through bytes, as the trainer's resume file does (and loadable with weights_only=True)
    buffer = io.BytesIO()
    torch.save(first.state(), buffer)
    buffer.seek(0)
    second = make_agent("2:4", mask_interval=3, lr=1e-2)
    second.load_state(torch.load(buffer, weights_only=True))
    for batch, noise in stream[5:]:
        a = first.update(batch, noise)
        b = second.update(batch, noise)
        assert a == b
    for name in NETWORKS:
        one, two = first.forward_state_dicts()[name], second.forward_state_dicts()[name]
        assert all(torch.equal(one[k], two[k]) for k in one)


def test_same_seed_same_agent():
    one, two = make_agent("1:4", seed=7), make_agent("1:4", seed=7)
    other = make_agent("1:4", seed=8)
    a, b, c = (x.forward_state_dicts()["actor"] for x in (one, two, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_precision_keeps_nm():
    agent = make_agent("2:4", precision="bf16", mask_interval=2, lr=1e-2)
    for batch, noise in batches(agent, 4):
        stats = agent.update(batch, noise)
        assert np.isfinite(stats["critic_loss"])
    assert_six_networks_nm(agent)
    assert greedy_policy(agent.actor, agent.config)(np.zeros(HOPPER[0])).dtype == np.float32


def test_bf16_actor_keeps_a_gradient_near_the_action_bounds():
    """A bf16 tanh rounds to exactly 1 from a pre-activation of about 3, which zeroes its gradient and leaves
    the actor stuck at the bound; the actor's tanh therefore runs in fp32 under autocast too."""
    actor = Actor(11, 3, (32, 32), -torch.ones(3), torch.ones(3))
    last = actor.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(4.0)  # tanh(4) = 0.99933: below 1 in fp32, exactly 1 in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        action = actor(torch.zeros(1, 11))
    assert action.dtype == torch.float32 and (action < 1).all()
    (grad,) = torch.autograd.grad(action.sum(), last.bias)
    assert (grad > 1e-3).all()


def test_bf16_critic_keeps_q_in_fp32_at_the_magnitude_of_a_long_run():
    """A bf16 Q of about 1000 lies on a grid of steps of 4 to 8, about one step's reward: the critic's last layer
    runs in fp32 on fp32 input, so Q keeps fp32 resolution and its gradient reaches the hidden layers."""
    critic = Critic(11, 3, (32, 32))
    head = critic.net[-1]
    with torch.no_grad():
        head.bias.fill_(1000.3)
    obs, action = torch.randn(64, 11), torch.rand(64, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = critic(obs, action)
    assert q.dtype == torch.float32
    # the hidden layers ran in bf16, the head on their output in fp32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = critic.net[:-1](torch.cat([obs, action], dim=1))
    assert hidden.dtype == torch.bfloat16
    torch.testing.assert_close(q, hidden.float() @ head.weight.T + head.bias, rtol=0, atol=1e-4)
    assert q.std() < 1 and torch.unique(q).numel() > 32  # on bf16's grid of 4 they would share one or two values
    (grad,) = torch.autograd.grad(q.sum(), critic.net[0].weight)
    assert grad.abs().sum() > 0


def test_bf16_agent_q_targets_are_fp32():
    agent = make_agent("2:4", precision="bf16")
    with torch.no_grad():
        for critic in (agent.critic1_target, agent.critic2_target):
            critic.net[-1].bias.fill_(1000.3)
    seen = {}
    agent.critic1_target.register_forward_hook(lambda module, inputs, output: seen.setdefault("q", output))
    batch, noise = next(batches(agent, 1))
    agent.update(batch, noise)
    assert seen["q"].dtype == torch.float32
    assert torch.unique(seen["q"]).numel() > batch.rewards.numel() // 2
