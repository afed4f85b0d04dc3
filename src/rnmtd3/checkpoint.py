"""Checkpoint files of a run directory, written atomically and loaded without running code.

`checkpoint.pt` is the public artifact (MISSION.md section 4): the six forward-pass state_dicts and the config.
`resume.pt` beside it holds everything else a resumed run needs. Both load with `weights_only=True`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import RnmError
from .sparsity import satisfies_nm
from .td3 import NETWORKS

CHECKPOINT = "checkpoint.pt"
RESUME = "resume.pt"
RESUME_FORMAT = 1


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a kill leaves the old file whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_public(run_dir: Path, networks: dict[str, dict[str, torch.Tensor]], config: RunConfig, step: int) -> Path:
    path = Path(run_dir) / CHECKPOINT
    atomic_save({**networks, "config": config.to_dict(), "step": step}, path)
    return path


def save_resume(run_dir: Path, state: dict[str, Any]) -> Path:
    path = Path(run_dir) / RESUME
    atomic_save({"format": RESUME_FORMAT, **state}, path)
    return path


def load(path: Path) -> dict[str, Any]:
    """Load either file safely; a corrupt or tampered file is an RnmError, never code execution."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for a bad file
        raise RnmError(f"cannot load checkpoint {path}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None


def load_resume(run_dir: Path) -> dict[str, Any] | None:
    """The resume state of a run folder, or None where the run never reached a checkpoint.

    Temporary files of a save that was killed half-way are removed: they can be as large as the replay buffer.
    """
    for stale in Path(run_dir).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    path = Path(run_dir) / RESUME
    if not path.exists():
        return None
    state = load(path)
    if state.get("format") != RESUME_FORMAT:
        raise RnmError(f"{path} has resume format {state.get('format')}, this rnm reads {RESUME_FORMAT}")
    return state


def check_sparsity(path: Path) -> dict[str, bool]:
    """For each of the six networks of a checkpoint.pt: do all its weight matrices satisfy the run's N:M pattern?

    Layers that the config leaves dense (sparse_io=false) are not checked.
    """
    data = load(path)
    config = RunConfig.from_dict(data["config"])
    if config.pattern.is_dense:
        return {name: True for name in NETWORKS}
    result = {}
    for name in NETWORKS:
        weights = [t for key, t in data[name].items() if key.endswith("weight") and t.dim() == 2]
        if not config.sparse_io:
            weights = weights[1:-1]
        result[name] = all(satisfies_nm(w, config.pattern.n, config.pattern.m) for w in weights)
    return result
