"""The `rnm` entry point: wires the command modules and maps library errors to one line and an exit code."""

from __future__ import annotations

import os
import sys

import typer

from rnmtd3.errors import DatabaseError, RnmError, UsageError

from . import queue_cmds, report_cmd, train_cmd, workers_cmd

app = typer.Typer(
    name="rnm",
    help="Queue, run and report N:M-sparse TD3 (RNM-TD3) experiments on Gymnasium MuJoCo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for module in (train_cmd, queue_cmds, workers_cmd, report_cmd):
    module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from rnmtd3.provenance import collect

        found = collect(threads=0)
        commit = f" (git {found['git_commit']})" if found["git_commit"] else ""
        print(f"rnm {found['rnm_version']}{commit}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print the version that runs record as their provenance, and exit")
             ) -> None:
    """Options of `rnm` itself, given before a command; the app's help text says what rnm does."""


def main() -> None:
    """Run the CLI; a traceback appears only when RNM_DEBUG is set."""
    try:
        app()
    except (UsageError, DatabaseError) as exc:
        _fail(exc, 2)
    except RnmError as exc:
        _fail(exc, 1)
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a line
        if os.environ.get("RNM_DEBUG"):
            raise
        _fail(f"unexpected {exc.__class__.__name__}: {exc} (set RNM_DEBUG=1 for the traceback)", 1)


def _fail(message: object, code: int) -> None:
    if os.environ.get("RNM_DEBUG") and isinstance(message, BaseException):
        raise message
    line = " ".join(str(message).split())  # a library message with newlines (a driver's) still prints as one line
    print(f"rnm: error: {line}", file=sys.stderr)
    sys.exit(code)
