"""The registry's curves as TensorBoard event files, so that a sweep browses in the tool researchers already use:
`tensorboard --logdir DIR`, one TensorBoard run per rnm run.

A run's folder is `env/variant/seedS_runID` (`Hopper-v5/2-4+rigl_mask_interval=1000/seed0_run7`): the variant
names the method and the keys that vary in the sweep (rnmtd3.variants), so TensorBoard's run filter selects by any
of them (`mask_interval=1000`, `2-4`, `seed0`), and the run id keeps two folders apart whatever the names say. A
name is at most 100 characters (folder_name). `rnm-tensorboard.txt` at the top marks the export: a folder inside it
is never taken for a new one.

The files are deterministic: a point's wall time is the run's first start plus its training time at that step (the
evaluations' clock; between evaluations, interpolated over the step), so TensorBoard's "relative" axis is training
time, and exporting the same registry again writes the same bytes.

The tensorboard package is an optional extra (`pip install 'rnmtd3[tensorboard]'`); only the record format and
protocol buffers come from it. Without it, nothing is written. Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .errors import RnmError, UsageError
from .folders import prepare_out_dir
from .registry import Registry
from .variants import run_variants

EVENT_FILE = re.compile(r"events\.out\.tfevents\.\d+\.rnm")
"""The name of the event files rnm writes: TensorBoard reads any name holding `tfevents`; the `.rnm` ending tells
a previous export apart from anyone else's files, which a new export must never delete."""

MARKER = "rnm-tensorboard.txt"
"""Written at the top of every export: a folder below it is part of an export, never a new one."""
MARKER_TEXT = ("An rnm TensorBoard export: browse it with `tensorboard --logdir` on this folder. `rnm export "
               "tensorboard --out` on this folder replaces it; rnm writes nothing else here or below.\n")
LAYOUT_DEPTH = 3
"""Folders above an event file: env, variant, seedS_runID."""
NAME_CHARS = 100
"""The longest folder name written: well below any filesystem's limit (255 bytes), and still readable in
TensorBoard's run list."""
INSTALL_HINT = "pip install 'rnmtd3[tensorboard]' (or pip install tensorboard)"


@dataclass(frozen=True)
class Exported:
    folders: dict[int, PurePosixPath]
    """run_id -> its folder under the output folder, for the runs that have evaluations or statistics."""
    points: int
    """Scalars written, over all runs and tags."""
    replaced: int
    """Event files of a previous export that were deleted because no run maps to them any more (a folder renamed
    when a new setting joined the sweep)."""


def require_tensorboard() -> SimpleNamespace:
    """The parts of tensorboard used here, or UsageError saying how to install it (before anything is opened)."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise UsageError(f"rnm export tensorboard needs the tensorboard package: {INSTALL_HINT}") from None
    return SimpleNamespace(Event=Event, Summary=Summary, RecordWriter=RecordWriter)


def stat_tag(name: str) -> str:
    """A training statistic's tag: SAD and density per network in groups of their own (one chart per network side
    by side), the rest under train/."""
    for prefix in ("sad", "density"):
        if name.startswith(f"{prefix}_"):
            return f"{prefix}/{name[len(prefix) + 1:]}"
    return f"train/{name}"


def scalars(evals: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """Every point to write: run_id, step, tag, value, ordered by run, step and tag. `evals` and `stats` are the
    registry's frames: eval/return_mean and eval/return_std, then one tag per statistic (stat_tag)."""
    returns = evals.melt(id_vars=["run_id", "step"], value_vars=["return_mean", "return_std"], var_name="tag")
    returns["tag"] = "eval/" + returns["tag"]
    trained = stats[["run_id", "step", "name", "value"]].assign(tag=stats["name"].map(stat_tag)).drop(columns="name")
    # Typed before the concat: a registry without statistics gives an empty frame of object columns, which pandas
    # would otherwise have to leave out when it chooses the result's types (a FutureWarning on every export).
    typed = [frame.astype({"run_id": int, "step": int, "value": float}) for frame in (returns, trained)]
    points = pd.concat(typed, ignore_index=True)
    return points.sort_values(["run_id", "step", "tag"], ignore_index=True)[["run_id", "step", "tag", "value"]]


def wall_times(points: pd.DataFrame, evals: pd.DataFrame, runs: pd.DataFrame) -> np.ndarray:
    """Each point's wall time: its run's first start (else its creation) plus the training seconds at its step,
    which the evaluations record; a run without evaluations stays at its start."""
    runs = runs.set_index("run_id")
    start = runs["started_at"].fillna(runs["created_at"])
    walls = np.empty(len(points))
    clocks = dict(tuple(evals.groupby("run_id")))
    for run_id, rows in points.groupby("run_id").indices.items():
        clock = clocks.get(run_id)
        elapsed = (0.0 if clock is None
                   else np.interp(points["step"].to_numpy()[rows], clock["step"], clock["wall_time"].astype(float)))
        walls[rows] = float(start[run_id]) + elapsed
    return walls


def run_folders(runs: pd.DataFrame) -> dict[int, PurePosixPath]:
    """run_id -> `env/variant/seedS_runID`, each part a folder name safe on any filesystem (folder_name)."""
    return {int(run_id): PurePosixPath(folder_name(env), folder_name(str(variant)), f"seed{seed}_run{run_id}")
            for run_id, env, seed, variant in zip(runs["run_id"], runs["env"], runs["seed"], run_variants(runs))}


def folder_name(text: str) -> str:
    """`text` as one folder name (_safe) of at most NAME_CHARS characters: a longer one (a variant of many swept
    keys) keeps its beginning and ends in `~` and 8 hex digits of the whole text's hash, which keeps two long names
    apart; `~` is never in a name that was not cut."""
    name = _safe(text)
    if len(name) <= NAME_CHARS:
        return name
    return f"{name[:NAME_CHARS - 9]}~{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _safe(text: str) -> str:
    """`2:4+rigl mask_interval=1000` -> `2-4+rigl_mask_interval=1000`: spaces become _, and `:`, `/` and other
    characters a filesystem or a shell might misread become -, as does a leading `.` (`..` would climb out of the
    export, a `.name` would hide); an empty text is `-`."""
    return re.sub(r"^\.", "-", re.sub(r"[^A-Za-z0-9._+=,-]", "-", re.sub(r"\s+", "_", text.strip()))) or "-"


def export_tensorboard(registry: Registry, out: Path) -> Exported:
    """Write one event file per run that has evaluations or statistics under `out`, replacing a previous export
    there; UsageError, before anything is written, where tensorboard is missing, `out` holds other files or lies
    inside an export, or a path would be too long.

    Nothing is created where no run has data yet. The previous export's files are deleted only once the new one
    is written, and only those that the new one did not overwrite."""
    tb = require_tensorboard()
    out = Path(out).expanduser().resolve()
    previous = _previous_export(out)
    evals, stats = registry.evals_frame(), registry.stats_frame()
    points = scalars(evals, stats)
    if points.empty:
        return Exported({}, 0, 0)
    runs = registry.runs_frame()
    points["wall_time"] = wall_times(points, evals, runs)
    folders = run_folders(runs[runs["run_id"].isin(points["run_id"])])
    paths = {run_id: out / folders[run_id] / _event_file(rows) for run_id, rows in points.groupby("run_id")}
    _check_lengths(out, paths.values())
    out = prepare_out_dir(out)
    _write(out / MARKER, MARKER_TEXT.encode())
    for run_id, rows in points.groupby("run_id"):
        _write_run(tb, paths[run_id], rows)
    stale = [path for path in previous if path not in paths.values()]
    for path in stale:
        _delete(path, out)
    return Exported(folders, len(points), len(stale))


def _previous_export(out: Path) -> list[Path]:
    """The event files of an earlier export at `out` (none where `out` is new or empty); UsageError where `out`
    lies inside an export, holds anything but an export's marker, folders and event files in their layout (files
    this export must neither mix with nor delete; another export below its top), or cannot be read. The look
    follows the layout and stops at the first entry out of it, so that a folder such as / is refused at its first
    entry, never walked."""
    try:
        inside = next((parent for parent in out.parents if (parent / MARKER).is_file()), None)
        if inside is not None:
            raise UsageError(f"--out {out} lies inside the rnm TensorBoard export {inside}: choose {inside} itself "
                             "to replace it, or a folder outside it")
        return _export_files(out, out, 0) if out.is_dir() else []
    except OSError as exc:
        raise UsageError(f"--out {out} cannot be read: {exc.strerror or exc}") from None


def _export_files(folder: Path, out: Path, depth: int) -> list[Path]:
    """The event files below `folder`, `depth` folders below `out`; UsageError at the first entry out of layout."""
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if depth == LAYOUT_DEPTH and entry.is_file(follow_symlinks=False) and EVENT_FILE.fullmatch(entry.name):
                files.append(Path(entry.path))
            elif depth < LAYOUT_DEPTH and entry.is_dir(follow_symlinks=False):
                files += _export_files(Path(entry.path), out, depth + 1)
            elif not (depth == 0 and entry.name == MARKER and entry.is_file(follow_symlinks=False)):
                raise UsageError(f"--out {out} holds files that are not an rnm TensorBoard export (such as "
                                 f"{Path(entry.path).relative_to(out)}); choose a new or empty folder, or a previous "
                                 "export's")
    return files


def _check_lengths(out: Path, paths: Iterable[Path]) -> None:
    """UsageError where an event file's path is longer than the filesystem takes (a long --out), before anything
    is written; folder names are short already (folder_name)."""
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    try:
        limit = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        limit = 4096
    longest = max(paths, key=lambda path: len(os.fsencode(path)))
    if len(os.fsencode(longest)) >= limit:
        raise UsageError(f"--out {out} is too deep: {longest} would be longer than the {limit} bytes a path may "
                         "have here; choose a shorter --out")


def _event_file(rows: pd.DataFrame) -> str:
    """A run's event file name, stamped with its first point's wall time as TensorBoard's own files are."""
    return f"events.out.tfevents.{int(rows['wall_time'].iloc[0]):010d}.rnm"


def _write_run(tb: SimpleNamespace, path: Path, rows: pd.DataFrame) -> None:
    """One run's event file: the file-version header, then one event per point in step order."""
    writer = tb.RecordWriter(buffer := io.BytesIO())
    writer.write(tb.Event(wall_time=rows["wall_time"].iloc[0], file_version="brain.Event:2").SerializeToString())
    for step, tag, value, wall_time in zip(rows["step"], rows["tag"], rows["value"], rows["wall_time"]):
        summary = tb.Summary(value=[tb.Summary.Value(tag=tag, simple_value=value)])
        writer.write(tb.Event(wall_time=wall_time, step=step, summary=summary).SerializeToString())
    _write(path, buffer.getvalue())


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise RnmError(f"cannot write {path}: {exc.strerror}") from None


def _delete(path: Path, out: Path) -> None:
    """Delete a stale event file, and the folders above it up to `out` that it leaves empty."""
    path.unlink()
    folder = path.parent
    while folder != out and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
