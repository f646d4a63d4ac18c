"""Report of the pre-registered atlas RL comparison (docs/results/atlas-rl.md), from the runs' ``real_rl.json``.

Reads ``<root>/<arm>-s<seed>/real_rl.json`` (arms ``dapo``, ``dipo``, ``dipo-random``), writes ``report.md``,
``report.json`` and ``curves.png`` into ``--out``::

    python scripts/atlas_rl_report.py --root runs/atlas-rl --out docs/results/atlas-rl [--overwrite]

The analysis is the registered one: held-out mean@8 per arm and seed; paired differences DiPO − DAPO and
DiPO − dipo-random, paired by held-out prompt (right answers of 8, averaged over the seeds both arms ran; t interval
over prompts) and by seed (t interval over seeds, once ≥ 2 exist); BRR activity, judgment, entropy, length, reward.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dipo.reports.summary import markdown_table, paired_difference, spread

ARMS = ("dapo", "dipo", "dipo-random")
COMPARISONS = (("dipo", "dapo"), ("dipo", "dipo-random"), ("dipo-random", "dapo"))
RUN_NAME = re.compile(r"^(?P<arm>dapo|dipo|dipo-random)-s(?P<seed>\d+)$")


def load_runs(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{arm: {seed: run}}`` for every finished run folder under ``root``."""
    runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in ARMS}
    for path in sorted(root.glob("*/real_rl.json")):
        match = RUN_NAME.match(path.parent.name)
        if match:
            runs[match["arm"]][int(match["seed"])] = json.loads(path.read_text())
    return runs


def steps(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-step log rows (those with a reward)."""
    return [row for row in run["log_history"] if "reward" in row]


def _f(row: dict[str, Any], key: str) -> float:
    try:
        return float(row.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """Held-out accuracy, BRR activity and the training curves' summaries of one run."""
    rows = steps(run)
    groups = [_f(r, "dipo/frac_hard") + _f(r, "dipo/frac_easy") for r in rows]
    per_step_groups = run["settings"]["per_device_train_batch_size"] // run["settings"]["num_generations"]
    realloc_hard = sum(_f(r, "dipo/realloc_hard") for r in rows if not math.isnan(_f(r, "dipo/realloc_hard")))
    realloc_easy = sum(_f(r, "dipo/realloc_easy") for r in rows if not math.isnan(_f(r, "dipo/realloc_easy")))
    last = rows[-10:]
    return {
        "mean@8": run["heldout_after"]["mean@8"],
        "pass@8": run["heldout_after"]["pass@8"],
        "correct_per_prompt": run["heldout_after"]["correct_per_prompt"],
        "steps": len(rows),
        "extreme_groups": sum(g * per_step_groups for g in groups if not math.isnan(g)),
        "realloc_hard": realloc_hard,
        "realloc_easy": realloc_easy,
        "judgment_passed": _mean([_f(r, "dipo/judgment_passed") for r in rows]),
        "entropy_last10": _mean([_f(r, "entropy") for r in last]),
        "length_last10": _mean([_f(r, "completions/mean_length") for r in last]),
        "reward_mean": _mean([_f(r, "reward") for r in rows]),
        "ppl_correct_last10": _mean([_f(r, "dipo/mean_ppl_correct") for r in last]),
        "ppl_wrong_last10": _mean([_f(r, "dipo/mean_ppl_wrong") for r in last]),
        "train_seconds": run["train_seconds"],
        "total_seconds": run["total_seconds"],
    }


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def prompt_paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Δ mean@8 (points) paired by held-out prompt, over the seeds both arms ran; t interval over prompts."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return {"seeds": [], "diff": math.nan, "ci95": math.nan, "prompts": 0}
    k = 8
    n_prompts = len(a[seeds[0]]["correct_per_prompt"])
    per_prompt = [
        sum(a[s]["correct_per_prompt"][i] - b[s]["correct_per_prompt"][i] for s in seeds) / (len(seeds) * k) * 100
        for i in range(n_prompts)
    ]
    stats = spread([v / 100 for v in per_prompt])
    return {"seeds": seeds, "diff": stats.mean * 100, "ci95": stats.ci95 * 100, "prompts": n_prompts}


def seed_paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Difference of mean@8 (points) paired by seed; t interval over seeds (NaN with one seed)."""
    stats = paired_difference({s: r["mean@8"] for s, r in a.items()}, {s: r["mean@8"] for s, r in b.items()})
    return {"n": stats.n, "diff": stats.mean, "ci95": stats.ci95}


def analyse(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per-run summaries, the base model's accuracy and the registered paired comparisons."""
    summaries = {arm: {seed: run_summary(run) for seed, run in by_seed.items()} for arm, by_seed in runs.items()}
    base = next((r["heldout_before"] for by in runs.values() for r in by.values() if "heldout_before" in r), None)
    comparisons = {
        f"{x} − {y}": {
            "by_prompt": prompt_paired(summaries[x], summaries[y]),
            "by_seed": seed_paired(summaries[x], summaries[y]),
        }
        for x, y in COMPARISONS
    }
    return {"runs": summaries, "base": base, "comparisons": comparisons}


def _p(x: float, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The report's tables."""
    base = result["base"]
    lines = [f"Base model (before RL): held-out mean@8 {_p(base['mean@8']) if base else '–'} %, "
             f"pass@8 {_p(base['pass@8']) if base else '–'} %.", ""]  # fmt: skip
    header = ["arm", "seed", "mean@8 %", "pass@8 %", "extreme groups", "BRR hard / easy", "judgment passed",
              "entropy (last 10)", "length (last 10)", "train reward", "PPL right / wrong (last 10)",
              "train s"]  # fmt: skip
    rows = []
    for arm, by_seed in result["runs"].items():
        for seed, r in sorted(by_seed.items()):
            rows.append([arm, seed, _p(r["mean@8"]), _p(r["pass@8"]), _p(r["extreme_groups"], 0),
                         f"{r['realloc_hard']:.0f} / {r['realloc_easy']:.0f}", _p(r["judgment_passed"], 2),
                         _p(r["entropy_last10"], 3), _p(r["length_last10"], 2), _p(r["reward_mean"], 3),
                         f"{_p(r['ppl_correct_last10'], 3)} / {_p(r['ppl_wrong_last10'], 2)}",
                         _p(r["train_seconds"], 0)])  # fmt: skip
    lines += [markdown_table(header, rows), ""]
    header = ["comparison", "seeds", "by prompt: Δ mean@8 (95 % CI)", "by seed: Δ (95 % CI)"]
    rows = []
    for name, c in result["comparisons"].items():
        bp, bs = c["by_prompt"], c["by_seed"]
        rows.append([name, ",".join(map(str, bp["seeds"])) or "–",
                     f"{_p(bp['diff'])} ± {_p(bp['ci95'])} ({bp['prompts']} prompts)",
                     f"{_p(bs['diff'])} ± {_p(bs['ci95'])} (n = {bs['n']})"])  # fmt: skip
    lines += [markdown_table(header, rows)]
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, dict[int, dict[str, Any]]], path: Path) -> Path | None:
    """Training reward, entropy and cumulative BRR reallocations per step, one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = {"dapo": "tab:blue", "dipo": "tab:red", "dipo-random": "tab:green"}
    for arm, by_seed in runs.items():
        for seed, run in sorted(by_seed.items()):
            rows = steps(run)
            x = [r.get("step") for r in rows]
            cum, total = [], 0.0
            for r in rows:
                total += sum(v for v in (_f(r, "dipo/realloc_hard"), _f(r, "dipo/realloc_easy")) if not math.isnan(v))
                cum.append(total)
            style = dict(color=colours[arm], alpha=0.8, label=f"{arm} s{seed}")
            axes[0].plot(x, [_f(r, "reward") for r in rows], **style)
            axes[1].plot(x, [_f(r, "entropy") for r in rows], **style)
            axes[2].plot(x, cum, **style)
    for ax, title in zip(
        axes,
        ("training reward", "entropy", "BRR reallocations, cumulative\n(dapo: diagnostics only, α = 0)"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/atlas-rl"), help="folder of the run folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md / report.json / curves.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    args = parser.parse_args(argv)
    runs = load_runs(args.root)
    if not any(runs.values()):
        parser.error(f"no finished run (<arm>-s<seed>/real_rl.json) under {args.root}")
    earlier = [n for n in ("report.md", "report.json", "curves.png") if (args.out / n).exists()]
    if earlier and not args.overwrite:
        parser.error(f"{args.out} already holds an earlier report ({', '.join(earlier)}); --overwrite replaces it")
    result = analyse(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(markdown(result))
    (args.out / "report.json").write_text(json.dumps(result, indent=1))
    plot(runs, args.out / "curves.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
