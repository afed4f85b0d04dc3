"""`make bench`: throughput of rnm's trainer against Stable-Baselines3 TD3, N:M cost, -j scaling, GFLOP/s, and
the per-update cost of each mask rule over dense at 75% sparsity.

Every measurement runs in a child process with one torch thread; rnm and SB3 runs are interleaved so that a
noisy neighbour slows both alike, and the printed figures are ratios of medians. The mask-rule configs share one
child and take turns in short chunks, for the same reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnmtd3.config import json_defaults

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SWEEP_RUNS, SWEEP_STEPS = 6, 4000  # Hopper 2:4 runs of -j 1 and -j 2; a third of each run is start_steps
RULE_ENV = "HalfCheetah-v5"  # the env of issue 11's comparison
RULE_CONFIGS = ("dense", *(f"{pattern}/{rule}" for pattern in ("1:4", "unstructured:0.75")
                           for rule in ("magnitude", "set", "rigl")))
RULE_CHUNKS, RULE_WARMUP, BATCH_POOL = 10, 50, 32


def children(*argvs: list[str]) -> list[dict]:
    """Run one measuring child per argv, all at once, and return their results."""
    env = {**os.environ, **ONE_THREAD}
    procs = [subprocess.Popen([sys.executable, __file__, *argv], env=env, stdout=subprocess.PIPE, text=True)
             for argv in argvs]
    outs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"a measuring child failed: {[proc.returncode for proc in procs]}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outs]


def child(argv: list[str]) -> dict:
    return children(argv)[0]


# -- measured in a child process ----------------------------------------------------------------------
def measure_rnm(env_id: str, pattern: str, start: int, updates: int, precision: str) -> dict:
    t0 = time.perf_counter()
    import torch

    from rnmtd3.sinks import MemorySink
    from rnmtd3.sweep import make_config
    from rnmtd3.trainer import train

    torch.set_num_threads(1)
    marks: dict[int, float] = {}

    class Timed(MemorySink):
        def on_progress(self, step: int, steps_per_sec: float) -> None:
            marks[step] = time.perf_counter()

    config = make_config(env_id, pattern, 0, {"steps": start + updates, "start_steps": start,
                                             "eval_interval": 10**9, "eval_episodes": 1, "precision": precision})
    with tempfile.TemporaryDirectory() as folder:
        train(config, Path(folder), Timed(), resume=False)
    first = min(s for s in marks if s > start)
    rate = (start + updates - first) / (marks[start + updates] - marks[first])
    return {"steps_per_sec": rate, "process_s": time.perf_counter() - t0}


def measure_sb3(env_id: str, start: int, updates: int) -> dict:
    t0 = time.perf_counter()
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(1)
    env = gym.make(env_id)
    act_dim = env.action_space.shape[0]
    marks: dict[int, float] = {}

    class Mark(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % 100 == 0:
                marks[self.num_timesteps] = time.perf_counter()
            return True

    model = TD3("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=start, batch_size=256,
                tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, policy_delay=2, target_policy_noise=0.2,
                target_noise_clip=0.5, action_noise=NormalActionNoise(np.zeros(act_dim), 0.1 * np.ones(act_dim)),
                policy_kwargs={"net_arch": [256, 256]}, seed=0, device="cpu")
    model.learn(total_timesteps=start + updates, callback=Mark())
    first = min(s for s in marks if s > start)
    rate = (start + updates - first) / (marks[start + updates] - marks[first])
    return {"steps_per_sec": rate, "process_s": time.perf_counter() - t0}


def measure_peak() -> dict:
    import torch

    torch.set_num_threads(1)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        for _ in range(3):
            a @ b
        n, t = 10, time.perf_counter()
        for _ in range(n):
            a @ b
        out[name] = 2 * 1024**3 * n / (time.perf_counter() - t) / 1e9
    return out


def measure_rules(env_id: str, mask_interval: int, repeats: int) -> dict:
    """Time agent.update of every RULE_CONFIGS entry over one window of mask_interval updates (so each sparse
    config runs exactly one mask update in it, at its real frequency), and one mask update alone `repeats` times.

    The window is cut into RULE_CHUNKS chunks and the configs take turns chunk by chunk, in a rotating order, so
    that a noisy neighbour slows them alike. Batches are random transitions drawn before timing: the time is the
    agent's alone, without env steps or replay sampling.
    """
    import torch

    from rnmtd3.envs import make_env
    from rnmtd3.replay import Batch
    from rnmtd3.sweep import make_config
    from rnmtd3.td3 import TD3Agent

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the trainer does
    env = make_env(env_id)
    low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (env.action_space.low, env.action_space.high))
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    agents = {}
    for name in RULE_CONFIGS:
        pattern, _, rule = name.partition("/")
        config = make_config(env_id, pattern, 0, {"mask_interval": mask_interval, "mask_rule": rule or "magnitude"})
        agents[name] = TD3Agent(config, obs_dim, act_dim, low, high)
    batch_size = agents["dense"].config.batch_size
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen)

    def actions() -> torch.Tensor:
        return low + (high - low) * torch.rand((batch_size, act_dim), generator=gen)

    pool = [(Batch(rand(batch_size, obs_dim), actions(), rand(batch_size, 1), rand(batch_size, obs_dim),
                   torch.zeros(batch_size, 1)), rand(batch_size, act_dim)) for _ in range(BATCH_POOL)]

    def run(agent: TD3Agent, updates: int) -> tuple[float, int]:
        """Seconds for `updates` calls of agent.update, and how many of them moved the masks."""
        masks = 0
        t = time.perf_counter()
        for _ in range(updates):
            batch, noise = pool[agent.gradient_steps % BATCH_POOL]
            masks += "sad_actor" in agent.update(batch, noise)
        return time.perf_counter() - t, masks

    for agent in agents.values():
        run(agent, RULE_WARMUP)
    sizes = [mask_interval * (k + 1) // RULE_CHUNKS - mask_interval * k // RULE_CHUNKS for k in range(RULE_CHUNKS)]
    chunks: dict[str, list[tuple[float, int, int]]] = {name: [] for name in agents}
    names = list(agents)
    for i, size in enumerate(sizes):
        for name in names[i % len(names):] + names[:i % len(names)]:
            chunks[name].append((*run(agents[name], size), size))
    mask_s: dict[str, list[float]] = {name: [] for name in names if name != "dense"}
    for k in range(repeats):  # one mask update alone, the configs in turn
        batch, noise = pool[k % BATCH_POOL]
        for name in mask_s:
            t = time.perf_counter()
            agents[name].update_masks(batch, noise)
            mask_s[name].append(time.perf_counter() - t)
    out = {}
    for name in names:
        plain = [seconds / size for seconds, masks, size in chunks[name] if masks == 0]
        out[name] = {"update_ms": 1e3 * statistics.median(plain),
                     "window_ms": 1e3 * sum(c[0] for c in chunks[name]) / mask_interval,
                     "mask_updates_in_window": sum(c[1] for c in chunks[name]),
                     "mask_update_ms": 1e3 * statistics.median(mask_s[name]) if name in mask_s else 0.0}
    return out


def update_gflop(obs: int, act: int, hidden: tuple[int, ...] = (256, 256), batch: int = 256, delay: int = 2) -> float:
    """Matrix-multiply FLOPs of one TD3 update (the actor's share divided by policy_delay), in GFLOP."""
    def layers(inp: int, out: int) -> list[tuple[int, int]]:
        sizes = [inp, *hidden, out]
        return list(zip(sizes[:-1], sizes[1:]))

    def fwd(ls):
        return sum(2 * batch * i * o for i, o in ls)

    actor, critic = layers(obs, act), layers(obs + act, 1)
    critic_step = 2 * fwd(critic) + fwd(actor) + 2 * fwd(critic)  # q1, q2; target actor; two target critics
    critic_step += 2 * (2 * fwd(critic) - 2 * batch * critic[0][0] * critic[0][1])  # weight grads + input grads
    actor_step = fwd(actor) + fwd(critic) + 2 * fwd(critic) + 2 * fwd(actor)  # forward, backward through both
    return (critic_step + actor_step / delay) / 1e9


def sweep_wall(jobs: int, runs: int, steps: int) -> float:
    rnm = str(Path(sys.executable).parent / "rnm")
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "bench.db")
        subprocess.run([rnm, "queue", "--envs", "Hopper", "--patterns", "2:4", "--seeds", str(runs),
                        "--no-baseline", "--steps", str(steps), "--set", f"start_steps={steps // 3}",
                        "--set", "eval_episodes=1", "--db", db], check=True, capture_output=True)
        t = time.perf_counter()
        subprocess.run([rnm, "run-workers", "-j", str(jobs), "--db", db], check=True, capture_output=True)
        return time.perf_counter() - t


def throughput(updates: int, repeats: int) -> tuple[dict, dict[str, float]]:
    """Whole-trainer steps/s of rnm (dense, N:M, bf16) against SB3, the -j 2 sweep and its ceiling, GFLOP/s."""
    start, n = 1000, updates
    results: dict[str, list[float]] = {}

    def record(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)
        print(f"  {key}: {value:.1f}", flush=True)

    for _ in range(repeats):
        for env_id in ("Hopper-v5", "Ant-v5"):
            record(f"{env_id}/sb3", child(["sb3", env_id, str(start), str(n)])["steps_per_sec"])
            for pattern in ("dense", "2:4", "1:8"):
                record(f"{env_id}/rnm/{pattern}/fp32",
                       child(["rnm", env_id, pattern, str(start), str(n), "fp32"])["steps_per_sec"])
            record(f"{env_id}/rnm/dense/bf16", child(["rnm", env_id, "dense", str(start), str(n), "bf16"])["steps_per_sec"])
        # the machine's own ceiling for -j 2: two trainers side by side, each against one alone
        pair = children(*[["rnm", "Hopper-v5", "dense", str(start), str(n), "fp32"]] * 2)
        record("pair/Hopper-v5/dense/fp32", sum(p["steps_per_sec"] for p in pair))
        record("sweep/j1_s", sweep_wall(1, SWEEP_RUNS, SWEEP_STEPS))
        record("sweep/j2_s", sweep_wall(2, SWEEP_RUNS, SWEEP_STEPS))
    med = {key: statistics.median(values) for key, values in results.items()}
    peak = child(["peak"])
    figures: dict[str, float] = {}
    for env_id, dims in (("Hopper-v5", (11, 3)), ("Ant-v5", (105, 8))):
        sb3 = med[f"{env_id}/sb3"]
        dense = med[f"{env_id}/rnm/dense/fp32"]
        figures[f"{env_id}: rnm dense fp32 / sb3"] = dense / sb3
        figures[f"{env_id}: rnm dense bf16 / sb3"] = med[f"{env_id}/rnm/dense/bf16"] / sb3
        for pattern in ("2:4", "1:8"):
            figures[f"{env_id}: N:M overhead {pattern} (dense/sparse - 1)"] = dense / med[f"{env_id}/rnm/{pattern}/fp32"] - 1
        gflop = update_gflop(*dims)
        figures[f"{env_id}: update GFLOP/s fp32 (of peak {peak['fp32']:.0f})"] = gflop * dense
        figures[f"{env_id}: update GFLOP/s bf16 (of peak {peak['bf16']:.0f})"] = gflop * med[f"{env_id}/rnm/dense/bf16"]
    figures["sweep: -j2 throughput / -j1"] = med["sweep/j1_s"] / med["sweep/j2_s"]
    figures["ceiling: two trainers side by side / one alone"] = (med["pair/Hopper-v5/dense/fp32"]
                                                               / med["Hopper-v5/rnm/dense/fp32"])
    return {"median_steps_per_sec": med, "peak_gflops": peak, "updates_per_measure": n}, figures


def mask_rules(mask_interval: int, repeats: int) -> tuple[dict, dict[str, float]]:
    """Per-update cost of each mask rule over dense, amortized at mask_interval, and one mask update's cost."""
    timed = child(["rules", RULE_ENV, str(mask_interval), str(repeats)])
    dense = timed["dense"]
    figures: dict[str, float] = {}
    for name, t in timed.items():
        if name == "dense":
            continue
        t["overhead_amortized"] = t["window_ms"] / dense["window_ms"] - 1
        t["overhead_between_mask_updates"] = t["update_ms"] / dense["update_ms"] - 1
        t["mask_share"] = t["mask_update_ms"] / mask_interval / dense["update_ms"]
        figures[f"{RULE_ENV} fp32 {name}: per-update overhead over dense, mask updates every {mask_interval}"] = (
            t["overhead_amortized"])
    return {"env": RULE_ENV, "precision": "fp32", "mask_interval": mask_interval, "window_updates": mask_interval,
            "chunks": RULE_CHUNKS, "mask_update_repeats": repeats, "configs": timed}, figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench-results/bench.json")
    parser.add_argument("--updates", type=int, default=1500, help="throughput: timed updates per measurement")
    parser.add_argument("--repeats", type=int, default=3,
                        help="throughput: repeats of every measurement; mask rules: timed mask updates per config")
    parser.add_argument("--mask-interval", type=int, default=json_defaults()["mask_interval"],
                        help="mask rules: gradient steps between mask updates, and the timed window per config")
    parser.add_argument("--only", choices=("throughput", "mask-rules"), help="run one section (default: both)")
    args = parser.parse_args()
    if args.mask_interval < RULE_CHUNKS:
        parser.error(f"--mask-interval must be at least {RULE_CHUNKS} (the window is timed in {RULE_CHUNKS} chunks)")
    report: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": sys.platform}, "repeats": args.repeats}
    figures: dict[str, float] = {}
    if args.only in (None, "throughput"):
        part, part_figures = throughput(args.updates, args.repeats)
        report.update(part)
        figures.update(part_figures)
    if args.only in (None, "mask-rules"):
        report["mask_rules"], part_figures = mask_rules(args.mask_interval, args.repeats)
        figures.update(part_figures)
    report["ratios"] = figures
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(figures, indent=2))
    for name, t in report.get("mask_rules", {}).get("configs", {}).items():
        print(f"  {name}: update {t['update_ms']:.3f} ms, amortized {t['window_ms']:.3f} ms, "
              f"one mask update {t['mask_update_ms']:.1f} ms")
    print(f"written to {args.out}")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("rnm", "sb3", "rules", "peak"):
        kind, rest = sys.argv[1], sys.argv[2:]
        if kind == "rnm":
            result = measure_rnm(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])
        elif kind == "sb3":
            result = measure_sb3(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "rules":
            result = measure_rules(rest[0], int(rest[1]), int(rest[2]))
        else:
            result = measure_peak()
        print(json.dumps(result))
    else:
        main()
