"""The training loop end to end: checkpoints that satisfy N:M, resume equal to a straight run, determinism, learning."""

import time

import pytest
import torch
from torch import nn

import rnmtd3.trainer as trainer_module
from rnmtd3 import checkpoint as ckpt
from rnmtd3.config import RunConfig
from rnmtd3.errors import UsageError
from rnmtd3.patterns import Pattern
from rnmtd3.sinks import MemorySink
from rnmtd3.sparsity import satisfies
from rnmtd3.td3 import NETWORKS, TD3Agent
from rnmtd3.trainer import train

ONLINE = ("actor", "critic1", "critic2")
DIMS = {"Hopper-v5": (11, 3), "Ant-v5": (105, 8)}


def config(env="Hopper-v5", pattern="2:4", **changes) -> RunConfig:
    return RunConfig(env=env, pattern=Pattern.parse(pattern), **{"seed": 0, **changes})


# -- checkpoints after real training ------------------------------------------------------------------
SMALL = {"steps": 1200, "start_steps": 400, "batch_size": 64, "hidden": (64, 64), "mask_interval": 100,
         "eval_interval": 1200, "eval_episodes": 1, "lr": 1e-3}


@pytest.fixture
def captured_agents(monkeypatch):
    """Record the agent that train() builds, to check its modules directly."""
    agents = []

    class Recording(TD3Agent):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            agents.append(self)

    monkeypatch.setattr(trainer_module, "TD3Agent", Recording)
    return agents


@pytest.mark.parametrize(
    "env, pattern, changes",
    [
        ("Hopper-v5", "2:4", {}),
        ("Hopper-v5", "1:8", {"grad_mode": "srste"}),
        ("Ant-v5", "1:4", {}),
        ("Ant-v5", "2:4", {"grad_mode": "ste", "sparse_io": False}),
        ("Hopper-v5", "dense", {}),
    ],
)
def test_checkpoint_after_training_is_nm(tmp_path, captured_agents, env, pattern, changes):
    cfg = config(env, pattern, **{**SMALL, **changes})
    sink = MemorySink()
    result = train(cfg, tmp_path, sink, resume=False)
    assert result.finished and result.steps_done == cfg.steps
    assert [step for step, _, _ in sink.evals] == [0, cfg.steps]
    (agent,) = captured_agents
    assert agent.gradient_steps == cfg.steps - cfg.start_steps

    path = tmp_path / "checkpoint.pt"
    data = torch.load(path, weights_only=True)
    assert set(NETWORKS) | {"config"} <= set(data)
    assert data["config"]["pattern"] == pattern
    assert RunConfig.from_dict(data["config"]) == cfg
    assert ckpt.check_sparsity(path) == {name: True for name in NETWORKS}

    forward = agent.forward_state_dicts()
    obs_dim, act_dim = DIMS[env]
    for name in NETWORKS:
        saved = data[name]
        assert saved.keys() == getattr(agent, name).state_dict().keys()
        assert all(torch.equal(saved[k], forward[name][k]) for k in saved)  # what the forward pass uses
        keys = [k for k in saved if k.endswith("weight")]
        assert len(keys) == 3
        assert saved[keys[0]].shape[1] == (obs_dim if name.startswith("actor") else obs_dim + act_dim)
        sparse_keys = [] if cfg.pattern.is_dense else keys if cfg.sparse_io else keys[1:-1]
        for key in keys:
            weight = saved[key]
            if key not in sparse_keys:
                assert int((weight != 0).sum()) == weight.numel(), (name, key)
                continue
            n, m = cfg.pattern.n, cfg.pattern.m
            assert satisfies(weight, Pattern(n, m)), (name, key)
            out_features, in_features = weight.shape
            per_row = sum(min(n, in_features - s) for s in range(0, in_features, m))
            assert int((weight != 0).sum()) == out_features * per_row, (name, key)
    if not cfg.pattern.is_dense:
        # each target has exactly its online network's zero pattern, and the agent's masks
        for name in ONLINE:
            for key in data[name]:
                if key.endswith("weight"):
                    assert torch.equal(data[f"{name}_target"][key] == 0, data[name][key] == 0), (name, key)
            target_layers = [m for m in getattr(agent, f"{name}_target").modules() if isinstance(m, nn.Linear)]
            sparse_layers = target_layers if cfg.sparse_io else target_layers[1:-1]
            assert len(sparse_layers) == len(agent.sparse[name].masks)
            for layer, mask in zip(sparse_layers, agent.sparse[name].masks):
                assert torch.equal(layer.weight != 0, mask)
        # SAD was reported at mask updates
        sads = [stats for _, stats in sink.stats if "sad_actor" in stats]
        assert len(sads) == (cfg.steps - cfg.start_steps) // cfg.mask_interval
        assert all(0 <= v <= 1 for stats in sads for v in stats.values())
    else:
        assert not any("sad_actor" in stats for _, stats in sink.stats)


def test_check_sparsity_catches_a_dense_weight(tmp_path):
    cfg = config(**{**SMALL, "steps": 600})
    train(cfg, tmp_path, MemorySink(), resume=False)
    path = tmp_path / "checkpoint.pt"
    data = torch.load(path, weights_only=True)
    key = next(k for k in data["critic2_target"] if k.endswith("weight"))
    data["critic2_target"][key] = torch.ones_like(data["critic2_target"][key])
    tampered = tmp_path / "tampered.pt"
    torch.save(data, tampered)
    result = ckpt.check_sparsity(tampered)
    assert result == {name: name != "critic2_target" for name in NETWORKS}


# -- resume and determinism -------------------------------------------------------------------------
RESUME = {"steps": 3000, "start_steps": 500, "eval_interval": 500, "eval_episodes": 2, "checkpoint_interval": 1000,
          "hidden": (32, 32), "mask_interval": 200}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    cfg = config("Hopper-v5", "2:4", **RESUME)
    sink = MemorySink()
    result = train(cfg, tmp_path_factory.mktemp("straight"), sink, resume=False)
    return cfg, sink, result


def test_resume_matches_straight_run(tmp_path, straight_run):
    cfg, straight, straight_result = straight_run
    assert straight_result.finished
    assert [step for step, _, _ in straight.evals] == list(range(0, 3001, 500))

    first = MemorySink(stop_after_checkpoint=True)
    stopped = train(cfg, tmp_path, first, resume=False)
    assert not stopped.finished
    assert 1000 <= stopped.steps_done < cfg.steps
    assert first.checkpoints and first.checkpoints[-1] == stopped.steps_done
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "resume.pt").exists()

    second = MemorySink()
    resumed = train(cfg, tmp_path, second, resume=True)
    assert resumed.finished and resumed.resumed_from == stopped.steps_done
    assert resumed.steps_done == cfg.steps
    # the resumed run reports the curve its resume state carries, then the rest: the same evaluations at every
    # step, mean and std, as one run straight through
    assert second.evals == straight.evals
    assert first.evals == straight.evals[:len(first.evals)]
    assert resumed.last_return == straight_result.last_return
    # and the same SAD history after the resume point
    sad_straight = [(s, v) for s, v in straight.stats if "sad_actor" in v and s > stopped.steps_done]
    sad_resumed = [(s, v) for s, v in second.stats if "sad_actor" in v]
    assert sad_resumed == sad_straight
    assert ckpt.check_sparsity(tmp_path / "checkpoint.pt") == {name: True for name in NETWORKS}


def test_resume_of_a_finished_run_and_of_another_config(tmp_path):
    cfg = config(**{**SMALL, "steps": 600, "checkpoint_interval": 100})
    train(cfg, tmp_path, MemorySink(), resume=False)
    sink = MemorySink()
    again = train(cfg, tmp_path, sink, resume=True)
    assert again.finished and again.resumed_from == cfg.steps
    assert [step for step, _, _ in sink.evals] == list(range(0, cfg.steps + 1, cfg.eval_interval))
    with pytest.raises(UsageError):
        train(cfg.replace(lr=3e-4), tmp_path, MemorySink(), resume=True)


DETERMINISM = {"steps": 1500, "start_steps": 500, "eval_interval": 500, "eval_episodes": 2, "hidden": (32, 32),
               "mask_interval": 100, "batch_size": 64}


def test_same_config_and_seed_give_identical_evals(tmp_path):
    cfg = config("Hopper-v5", "1:4", **DETERMINISM)
    runs = []
    for folder in ("a", "b"):
        sink = MemorySink()
        train(cfg, tmp_path / folder, sink, resume=False)
        runs.append(sink)
    assert len(runs[0].evals) == 4
    assert runs[0].evals == runs[1].evals
    sad = [[(s, v) for s, v in run.stats if "sad_actor" in v] for run in runs]
    assert sad[0] == sad[1] and sad[0]
    a, b = (torch.load(tmp_path / f / "checkpoint.pt", weights_only=True) for f in ("a", "b"))
    for name in NETWORKS:
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])
    # a different seed is a different run
    other = MemorySink()
    train(cfg.replace(seed=1), tmp_path / "c", other, resume=False)
    assert other.evals != runs[0].evals


# -- learning -----------------------------------------------------------------------------------------
# Seed 0, one torch thread, evaluations every 1000 steps (evaluation consumes no training randomness, so the
# interval does not change the run). In fp32, observed on a 2-core CPU with torch 2.13: dense best -179 (step
# 10000), final -190; 2:4 best -208 (step 11000), final -423 (a few of the 10 episodes fail to swing up: std 368);
# over seeds 0-2 every run's best evaluation was >= -250 but one final one was not (2:4, seed 0), so the bar is
# "reaches -250 within 15,000 steps" plus a final evaluation that is still far above a random policy (~ -1400).
# The test runs 12,000 steps in bf16, the recommended precision (10% faster here), where seed 0 reached: dense -245 at
# step 7000, best -187, final -188; 2:4 -226 at step 8000, best -194, final -203.
@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["dense", "2:4"])
def test_td3_learns_pendulum(tmp_path, pattern):
    cfg = config("Pendulum-v1", pattern, steps=12_000, start_steps=1_000, eval_interval=1_000, precision="bf16")
    sink = MemorySink()
    start = time.perf_counter()
    train(cfg, tmp_path, sink, resume=False)
    wall = time.perf_counter() - start
    returns = [(step, round(mean, 1), round(std, 1)) for step, mean, std in sink.evals]
    print(f"\nPendulum-v1 {pattern}: {wall:.0f}s, evaluations (step, mean, std): {returns}")
    assert [step for step, _, _ in sink.evals] == list(range(0, 12_001, 1_000))
    means = [mean for _, mean, _ in sink.evals]
    assert means[0] < -1000  # the untrained policy is bad, so the bar below means something
    assert max(means) >= -250, returns
    assert means[-1] >= -600, returns


def test_resume_reads_the_config_from_the_folder_and_finishes_the_run(tmp_path):
    from rnmtd3.sweep import make_config
    from rnmtd3.trainer import resume

    config = make_config("Pendulum-v1", "2:4", 0, {"steps": 800, "start_steps": 100, "eval_interval": 200,
                                                   "eval_episodes": 1, "hidden": (16, 16),
                                                   "checkpoint_interval": 200})
    stopped = MemorySink(stop_after_checkpoint=True)
    first = train(config, tmp_path / "run", stopped, resume=False)
    assert not first.finished and 0 < first.steps_done < 800
    rest = MemorySink()
    result = resume(tmp_path / "run", rest)
    assert result.finished and result.resumed_from == first.steps_done
    assert [s for s, _, _ in rest.evals] == list(range(0, 801, 200))
    assert rest.evals[:len(stopped.evals)] == stopped.evals
    with pytest.raises(UsageError):
        resume(tmp_path / "empty", MemorySink())
