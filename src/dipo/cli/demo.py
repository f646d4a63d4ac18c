"""``dipo demo``: GRPO vs DAPO vs DiPO on synthetic arithmetic with a tiny local model (CPU, minutes).

Examples::

    dipo demo                      # the full demo (3 methods × 3 seeds), report in runs/demo/report.md
    dipo demo --regime neutral     # the original testbed (see dipo.demo.regimes for every regime)
    dipo demo --controls --seeds 0 1 2 3 4   # the regime study's controls (random selection, one-sided BRR, …)
    dipo demo --quick              # ≤ 2-minute smoke run
    dipo demo --ablation           # DiPO ablations (judgment, BRR directions, membership, α)
    dipo demo --baselines          # entropy-loss and CDE-style perplexity-bonus baselines
    dipo demo --seeds 0 1 2 3 4 --out runs/demo5
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from dipo.cli.options import add_option

# Imported inside functions: dipo.demo.* (runner, app, report: torch, transformers, numpy; methods and regimes: the
# task generator) and rich, only when the demo runs: `dipo --help` imports this module.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="≤ 2-minute smoke run (1 seed, few steps, short SFT).")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ablation", action="store_true", help="Run the DiPO ablations (plus DAPO and DiPO).")
    group.add_argument(
        "--baselines", action="store_true", help="Run entropy-loss and CDE-style baselines (plus DAPO and DiPO)."
    )
    group.add_argument(
        "--controls",
        action="store_true",
        help="Run the regime study's controls: DAPO, DiPO, random selection, hard-only, easy-only, α = 1, entropy "
        "bonus, CDE-style bonus.",
    )
    parser.add_argument(
        "--regime",
        default=None,
        help="Testbed (default: %(default)s → the package default, see --list_regimes): which teacher writes the "
        "warm start's SFT targets, hence which of DiPO's regimes the RL runs start in.",
    )
    add_option(parser, "--list_regimes", action="store_true", help="List the regime testbeds and exit.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace the results of an earlier demo in the output folder."
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Keep the finished runs of an interrupted demo in the output folder (same configuration); run the rest.",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="Methods to run (see dipo.demo.methods).")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="RL seeds (default: 0 1 2).")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per run (default: 100).")
    parser.add_argument("--workers", type=int, default=None, help="Parallel runs (default: min(2, cores)).")
    parser.add_argument("--out", type=Path, default=None, help="Output folder (default: runs/demo[-ablation|...]).")
    add_option(parser, "--no_cache", action="store_true", help="Retrain the warm start even if it is cached.")
    add_option(parser, "--no_progress", action="store_true", help="Hide progress bars.")
    add_option(parser, "--list_methods", action="store_true", help="List the known methods and exit.")


def build_config(args: argparse.Namespace):
    """The :class:`DemoConfig` selected by the command-line arguments."""
    from dipo.demo.methods import ABLATIONS, BASELINES, CONTROLS, REGISTRY
    from dipo.demo.regimes import DEFAULT_REGIME
    from dipo.demo.runner import DemoConfig, default_workers

    cfg = DemoConfig.for_regime(args.regime or DEFAULT_REGIME, workers=default_workers())
    if args.quick:
        cfg = cfg.quick()
    if args.ablation:
        cfg = replace(cfg, methods=("dapo", "dipo", *[m.name for m in ABLATIONS]))
    elif args.baselines:
        cfg = replace(cfg, methods=("dapo", "dipo", *[m.name for m in BASELINES if m.name != "dipo"]))
    elif args.controls:
        cfg = replace(cfg, methods=tuple(CONTROLS))
    if args.methods:
        unknown = [m for m in args.methods if m not in REGISTRY]
        if unknown:
            raise ValueError(f"--methods: unknown {unknown}; choose from {', '.join(REGISTRY)}")
        cfg = replace(cfg, methods=tuple(dict.fromkeys(args.methods)))
    if args.seeds:
        bad = [s for s in args.seeds if s < 0]
        if bad:
            raise ValueError(f"--seeds: {bad} — seeds must be integers >= 0 (TRL rejects negative seeds)")
        cfg = replace(cfg, seeds=tuple(dict.fromkeys(args.seeds)))
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps {args.steps}: must be >= 1")
        cfg = replace(cfg, steps=args.steps)
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: must be >= 1")
        cfg = replace(cfg, workers=args.workers)
    return cfg


def default_out(args: argparse.Namespace) -> Path:
    name = (
        "demo"
        + (f"-{args.regime}" if args.regime else "")
        + ("-ablation" if args.ablation else "-baselines" if args.baselines else "-controls" if args.controls else "")
        + ("-quick" if args.quick else "")
    )
    return Path("runs") / name


def print_summary(results: dict) -> None:
    """The summary table on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    from dipo.demo.report import activity_text, comparison_text, gains_text, mechanism_text, summary_rows

    before = results["warmstart"]["heldout"]
    k = before["k"]
    table = Table(title=f"{results['title']}: held-out accuracy (%), mean ± std over seeds")
    for col in ("method", "seeds", "greedy", f"mean@{k}", f"Δ mean@{k}", "s / run"):
        table.add_column(col, justify="right" if col != "method" else "left")
    table.add_row("warm start", "-", f"{100 * before['greedy']:.1f}", f"{100 * before['mean_at_k']:.1f}", "-", "-")
    for row in summary_rows(results):
        table.add_row(
            row["method"],
            str(row["n"]),
            row["greedy"].fmt(),
            row["mean_at_k"].fmt(),
            row["gain"].fmt(),
            f"{row['seconds'].mean:.0f}",
        )
    console = Console()
    console.print(table)
    comp = comparison_text(results)
    if comp:
        console.print(comp)
    console.print(gains_text(results))
    for text in (activity_text(results), mechanism_text(results)):
        if text:
            console.print(text)
    console.print(f"wall time {results['wall_seconds']:.0f} s")


def run(args: argparse.Namespace) -> int:
    from dipo.demo.methods import REGISTRY
    from dipo.demo.regimes import DEFAULT_REGIME, REGIMES

    if args.list_methods:
        for name, method in REGISTRY.items():
            print(f"{name:20s} {method.description}")
        return 0
    if args.list_regimes:
        for name, regime in REGIMES.items():
            print(f"{name:10s}{' (default)' if name == DEFAULT_REGIME else ''} {regime.description}")
        return 0
    try:
        cfg = build_config(args)
        out = Path(args.out or default_out(args))
        from dipo.demo.app import check_output_dir

        check_output_dir(out, overwrite=args.overwrite, resume=args.resume)
    except ValueError as err:
        print(f"dipo demo: {err}", file=sys.stderr)
        return 2
    from dipo.demo.app import run_demo

    kind = next((f" — {n}" for n, on in [("ablations", args.ablation), ("baselines", args.baselines),
                                         ("controls", args.controls)] if on), "")  # fmt: skip
    title = f"DiPO demo ({cfg.regime} regime){kind}"
    results = run_demo(
        cfg, out, use_cache=not args.no_cache, show_progress=not args.no_progress, title=title, resume=args.resume
    )
    print_summary(results)
    print(f"report: {Path(out) / 'report.md'}")
    return 0
