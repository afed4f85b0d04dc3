"""Workers as Ray tasks: the same `work` loop, one CPU each, claiming from the same registry.

Ray only places the processes; exactly-once, leases and takeover stay the registry's job, so a Ray worker and a
plain `rnm run-workers` process can drain one queue side by side.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from .errors import UsageError
from .registry import resolve_url
from .resources import Memory
from .workers import work

CONNECT_TIMEOUT_S = 5.0


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
    if address == "local":
        # Nothing may listen on a network port (MISSION.md section 4). Ray binds its servers to the node's address,
        # and it replaces a loopback one by the machine's network address unless this switch (meant for a
        # single-machine Ray on macOS and Windows) is off. It is read when ray is imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    else:
        _check_reachable(address)
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


def _check_reachable(address: str) -> None:
    """Ray retries an address that does not answer for minutes, printing raw gRPC errors; a TCP connect to a
    HOST:PORT address tells at once. Other addresses ('auto') are Ray's to resolve."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, OverflowError) as exc:  # OverflowError: a port beyond 65535
        raise UsageError(f"cannot reach a Ray cluster at --ray {address}: {getattr(exc, 'strerror', None) or exc}"
                         ) from None


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

    def outcome(self) -> tuple[int, list[str]]:
        """Runs finished by all tasks, and one line for each task that died (its process killed, or an error out
        of `work`) instead of returning. A task cancelled by `stop` did not die: it handed its run back."""
        finished, dead = 0, []
        for i, ref in enumerate(self.refs):
            try:
                finished += self.ray.get(ref)
            except self.ray.exceptions.TaskCancelledError:
                continue
            except self.ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps the task's own exception
                first = next(iter(str(cause).strip().splitlines()), "")
                dead.append(f"Ray worker {i} died: {type(cause).__name__}: {first}")
        return finished, dead

    def shutdown(self) -> None:
        self.ray.shutdown()
