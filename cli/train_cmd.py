"""`rnm train`: one run in the foreground, no queue."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rnmtd3.config import key_defaults, parse_value
from rnmtd3.resources import check_runs_fit
from rnmtd3.sweep import make_config, single_values

from .common import warn_no_training

console = Console(stderr=True)


def train(
    env: str = typer.Option(..., help="env name (Hopper -> Hopper-v5) or full Gymnasium id"),
    pattern: str = typer.Option("2:4", help="N:M pattern such as 2:4, 1:8, or dense"),
    seed: int = typer.Option(0, help="random seed"),
    steps: Optional[str] = typer.Option(None, help="environment steps, such as 1e5 (default 1e6)"),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="config key=value, repeatable (`rnm keys` "
                                   "lists them)"),
    out: Path = typer.Option(..., help="folder for checkpoint.pt and evals.csv; a run there resumes, or continues to a "
                                       "larger --steps"),
    threads: int = typer.Option(1, help="torch threads"),
) -> None:
    """Train one agent in the foreground, without the queue.

    Writes OUT/checkpoint.pt and OUT/evals.csv as it goes. Exits 130 when stopped by Ctrl-C (run it again to
    resume), and changes nothing in a folder whose run is complete."""
    from rnmtd3.checkpoint import folder_run  # torch loads here only: the other commands start without it
    from rnmtd3.runs import train_foreground
    values = single_values(set_, steps=None if steps is None else parse_value("steps", steps))
    config = make_config(env, pattern, seed, values)
    found = folder_run(out, config, steps_given="steps" in values)
    if found and found.complete:
        console.print(f"complete: {out.absolute()} holds this run at its last step ({found.step:,}); nothing to "
                      "train (a larger --steps extends it)", soft_wrap=True, markup=False, highlight=False)
        return
    check_runs_fit([config])
    warn_no_training([config])
    if found and found.extended:
        console.print(f"extending the run in {out.absolute()} from {found.saved_steps:,} to {config.steps:,} steps "
                      f"(it continues from its checkpoint at step {found.step:,})", soft_wrap=True, markup=False,
                      highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
               TextColumn("{task.fields[rate]:>7.1f} steps/s"), TextColumn("return {task.fields[ret]}"),
               TimeRemainingColumn())
    progress = Progress(*columns, console=console)
    task = progress.add_task(f"{config.env} {config.pattern} seed {config.seed}", total=config.steps, rate=0.0,
                             ret="-")

    def on_progress(step: int, rate: float) -> None:
        progress.start()  # first shown once training runs, so a refused device or folder prints one line only
        progress.update(task, completed=step, rate=rate)

    # A stopped run exits 128 + the signal that stopped it, as shells report it (130 for Ctrl-C, 143 for a batch
    # scheduler's SIGTERM), so that a script can tell a stopped run from a finished one.
    stopped_by = {"signal": signal.SIGINT}
    try:
        result = train_foreground(config, out, threads=threads, on_progress=on_progress,
                                  on_eval=lambda step, ret: progress.update(task, ret=f"{ret:.1f}"),
                                  on_note=lambda note: console.print(f"note: {note}", soft_wrap=True),
                                  on_stop=lambda signum: stopped_by.update(signal=signum))
    except KeyboardInterrupt:  # a second Ctrl-C, before the checkpoint that the first one asked for
        result = None
    finally:
        if progress.live.is_started:
            progress.stop()
    if result is None:
        console.print("interrupted before a checkpoint: run again to resume from the last one", soft_wrap=True)
        raise typer.Exit(128 + stopped_by["signal"])
    state = "finished" if result.finished else f"stopped at step {result.steps_done:,} (run again to resume)"
    console.print(f"{state}; last evaluation return {result.last_return:.2f}; files in {out.absolute()}",
                  soft_wrap=True)
    if not result.finished:
        raise typer.Exit(128 + stopped_by["signal"])


def keys() -> None:
    """List the config keys that --set takes.

    Each with its default and meaning."""
    table = Table(title="config keys (--set key=value)", title_justify="left")
    for column in ("key", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for key, (default, meaning) in key_defaults().items():
        table.add_row(key, default, meaning)
    Console().print(table)
