"""The N:M invariant of magnitude_mask and satisfies, against an independent brute-force reference, and SparseParams.

Unstructured patterns and the mask rules (magnitude, SET, RigL) are tested in test_mask_rules.py.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from rnmtd3.patterns import Pattern
from rnmtd3.sparsity import SparseParams, magnitude_mask, satisfies

PATTERNS = [(2, 4), (1, 4), (1, 8), (4, 8), (1, 2)]
# Real input widths: Hopper obs 11 (actor) and 11 + 3 (critic), Ant-v5 105 and 105 + 8, Humanoid-v5 348.
REAL_WIDTHS = [11, 14, 105, 113, 348]

widths = st.one_of(st.sampled_from(REAL_WIDTHS), st.integers(1, 400))
outs = st.one_of(st.sampled_from([1, 3, 8, 17, 64]), st.integers(1, 48))
patterns = st.sampled_from(PATTERNS)
seeds = st.integers(0, 2**32 - 1)
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_mask(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Brute force, no padding: in each group of m consecutive weights of a row, keep the entries whose rank
    (number of group members strictly larger in magnitude, plus equal ones at a lower index) is below n."""
    magnitude = np.abs(weight)
    out_features, in_features = weight.shape
    keep = np.zeros(weight.shape, dtype=bool)
    for start in range(0, in_features, m):
        group = magnitude[:, start:start + m]  # (out, r), r = m except maybe the last group
        r = group.shape[1]
        for j in range(r):
            larger = (group > group[:, j:j + 1]).sum(axis=1)
            equal_before = (group[:, :j] == group[:, j:j + 1]).sum(axis=1)
            keep[:, start + j] = larger + equal_before < n
    return keep


def group_sizes(in_features: int, m: int) -> list[int]:
    return [min(m, in_features - start) for start in range(0, in_features, m)]


def group_counts(values: np.ndarray, m: int) -> np.ndarray:
    """Per row and group: how many entries are True/nonzero; shape (out, groups)."""
    return np.stack([(values[:, s:s + m] != 0).sum(axis=1) for s in range(0, values.shape[1], m)], axis=1)


def random_weight(seed: int, out_features: int, in_features: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((out_features, in_features)).astype(np.float32))


# -- magnitude_mask on N:M -------------------------------------------------------------------------
@SETTINGS
@given(out_features=outs, in_features=widths, nm=patterns, seed=seeds)
def test_magnitude_mask_invariant_on_random_normal_weights(out_features, in_features, nm, seed):
    n, m = nm
    weight = random_weight(seed, out_features, in_features)
    mask = magnitude_mask(weight, Pattern(n, m))
    assert mask.dtype == torch.bool and mask.shape == weight.shape

    counts = group_counts(mask.numpy(), m)
    expected = np.array([min(n, r) for r in group_sizes(in_features, m)])
    # at most N in every group of M, and exactly min(N, r) in a (trailing) group of r real weights
    assert (counts <= n).all()
    assert (counts == expected[None, :]).all()
    # the kept ones are the largest in magnitude, ties to the lowest index
    np.testing.assert_array_equal(mask.numpy(), reference_mask(weight.numpy(), n, m))

    sparse = weight * mask
    assert satisfies(sparse, Pattern(n, m))
    # nonzero weights: the sparse weight has exactly the kept entries nonzero
    np.testing.assert_array_equal(group_counts(sparse.numpy(), m), counts)


@SETTINGS
@given(out_features=outs, in_features=widths, nm=patterns, seed=seeds,
       levels=st.sampled_from([1, 2, 3, 5]))
def test_magnitude_mask_many_exact_ties(out_features, in_features, nm, seed, levels):
    """Weights drawn from a few values (zeros and sign flips included): ties must go to the lowest index."""
    n, m = nm
    rng = np.random.default_rng(seed)
    values = rng.integers(-levels, levels + 1, size=(out_features, in_features)).astype(np.float32)
    weight = torch.from_numpy(values)
    mask = magnitude_mask(weight, Pattern(n, m))
    np.testing.assert_array_equal(mask.numpy(), reference_mask(values, n, m))
    expected = np.array([min(n, r) for r in group_sizes(in_features, m)])
    assert (group_counts(mask.numpy(), m) == expected[None, :]).all()
    assert satisfies(weight * mask, Pattern(n, m))


@pytest.mark.parametrize("n, m", PATTERNS)
@pytest.mark.parametrize("in_features", REAL_WIDTHS)
def test_all_equal_weights_keep_the_first_n_of_each_group(n, m, in_features):
    weight = torch.full((4, in_features), -0.5)
    mask = magnitude_mask(weight, Pattern(n, m))
    columns = np.arange(in_features)
    expected = (columns % m) < n
    assert (mask.numpy() == expected[None, :]).all()


def test_all_zero_weights_still_keep_real_slots_not_padding():
    # 11 inputs at 1:8: groups of 8 and 3; the trailing group keeps its first real (zero) weight
    mask = magnitude_mask(torch.zeros(2, 11), Pattern(1, 8))
    expected = np.zeros(11, dtype=bool)
    expected[[0, 8]] = True
    assert (mask.numpy() == expected).all()


def test_magnitude_mask_known_example():
    weight = torch.tensor([[0.1, -0.9, 0.3, 0.2, 5.0, -6.0, 0.0, 1.0, 0.7, -0.8, 0.01]])
    mask = magnitude_mask(weight, Pattern(2, 4))
    # groups (0.1, -0.9, 0.3, 0.2), (5, -6, 0, 1) and the trailing (0.7, -0.8, 0.01)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False, True, True, False]]


def test_magnitude_mask_does_not_modify_or_track_the_weight():
    weight = torch.randn(8, 14, requires_grad=True)
    before = weight.detach().clone()
    mask = magnitude_mask(weight, Pattern(2, 4))
    assert not mask.requires_grad
    assert torch.equal(weight.detach(), before)


# -- satisfies on N:M -------------------------------------------------------------------------------
@SETTINGS
@given(out_features=outs, in_features=widths, nm=patterns, seed=seeds,
       density=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.8, 1.0]))
def test_satisfies_agrees_with_brute_force(out_features, in_features, nm, seed, density):
    n, m = nm
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((out_features, in_features)).astype(np.float32)
    values[rng.random(values.shape) >= density] = 0.0
    expected = bool((group_counts(values, m) <= n).all())
    assert satisfies(torch.from_numpy(values), Pattern(n, m)) == expected


@pytest.mark.parametrize("n, m", PATTERNS)
@pytest.mark.parametrize("in_features", REAL_WIDTHS)
def test_satisfies_detects_one_extra_nonzero(n, m, in_features):
    weight = random_weight(in_features, 5, in_features)
    sparse = weight * magnitude_mask(weight, Pattern(n, m))
    assert satisfies(sparse, Pattern(n, m))
    assert satisfies(torch.zeros_like(sparse), Pattern(n, m))
    # revive one pruned weight in a full group: that row now has n + 1 in the group
    full_groups = [s for s in range(0, in_features, m) if in_features - s >= m and n < m]
    if not full_groups:
        return
    start = full_groups[-1]
    row = 3
    pruned = [j for j in range(start, start + m) if sparse[row, j] == 0]
    sparse[row, pruned[0]] = 1.0
    assert not satisfies(sparse, Pattern(n, m))


def test_trailing_group_counts_only_real_weights():
    # 11 inputs at 2:4: the last group is 3 real weights; two nonzero is fine, three is not
    weight = torch.zeros(1, 11)
    weight[0, 8:10] = 1.0
    assert satisfies(weight, Pattern(2, 4))
    weight[0, 10] = 1.0
    assert not satisfies(weight, Pattern(2, 4))



@pytest.mark.parametrize("in_features", REAL_WIDTHS)
@pytest.mark.parametrize("nm", PATTERNS)
def test_pattern_kept_is_what_nm_mask_keeps(nm, in_features):
    n, m = nm
    for weight in (random_weight(in_features, 17, in_features), torch.zeros(17, in_features)):
        assert int(magnitude_mask(weight, Pattern(n, m)).sum()) == Pattern(n, m).kept(17, in_features)
    assert Pattern.dense().kept(17, in_features) == 17 * in_features


# -- SparseParams ------------------------------------------------------------------------------------
def mlp(in_features=14, hidden=32, out_features=3, seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_features))


def linears(module):
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


@pytest.mark.parametrize("text", ["2:4", "1:4", "1:8", "4:8", "1:2"])
def test_sparse_params_projects_every_layer(text):
    pattern = Pattern.parse(text)
    module = mlp()
    dense = [layer.weight.detach().clone() for layer in linears(module)]
    sp = SparseParams(module, pattern, sparse_io=True)
    assert len(sp.latent) == len(sp.masks) == 3
    for layer, original, latent, mask in zip(linears(module), dense, sp.latent, sp.masks):
        assert torch.equal(latent, original)  # latent keeps the dense values
        np.testing.assert_array_equal(mask.numpy(), reference_mask(original.numpy(), pattern.n, pattern.m))
        assert torch.equal(layer.weight.detach(), original * mask)
        assert satisfies(layer.weight, Pattern(pattern.n, pattern.m))
    # biases are not sparse and are optimized as themselves
    biases = [layer.bias for layer in linears(module)]
    assert all(any(b is p for p in sp.optim_params) for b in biases)
    assert not any(w is p for w in sp.weights for p in sp.optim_params)


def test_sparse_io_false_leaves_first_and_last_layers_dense():
    module = mlp()
    sp = SparseParams(module, Pattern(1, 4), sparse_io=False)
    first, middle, last = linears(module)
    assert len(sp.latent) == 1
    assert int((first.weight != 0).sum()) == first.weight.numel()
    assert int((last.weight != 0).sum()) == last.weight.numel()
    assert satisfies(middle.weight, Pattern(1, 4)) and not satisfies(first.weight, Pattern(1, 4))


def test_dense_pattern_has_no_sparse_layers():
    module = mlp()
    before = [p.detach().clone() for p in module.parameters()]
    sp = SparseParams(module, Pattern.dense(), sparse_io=True)
    assert sp.latent == [] and sp.masks == []
    assert all(a is b for a, b in zip(sp.optim_params, module.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert sp.update_masks() == 0.0


@pytest.mark.parametrize("mode", ["masked", "ste", "srste"])
def test_set_grads_rules(mode):
    module = mlp()
    sp = SparseParams(module, Pattern(2, 4), sparse_io=True, grad_mode=mode, srste_decay=0.3)
    torch.manual_seed(1)
    grads = tuple(torch.randn_like(p) for p in sp.forward_params)
    given_grads = tuple(g.clone() for g in grads)
    sp.set_grads(grads)
    k = 0
    for i, (param, grad) in enumerate(zip(sp.optim_params, given_grads)):
        if i in sp.sparse_index:
            mask = sp.masks[k].float()
            k += 1
            # srste's decay is not in the gradient: it acts on the weights (decay_pruned)
            expected = grad * mask if mode == "masked" else grad
            torch.testing.assert_close(param.grad, expected, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(param.grad, grad)


def srste_steps(optimizer_class, lr: float, decay: float, grad_scale: float, steps: int, mode: str = "srste"):
    """`steps` optimizer steps of an srste (or ste) layer stack on a fixed sequence of random gradients, scaled by
    `grad_scale`; returns the SparseParams and the latent weights before and after every step."""
    sp = SparseParams(mlp(), Pattern(1, 4), sparse_io=True, grad_mode=mode, srste_decay=decay)
    optimizer = optimizer_class(sp.optim_params, lr=lr)
    generator = torch.Generator().manual_seed(7)
    history = [[latent.detach().clone() for latent in sp.latent]]
    for _ in range(steps):
        sp.set_grads(tuple(grad_scale * torch.randn(p.shape, generator=generator) for p in sp.forward_params))
        sp.decay_pruned(lr)
        optimizer.step()
        sp.project()
        history.append([latent.detach().clone() for latent in sp.latent])
    return sp, history


@pytest.mark.parametrize("grad_scale", [1e-3, 1.0, 1e3])
def test_srste_decay_under_adam_follows_its_formula_whatever_the_gradient_scale(grad_scale):
    """Pruned latents: W_k = prod_t (W_t - u_t) * (1 - lr * decay), with u_t the Adam step that ste takes on the
    same gradients (Adam's step does not depend on the weights); with zero gradients, W_0 * (1 - lr * decay)^k.
    Added to the gradient, the decay was divided by Adam's running scale and came out as a different shrink at
    each gradient scale."""
    lr, decay, steps = 1e-2, 5.0, 6  # shrink 5% per step
    ste, ste_history = srste_steps(torch.optim.Adam, lr, decay, grad_scale, steps, mode="ste")
    srste, history = srste_steps(torch.optim.Adam, lr, decay, grad_scale, steps)
    expected = [w.clone() for w in history[0]]
    for t in range(steps):
        for k, mask in enumerate(srste.masks):
            adam_step = ste_history[t][k] - ste_history[t + 1][k]
            expected[k] = torch.where(mask, expected[k] - adam_step, expected[k] * (1 - lr * decay) - adam_step)
    for latent, want, mask, ste_latent in zip(srste.latent, expected, srste.masks, ste.latent):
        torch.testing.assert_close(latent.detach(), want, rtol=1e-5, atol=1e-7)
        assert torch.equal(latent.detach()[mask], ste_latent.detach()[mask])  # active weights do not decay
    zero, history = srste_steps(torch.optim.Adam, lr, decay, 0.0, steps)
    for latent, first, mask in zip(zero.latent, history[0], zero.masks):
        torch.testing.assert_close(latent.detach()[~mask], first[~mask] * (1 - lr * decay) ** steps, rtol=1e-5, atol=0)
        assert torch.equal(latent.detach()[mask], first[mask])


def test_srste_under_sgd_is_sr_stes_update():
    """Zhou et al. 2021: W <- W - lr * (g + decay * pruned * W), for every latent weight at once."""
    lr, decay = 0.1, 0.5
    sp, history = srste_steps(torch.optim.SGD, lr, decay, 1.0, 3)
    generator = torch.Generator().manual_seed(7)
    expected = [w.clone() for w in history[0]]
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=generator) for p in sp.forward_params]
        for k, i in enumerate(sp.sparse_index):
            pruned = (~sp.masks[k]).float()
            expected[k] = expected[k] - lr * (grads[i] + decay * pruned * expected[k])
    for latent, want in zip(sp.latent, expected):
        torch.testing.assert_close(latent.detach(), want, rtol=1e-6, atol=1e-7)
    for layer, latent, mask in zip(linears(sp.module), sp.latent, sp.masks):
        assert torch.equal(layer.weight.detach(), latent * mask)


@pytest.mark.parametrize("mode", ["masked", "ste"])
def test_decay_pruned_is_srste_only(mode):
    sp = SparseParams(mlp(), Pattern(1, 4), sparse_io=True, grad_mode=mode, srste_decay=0.5)
    before = [latent.detach().clone() for latent in sp.latent]
    sp.decay_pruned(0.1)
    assert all(torch.equal(a, b) for a, b in zip(sp.latent, before))


def test_update_masks_returns_flip_fraction_and_follow_targets():
    online = SparseParams(mlp(seed=0), Pattern(2, 4), sparse_io=True, grad_mode="ste")
    target_module = mlp(seed=0)
    target = SparseParams(target_module, Pattern(2, 4), sparse_io=True, grad_mode="ste")
    target.share_masks_with(online)
    old = [mask.clone() for mask in online.masks]
    assert online.update_masks() == 0.0  # nothing changed
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for latent in online.latent:
            latent.add_(torch.randn(latent.shape, generator=generator) * 0.2)
    sad = online.update_masks()
    flipped = sum(int((new != o).sum()) for new, o in zip(online.masks, old))
    total = sum(o.numel() for o in old)
    assert 0 < flipped
    assert sad == pytest.approx(flipped / total)
    for latent, mask in zip(online.latent, online.masks):
        np.testing.assert_array_equal(mask.numpy(), reference_mask(latent.detach().numpy(), 2, 4))
    # the target uses online's new masks after following
    target.follow(online, 0.5)
    for layer, mask in zip(linears(target_module), online.masks):
        assert torch.equal(layer.weight != 0, mask)
        assert satisfies(layer.weight, Pattern(2, 4))
