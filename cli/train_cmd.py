"""`rnm train`: one run in the foreground, no queue."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rnmtd3.runs import prepare_out_dir, train_foreground
from rnmtd3.sweep import make_config, single_values

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    env: str = typer.Option(..., help="env name (Hopper -> Hopper-v5) or full Gymnasium id"),
    pattern: str = typer.Option("2:4", help="N:M pattern such as 2:4, 1:8, or dense"),
    seed: int = typer.Option(0, help="random seed"),
    steps: Optional[int] = typer.Option(None, help="environment steps (default 1e6)"),
    set_: list[str] = typer.Option([], "--set", help="config key=value, repeatable (see `rnm keys`)"),
    out: Path = typer.Option(..., help="folder for checkpoint.pt and evals.csv; an existing run there resumes"),
    threads: int = typer.Option(1, help="torch threads"),
) -> None:
    """Train one RNM-TD3 agent in the foreground, writing OUT/checkpoint.pt and OUT/evals.csv as it goes."""
    config = make_config(env, pattern, seed, single_values(set_, steps=steps))
    run_dir = prepare_out_dir(out)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
               TextColumn("{task.fields[rate]:>7.1f} steps/s"), TextColumn("return {task.fields[ret]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{config.env} {config.pattern} seed {config.seed}", total=config.steps,
                                 rate=0.0, ret="-")
        result = train_foreground(
            config, run_dir, threads=threads,
            on_progress=lambda step, rate: progress.update(task, completed=step, rate=rate),
            on_eval=lambda step, ret: progress.update(task, ret=f"{ret:.1f}"),
        )
    state = "finished" if result.finished else f"stopped at step {result.steps_done:,} (run again to resume)"
    console.print(f"{state}; last evaluation return {result.last_return:.2f}; files in {run_dir}")
