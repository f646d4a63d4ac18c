"""``dipo`` command: dispatches to one module per sub-command.

Each sub-command lives in ``dipo.cli.<name>`` and exposes ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so that ``dipo --help`` stays fast and a missing optional extra only
affects the sub-command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, str] = {
    "demo": "Run the embedded default: GRPO vs DAPO vs DiPO on a synthetic arithmetic task (CPU, minutes).",
    "train": "Train a model on a real task (math or function calling) with a GRPO/DAPO/DiPO preset.",
    "eval": "Evaluate a model folder: mean@k, maj@k, pass@k (math) or BFCL accuracy (function calling).",
    "assets": "Install the offline real assets (SmolLM2-135M, GSM8K/MATH, BFCL) and convert the model.",
    "probe": "Check DiPO's premise on a model and task: PPL vs correctness, judgment, AUROC, BRR reach.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dipo", description="DiPO: Disentangled Perplexity Policy Optimization.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(f"dipo.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("dipo.cli"):
                sub_parser.set_defaults(_missing=name)
                continue
            raise
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_missing", None):
        parser.error(f"sub-command {args._missing!r} is not available in this version")
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
