"""Row-wise N:M sparsity of every linear layer of a network, with its gradient rules and SAD.

Each sparse layer has two weights: the *latent* weight, which the optimizer updates and the mask is computed from,
and the *forward* weight (the module's own parameter, so its state_dict is what the forward pass uses), kept equal
to latent * mask after every change. Projecting once per optimizer step, rather than masking inside every forward,
leaves the forward and backward passes plain dense linear algebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .patterns import Pattern


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping, in each row, the n largest-magnitude weights of every group of m along `in`.

    The row is zero-padded to a multiple of m; ties go to the lowest index, so a padded slot never beats a
    real weight and a trailing group of r < m weights keeps exactly min(n, r) of them.
    """
    out_features, in_features = weight.shape
    pad = (-in_features) % m
    magnitude = weight.detach().abs()
    if pad:
        magnitude = torch.nn.functional.pad(magnitude, (0, pad))
    groups = magnitude.reshape(out_features, -1, m)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return mask.reshape(out_features, -1)[:, :in_features].contiguous()


def satisfies_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of m consecutive weights of every row (zero-padded) has at most n nonzeros."""
    out_features, in_features = weight.shape
    nonzero = (weight != 0).to(torch.int64)
    pad = (-in_features) % m
    if pad:
        nonzero = torch.nn.functional.pad(nonzero, (0, pad))
    return bool((nonzero.reshape(out_features, -1, m).sum(-1) <= n).all())


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
                 srste_decay: float = 0.0, masks: list[torch.Tensor] | None = None):
        self.module = module
        self.pattern = pattern
        self.rule = _GradRule(grad_mode, srste_decay)
        linears = [layer for layer in module.modules() if isinstance(layer, nn.Linear)]
        if pattern.is_dense:
            sparse = []
        elif sparse_io:
            sparse = linears
        else:
            sparse = linears[1:-1]
        self.forward_params: list[nn.Parameter] = list(module.parameters())
        sparse_ids = {id(layer.weight) for layer in sparse}
        self.sparse_index = [i for i, p in enumerate(self.forward_params) if id(p) in sparse_ids]
        self.weights = [self.forward_params[i] for i in self.sparse_index]
        self.latent = [w.detach().clone().requires_grad_(True) for w in self.weights]
        self.optim_params = list(self.forward_params)
        for i, latent in zip(self.sparse_index, self.latent):
            self.optim_params[i] = latent
        if masks is None:
            masks = [nm_mask(w, pattern.n, pattern.m) for w in self.latent]
        self.masks = masks
        self._float_masks = [mask.to(w.dtype) for mask, w in zip(masks, self.latent)]
        self._pruned = [1.0 - mask for mask in self._float_masks]
        self.project()

    # -- the per-step path ------------------------------------------------------------------------
    @torch.no_grad()
    def set_grads(self, grads: tuple[torch.Tensor, ...]) -> None:
        """Give the optimizer's parameters their gradients from d(loss)/d(forward params), by the grad rule."""
        for param, grad in zip(self.optim_params, grads):
            param.grad = grad
        if not self.latent:
            return
        if self.rule.mode == "masked":
            torch._foreach_mul_([grads[i] for i in self.sparse_index], self._float_masks)

    @torch.no_grad()
    def decay_pruned(self, lr: float) -> None:
        """SR-STE's decay of the pruned latent weights (grad_mode=srste): W[pruned] *= 1 - lr * srste_decay.

        Called between the gradient and the optimizer step, as AdamW applies weight decay: under SGD the two make
        exactly SR-STE's update (Zhou et al. 2021), W <- W - lr * (g + srste_decay * pruned * W). Added to the
        gradient instead, Adam would divide the decay by the gradient's running scale, so its strength would
        follow the loss's scale, not srste_decay.
        """
        if self.rule.mode == "srste" and self.latent:
            torch._foreach_addcmul_(self.latent, self._pruned, self.latent, value=-lr * self.rule.srste_decay)

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
    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> float:
        """Recompute the masks from the latent weights; return SAD, the fraction of mask entries that flipped.

        Under grad_mode=masked the Adam first moment of newly pruned weights is cleared, so neither the
        (zero) gradient nor stale momentum can move a pruned weight until the mask brings it back.
        """
        if not self.latent:
            return 0.0
        flipped, total = 0, 0
        for k, latent in enumerate(self.latent):
            new = nm_mask(latent, self.pattern.n, self.pattern.m)
            flipped += int((new != self.masks[k]).sum())
            total += new.numel()
            self.masks[k].copy_(new)
            self._float_masks[k].copy_(new)
            self._pruned[k].copy_(~new)
        if optimizer is not None and self.rule.mode == "masked":
            for latent, mask in zip(self.latent, self._float_masks):
                state = optimizer.state.get(latent)
                if state and "exp_avg" in state:
                    state["exp_avg"].mul_(mask)
        self.project()
        return flipped / total

    def share_masks_with(self, other: "SparseParams") -> None:
        """Make this (target) network use `other`'s mask tensors, so both change together at a mask update."""
        self.masks = other.masks
        self._float_masks = other._float_masks
        self._pruned = other._pruned
        self.project()

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
