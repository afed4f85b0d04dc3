"""The registry's curves as TensorBoard event files, so that a sweep browses in the tool researchers already use:
`tensorboard --logdir DIR`, one TensorBoard run per rnm run.

A run's folder is `env/variant/seedS_runID` (`Hopper-v5/2-4+rigl_mask_interval=1000/seed0_run7`): the variant
names the method and the keys that vary in the sweep (rnmtd3.variants), so TensorBoard's run filter selects by any
of them (`mask_interval=1000`, `2-4`, `seed0`), and the run id keeps two folders apart whatever the names say.

The files are deterministic: a point's wall time is the run's first start plus its training time at that step (the
evaluations' clock; between evaluations, interpolated over the step), so TensorBoard's "relative" axis is training
time, and exporting the same registry again writes the same bytes.

The tensorboard package is an optional extra (`pip install 'rnmtd3[tensorboard]'`); only the record format and
protocol buffers come from it. Without it, nothing is written. Torch-free.
"""

from __future__ import annotations

import re
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
    points = pd.concat([returns, trained], ignore_index=True).astype({"run_id": int, "step": int, "value": float})
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
    """run_id -> `env/variant/seedS_runID`, each part safe as a folder name on any filesystem."""
    return {int(run_id): PurePosixPath(_safe(env), _safe(str(variant)), f"seed{seed}_run{run_id}")
            for run_id, env, seed, variant in zip(runs["run_id"], runs["env"], runs["seed"], run_variants(runs))}


def _safe(text: str) -> str:
    """`2:4+rigl mask_interval=1000` -> `2-4+rigl_mask_interval=1000`: spaces become _, and `:`, `/` and other
    characters a filesystem or a shell might misread become -."""
    return re.sub(r"[^A-Za-z0-9._+=,-]", "-", re.sub(r"\s+", "_", text.strip()))


def export_tensorboard(registry: Registry, out: Path) -> Exported:
    """Write one event file per run that has evaluations or statistics under `out`, replacing a previous export
    there; UsageError, before anything is written, where tensorboard is missing or `out` holds other files.

    Nothing is created where no run has data yet. The previous export's files are deleted only once the new one
    is written, and only those that the new one did not overwrite."""
    tb = require_tensorboard()
    evals, stats = registry.evals_frame(), registry.stats_frame()
    points = scalars(evals, stats)
    if points.empty:
        return Exported({}, 0, 0)
    runs = registry.runs_frame()
    points["wall_time"] = wall_times(points, evals, runs)
    out = prepare_out_dir(out)
    previous = _previous_export(out)
    folders = run_folders(runs[runs["run_id"].isin(points["run_id"])])
    written = {_write_run(tb, out / folders[run_id], rows) for run_id, rows in points.groupby("run_id")}
    stale = [path for path in previous if path not in written]
    for path in stale:
        _delete(path, out)
    return Exported(folders, len(points), len(stale))


def _previous_export(out: Path) -> list[Path]:
    """The event files of an earlier export under `out`; UsageError where anything else is there, which this export
    must neither mix with nor delete."""
    files = sorted(path for path in out.rglob("*") if not path.is_dir())
    foreign = next((path for path in files if not EVENT_FILE.fullmatch(path.name)), None)
    if foreign is not None:
        raise UsageError(f"--out {out} holds files that are not an rnm TensorBoard export (such as "
                         f"{foreign.relative_to(out)}); choose a new or empty folder, or a previous export's")
    return files


def _write_run(tb: SimpleNamespace, folder: Path, rows: pd.DataFrame) -> Path:
    """One run's event file: the file-version header, then one event per point in step order."""
    path = folder / f"events.out.tfevents.{int(rows['wall_time'].iloc[0]):010d}.rnm"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as file:
            writer = tb.RecordWriter(file)
            writer.write(tb.Event(wall_time=rows["wall_time"].iloc[0], file_version="brain.Event:2")
                         .SerializeToString())
            for step, tag, value, wall_time in zip(rows["step"], rows["tag"], rows["value"], rows["wall_time"]):
                summary = tb.Summary(value=[tb.Summary.Value(tag=tag, simple_value=value)])
                writer.write(tb.Event(wall_time=wall_time, step=step, summary=summary).SerializeToString())
    except OSError as exc:
        raise RnmError(f"cannot write {path}: {exc.strerror}") from None
    return path


def _delete(path: Path, out: Path) -> None:
    """Delete a stale event file, and the folders above it up to `out` that it leaves empty."""
    path.unlink()
    folder = path.parent
    while folder != out and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
