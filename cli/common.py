"""Options and rendering helpers shared by the command modules."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

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
