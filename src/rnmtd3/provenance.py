"""What made a run: the code, library versions and machine of each attempt, so that a table can say when its runs
were made by different versions. Torch-free: versions are read from the installed packages' metadata."""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

KEYS = ("rnm_version", "git_commit", "python", "torch", "gymnasium", "mujoco", "host", "cpu", "threads")
# The keys whose difference between the runs of one table the report points out: what changes the numbers.
VERSION_KEYS = ("rnm_version", "git_commit", "torch", "gymnasium", "mujoco")
GIT_TIMEOUT_S = 5.0


def collect(threads: int) -> dict[str, str | int | None]:
    """This process's provenance under KEYS; `threads` is the torch thread count, passed in so that collecting
    does not import torch. A value that cannot be known here is None; collecting never fails."""
    return {
        "rnm_version": _version("rnmtd3"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "gymnasium": _version("gymnasium"),
        "mujoco": _version("mujoco"),
        "host": socket.gethostname() or None,
        "cpu": cpu_model(),
        "threads": threads,
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_commit(source: Path = Path(__file__).resolve().parent) -> str | None:
    """The commit of the checkout that `source` (this package) is tracked in, with '-dirty' when tracked files
    differ from it; None for an installed copy.

    Tracked, not merely inside a work tree: a wheel installed in a venv that sits inside some checkout must not
    report that checkout's commit. Untracked files do not count as dirty (as with `git describe --dirty`): a
    database or a scratch file beside the code does not change the code.
    """
    if _git(source, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return None
    commit = _git(source, "rev-parse", "HEAD")
    changes = _git(source, "status", "--porcelain", "--untracked-files=no")
    if commit is None or changes is None:
        return None
    return f"{commit}-dirty" if changes else commit


def _git(cwd: Path, *args: str) -> str | None:
    """git's stripped output, or None when git is missing, slow or fails (not a checkout, no commit yet)."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's marketing name ('AMD EPYC 7763 64-Core Processor'): Linux's /proc/cpuinfo, else what the
    platform says (often only the architecture)."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None
