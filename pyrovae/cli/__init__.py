"""``pyrovae`` command line: the composition root.

Parses flags into frozen configs, builds objects through the registry, and calls the
trainer/evaluator.  Nothing else in the package reads ``sys.argv``, and nothing imports
this package.  Plugins add commands through the registry (kind ``command``).  Every
user-fixable problem surfaces as a one-line ``pyrovae: error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from pyrovae import registry
from pyrovae.cli import evaluate, figures, train
from pyrovae.errors import PyroVAEError, TrainingInterrupted


def commands() -> dict:
    """Every subcommand: the built-in ones, then those plugins register."""
    found = {**train.COMMANDS, **evaluate.COMMANDS, **figures.COMMANDS}
    for name in registry.names("command"):
        found.setdefault(name, registry.get("command", name))
    return found


class UsageError(Exception):
    """A flag argparse cannot parse; reported as one line like every other bad input."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} -h)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pyrovae", allow_abbrev=False,
                    description="variational autoencoders as Pyro model/guide pairs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in commands().items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, allow_abbrev=False)
        cmd.add_flags(p)
        p.set_defaults(func=cmd.run)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"pyrovae: error: {e}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except TrainingInterrupted as e:
        print(f"pyrovae: {e}", file=sys.stderr)
        return 128 + e.signum
    except PyroVAEError as e:
        # Pyro appends the trace's shapes to errors raised inside a model: keep our line only
        print(f"pyrovae: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyrovae: interrupted; the last checkpoint is kept -- continue with --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
