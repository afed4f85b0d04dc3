"""`rnm queue`, `status`, `retry`, `cancel`, `export`: the registry seen from the command line."""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import typer
from rich import box
from rich.table import Table

from rnmtd3.config import DB_INT_MAX, parse_value
from rnmtd3.errors import UsageError
from rnmtd3.registry import EnqueueResult, database_exists, open_registry
from rnmtd3.resources import check_runs_fit
from rnmtd3.summary import evals_export, measured_densities, runs_export, summarize
from rnmtd3.folders import check_out_file, write_text_atomic
from rnmtd3.sweep import expand, inert_sweeps, parse_seeds, split_list
from rnmtd3.variants import config_variants
from rnmtd3.tensorboard_export import export_tensorboard, require_tensorboard

from .common import DbOption, err, fmt_duration, out, warn_no_training


def queue(
    envs: str = typer.Option(..., help="comma list of envs: Ant,Hopper (newest version) or full ids"),
    patterns: str = typer.Option(..., help="comma list of patterns: N:M or unstructured:S, such as "
                                 "2:4,1:8,unstructured:0.75"),
    seeds: str = typer.Option("5", help="seeds: a count (5 means seeds 0..4), a list (3,7) or a range (5-9)"),
    steps: Optional[str] = typer.Option(None, help="environment steps per run, such as 1e5 (default 1e6)"),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=V1,V2", help="config key=value (repeatable; `rnm keys` "
                                   "lists them); a comma list sweeps the key"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="queue the dense baseline too"),
    max_attempts: int = typer.Option(3, help="attempts before a run is marked failed"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be queued, write nothing"),
    db: Optional[str] = DbOption,
) -> None:
    """Queue a sweep: envs x patterns x seeds x each --set list.

    Every (env, pattern, seed, --set value) combination is one run; queueing the same thing again adds nothing."""
    if not 1 <= max_attempts <= DB_INT_MAX:
        raise UsageError(f"bad --max-attempts {max_attempts}: give a number from 1 to {DB_INT_MAX}")
    configs = expand(split_list(envs), split_list(patterns), parse_seeds(seeds), set_, baseline=baseline,
                     steps=None if steps is None else parse_value("steps", steps))
    check_runs_fit(configs)
    warn_no_training(configs)
    for warning in inert_sweeps(set_, configs):
        err.print(f"rnm: warning: {warning}", soft_wrap=True, markup=False)
    if dry_run and not database_exists(db):
        result, url = EnqueueResult(configs, []), None
    else:
        with open_registry(db, create=not dry_run, read_only=dry_run) as registry:
            result, url = registry.enqueue(configs, max_attempts=max_attempts, dry_run=dry_run), registry.url
    _print_queue_summary(result.added, result.existing, dry_run, url)


def _print_queue_summary(added, present, dry_run: bool, url: Optional[str]) -> None:
    """One row per env and variant, so that the settings of a sweep show before it runs (`2:4 (50%),
    mask_interval=1000`)."""
    configs = [*added, *present]
    variants = config_variants(configs)
    new = Counter((c.env, v) for c, v in zip(configs[:len(added)], variants))
    old = Counter((c.env, v) for c, v in zip(configs[len(added):], variants[len(added):]))
    table = Table(title="would queue" if dry_run else "queued", title_justify="left")
    for column in ("env", "method", "new runs", "already queued"):
        table.add_column(column, justify="right" if "runs" in column or "already" in column else "left")
    for env, variant in sorted(set(new) | set(old), key=lambda k: (k[0], k[1].sort_key())):
        table.add_row(env, variant.label(), str(new[(env, variant)]), str(old[(env, variant)]))
    out.print(table)
    verb = "would add" if dry_run else "added"
    where = f" to {url}" if url else ""
    err.print(f"{verb} {len(added)} run(s){where}; {len(present)} already there", soft_wrap=True)


def status(db: Optional[str] = DbOption) -> None:
    """Progress of the queue: counts, density, speed, ETA, failures.

    Counts by status for each env and pattern with the latest measured density of its networks (actor/critic
    where they differ), progress, speed and ETA, failed runs with their last error line, runs backing off after a
    passing failure, and runs with notes (why one restarted, for instance)."""
    registry = open_registry(db, create=False, read_only=True)
    summary = summarize(registry.runs_frame(), measured_densities(registry))
    if summary.counts.empty:
        err.print(f"no runs in {registry.url}; queue some with `rnm queue`")
        return
    numbers = ["density", "queued", "running", "done", "failed", "cancel", "progress"]
    table = _compact_table(f"runs in {registry.url}", ["env", "method", *numbers], wrap=("env", "method"),
                           numeric=numbers)
    # a label breaks only between its parts (`2:4 (50%),` / `mask_interval=1000`), never inside a value, which
    # would make mask_interval=1000 read as 100
    lines = [label.replace(", ", ",\n").splitlines() for label in summary.counts["label"]]
    env_width = int(summary.counts["env"].str.len().max())
    room = out.width - env_width - sum(map(len, numbers)) - len(numbers) - 1  # the others at their narrowest
    table.columns[1].min_width = min(max(len(line) for label in lines for line in label), max(room, 6))
    for row, label in zip(summary.counts.itertuples(index=False), lines):
        progress = row.steps_done / row.steps_total if row.steps_total else 0.0
        table.add_row(row.env, "\n".join(label), _density_text(row), str(row.queued), str(row.running),
                      str(row.done), str(row.failed), str(row.cancelled), f"{progress:.0%}")
    out.print(table)
    overall = summary.done_steps / summary.total_steps if summary.total_steps else 0.0
    out.print(f"progress {summary.done_steps:,}/{summary.total_steps:,} steps ({overall:.1%}); "
              f"{summary.running} running at {summary.speed:,.0f} steps/s; ETA {fmt_duration(summary.eta_s)}")
    if not summary.failed.empty:
        failed = _compact_table("failed runs", ["run", "env", "pattern", "seed", "attempts", "last error"],
                                wrap="last error")
        for row in summary.failed.itertuples(index=False):
            failed.add_row(str(row.run_id), row.env, row.pattern, str(row.seed), str(row.attempts), row.error)
        out.print(failed)
        out.print("`rnm retry` puts failed runs back in the queue")
    if not summary.waiting.empty:
        now = registry.now()  # retry_at is on the database's clock
        waiting = _compact_table("waiting to retry after a passing failure (a full disk, a lost connection)",
                                 ["run", "env", "pattern", "seed", "retries", "next try", "last error"],
                                 wrap="last error", numeric=["retries", "next try"])
        for row in summary.waiting.itertuples(index=False):
            delay = row.retry_at - now
            waiting.add_row(str(row.run_id), row.env, row.pattern, str(row.seed), str(row.retries),
                            fmt_duration(delay) if delay > 0 else "due", row.error)
        out.print(waiting)
    if not summary.notes.empty:
        notes = _compact_table("notes (the last line; `rnm export runs` has them all)",
                               ["run", "env", "pattern", "seed", "last note"], wrap="last note")
        for row in summary.notes.itertuples(index=False):
            notes.add_row(str(row.run_id), row.env, row.pattern, str(row.seed), row.note)
        out.print(notes)


def _density_text(row) -> str:
    """'25%' where actors and critics measure the same, 'actor/critic' ('25/21%') where they differ, each a range
    ('21-25%') where the runs' settings differ; '-' before a first measurement. Whole percents (one decimal below
    10%) keep it within the header's 7 characters (`rnm export runs` has the exact values); a rare longer text
    breaks after each '/' and '-', so the column stays 7 wide and leaves the env column room beside a long method
    label."""
    actor, critic = _range_text(row.actor_min, row.actor_max), _range_text(row.critic_min, row.critic_max)
    text = actor if actor == critic else f"{actor.rstrip('%')}/{critic}"
    return text if len(text) <= len("density") else re.sub(r"([-/])", "\\1\n", text)


def _range_text(low: float, high: float) -> str:
    if math.isnan(low):
        return "-"
    shown = [f"{value:.0%}" if value >= 0.1 else f"{value:.1%}" for value in (low, high)]
    return shown[0] if shown[0] == shown[1] else f"{shown[0].rstrip('%')}-{shown[1]}"


def _compact_table(title: str, columns: list[str], wrap: str | tuple[str, ...], numeric: Sequence[str] = ()) -> Table:
    """A table for an 80-column terminal: one space between columns and no frame, every header whole; only the
    `wrap` column(s) wrap their text (at spaces where there are some, a method label, else anywhere, an env id) when
    the terminal is too narrow, as narrow as they must (a floor wider than the header would push the row past the
    edge and cut the last column). `numeric` columns are right-aligned."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    for name in columns:
        if name in ((wrap,) if isinstance(wrap, str) else wrap):
            table.add_column(name, overflow="fold", min_width=len(name))
        else:
            table.add_column(name, no_wrap=True, min_width=len(name), justify="right" if name in numeric else "left")
    return table


def retry(
    run_ids: list[int] = typer.Argument(None, metavar="RUN_ID",
                                        help="run ids (default: every failed or cancelled run)"),
    db: Optional[str] = DbOption,
) -> None:
    """Put failed (and cancelled) runs back in the queue.

    They resume from their last checkpoint."""
    registry = open_registry(db, create=False)
    count = registry.retry_failed(run_ids or None)
    err.print(f"{count} run(s) back in the queue")


def cancel(
    run_ids: list[int] = typer.Argument(None, metavar="RUN_ID", help="run ids"),
    all_: bool = typer.Option(False, "--all", help="every queued run (and, with --running, every running one)"),
    running: bool = typer.Option(False, "--running", help="cancel running runs too (their workers stop)"),
    db: Optional[str] = DbOption,
) -> None:
    """Cancel queued runs (and, with --running, running ones).

    Name the runs, or give --all for every one; `rnm retry` undoes it."""
    if bool(run_ids) == all_:
        raise UsageError("give run ids or --all, not both" if all_ else
                         "give the ids of the runs to cancel, or --all to cancel every queued run")
    registry = open_registry(db, create=False)
    count = registry.cancel(run_ids or None, include_running=running)
    err.print(f"{count} run(s) cancelled")


def export(
    what: str = typer.Argument(..., metavar="runs|evals|stats|tensorboard", help="what to export"),
    fmt: Optional[str] = typer.Option(None, "--format", help="csv or parquet, for runs, evals and stats (default csv)"),
    out_text: Optional[str] = typer.Option(None, "--out", help="file to write (default: stdout for csv); for "
                                           "tensorboard, the folder"),
    db: Optional[str] = DbOption,
) -> None:
    """Export runs, curves, statistics or TensorBoard event files.

    A table for pandas, R or a spreadsheet: the runs (one row each), the evaluation curves, or the training
    statistics (losses, SAD, steps/s, measured density; one row per run, step and name).

    `tensorboard --out DIR` writes one event file per run with data, in DIR/ENV/VARIANT/seedS_runID, for
    `tensorboard --logdir DIR` (needs `pip install 'rnmtd3[tensorboard]'`). DIR must be new, empty, or a previous
    export, which is replaced; a folder holding other files, or one inside an export, is refused."""
    if what not in ("runs", "evals", "stats", "tensorboard"):
        raise UsageError(f"cannot export {what!r}: choose runs, evals, stats or tensorboard")
    if out_text == "":  # as a Path it would be the current folder, which nobody asked for
        raise UsageError("--out '' names no file or folder")
    out_file = None if out_text is None else Path(out_text)
    if what == "tensorboard":
        if fmt is not None:
            raise UsageError("--format is for runs, evals and stats: tensorboard writes event files")
        if out_file is None:
            raise UsageError("export tensorboard needs --out DIR, the folder to write the event files into")
        require_tensorboard()  # before the database is opened: without tensorboard, nothing is touched
        with open_registry(db, create=False, read_only=True) as registry:
            exported = export_tensorboard(registry, out_file)
        if not exported.folders:
            err.print("no run has evaluations or training statistics yet: nothing written")
            return
        replaced = f"; deleted {exported.replaced} stale file(s) of the previous export" if exported.replaced else ""
        err.print(f"wrote {exported.points} point(s) of {len(exported.folders)} run(s) to {out_file}{replaced}; "
                  f"browse them with: tensorboard --logdir {out_file}", soft_wrap=True, markup=False)
        return
    fmt = fmt or "csv"
    if fmt not in ("csv", "parquet"):
        raise UsageError(f"bad --format {fmt!r}: choose csv or parquet")
    if fmt == "parquet" and out_file is None:
        raise UsageError("--format parquet needs --out FILE")
    if out_file is not None:
        check_out_file(out_file)
    registry = open_registry(db, create=False, read_only=True)
    if what == "runs":
        frame = runs_export(registry.runs_frame(), registry.attempts_frame(), measured_densities(registry))
    elif what == "evals":
        frame = evals_export(registry.evals_frame())
    else:
        frame = registry.stats_frame()
    if fmt == "parquet":
        try:
            frame.to_parquet(out_file, index=False)
        except ImportError:
            raise UsageError("parquet export needs pyarrow: pip install pyarrow") from None
    elif out_file is None:
        frame.to_csv(sys.stdout, index=False)
    else:
        write_text_atomic(out_file, frame.to_csv(index=False))
    if out_file is not None:
        err.print(f"wrote {len(frame)} row(s) to {out_file}")
