"""What a plan of workers needs from the machine, known before any run starts: cores and memory.

Free of torch on purpose, so that checking a plan (and `rnm status`, `rnm queue`) does not pay its import.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .config import RunConfig
from .envs import make_env
from .errors import UsageError
from .registry import Registry

PROCESS_OVERHEAD = 400 * 2**20  # torch, MuJoCo and the interpreter of one worker, measured around 350 MB


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux), else total physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def worker_memory(registry: Registry, eval_helper: bool = False) -> int:
    """Peak memory one worker may need for the claimable runs: the largest replay buffer among them, plus its
    process (and its evaluation helper's, where it has one)."""
    runs = registry.runs_frame()
    pending = runs[runs["status"].isin(["queued", "running"])]
    largest, dims = 0, {}
    for config_json in pending["config"]:
        config = RunConfig.from_dict(json.loads(config_json))
        if config.env not in dims:
            env = make_env(config.env)
            dims[config.env] = (int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape)))
            env.close()
        largest = max(largest, replay_bytes(*dims[config.env], min(config.buffer_size, config.steps)))
    return largest + PROCESS_OVERHEAD * (2 if eval_helper else 1)


def check_memory(registry: Registry, jobs: int, threads: int = 1) -> None:
    """Refuse a plan whose workers cannot all hold their largest replay buffer, saying how many would fit."""
    need, have = worker_memory(registry, eval_helper=spare_cores(jobs, threads)), available_memory()
    if jobs * need > have:
        fit = max(have // need, 0)
        raise UsageError(f"{jobs} workers need up to {jobs * need / 2**30:.1f} GiB ({need / 2**30:.2f} GiB each, "
                         f"mostly replay buffers) but {have / 2**30:.1f} GiB is available; at most {fit} worker(s) fit "
                         "(or lower buffer_size)")


def replay_bytes(obs_dim: int, act_dim: int, capacity: int) -> int:
    """Memory of a full replay buffer: obs and next_obs, action, reward and the terminal flag, all float32."""
    return 4 * capacity * (2 * obs_dim + act_dim + 2)


def spare_cores(processes: int, threads: int) -> bool:
    """True when `processes` trainers of `threads` torch threads each leave a core free for their evaluations."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return processes * threads < cores
