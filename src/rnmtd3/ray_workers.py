"""Workers as Ray tasks: the same `work` loop, one CPU each, claiming from the same registry.

Ray only places the processes; exactly-once, leases and takeover stay the registry's job, so a Ray worker and a
plain `rnm run-workers` process can drain one queue side by side.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .errors import UsageError
from .registry import resolve_url
from .resources import Memory
from .workers import work


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'rnmtd3[ray]' (or pip install ray)") from None
    return ray


def connect(address: str, jobs: int) -> Memory:
    """Join the Ray cluster at `address` ('auto', an address, or 'local' to start one of `jobs` CPUs here) and
    return the memory its live nodes offer to tasks, which is what a plan of Ray workers must fit in.

    RayPool then reuses this connection. Ray's `memory` resource is what a node had available when it started, less
    its object store.
    """
    return cluster_memory(_init(address, jobs))


def _init(address: str, jobs: int):
    ray = _import_ray()
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if address == "local":
            ray.init(num_cpus=jobs, **kwargs)
        else:
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as exc:
                raise UsageError(f"cannot reach a Ray cluster at --ray {address}: {exc}") from None
    return ray


def cluster_memory(ray) -> Memory:
    nodes = [int(node["Resources"].get("memory", 0)) for node in ray.nodes() if node["Alive"]]
    return Memory(sum(nodes), max(nodes, default=0), "available to tasks on the Ray cluster")


def _task(db: str, worker: int, artifacts: str, lease_s: float, wait: bool, threads: int) -> int:
    import torch

    torch.set_num_threads(threads)
    stop = threading.Event()
    try:
        return work(db, worker, lambda update: None, stop, Path(artifacts), lease_s, wait)
    except KeyboardInterrupt:  # ray.cancel: the run in hand was released by `work`
        return 0


class RayPool:
    """N Ray tasks running `work`; `address` is a cluster address, 'auto' for a running one, 'local' for a new one."""

    def __init__(self, address: str, db: str, jobs: int, artifacts: Path, lease_s: float, wait: bool = False,
                 threads: int = 1):
        self.ray = _init(address, jobs)
        remote = self.ray.remote(num_cpus=threads, max_retries=0)(_task)
        self.refs = [remote.remote(resolve_url(db), i, str(artifacts), lease_s, wait, threads) for i in range(jobs)]

    def alive(self) -> bool:
        _, pending = self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        return bool(pending)

    def wait(self, timeout: float) -> None:
        self.ray.wait(self.refs, num_returns=len(self.refs), timeout=timeout)

    def stop(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=False)

    def finished(self) -> int:
        """Runs finished by all tasks (tasks that failed count 0)."""
        total = 0
        for ref in self.refs:
            try:
                total += self.ray.get(ref)
            except Exception:  # noqa: BLE001 - a cancelled or crashed task finished nothing more
                continue
        return total

    def shutdown(self) -> None:
        self.ray.shutdown()
