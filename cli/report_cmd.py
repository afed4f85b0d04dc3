"""Placeholder until the report module lands (being written in parallel)."""

import typer


def register(app: typer.Typer) -> None:
    pass
