"""Folders that rnm writes into (`--out`, `--artifacts`), checked and created before any work starts, so that a
folder that cannot be written is one line at the start, not a traceback an hour into a sweep. Torch-free."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UsageError

MIN_FREE_BYTES = 2**20
"""Below this, a filesystem is full for rnm's purpose: a checkpoint would fail at once, and a worker would back
off for hours instead of saying so."""


def prepare_out_dir(out: Path, option: str = "--out") -> Path:
    """Create the output folder, or raise UsageError (before anything is written) where it cannot be."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} exists and is not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {out} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out} cannot be written (no write permission on {parent})")
    usage = shutil.disk_usage(parent)
    free = usage.free
    if usage.total and free < MIN_FREE_BYTES:  # total 0: /proc, /sys, where mkdir itself says what is wrong
        raise UsageError(f"{option} {out} is on a filesystem with {free:,} bytes free, less than the 1 MiB rnm needs "
                         "to start: free some space first")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # /proc, /sys, a read-only mount: access() said yes, the filesystem says no
        raise UsageError(f"{option} {out} cannot be created: {exc.strerror}") from None
    return out
