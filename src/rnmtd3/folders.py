"""Folders that rnm writes into (`--out`, `--artifacts`), checked and created before any work starts, so that a
folder that cannot be written, or that holds another run, is one line at the start, not a traceback an hour into a
sweep, nor another run's files overwritten. Torch-free."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .config import RunConfig, written
from .errors import UsageError

MIN_FREE_BYTES = 2**20
"""Below this, a filesystem is full for rnm's purpose: a checkpoint would fail at once, and a worker would back
off for hours instead of saying so."""


def prepare_out_dir(out: Path, option: str = "--out") -> Path:
    """Create the output folder, or raise UsageError (before anything is written) where it cannot be."""
    out = check_out_dir(out, option)
    usage = shutil.disk_usage(_existing_ancestor(out))
    free = usage.free
    if usage.total and free < MIN_FREE_BYTES:  # total 0: /proc, /sys, where mkdir itself says what is wrong
        raise UsageError(f"{option} {out} is on a filesystem with {free:,} bytes free, less than the 1 MiB rnm needs "
                         "to start: free some space first")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # /proc, /sys, a read-only mount: access() said yes, the filesystem says no
        raise UsageError(f"{option} {out} cannot be created: {exc.strerror}") from None
    return out


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


SQLITE_HEADER = b"SQLite format 3\x00"
RUN_FILES = ("checkpoint.pt", "resume.pt")


def check_out_file(out: Path, option: str = "--out") -> Path:
    """A file that a command may write a table into, checked before any work (a report's bootstrap takes
    minutes): not a folder, in a folder that exists and can be written, and neither a database nor a run's
    checkpoint, which a mistyped `--out` would destroy."""
    out = Path(out).expanduser()
    if not str(out).strip() or out.is_dir():
        raise UsageError(f"{option} {str(out)!r} is a folder: give a file name")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{option} {out} cannot be written: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"{option} {out} cannot be written (no write permission)")
    if out.name in RUN_FILES:
        raise UsageError(f"{option} {out} would overwrite a run's {out.name}: choose another file")
    if out.is_file():
        with out.open("rb") as handle:
            if handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
                raise UsageError(f"{option} {out} is a database: writing there would destroy it; choose another file")
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a kill or a full disk mid-write leaves the previous file (or none), never a
    table cut short that a paper could pick up."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def check_out_dir(out: Path, option: str = "--out") -> Path:
    """A folder that a command will create or write into, checked without creating anything: not a file, and under
    a folder that can be written."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} exists and is not a folder")
    parent = _existing_ancestor(out)
    if not parent.is_dir():
        raise UsageError(f"{option} {out} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out} cannot be written (no write permission on {parent})")
    return out


def check_folder_run(run_dir: Path, saved_owner: dict[str, Any], saved_config: Any, config: RunConfig,
                     resumable: bool, steps_given: bool = True) -> RunConfig:
    """`rnm train` of `config` into a folder whose files carry `saved_owner` and `saved_config`: the folder run's
    config where `config` is that run, or extends it to more steps (its resume.pt there: `resumable`); else raise
    UsageError naming what differs. The user chose the folder, so another run's files are never overwritten in it.

    A run is extended only to steps the user gave (`steps_given`): the default 1e6, taken because --steps was left
    out, would turn a finished 1e5 run into a run ten times longer, and its checkpoint would be gone."""
    if "database" in saved_owner:
        raise UsageError(f"{run_dir} holds run {saved_owner.get('run')} of database {saved_owner['database']}; "
                         "choose another folder")
    try:
        saved = RunConfig.from_dict(saved_config)
    except (UsageError, TypeError, AttributeError):  # a config this rnm cannot read: only the owner's hash can tell
        if saved_owner.get("config") == config.hash:
            return config
        raise UsageError(f"{run_dir} holds a checkpoint of another config; choose another folder") from None
    differ = differing_values(saved, config)
    if not differ:
        return saved
    if set(differ) != {"steps"}:
        shown = ", ".join(f"{key} {old} vs {new}" for key, (old, new) in differ.items())
        raise UsageError(f"{run_dir} holds a run of another config (folder vs given: {shown}); choose another "
                         "folder, or give the folder's values")
    if not steps_given:
        raise UsageError(f"{run_dir} holds a run of {saved.steps:,} steps, and --steps was not given (default "
                         f"{config.steps:,}): give --steps {saved.steps} for this run, or a larger --steps to extend "
                         "it")
    if config.steps < saved.steps:
        raise UsageError(f"{run_dir} holds a run of {saved.steps:,} steps, which --steps {config.steps:,} would "
                         "shorten: a run can be extended, not shortened; choose another folder")
    cannot = f"{run_dir} holds a run of {saved.steps:,} steps that cannot be extended to {config.steps:,}"
    why = steps_shape_masks(saved)
    if why:
        raise UsageError(f"{cannot}: {why}; train --steps {config.steps} in another folder")
    if not resumable:
        raise UsageError(f"{cannot}: its resume.pt is gone (deleted once the run was done?); train --steps "
                         f"{config.steps} in another folder")
    return saved


def differing_values(saved: RunConfig, given: RunConfig) -> dict[str, tuple[str, str]]:
    """key -> (saved value, given value), as a user writes them, for every key whose values differ."""
    old, new = saved.to_dict(), given.to_dict()
    return {key: (written(old[key]), written(new[key])) for key in old if old[key] != new[key]}


def steps_shape_masks(config: RunConfig) -> str | None:
    """Why the masks of `config` depend on its `steps` (None where they do not): then a run extended to more
    steps is not the longer run its config would describe, since the masks moved on the shorter run's schedule.

    Masks that never move, and magnitude masks that move to the end (mask_end=1), are the same in a longer run.
    """
    if config.pattern.is_dense or config.mask_interval == 0:
        return None
    if config.mask_rule != "magnitude":
        return (f"mask_rule={config.mask_rule} decays drop_fraction on a cosine over the run's steps, so a longer "
                "run would have moved its masks otherwise")
    if config.mask_end < 1:
        return f"mask_end={config.mask_end} fixes the masks after that fraction of the steps, later in a longer run"
    return None

