"""What a plan of workers needs from the machine, known before any run starts: cores and memory.

Free of torch on purpose, so that checking a plan (and `rnm status`, `rnm queue`) does not pay its import.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, NamedTuple

from .config import RunConfig
from .envs import env_dims
from .errors import UsageError
from .registry import Registry

GIB = 2**30
PROCESS_OVERHEAD = 400 * 2**20  # torch, MuJoCo and the interpreter of one worker, measured around 350 MB
BYTES_PER_PARAMETER = 72
"""Memory per network parameter of a run: the forward and latent weights of all six networks, the masks, Adam's
moments, the gradients and a checkpoint's copies. Measured 67 at 2:4 and 48 dense (Hopper, hidden 2048x2048)."""
BYTES_PER_ACTIVATION = 20
"""Memory per sample of a batch and hidden unit, for one TD3 update's forward and backward passes: measured 12 to
19 (batches of 16k to 262k samples)."""


class Memory(NamedTuple):
    """Memory that workers may use: `total` over every machine, `largest` on any one (a run cannot span two)."""

    total: int
    largest: int
    where: str  # for messages: "available", "available to tasks on the Ray cluster"


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux), else total physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return total_memory()


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def run_memory(config: RunConfig, obs_dim: int, act_dim: int) -> int:
    """Peak memory of one run's process. The replay buffer counts twice: a checkpoint copies its filled part, and a
    resume loads that copy beside the new buffer."""
    return (2 * replay_bytes(obs_dim, act_dim, min(config.buffer_size, config.steps))
            + BYTES_PER_PARAMETER * network_parameters(obs_dim, act_dim, config.hidden)
            + BYTES_PER_ACTIVATION * config.batch_size * sum(config.hidden) + PROCESS_OVERHEAD)


def network_parameters(obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> int:
    """Parameters of the actor and the two critics (their targets are in BYTES_PER_PARAMETER)."""
    def mlp(sizes: list[int]) -> int:
        return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

    return mlp([obs_dim, *hidden, act_dim]) + 2 * mlp([obs_dim + act_dim, *hidden, 1])


def check_runs_fit(configs: Iterable[RunConfig]) -> None:
    """Refuse, at queue time, a run that this machine could not hold even alone, saying what would fit.

    Measured against the machine's total memory, not what is free now: workers already running must not make a
    queue refuse runs that fit once they end (`run-workers` plans against what is free).
    """
    have = total_memory()
    for config in configs:
        obs_dim, act_dim = env_dims(config.env)
        need = run_memory(config, obs_dim, act_dim)
        if need <= have:
            continue
        replay = 2 * replay_bytes(obs_dim, act_dim, min(config.buffer_size, config.steps))
        fits = (have - need + replay) // (2 * replay_bytes(obs_dim, act_dim, 1))
        fix = (f"buffer_size={fits} would fit" if fits >= config.batch_size else
               f"even without its replay buffer it needs {(need - replay) / GIB:.1f} GiB: lower hidden or batch_size")
        raise UsageError(f"a run of {config.env} with buffer_size={config.buffer_size}, hidden="
                         f"{'x'.join(map(str, config.hidden))} needs {need / GIB:.1f} GiB (its replay buffer twice, "
                         f"as a checkpoint copies it) but this machine has {have / GIB:.1f} GiB; {fix}")


def run_needs(registry: Registry, fits: int | None = None) -> list[int]:
    """Peak memory of each run a worker may claim: queued, or running (taken over if its worker dies).

    Left out, so that they never stop the plan for the others: a run whose stored config no longer reads or whose
    env cannot be made here, and one that needs more than `fits` bytes (this machine's memory: check_runs_fit
    refuses it). Their claim fails them with the reason.
    """
    runs = registry.runs_frame()
    needs = []
    for config_json in runs.loc[runs["status"].isin(["queued", "running"]), "config"]:
        try:
            config = RunConfig.from_dict(json.loads(config_json))
            need = run_memory(config, *env_dims(config.env))
        except (ValueError, TypeError):  # UsageError is a ValueError
            continue
        if fits is None or need <= fits:
            needs.append(need)
    return needs


def check_memory(registry: Registry, jobs: int, threads: int = 1, cluster: Memory | None = None) -> None:
    """Refuse a plan whose busy workers cannot all hold the largest run, saying how many would fit.

    A run is held by one worker at a time, so only min(jobs, claimable runs) workers can be busy at once. `cluster`
    is a Ray cluster's memory (ray_workers.connect): Ray places the workers on its nodes, so the driver's memory
    says nothing about the plan, and Ray tasks evaluate inline, without a helper process. Without it the workers
    are processes on this machine, planned against its available memory.
    """
    if cluster is None:
        have = available_memory()
        memory, helper, machine = Memory(have, have, "available"), spare_cores(jobs, threads), total_memory()
    else:  # the driver cannot know the nodes' total memory, which the claim of an oversized run checks
        memory, helper, machine = cluster, False, None
    needs = run_needs(registry, fits=machine)
    workers = min(jobs, len(needs))
    if not workers:  # nothing to claim: the workers exit (or, with --wait, idle) at once
        return
    need = max(needs) + (PROCESS_OVERHEAD if helper else 0)
    if workers * need > memory.total:
        busy = f"{jobs} workers" if workers == jobs else f"{workers} of the {jobs} workers (one per claimable run)"
        raise UsageError(f"{busy} need up to {workers * need / GIB:.1f} GiB ({need / GIB:.2f} GiB each, "
                         f"mostly replay buffers) but {memory.total / GIB:.1f} GiB is {memory.where}; at most "
                         f"{memory.total // need} worker(s) fit (or lower buffer_size)")
    if need > memory.largest:  # only where the memory is spread over several nodes
        raise UsageError(f"one worker needs up to {need / GIB:.2f} GiB but the largest node has "
                         f"{memory.largest / GIB:.1f} GiB {memory.where}; lower buffer_size")


def replay_bytes(obs_dim: int, act_dim: int, capacity: int) -> int:
    """Memory of a full replay buffer: obs and next_obs, action, reward and the terminal flag, all float32."""
    return 4 * capacity * (2 * obs_dim + act_dim + 2)


def spare_cores(processes: int, threads: int) -> bool:
    """True when `processes` trainers of `threads` torch threads each leave a core free for their evaluations."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return processes * threads < cores
