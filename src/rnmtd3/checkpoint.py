"""Checkpoint files of a run directory, written atomically and loaded without running code.

`checkpoint.pt` is the public artifact (MISSION.md section 4): the six forward-pass state_dicts and the config.
`resume.pt` beside it holds everything else a resumed run needs. Both load with `weights_only=True`.

Both carry their owner: the database id, run id and config hash of the run that wrote them (a foreground run's
owner is its config hash alone). A run resumes only from its own resume state; anything else, and a file that
cannot be read, means a restart from step 0 with the reason, never a resume from another run's numbers. The one
exception is a foreground run extended to more steps (its config otherwise the same): it continues from the shorter
run's resume state, and its files take the longer run's owner at its first checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import RnmError
from .folders import check_folder_run
from .sparsity import satisfies
from .td3 import NETWORKS

CHECKPOINT = "checkpoint.pt"
RESUME = "resume.pt"
RESUME_FORMAT = 2
"""2: adds `owner` and `curve` (every evaluation up to the checkpoint, so a resumed run's curve is whole); later
`episode` (how the episode under way began and its actions, for a state saved mid-episode: the last step of a run,
which a longer run continues), absent from older files, which the trainer reads as 'at an episode boundary'."""


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
    without a database) resumes the run of its own config or of one it extends to more steps, and is refused
    (folders.check_folder_run) any other: the user chose the folder, and it must not be overwritten.

    Temporary files of a save that was killed half-way are removed: they can be as large as the replay buffer.
    """
    for stale in Path(run_dir).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    path = Path(run_dir) / RESUME
    if not path.exists():
        public = Path(run_dir) / CHECKPOINT
        if not public.exists():
            return None, None
        saved = _public(public)
        foreign = None if saved is None else _foreign(run_dir, public, saved, owner, config, resumable=False)
        return None, foreign or f"{path} is missing beside {public.name}; restarted from step 0"
    try:
        state = load(path)
    except RnmError as exc:
        return None, f"{exc}; restarted from step 0"
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        return None, f"{path} has resume format {found}, this rnm reads {RESUME_FORMAT}; restarted from step 0"
    foreign = _foreign(run_dir, path, state, owner, config, resumable=True)
    return (None, foreign) if foreign else (state, None)


def _foreign(run_dir: Path, path: Path, saved: dict[str, Any], owner: dict[str, Any], config: RunConfig,
             resumable: bool) -> str | None:
    """Why a file (`saved`: its owner and config) is not this run's to resume (None when it is); raises for a
    foreground run, which also resumes a run that its config extends."""
    theirs = saved.get("owner") or {}
    if "database" not in owner:
        check_folder_run(run_dir, theirs, saved.get("config"), config, resumable)
        return None
    if theirs != owner:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(theirs.items())) or "no owner"
        return f"{path} belongs to another run ({shown}); restarted from step 0"
    return None


def _public(public: Path) -> dict[str, Any] | None:
    """A checkpoint.pt's config, step and owner (one written before owners were recorded names its config only);
    None for a file that cannot be read."""
    try:
        data = load(public)
        return {"config": data["config"], "step": int(data["step"]),
                "owner": data.get("owner") or {"config": RunConfig.from_dict(data["config"]).hash}}
    except (RnmError, KeyError, TypeError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class FolderRun:
    """The run that `rnm train` finds in its folder: where its checkpoint.pt stands, of how many steps asked."""

    step: int
    saved_steps: int
    steps: int

    @property
    def complete(self) -> bool:
        """The run asked for is done: training again would only rewrite its files."""
        return self.step == self.saved_steps == self.steps

    @property
    def extended(self) -> bool:
        """The run asked for continues the folder's run to more steps."""
        return self.saved_steps < self.steps


def folder_run(run_dir: Path, config: RunConfig, steps_given: bool) -> FolderRun | None:
    """What a foreground run of `config` finds in `run_dir`, read from its small checkpoint.pt before anything is
    written: None where there is none to read (the trainer says why it starts at step 0); UsageError where the
    folder holds another run, or one that the user's --steps (`steps_given`) does not extend
    (folders.check_folder_run)."""
    run_dir = Path(run_dir).expanduser().absolute()
    public = run_dir / CHECKPOINT
    saved = _public(public) if public.is_file() else None
    if saved is None:
        return None
    found = check_folder_run(run_dir, saved["owner"], saved["config"], config,
                             resumable=(run_dir / RESUME).exists(), steps_given=steps_given)
    return FolderRun(saved["step"], found.steps, config.steps)


def owner_of(config: RunConfig, database_id: str | None = None, run_id: int | None = None) -> dict[str, Any]:
    """Who a run folder's files belong to: the run's config hash, and its database and run id when it has them."""
    owner: dict[str, Any] = {"config": config.hash}
    if database_id is not None:
        owner.update(database=database_id, run=run_id)
    return owner


def owned_by(saved: Any, owner: dict[str, Any]) -> bool:
    """Whether a loaded file was written for `owner` (owner_of's keys, any subset): each value equal and of the same
    type, so that a run id 1 is not matched by True, nor a file without an owner by anything."""
    theirs = saved.get("owner") if isinstance(saved, dict) else None
    return isinstance(theirs, dict) and all(type(theirs.get(key)) is type(value) and theirs.get(key) == value
                                            for key, value in owner.items())


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
