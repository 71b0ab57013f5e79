"""``vaekit`` command line: parse, then run the command's function, imported only when it runs
(so that ``vaekit --help`` and a usage error need neither torch nor scikit-learn).

Each command is a few lines over :mod:`vaekit.pipeline`, in the module :data:`COMMANDS` names.
A user error is one line ``error: ...`` and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

import vaekit.compute.load  # noqa: F401  (first: opens the machine-load window, vaekit.compute.load)
from vaekit.config.options import OptionError
from vaekit.errors import VaekitError, user_error
from vaekit.io.stops import Terminated, stop_requests

from .parser import build_parser

# command -> "module:function"; the one place where the CLI imports its commands by name (the
# layer test in tests/test_imports.py reads this table as imports)
COMMANDS = {
    "train": "vaekit.cli.train:cmd_train",
    "sample": "vaekit.cli.use:cmd_sample",
    "fit-sampler": "vaekit.cli.use:cmd_fit_sampler",
    "reconstruct": "vaekit.cli.use:cmd_reconstruct",
    "impute": "vaekit.cli.use:cmd_impute",
    "embed": "vaekit.cli.use:cmd_embed",
    "interpolate": "vaekit.cli.use:cmd_interpolate",
    "traverse": "vaekit.cli.use:cmd_traverse",
    "evaluate": "vaekit.cli.evaluate:cmd_evaluate",
    "score": "vaekit.cli.evaluate:cmd_score",
    "baseline": "vaekit.cli.evaluate:cmd_baseline",
    "report": "vaekit.cli.show:cmd_report",
    "card": "vaekit.cli.show:cmd_card",
    "compare": "vaekit.cli.show:cmd_compare",
    "export": "vaekit.cli.show:cmd_export",
    "datasets": "vaekit.cli.show:cmd_datasets",
}


def run(args: argparse.Namespace) -> int:
    """Import the module of ``args.command`` and run its function."""
    module, _, function = COMMANDS[args.command].partition(":")
    return getattr(importlib.import_module(module), function)(args)


def user_message(e: BaseException) -> str | None:
    """The one line shown for a user error (flags named as flags), or None for a bug."""
    if isinstance(e, OptionError):
        return e.as_flags()
    if isinstance(e, VaekitError):
        return str(e)
    mapped = user_error(e)
    return None if mapped is None else str(mapped)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vaekit`` command; returns the exit status. Without ``argv`` (the
    program itself) stop requests that come once the command has ended are ignored: its status
    stands."""
    args = None
    try:
        with stop_requests(whole_process=argv is None):  # SIGTERM stops like Ctrl-C
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as e:  # --help, --version, or a usage error already printed
                return e.code if isinstance(e.code, int) else 2
            return run(args)
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"{what}; the last finished epoch is saved: continue with 'vaekit train DATA --out "
              "RUN --resume'" if args is not None and args.command == "train" else what,
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:
        message = user_message(e)
        if message is None or args is None or args.debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
