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
