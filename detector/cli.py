"""The `detect` command: PaddleOCR-style text detection from the shell.

`detect -i …` detects (the default action); subcommands (`detect eval`, `detect serve`,
`detect batch`, `detect optimize`) are thin wrappers over library functions, each imported only when invoked so that
optional extras stay optional. Exit codes: 0 every input succeeded, 1 some input failed (each
failure one line on stderr, the rest still processed and saved), 2 usage error (bad option value,
model or device unusable), 130 interrupted, 143 terminated, 141 stdout closed by its reader.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Optional

import click

from .command_messages import (
    EXIT_SOME_FAILED,
    DiagnosticsStream,
    StdoutClosed,
    show_package_warnings,
    signal_note,
    signals_end_the_exit,
    unencodable_characters_escaped,
)
from .command_options import CONTEXT_SETTINGS
from .detect_command import DETECT_COMMAND, detect
from .errors import EXIT_OK, Terminated, raise_terminated

# PaddleOCR's name for the same action: `paddleocr text_detection -i x.png` runs here with `paddleocr` replaced
PADDLEOCR_DETECT_COMMAND = "text_detection"
# Subcommands: name -> "module:attribute" of a click command, imported only when that name is invoked.
SUBCOMMANDS: dict[str, str] = {
    "serve": "detector.serve.command:serve",
    "batch": "detector.batch_command:batch",
    "eval": "detector.evaluation.command:eval_command",
    "optimize": "detector.optimize.command:optimize_command",
}


class DetectGroup(click.Group):
    """A click group whose default action is detection: arguments that do not start with a
    subcommand name go to the `predict` command, so `detect -i …` keeps working unchanged."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [DETECT_COMMAND, *sorted(SUBCOMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name == DETECT_COMMAND:
            return detect
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] == PADDLEOCR_DETECT_COMMAND:
            args = [DETECT_COMMAND, *args[1:]]
        elif not args or args[0] not in self.list_commands(ctx):
            args = [DETECT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(cls=DetectGroup, context_settings=CONTEXT_SETTINGS)
def cli() -> None:
    """Detect text lines in images with a PP-OCR detection model on onnxruntime."""
    show_package_warnings()


cli.add_command(detect)  # defined in detect_command.py, routed to by DetectGroup

SIGPIPE = 13  # signal.SIGPIPE, which Windows' signal module lacks


def main(argv: Optional[list[str]] = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    # the name a signal's one line starts with: "detect eval: interrupted", as the command's errors start
    command = f"detect {args[0]}" if args and args[0] in SUBCOMMANDS else "detect"
    unencodable_characters_escaped()
    stderr = sys.stderr
    if stderr is not None and not isinstance(stderr, DiagnosticsStream):
        sys.stderr = DiagnosticsStream(stderr)
    signal.signal(signal.SIGTERM, raise_terminated)  # `detect serve` sets its own
    try:
        _run(argv, args, debug, command)
    finally:
        if argv is None:  # the program itself (the console script, python -m detector): it exits next
            signals_end_the_exit(command)
        sys.stderr = stderr  # main() called in a process of the caller's (a test, a script): its stderr given back


def _run(argv: Optional[list[str]], args: list[str], debug: bool, command: str) -> None:
    """main's run of the command line, each ending as its exit code (SystemExit)."""
    try:
        # not standalone: click would turn Ctrl-C into "Aborted!" and exit 1, the code for failed inputs
        code = cli.main(args=argv, prog_name="detect", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort) as stopped:
        click.echo(f"{command}: interrupted{signal_note(command, stopped)}", err=True)
        sys.exit(130)
    except Terminated as stopped:
        click.echo(f"{command}: terminated{signal_note(command, stopped)}", err=True)
        sys.exit(128 + signal.SIGTERM)
    except StdoutClosed:
        # as a command killed by SIGPIPE: no message (the reader chose to stop), exit 128 + 13; stdout goes
        # to /dev/null so that Python's flush at exit does not fail on the closed pipe again
        if sys.stdout is not None:  # None: started with stdout closed, nothing to flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + SIGPIPE)
    except click.ClickException as exc:  # a usage error: click's message and its exit code (2)
        if isinstance(exc, click.UsageError) and exc.message.startswith("Got unexpected extra argument"):
            # `-i *.png` expanded by the shell
            hint = "; give each input its own -i, or quote a glob pattern ('*.png') so detect expands it"
            exc = click.UsageError(exc.message + hint, exc.ctx)
        elif isinstance(exc, click.MissingParameter) and exc.param is not None and exc.param.name == "inputs":
            # `detect image.png`: inputs are options, as in PaddleOCR's CLI
            hint = f" Give each input with -i: {command} -i image.png -i scans/"
            exc = click.UsageError(exc.format_message() + hint, exc.ctx)
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:  # writing the results failed (a full disk, stdout closed): not a bug
        if debug:
            raise
        click.echo(f"detect: error: {exc}", err=True)
        sys.exit(EXIT_SOME_FAILED)
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if debug:
            raise
        click.echo(f"detect: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
        sys.exit(EXIT_SOME_FAILED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)  # --help and the like return their code here


if __name__ == "__main__":
    main()
