"""From what a user types to configs: env names checked alike in short and full form, and a sweep counted before
it is built, so that a typo in --seeds cannot exhaust memory."""

from __future__ import annotations

import pytest

import rnmtd3.sweep as sweep
from rnmtd3.envs import env_dims, resolve_env_id
from rnmtd3.errors import UsageError


@pytest.mark.parametrize("name", ["CartPole", "cartpole", "CartPole-v1", "MountainCar", "Acrobot-v1"])
def test_a_discrete_env_is_refused_by_its_short_name_as_by_its_full_id(name):
    with pytest.raises(UsageError, match="discrete action space"):
        resolve_env_id(name)


def test_continuous_envs_resolve_and_give_their_sizes():
    assert resolve_env_id("pendulum") == "Pendulum-v1"
    assert resolve_env_id("Hopper") == "Hopper-v5"
    assert env_dims("Hopper-v5") == (11, 3)
    assert env_dims("Humanoid-v5") == (348, 17)


@pytest.mark.parametrize("seeds, sets, count", [
    (10**9, [], 3 * 10**9),
    (10_000, ["lr=1e-3,3e-4", "tau=0.005,0.01,0.02"], 3 * 10_000 * 6),
])
def test_a_sweep_beyond_the_cap_is_refused_before_any_config_is_built(seeds, sets, count, monkeypatch):
    def no_config(**values):
        raise AssertionError("a config was built before the sweep was counted")

    monkeypatch.setattr(sweep, "RunConfig", no_config)
    with pytest.raises(UsageError, match=f"expands to {count:,} runs, more than the {sweep.MAX_RUNS:,}"):
        sweep.expand(["Hopper"], ["2:4", "1:4"], seeds, sets)


def test_a_sweep_at_the_cap_is_expanded(monkeypatch):
    monkeypatch.setattr(sweep, "MAX_RUNS", 12)
    assert len(sweep.expand(["Hopper"], ["2:4"], 3, ["lr=1e-3,3e-4"])) == 12  # dense and 2:4, 3 seeds, 2 lrs
    with pytest.raises(UsageError, match="13 runs"):
        sweep.expand(["Hopper"], ["2:4"], 13, [], baseline=False)


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("3,7", [3, 7]), ("5-9", [5, 6, 7, 8, 9]), ("4,", [4])])
def test_seeds_are_a_count_a_list_or_a_range(text, seeds):
    assert list(sweep.parse_seeds(text)) == seeds
    configs = sweep.expand(["Hopper"], ["2:4"], sweep.parse_seeds(text), baseline=False)
    assert [c.seed for c in configs] == seeds


@pytest.mark.parametrize("text, message", [("0", "names no seed"), ("9-5", "names no seed"), ("x", "a count"),
                                           ("3,3", "named twice"), ("1e3", "a list")])
def test_bad_seeds_are_refused_naming_the_three_forms(text, message):
    with pytest.raises(UsageError, match=message):
        sweep.parse_seeds(text)


def test_a_huge_seed_count_is_a_range_refused_by_the_cap_not_by_memory():
    seeds = sweep.parse_seeds("1000000000")
    assert isinstance(seeds, range)
    with pytest.raises(UsageError, match="more than the 100,000"):
        sweep.expand(["Hopper"], ["2:4"], seeds)
