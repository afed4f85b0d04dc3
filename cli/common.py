"""Options and rendering helpers shared by the command modules."""

from __future__ import annotations

from typing import Optional, Sequence

import typer
from rich.console import Console

from rnmtd3.config import RunConfig

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

DbOption = typer.Option(None, "--db", help="database path or SQLAlchemy URL (default: $RNM_DB, else ./rnm.db)")


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def warn_no_training(configs: Sequence[RunConfig]) -> None:
    """One warning line for runs that make no gradient update (RunConfig.updates_networks), such as a smoke test with
    `--steps 1e4` beside the default start_steps=25000. They still go ahead: a random-policy baseline is a run."""
    idle = [config for config in configs if not config.updates_networks]
    if idle:
        first = min(idle, key=lambda config: config.steps)
        err.print(f"rnm: warning: {len(idle)} run(s) have steps ({first.steps:,}) <= start_steps "
                  f"({first.start_steps:,}): they act at random and never update their networks; to train, set "
                  f"start_steps below steps, such as --set start_steps={first.steps // 10}",
                  soft_wrap=True, markup=False)
