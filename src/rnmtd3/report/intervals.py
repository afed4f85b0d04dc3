"""Point estimates with 95% stratified bootstrap confidence intervals, by rliable (Agarwal et al. 2021).

Scores come as one array per env (its runs), since envs may hold different numbers of runs (a failed seed), which
rliable's single (runs x tasks) matrix cannot; its list form resamples the runs of each array independently, which
is the same stratified bootstrap. Every interval here starts from the caller's seed, so a report is reproducible
and one method's interval does not move when another method is filtered in or out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from rliable import library as rly
from rliable import metrics as rly_metrics

DEFAULT_REPS = 10_000
CONFIDENCE = 0.95


@contextmanager
def global_numpy_seed(seed: int) -> Iterator[None]:
    """rliable 1.2's bootstraps draw their indices from numpy's global RNG and ignore `random_state`, so a
    reproducible interval needs the global RNG seeded too; the caller's global state is put back after."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def bootstrap_arrays(arrays: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], *, seed: int,
                     reps: int = DEFAULT_REPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, lows, highs) of the 1-d `statistic(*arrays)`, each array's runs (its first axis) resampled
    independently by rliable; every entry's interval is the percentile interval of its own resampled values."""
    with global_numpy_seed(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
        points, intervals = rly.get_interval_estimates(
            {"scores": [np.asarray(a, dtype=float) for a in arrays]}, statistic, reps=reps,
            confidence_interval_size=CONFIDENCE, random_state=np.random.RandomState(seed))
    return np.asarray(points["scores"], dtype=float), intervals["scores"][0], intervals["scores"][1]


def bootstrap(arrays: Sequence[np.ndarray], statistic: Callable[..., float], *, seed: int,
              reps: int = DEFAULT_REPS) -> tuple[float, float, float]:
    """(point, low, high) of the number `statistic(*arrays)`, each array's runs resampled independently."""
    points, lows, highs = bootstrap_arrays([np.asarray(a, dtype=float).reshape(-1, 1) for a in arrays],
                                           lambda *resampled: np.array([statistic(*resampled)]), seed=seed,
                                           reps=reps)
    return float(points[0]), float(lows[0]), float(highs[0])


def pooled_iqm(*per_env: np.ndarray) -> float:
    """rliable's interquartile mean over the runs of all envs pooled."""
    return float(rly_metrics.aggregate_iqm(np.concatenate([a.reshape(-1) for a in per_env])[:, None]))


def iqm_interval(per_env: Sequence[np.ndarray], *, seed: int, reps: int = DEFAULT_REPS) -> tuple[float, float, float]:
    """IQM over all runs of all envs, with its 95% stratified bootstrap CI: (iqm, low, high)."""
    return bootstrap(per_env, pooled_iqm, seed=seed, reps=reps)


def improvement_probability(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) on one env: over every pair of a run of X and a run of Y, the fraction where X scores higher, ties
    counting half. This is the Mann-Whitney U statistic over (runs of X x runs of Y), which rliable's
    `probability_of_improvement` computes with scipy per task; written out here because the bootstrap calls it
    10,000 times per env and scipy's test costs a hundred times more than this comparison."""
    x, y = np.asarray(x, dtype=float).reshape(-1, 1), np.asarray(y, dtype=float).reshape(1, -1)
    return float(np.mean((x > y) + 0.5 * (x == y)))


def mean_improvement_probability(*pairs: np.ndarray) -> float:
    """P(X > Y) averaged over envs (rliable's definition), from arrays x_env1, y_env1, x_env2, y_env2, ..."""
    return float(np.mean([improvement_probability(x, y) for x, y in zip(pairs[::2], pairs[1::2])]))


def improvement_interval(per_env: Sequence[tuple[np.ndarray, np.ndarray]], *, seed: int,
                         reps: int = DEFAULT_REPS) -> tuple[float, float, float]:
    """P(X > Y) averaged over envs with its 95% CI, X's and Y's runs of each env resampled independently (what
    rliable does for a pair of methods): (probability, low, high)."""
    arrays = [array for pair in per_env for array in pair]
    return bootstrap(arrays, mean_improvement_probability, seed=seed, reps=reps)
