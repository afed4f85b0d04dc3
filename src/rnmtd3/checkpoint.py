"""Checkpoint files of a run directory, written atomically and loaded without running code.

`checkpoint.pt` is the public artifact (MISSION.md section 4): the six forward-pass state_dicts and the config.
`resume.pt` beside it holds everything else a resumed run needs. Both load with `weights_only=True`.

Both carry their owner: the database id, run id and config hash of the run that wrote them (a foreground run's
owner is its config hash alone). A run resumes only from its own resume state; anything else, and a file that
cannot be read, means a restart from step 0 with the reason, never a resume from another run's numbers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import RnmError, UsageError
from .sparsity import satisfies
from .td3 import NETWORKS

CHECKPOINT = "checkpoint.pt"
RESUME = "resume.pt"
RESUME_FORMAT = 2
"""2: adds `owner` and `curve` (every evaluation up to the checkpoint, so a resumed run's curve is whole)."""


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


def save_public(run_dir: Path, networks: dict[str, dict[str, torch.Tensor]], config: RunConfig, step: int,
                owner: dict[str, Any]) -> Path:
    path = Path(run_dir) / CHECKPOINT
    atomic_save({**networks, "config": config.to_dict(), "step": step, "owner": owner}, path)
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
        detail = " ".join(str(exc).split()[:40]) or "no detail (an empty or truncated file?)"
        raise RnmError(f"cannot load checkpoint {path} (corrupt or truncated): {exc.__class__.__name__}: {detail}") \
            from None


def load_resume(run_dir: Path, config: RunConfig, owner: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(state, None) to resume from; (None, None) where the run never reached a checkpoint; (None, reason) where
    the folder holds files this run must not or cannot resume from: a resume state that is corrupt, of another
    format or another database's or run's, or a checkpoint.pt without its resume state. A foreground run (an owner
    without a database) given a folder of another config or of a database's run is refused instead: the user chose
    the folder, and it must not be overwritten.

    Temporary files of a save that was killed half-way are removed: they can be as large as the replay buffer.
    """
    for stale in Path(run_dir).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    path = Path(run_dir) / RESUME
    if not path.exists():
        public = Path(run_dir) / CHECKPOINT
        if not public.exists():
            return None, None
        saved = _public_owner(public)
        foreign = None if saved is None else _foreign(run_dir, public, saved, owner)
        return None, foreign or f"{path} is missing beside {public.name}; restarted from step 0"
    try:
        state = load(path)
    except RnmError as exc:
        return None, f"{exc}; restarted from step 0"
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        return None, f"{path} has resume format {found}, this rnm reads {RESUME_FORMAT}; restarted from step 0"
    foreign = _foreign(run_dir, path, state.get("owner") or {}, owner)
    return (None, foreign) if foreign else (state, None)


def _foreign(run_dir: Path, path: Path, saved: dict[str, Any], owner: dict[str, Any]) -> str | None:
    """Why a file owned by `saved` is not this run's (None when it is); raises for a foreground run."""
    if "database" not in owner and "database" in saved:
        raise UsageError(f"{run_dir} holds run {saved.get('run')} of database {saved['database']}; choose another "
                         "folder")
    if "database" not in owner and saved.get("config") != owner["config"]:
        raise UsageError(f"{run_dir} holds a checkpoint of another config; choose another folder")
    if saved != owner:
        theirs = ", ".join(f"{k} {v}" for k, v in sorted(saved.items())) or "no owner"
        return f"{path} belongs to another run ({theirs}); restarted from step 0"
    return None


def _public_owner(public: Path) -> dict[str, Any] | None:
    """The owner a checkpoint.pt names (one written before owners were recorded names its config only); None for
    a file that cannot be read."""
    try:
        data = load(public)
        return data.get("owner") or {"config": RunConfig.from_dict(data["config"]).hash}
    except (RnmError, KeyError, TypeError, ValueError, AttributeError):
        return None


def owner_of(config: RunConfig, database_id: str | None = None, run_id: int | None = None) -> dict[str, Any]:
    """Who a run folder's files belong to: the run's config hash, and its database and run id when it has them."""
    owner: dict[str, Any] = {"config": config.hash}
    if database_id is not None:
        owner.update(database=database_id, run=run_id)
    return owner


def check_sparsity(path: Path) -> dict[str, bool]:
    """For each of the six networks of a checkpoint.pt: do all its weight matrices satisfy the run's pattern (at most
    N in every group of M; at most the kept count of each layer for unstructured:S)?

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
        result[name] = all(satisfies(w, config.pattern) for w in weights)
    return result
