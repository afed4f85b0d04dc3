"""`rnm report`: the paper-style tables and figures, computed by `rnmtd3.report` from the registry."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rnmtd3.registry import open_registry
from rnmtd3.sweep import single_values, split_list

from rnmtd3.errors import UsageError
from rnmtd3.folders import check_out_dir, check_out_file, write_text_atomic

from .common import DbOption, err


class Table(str, Enum):
    results = "results"
    ablation = "ablation"
    cost = "cost"


class Format(str, Enum):
    markdown = "markdown"
    latex = "latex"
    csv = "csv"


def report(
    format_: Format = typer.Option(Format.markdown, "--format", help="table format"),
    out: Optional[Path] = typer.Option(None, help="write the table to this file instead of stdout"),
    plots: Optional[Path] = typer.Option(None, help="write the figures (PNG and PDF) into this folder"),
    last_k: int = typer.Option(10, help="a run's final score is the mean of its last K evaluations"),
    envs: Optional[str] = typer.Option(None, help="comma list of envs to report (Hopper or Hopper-v5); default all"),
    patterns: Optional[str] = typer.Option(
        None, help="comma list of patterns to report (2:4,unstructured:0.5), each with every mask_rule and "
                   "sparse_init it was run with; the dense baseline is always kept"),
    include_partial: bool = typer.Option(
        False, "--include-partial", help="include unfinished and failed runs, scored on their evaluations so far"),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="report the runs with this config value "
                                   "(key=value, repeatable): one setting of a --set sweep"),
    by: Optional[str] = typer.Option(
        None, "--by", metavar="KEY", help="an ablation over a swept key: its values as rows, the patterns as "
                                          "columns (e.g. --by mask_interval)"),
    table: Optional[Table] = typer.Option(
        None, "--table", help="write only this table (csv writes one, results unless named); cost reads every "
                              "run's checkpoint"),
    seed: int = typer.Option(0, help="seed of the bootstrap confidence intervals"),
    reps: int = typer.Option(10_000, help="bootstrap resamples per interval (about 2 s each for 5 envs at 10,000; "
                                         "rliable's paper default is 50,000)"),
    db: Optional[str] = DbOption,
) -> None:
    """Paper tables and figures from the finished runs.

    Tables (mean ± std over seeds, normalized scores, IQM and P(> dense) with 95% CIs, density, cost, and an
    ablation with --by) and figures from the finished runs, one column per method: a pattern with its mask_rule
    and sparse_init ('2:4 (50%) rigl'), and the value of any key that differs between its runs."""
    from rnmtd3.report import build_report, render, write_plots  # rliable and matplotlib load in ~2 s: only here
    from rnmtd3.report.cost import run_costs

    where = single_values(set_)
    wanted = table.value if table else (Table.results.value if format_ is Format.csv else None)
    if wanted == Table.ablation.value and by is None:
        raise UsageError("--table ablation needs --by KEY")
    if out is not None:
        check_out_file(out)
    if plots is not None:
        check_out_dir(plots, "--plots")
    registry = open_registry(db, create=False, read_only=True)
    try:
        runs, evals, stats = registry.runs_frame(), registry.evals_frame(), registry.stats_frame()
        attempts = registry.attempts_frame()
    finally:
        registry.close()
    with err.status("computing the report (bootstrap confidence intervals)"):
        costs = run_costs(runs) if wanted in (None, Table.cost.value) else None  # reads checkpoints: when asked
        result = build_report(runs, evals, stats, last_k=last_k, envs=split_list(envs) if envs else None,
                              patterns=split_list(patterns) if patterns else None,
                              include_partial=include_partial, where=where, by=by, seed=seed, reps=reps,
                              attempts=attempts, costs=costs)
    if wanted == Table.cost.value and result.costs is None:
        raise UsageError(result.cost_note)
    text = render(result, format_.value, wanted)
    for note in [*(result.notes if format_ is Format.csv else ()), *result.hints]:
        err.print(note, soft_wrap=True, markup=False, highlight=False)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(out, text)
        err.print(f"table written to {out}", soft_wrap=True)
    if plots is not None:
        paths = write_plots(result, plots)
        err.print(f"{len(paths)} figure files (PNG and PDF) written to {plots}", soft_wrap=True)
