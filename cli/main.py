"""The `rnm` entry point: wires the commands and maps library and usage errors to one line and an exit code."""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from rnmtd3.errors import DatabaseError, RnmError, UsageError

from . import eval_cmd, queue_cmds, report_cmd, train_cmd, workers_cmd

try:  # typer vendors click from 0.2x on; before, it used click itself
    from typer._click.exceptions import ClickException
except ImportError:
    from click.exceptions import ClickException

app = typer.Typer(
    name="rnm",
    help="Queue, run and report N:M-sparse TD3 (RNM-TD3) experiments on Gymnasium MuJoCo.",
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help, as argparse prints it: flags without a `<bool>` type, text that flows
    context_settings={"help_option_names": ["-h", "--help"]},
)
COMMANDS = {
    "queue": queue_cmds.queue, "run-workers": workers_cmd.run_workers, "status": queue_cmds.status,
    "report": report_cmd.report, "train": train_cmd.train, "eval": eval_cmd.eval_run, "keys": train_cmd.keys,
    "retry": queue_cmds.retry,
    "cancel": queue_cmds.cancel, "export": queue_cmds.export,
}
"""In the order of a sweep's workflow, which is the order `rnm --help` lists them in."""
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)

USAGE_HINTS = {
    "--seeds": "--seeds is a count (5 means seeds 0..4), a list (3,7) or a range (5-9)",
    "--set": "--set takes key=value, or key=v1,v2 to sweep the key; `rnm keys` lists the keys",
}
"""The hint that follows a usage error of an option that people misread, in place of `rnm CMD -h`."""


def _print_version(value: bool) -> None:
    if value:
        from rnmtd3.provenance import collect

        found = collect(threads=0)
        commit = f" (git {found['git_commit']})" if found["git_commit"] else ""
        print(f"rnm {found['rnm_version']}{commit}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _options(ctx: typer.Context,
             version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print the version that runs record as their provenance, and exit")
             ) -> None:
    """Options of `rnm` itself, given before a command; the app's help text says what rnm does. `rnm` alone
    prints the help, on stdout, and succeeds."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())


def main() -> None:
    """Run the CLI; a traceback appears only when RNM_DEBUG is set."""
    try:
        sys.exit(app(prog_name="rnm", standalone_mode=False) or 0)  # a typer.Exit code, or None from a command
    except ClickException as exc:
        _fail(_usage_line(exc), exc.exit_code)
    except (UsageError, DatabaseError) as exc:
        _fail(exc, 2)
    except RnmError as exc:
        _fail(exc, 1)
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a line
        if os.environ.get("RNM_DEBUG"):
            raise
        _fail(f"unexpected {exc.__class__.__name__}: {exc} (set RNM_DEBUG=1 for the traceback)", 1)


def _usage_line(exc: ClickException) -> str:
    """A usage error of the CLI framework (a bad option value, a missing or unknown option or command) as the tool
    words its own: its message and the hint of the option it names, else where the options are listed."""
    param = getattr(exc, "param", None)
    names = [*getattr(param, "opts", ()), getattr(exc, "option_name", None)]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx else "rnm"
    listed = "commands" if ctx and isinstance(ctx.command, TyperGroup) else "options"
    hint = next((USAGE_HINTS[name] for name in names if name in USAGE_HINTS), f"`{command} -h` lists the {listed}")
    message = exc.format_message().rstrip(".")
    return f"{message[:1].lower()}{message[1:]} ({hint})"


def _fail(message: object, code: int) -> None:
    if os.environ.get("RNM_DEBUG") and isinstance(message, BaseException):
        raise message
    line = " ".join(str(message).split())  # a library message with newlines (a driver's) still prints as one line
    print(f"rnm: error: {line}", file=sys.stderr)
    sys.exit(code)
