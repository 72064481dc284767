"""Command-line entry point: parses arguments and dispatches to one module per command group.

Each module in this package registers its subcommands with `register(subparsers)` and sets
`func` on them; the function returns an exit code. Bad input raised as `BadInput` becomes one
line on stderr and exit code 2, so no command prints a traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from vlmtui import __version__
from vlmtui.core.errors import BadInput, WorkFailed

# Module names, imported lazily in order; each registers its own subcommands.
COMMAND_MODULES = (
    "recipes_cmd",
    "train_cmd",
    "inspect_cmd",
    "demo_cmd",
    "eval_cmd",
    "hosts_cmd",
    "runs_cmd",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vlmtui",
        description="Fine-tune Qwen2-VL-family models for object detection. "
        "With no command, opens the terminal app.",
    )
    parser.add_argument("--version", action="version", version=f"vlmtui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"vlmtui.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from vlmtui.core.paths import check_home

        check_home()
        if args.command is None:
            from vlmtui.cli.app_cmd import open_app

            return open_app()
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BadInput as exc:
        print(f"vlmtui: {exc}", file=sys.stderr)
        return 2
    except WorkFailed as exc:
        print(f"vlmtui: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return quiet_broken_pipe()


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (`vlmtui runs | head -2`): end quietly, like `yes | head`.

    stdout is pointed at /dev/null so that the interpreter's final flush of what is still
    buffered cannot raise a second time on the way out.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE
