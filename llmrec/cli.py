"""The ``llmrec`` command. Thin: it parses arguments and calls the stage functions.

Each stage package owns its subcommands in ``<stage>/cli.py`` with a ``register(subparsers)`` function;
this module only collects them, so adding a stage is one line in ``_STAGES``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from llmrec import __version__
from llmrec.errors import LlmrecError

# Modules that define ``register(subparsers)``; order = order in ``llmrec --help``.
_STAGES = (
    "llmrec.data_builders.cli",
    "llmrec.data_builders.instructions_cli",
    "llmrec.eval.cli",
    "llmrec.models.cli",
    "llmrec.models.lm_cli",
    "llmrec.tokenizers.cli",
    "llmrec.training.cli",
    "llmrec.inference.cli",
    "llmrec.tokenizers.actionpiece.cli",
    "llmrec.quickstart",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmrec",
        description="LLM-aligned generative recommendation with Semantic IDs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llmrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _STAGES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        # A group without a subcommand (e.g. `llmrec data`): show that group's help.
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LlmrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_group(sub, name: str, help: str):
    """Add a command group (``llmrec data ...``) and return its subparsers."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


if __name__ == "__main__":
    raise SystemExit(main())
