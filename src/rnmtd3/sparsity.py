"""Sparsity of every linear layer of a network: patterns' groups, mask rules, gradient rules and SAD.

A pattern (N:M, unstructured) says where zeros may be: its `Groups`. A mask rule (magnitude, SET, RigL) says how
they move within a group at a mask update: a function in `RULES`. The two meet only in `SparseParams.update_masks`.

Each sparse layer has two weights: the *latent* weight, which the optimizer updates and the mask is computed from,
and the *forward* weight (the module's own parameter, so its state_dict is what the forward pass uses), kept equal
to latent * mask after every change. Projecting once per optimizer step, rather than masking inside every forward,
leaves the forward and backward passes plain dense linear algebra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .patterns import Pattern


@dataclass(frozen=True)
class Groups:
    """A pattern's groups on one layer: where its zeros may be, as a (groups, size) view with a budget per group.

    N:M groups are the m consecutive weights of a row, the row zero-padded to a multiple of m, with n to keep;
    unstructured has one group, the whole layer, with Pattern.kept to keep. Every rule and check works on this view,
    so a new pattern is a new way to build it.
    """

    shape: tuple[int, int]
    size: int
    budget: int
    pad: int

    @staticmethod
    def of(pattern: Pattern, shape: tuple[int, int]) -> "Groups":
        out_features, in_features = shape
        if pattern.is_dense:
            return Groups(shape, out_features * in_features, out_features * in_features, 0)
        if pattern.is_unstructured:
            return Groups(shape, out_features * in_features, pattern.kept(out_features, in_features), 0)
        return Groups(shape, pattern.m, pattern.n, (-in_features) % pattern.m)

    def view(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        if self.pad:
            x = torch.nn.functional.pad(x, (0, self.pad), value=fill)
        return x.reshape(-1, self.size)

    def layer(self, grouped: torch.Tensor) -> torch.Tensor:
        return grouped.reshape(self.shape[0], -1)[:, :self.shape[1]].contiguous()

    def top(self, scores: torch.Tensor, counts: int | torch.Tensor) -> torch.Tensor:
        """Boolean layer mask keeping the `counts` highest scores of each group (an int, or one count per group);
        ties go to the lowest index, and padding (scored -inf) loses to every real weight."""
        grouped = self.view(scores.detach().float(), fill=-math.inf)
        order = torch.sort(grouped, dim=-1, descending=True, stable=True).indices
        positions = torch.arange(self.size, device=order.device).expand_as(order)
        ranks = torch.empty_like(order).scatter_(-1, order, positions)
        counts = counts.unsqueeze(-1) if isinstance(counts, torch.Tensor) else counts
        return self.layer(ranks < counts)

    def nonzero_counts(self, weight: torch.Tensor) -> torch.Tensor:
        return self.view((weight != 0).to(torch.int64)).sum(-1)


def magnitude_mask(weight: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Boolean mask keeping the largest-magnitude weights of each group of `pattern` (ties to the lowest index), so a
    trailing N:M group of r < m weights keeps exactly min(n, r) and an unstructured layer exactly Pattern.kept."""
    groups = Groups.of(pattern, tuple(weight.shape))
    return groups.top(weight.abs(), groups.budget)


def satisfies(weight: torch.Tensor, pattern: Pattern) -> bool:
    """True when no group of `pattern` holds more nonzeros than its budget (always true for dense)."""
    groups = Groups.of(pattern, tuple(weight.shape))
    return bool((groups.nonzero_counts(weight) <= groups.budget).all())


# -- mask rules: how the zeros move within a group at a mask update ----------------------------------
@dataclass(frozen=True)
class LayerUpdate:
    """What a mask rule sees of one layer at a mask update."""

    latent: torch.Tensor
    mask: torch.Tensor
    groups: Groups
    drop_fraction: float
    dense_grad: torch.Tensor | None
    generator: torch.Generator | None


def magnitude(update: LayerUpdate) -> torch.Tensor:
    """Keep the largest latent weights of each group, wherever they are (pruned ones come back if they outgrow)."""
    return update.groups.top(update.latent.abs(), update.groups.budget)


def drop_and_grow(update: LayerUpdate, grow_score: torch.Tensor) -> torch.Tensor:
    """Drop the drop_fraction smallest active weights of the layer, then let each group grow back as many as it lost,
    the inactive weights with the highest `grow_score` (a just-dropped weight may win back its place).

    The drop is ranked over the whole layer, not per group, because a group of 1:4 holds a single active weight; the
    regrowth is per group, so every group keeps its count (exactly N for N:M).
    """
    active = update.mask
    n_drop = round(update.drop_fraction * int(active.sum()))
    if n_drop == 0:
        return active.clone()
    drop_scores = torch.where(active, update.latent.detach().abs(), math.inf).flatten()
    dropped = torch.zeros(active.numel(), dtype=torch.bool, device=active.device)
    dropped[torch.sort(drop_scores, stable=True).indices[:n_drop]] = True
    kept = active & ~dropped.view_as(active)
    lost = update.groups.nonzero_counts(dropped.view_as(active))
    grown = update.groups.top(torch.where(kept, -math.inf, grow_score.float()), lost)
    return kept | grown


def set_rule(update: LayerUpdate) -> torch.Tensor:
    """SET (Mocanu et al. 2018): regrow at random, from the run's own seeded mask generator."""
    noise = torch.rand(update.latent.shape, generator=update.generator).to(update.latent.device)
    return drop_and_grow(update, noise)


def rigl(update: LayerUpdate) -> torch.Tensor:
    """RigL (Evci et al. 2020): regrow where the dense gradient of the loss is largest."""
    return drop_and_grow(update, update.dense_grad.abs())


@dataclass(frozen=True)
class MaskRule:
    """A rule's new-mask function with the two facts the caller must act on: whether grown weights restart from zero
    (then their latents and Adam moments are cleared), and whether it needs this step's dense gradients (one extra
    backward pass, only at a mask update)."""

    new_mask: Callable[[LayerUpdate], torch.Tensor]
    regrows_from_zero: bool  # grown weights start at zero, with fresh optimizer moments
    needs_dense_grad: bool


RULES = {
    "magnitude": MaskRule(magnitude, regrows_from_zero=False, needs_dense_grad=False),
    "set": MaskRule(set_rule, regrows_from_zero=True, needs_dense_grad=False),
    "rigl": MaskRule(rigl, regrows_from_zero=True, needs_dense_grad=True),
}


def drop_fraction_at(drop_fraction: float, step: int, end_step: float) -> float:
    """The cosine decay of RigL: drop_fraction at step 0, zero at `end_step` and after."""
    if step >= end_step:
        return 0.0
    return drop_fraction * 0.5 * (1.0 + math.cos(math.pi * step / end_step))


@dataclass
class _GradRule:
    mode: str
    srste_decay: float


class SparseParams:
    """The latent weights, masks and optimizer view of one network (actor or critic, online or target).

    `optim_params` is what an optimizer (or Polyak averaging) acts on: the latent weight in place of each
    sparse layer's forward weight, the module's own tensor for everything else. A dense pattern has no sparse
    layers, so the same code path trains the dense baseline.
    """

    def __init__(self, module: nn.Module, pattern: Pattern, sparse_io: bool, grad_mode: str = "masked",
                 srste_decay: float = 0.0, sparse_init: str = "dense"):
        self.module = module
        self.grad_rule = _GradRule(grad_mode, srste_decay)
        self.linears = [layer for layer in module.modules() if isinstance(layer, nn.Linear)]
        if pattern.is_dense:
            sparse = []
        elif sparse_io:
            sparse = self.linears
        else:
            sparse = self.linears[1:-1]
        self.forward_params: list[nn.Parameter] = list(module.parameters())
        sparse_ids = {id(layer.weight) for layer in sparse}
        self.sparse_index = [i for i, p in enumerate(self.forward_params) if id(p) in sparse_ids]
        self.weights = [self.forward_params[i] for i in self.sparse_index]
        self.latent = [w.detach().clone().requires_grad_(True) for w in self.weights]
        self.groups = [Groups.of(pattern, tuple(w.shape)) for w in self.weights]
        self.optim_params = list(self.forward_params)
        for i, latent in zip(self.sparse_index, self.latent):
            self.optim_params[i] = latent
        self.masks = [groups.top(w.abs(), groups.budget) for groups, w in zip(self.groups, self.latent)]
        self._float_masks = [mask.to(w.dtype) for mask, w in zip(self.masks, self.latent)]
        self._pruned = [1.0 - mask for mask in self._float_masks]
        self.followers: list[SparseParams] = []
        if sparse_init == "scaled":
            self._rescale_to_dense_norm()
        self.project()

    @torch.no_grad()
    def _rescale_to_dense_norm(self) -> None:
        """sparse_init=scaled: scale each sparse layer's latent weight so that its masked weight has the dense
        weight's Frobenius norm, hence (on white inputs) the dense layer's mean output variance.

        Pruning keeps the largest weights of a row, so the shrinkage is less than the density (1:8 keeps about 30%
        of a uniform init's squared norm, not 12.5%); measuring the norm makes the scale exact for every pattern.
        The whole latent weight is scaled, so the order of magnitudes, and with it the mask, is unchanged.
        """
        for latent, mask in zip(self.latent, self._float_masks):
            kept = (latent * mask).norm()
            if kept > 0:
                latent.mul_(latent.norm() / kept)

    # -- the per-step path ------------------------------------------------------------------------
    @torch.no_grad()
    def set_grads(self, grads: tuple[torch.Tensor, ...]) -> None:
        """Give the optimizer's parameters their gradients from d(loss)/d(forward params), by the grad rule."""
        for param, grad in zip(self.optim_params, grads):
            param.grad = grad
        if not self.latent:
            return
        if self.grad_rule.mode == "masked":
            torch._foreach_mul_([grads[i] for i in self.sparse_index], self._float_masks)

    @torch.no_grad()
    def decay_pruned(self, lr: float) -> None:
        """SR-STE's decay of the pruned latent weights (grad_mode=srste): W[pruned] *= 1 - lr * srste_decay.

        Called between the gradient and the optimizer step, as AdamW applies weight decay: under SGD the two make
        exactly SR-STE's update (Zhou et al. 2021), W <- W - lr * (g + srste_decay * pruned * W). Added to the
        gradient instead, Adam would divide the decay by the gradient's running scale, so its strength would
        follow the loss's scale, not srste_decay.
        """
        if self.grad_rule.mode == "srste" and self.latent:
            torch._foreach_addcmul_(self.latent, self._pruned, self.latent, value=-lr * self.grad_rule.srste_decay)

    @torch.no_grad()
    def project(self) -> None:
        """Forward weight := latent * mask (pruned entries exactly zero), one pass per layer."""
        for weight, latent, mask in zip(self.weights, self.latent, self._float_masks):
            torch.mul(latent, mask, out=weight)

    @torch.no_grad()
    def follow(self, online: "SparseParams", tau: float) -> None:
        """Polyak-average toward `online` and project through online's current mask (for target networks)."""
        torch._foreach_lerp_(self.optim_params, online.optim_params, tau)
        self.project()

    # -- mask updates -----------------------------------------------------------------------------
    @torch.no_grad()
    def update_masks(self, optimizer: torch.optim.Optimizer | None = None, rule: MaskRule = RULES["magnitude"],
                     drop_fraction: float = 0.0, dense_grads: list[torch.Tensor] | None = None,
                     generator: torch.Generator | None = None) -> float:
        """Move the masks by `rule`, carry the followers (targets) along; return SAD, the fraction of mask entries
        that flipped. `dense_grads` are d(loss)/d(forward weight) of the sparse layers, for rules that need them.

        Under grad_mode=masked the Adam first moment of newly pruned weights is cleared, so neither the (zero)
        gradient nor stale momentum can move a pruned weight until the mask brings it back. A rule that regrows
        from zero also zeroes the grown weights (online and target latents) and both their Adam moments.
        """
        if not self.latent:
            return 0.0
        flipped, total = 0, 0
        for k, latent in enumerate(self.latent):
            old = self.masks[k]
            new = rule.new_mask(LayerUpdate(latent, old, self.groups[k], drop_fraction,
                                            dense_grads[k] if dense_grads is not None else None, generator))
            if rule.regrows_from_zero:
                self._start_at_zero(k, new & ~old, optimizer)
            flipped += int((new != old).sum())
            total += new.numel()
            old.copy_(new)
            self._float_masks[k].copy_(new)
            self._pruned[k].copy_(~new)
        if optimizer is not None and self.grad_rule.mode == "masked":
            for latent, mask in zip(self.latent, self._float_masks):
                state = optimizer.state.get(latent)
                if state and "exp_avg" in state:
                    state["exp_avg"].mul_(mask)
        self.project()
        for follower in self.followers:
            follower.project()
        return flipped / total

    def _start_at_zero(self, k: int, grown: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        for params in (self, *self.followers):
            params.latent[k].masked_fill_(grown, 0.0)
        state = optimizer.state.get(self.latent[k]) if optimizer is not None else None
        for moment in ("exp_avg", "exp_avg_sq"):
            if state and moment in state:
                state[moment].masked_fill_(grown, 0.0)

    def share_masks_with(self, other: "SparseParams") -> None:
        """Make this (target) network use `other`'s mask tensors and follow its mask updates."""
        self.masks = other.masks
        self._float_masks = other._float_masks
        self._pruned = other._pruned
        other.followers.append(self)
        self.project()

    def density(self) -> float:
        """Measured density: nonzero forward weights over all weights of the sparse layers (of all layers when the
        pattern is dense)."""
        weights = self.weights or [layer.weight for layer in self.linears]
        return sum(int(w.count_nonzero()) for w in weights) / sum(w.numel() for w in weights)

    # -- resume state -----------------------------------------------------------------------------
    def state(self) -> dict[str, list[torch.Tensor]]:
        return {"params": [p.detach().clone() for p in self.optim_params], "masks": [m.clone() for m in self.masks]}

    @torch.no_grad()
    def load_state(self, state: dict[str, list[torch.Tensor]]) -> None:
        for param, saved in zip(self.optim_params, state["params"]):
            param.copy_(saved)
        for k, saved in enumerate(state["masks"]):
            self.masks[k].copy_(saved)
            self._float_masks[k].copy_(saved)
            self._pruned[k].copy_(~saved)
        self.project()
