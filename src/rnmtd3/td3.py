"""TD3 with all six networks sparse: the agent's state and its one update function."""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F

from .config import RunConfig
from .networks import Actor, Critic
from .replay import Batch
from .sparsity import RULES, SparseParams, drop_fraction_at

NETWORKS = ("actor", "critic1", "critic2", "actor_target", "critic1_target", "critic2_target")
ONLINE = ("actor", "critic1", "critic2")
MASK_SEED_OFFSET = 0x5E7
"""SET's random regrowth draws from a stream of its own, so a rule change does not shift replay sampling."""


class TD3Agent:
    """Online networks, targets that follow them through the online masks, optimizers and counters."""

    def __init__(self, config: RunConfig, obs_dim: int, act_dim: int, low: torch.Tensor, high: torch.Tensor):
        self.config = config
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.actor = Actor(obs_dim, act_dim, config.hidden, low, high).to(self.device)
        self.critic1 = Critic(obs_dim, act_dim, config.hidden).to(self.device)
        self.critic2 = Critic(obs_dim, act_dim, config.hidden).to(self.device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic1_target = copy.deepcopy(self.critic1)
        self.critic2_target = copy.deepcopy(self.critic2)
        for target in (self.actor_target, self.critic1_target, self.critic2_target):
            target.requires_grad_(False)

        def sparse(module: torch.nn.Module) -> SparseParams:
            return SparseParams(module, config.pattern, config.sparse_io, config.grad_mode, config.srste_decay,
                                config.sparse_init)

        self.sparse = {name: sparse(getattr(self, name)) for name in NETWORKS}
        for name in ("actor", "critic1", "critic2"):
            self.sparse[f"{name}_target"].share_masks_with(self.sparse[name])
            self.sparse[f"{name}_target"].follow(self.sparse[name], 1.0)

        # Fused Adam: one kernel per step, and its sqrt does not take the slow path that the foreach kernel
        # hits on the exact zeros in the second moment of pruned weights (measured: 2:4 update 164 -> 187/s).
        self.actor_optimizer = torch.optim.Adam(self.sparse["actor"].optim_params, lr=config.lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(
            self.sparse["critic1"].optim_params + self.sparse["critic2"].optim_params, lr=config.lr, fused=True
        )
        self.mask_rule = RULES[config.mask_rule]
        self.mask_generator = torch.Generator().manual_seed(config.seed + MASK_SEED_OFFSET)
        # Masks move until mask_end of the gradient steps, one per environment step after start_steps.
        self.mask_end_step = round(config.mask_end * max(config.steps - config.start_steps, 1))
        self.max_action = self.actor.action_scale
        self.action_low = self.actor.action_bias - self.actor.action_scale
        self.action_high = self.actor.action_bias + self.actor.action_scale
        self.gradient_steps = 0
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if config.precision == "bf16"
            else contextlib.nullcontext()
        )

    def critic_loss(self, batch: Batch, noise: torch.Tensor) -> torch.Tensor:
        """Clipped double-Q loss of both critics, with target policy smoothing by `noise` (standard normal)."""
        cfg = self.config
        with torch.no_grad(), self.autocast:
            smoothing = (noise * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip) * self.max_action
            next_actions = (self.actor_target(batch.next_obs) + smoothing).clamp(self.action_low, self.action_high)
            next_q = torch.min(self.critic1_target(batch.next_obs, next_actions),
                               self.critic2_target(batch.next_obs, next_actions))
            target_q = batch.rewards + (1.0 - batch.terminated) * cfg.gamma * next_q
        with self.autocast:
            q1 = self.critic1(batch.obs, batch.actions)
            q2 = self.critic2(batch.obs, batch.actions)
        return F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)

    def actor_loss(self, batch: Batch) -> torch.Tensor:
        with self.autocast:
            return -self.critic1(batch.obs, self.actor(batch.obs)).mean()

    def update(self, batch: Batch, noise: torch.Tensor) -> dict[str, float]:
        """One TD3 gradient step; `noise` is a standard-normal tensor shaped like the actions, drawn by the caller."""
        cfg = self.config
        sp = self.sparse
        stats: dict[str, float] = {}

        # -- critic --------------------------------------------------------------------------------
        critic_loss = self.critic_loss(batch, noise)
        critic_params = sp["critic1"].forward_params + sp["critic2"].forward_params
        grads = torch.autograd.grad(critic_loss, critic_params)
        n1 = len(sp["critic1"].forward_params)
        sp["critic1"].set_grads(grads[:n1])
        sp["critic2"].set_grads(grads[n1:])
        for name in ("critic1", "critic2"):
            sp[name].decay_pruned(cfg.lr)
        self.critic_optimizer.step()
        sp["critic1"].project()
        sp["critic2"].project()
        self.gradient_steps += 1
        stats["critic_loss"] = critic_loss.item()

        # -- delayed actor and target updates ------------------------------------------------------
        if self.gradient_steps % cfg.policy_delay == 0:
            actor_loss = self.actor_loss(batch)
            sp["actor"].set_grads(torch.autograd.grad(actor_loss, sp["actor"].forward_params))
            sp["actor"].decay_pruned(cfg.lr)
            self.actor_optimizer.step()
            sp["actor"].project()
            for name in ONLINE:
                sp[f"{name}_target"].follow(sp[name], cfg.tau)
            stats["actor_loss"] = actor_loss.item()

        # -- masks: move every mask_interval gradient steps, until mask_end -------------------------
        if (cfg.mask_interval and not cfg.pattern.is_dense and self.gradient_steps % cfg.mask_interval == 0
                and self.gradient_steps <= self.mask_end_step):
            stats.update(self.update_masks(batch, noise))
        return stats

    def update_masks(self, batch: Batch | None = None, noise: torch.Tensor | None = None) -> dict[str, float]:
        """New masks for the online networks by the run's mask rule (targets follow); returns SAD per network.

        RigL's dense gradients are those of this step's losses at the current weights (`batch`, `noise`): one extra
        backward pass per mask update. Rules that need no gradient need no batch.
        """
        if self.mask_rule.needs_dense_grad and (batch is None or noise is None):
            raise ValueError(f"mask_rule={self.config.mask_rule} needs this step's batch and noise")
        fraction = drop_fraction_at(self.config.drop_fraction, self.gradient_steps, self.mask_end_step)
        grads = self._dense_grads(batch, noise) if self.mask_rule.needs_dense_grad else {}
        optimizers = {"actor": self.actor_optimizer, "critic1": self.critic_optimizer,
                      "critic2": self.critic_optimizer}
        return {f"sad_{name}": self.sparse[name].update_masks(optimizers[name], self.mask_rule, fraction,
                                                              grads.get(name), self.mask_generator)
                for name in ONLINE}

    def _dense_grads(self, batch: Batch, noise: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """d(loss)/d(forward weight) of every sparse layer: dense, even where the forward weight is zero."""
        sp = self.sparse
        critic_weights = sp["critic1"].weights + sp["critic2"].weights
        critic = torch.autograd.grad(self.critic_loss(batch, noise), critic_weights)
        n1 = len(sp["critic1"].weights)
        actor = torch.autograd.grad(self.actor_loss(batch), sp["actor"].weights)
        return {"actor": list(actor), "critic1": list(critic[:n1]), "critic2": list(critic[n1:])}

    def densities(self) -> dict[str, float]:
        """Measured density of each online network (targets share their masks)."""
        return {f"density_{name}": self.sparse[name].density() for name in ONLINE}

    # -- checkpoint views ---------------------------------------------------------------------------
    def forward_state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """The six state_dicts as used in the forward pass (pruned entries are zero), on the CPU."""
        return {name: {k: v.detach().cpu().clone() for k, v in getattr(self, name).state_dict().items()}
                for name in NETWORKS}

    def state(self) -> dict[str, object]:
        return {
            "sparse": {name: self.sparse[name].state() for name in NETWORKS},
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "gradient_steps": self.gradient_steps,
            "mask_generator": self.mask_generator.get_state(),
        }

    def load_state(self, state: dict[str, object]) -> None:
        for name in NETWORKS:
            self.sparse[name].load_state(state["sparse"][name])  # type: ignore[index]
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])  # type: ignore[arg-type]
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])  # type: ignore[arg-type]
        self.gradient_steps = int(state["gradient_steps"])  # type: ignore[arg-type]
        if "mask_generator" in state:  # resume states written before the mask rules had none (and needed none)
            self.mask_generator.set_state(state["mask_generator"])  # type: ignore[arg-type]
