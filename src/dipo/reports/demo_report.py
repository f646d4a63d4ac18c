"""``report.md`` + PNG plots of a ``dipo demo`` run (reads the ``results.json`` structure written by the demo)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from dipo.reports.plots import plot_metric, plot_panels, plot_ppl_distributions
from dipo.reports.summary import markdown_table, paired_difference, spread

PLOTS = {
    "accuracy": ("heldout_mean_at_k", "Held-out mean@k over steps", "mean@k"),
    "greedy": ("heldout_greedy", "Held-out greedy accuracy over steps", "greedy accuracy"),
    "reward": ("reward", "Training reward (batch mean)", "reward"),
    "entropy": ("entropy", "Policy entropy (per token)", "entropy"),
    "threshold": ("dipo/threshold_ppl", "τ* as PPL (0 = all responses above the cut)", "τ* (PPL)"),
}


def _by_method(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in results["runs"]:
        grouped[run["method"]].append(run)
    return {m: grouped[m] for m in results["methods"] if m in grouped}


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per method: spreads over seeds of the final greedy / mean@k (and per level), plus paired gains."""
    before = results["warmstart"]["heldout"]
    rows = []
    for name, runs in _by_method(results).items():
        finals = [r["final"] for r in runs]
        levels = sorted({lv for f in finals for lv in f["mean_at_k_by_level"]}, key=int)
        rows.append(
            {
                "method": name,
                "n": len(runs),
                "greedy": spread([f["greedy"] for f in finals]),
                "mean_at_k": spread([f["mean_at_k"] for f in finals]),
                "levels": {lv: spread([f["mean_at_k_by_level"].get(lv, math.nan) for f in finals]) for lv in levels},
                "gain": spread([f["mean_at_k"] - before["mean_at_k"] for f in finals]),
                "seconds": spread([r["seconds"] for r in runs]),
                "by_seed": {r["seed"]: r["final"]["mean_at_k"] for r in runs},
            }
        )
    return rows


def _histories(results: dict[str, Any]) -> dict[str, list[list[dict[str, float]]]]:
    return {m: [run["history"] + run["evals"] for run in runs] for m, runs in _by_method(results).items()}


def write_plots(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """All PNGs of the report under ``out / "plots"``; returns name -> path for those that could be drawn."""
    hist = _histories(results)
    plots_dir = out / "plots"
    made: dict[str, Path] = {}
    for name, (key, title, ylabel) in PLOTS.items():
        smoothing = 5 if key in ("reward", "entropy", "dipo/threshold_ppl") else 1
        path = plot_metric(hist, key, plots_dir / f"{name}.png", title=title, ylabel=ylabel, smoothing=smoothing)
        if path:
            made[name] = path
    panels = {
        "groups": (["dipo/frac_easy", "dipo/frac_normal", "dipo/frac_hard"], ["easy", "normal", "hard"],
                   "Fraction of easy / normal / hard groups"),
        "realloc": (["dipo/realloc_hard", "dipo/realloc_easy"], ["hard groups rewarded", "easy groups penalised"],
                    "Reallocated groups per step (BRR)"),
        "quadrants": (["dipo/frac_CL", "dipo/frac_CH", "dipo/frac_EL", "dipo/frac_EH"], ["CL", "CH", "EL", "EH"],
                      "Quadrant fractions of the batch (PSD)"),
    }  # fmt: skip
    for name, (keys, names, title) in panels.items():
        path = plot_panels(hist, keys, plots_dir / f"{name}.png", title, names=names, smoothing=5)
        if path:
            made[name] = path
    samples: dict[str, dict[str, list]] = {}
    for method, runs in _by_method(results).items():
        early = [tuple(p) for r in runs for p in r.get("ppl_early", [])]
        late = [tuple(p) for r in runs for p in r.get("ppl_late", [])]
        if early or late:
            samples[f"{method} early"] = {method: early}
            samples[f"{method} late"] = {method: late}
    if samples:
        # At most 3 methods per figure keep the panels readable.
        names = list(samples)
        path = plot_ppl_distributions(dict(list(samples.items())[:6]), plots_dir / "ppl.png")  # early | late rows
        if path:
            made["ppl"] = path
        if len(names) > 6:
            path = plot_ppl_distributions(dict(list(samples.items())[6:12]), plots_dir / "ppl_2.png")
            if path:
                made["ppl_2"] = path
    return made


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: method × held-out accuracy (mean ± std over seeds, in %)."""
    before = results["warmstart"]["heldout"]
    k = before["k"]
    rows = summary_rows(results)
    levels = sorted(before["mean_at_k_by_level"], key=int)
    header = ["method", "seeds", "greedy", f"mean@{k}", f"Δ mean@{k} vs start"] + [f"L{lv} mean@{k}" for lv in levels]
    table = [
        ["warm start", "-", f"{100 * before['greedy']:.1f}", f"{100 * before['mean_at_k']:.1f}", "-"]
        + [f"{100 * before['mean_at_k_by_level'][lv]:.1f}" for lv in levels]
    ]
    for row in rows:
        table.append(
            [row["method"], str(row["n"]), row["greedy"].fmt(), row["mean_at_k"].fmt(), row["gain"].fmt()]
            + [row["levels"][lv].fmt() if lv in row["levels"] else "n/a" for lv in levels]
        )
    return markdown_table(header, table)


def comparison_text(results: dict[str, Any], a: str = "dipo", b: str = "dapo") -> str | None:
    """Paired (same seed) difference of final mean@k between methods ``a`` and ``b``, with a verdict."""
    rows = {r["method"]: r for r in summary_rows(results)}
    if a not in rows or b not in rows:
        return None
    diff = paired_difference(rows[a]["by_seed"], rows[b]["by_seed"])
    if diff.n == 0:
        return None
    noise = max(rows[a]["mean_at_k"].std, rows[b]["mean_at_k"].std)
    text = f"{a} − {b} (held-out mean@k, paired by seed, {diff.n} seeds): {100 * diff.mean:+.2f} points"
    if diff.n > 1:
        lo, hi = diff.mean - diff.ci95, diff.mean + diff.ci95
        text += f" (std of the paired differences {100 * diff.std:.2f}, 95 % CI [{100 * lo:+.2f}, {100 * hi:+.2f}])"
        if lo > 0:
            verdict = f"the gain is larger than the seed noise: the 95 % CI excludes 0 (seed std ≈ {100 * noise:.2f})."
        elif hi < 0:
            verdict = f"{a} is worse than {b} beyond the seed noise: the 95 % CI is below 0."
        else:
            verdict = (
                f"the difference is within the seed noise (the 95 % CI contains 0; seed std ≈ {100 * noise:.2f})."
            )
        text += ". Verdict: " + verdict
    else:
        text += ". One seed only: no noise estimate."
    return text


def diagnostics_table(results: dict[str, Any]) -> str:
    """Per-method means over all steps and seeds of the main DiPO diagnostics."""
    keys = [
        ("dipo/frac_easy", "easy"),
        ("dipo/frac_hard", "hard"),
        ("dipo/judgment_passed", "judgment passed"),
        ("dipo/realloc_hard", "realloc hard / step"),
        ("dipo/realloc_easy", "realloc easy / step"),
        ("dipo/advantage_delta_abs_mean", "mean abs advantage change"),
        ("entropy", "entropy"),
    ]
    rows = []
    for method, runs in _by_method(results).items():
        cells = [method]
        for key, _ in keys:
            vals = [float(r[key]) for run in runs for r in run["history"] if key in r and r[key] is not None]
            vals = [v for v in vals if math.isfinite(v)]
            cells.append(f"{sum(vals) / len(vals):.3f}" if vals else "n/a")
        rows.append(cells)
    return markdown_table(["method", *[name for _, name in keys]], rows)


def write_report(results: dict[str, Any], out: Path | str, plot_prefix: str = "plots/") -> Path:
    """Write ``report.md`` (and its plots) for ``results`` into ``out``."""
    out = Path(out)
    made = write_plots(results, out)
    cfg = results["config"]
    warm = results["warmstart"]
    before = warm["heldout"]
    lines = [f"# {results.get('title', 'DiPO demo')}", ""]
    sft_text = "loaded from cache" if warm.get("cached") else f"trained in {warm['sft_seconds']:.0f} s"
    lines.append(
        f"Task: synthetic addition, levels (operand digits) {cfg['task']['levels']}, reversed-digit answers, exact "
        f"verifier. Model: Llama-architecture decoder with {warm['num_parameters']:,} parameters, "
        f"warm-started by {cfg['sft']['steps']} SFT steps of {cfg['sft']['batch_size']} examples "
        f"({sft_text}). "
        f"RL: {cfg['steps']} steps × {cfg['prompts_per_step']} prompts × G={cfg['num_generations']}, "
        f"lr {cfg['learning_rate']:g}, temperature {cfg['temperature']:g}, seeds {list(cfg['seeds'])}, through "
        f"`DiPOTrainer` (TRL GRPOTrainer). Held-out evaluation: {cfg['final_eval_per_level']} items per level, "
        f"greedy and mean@{before['k']} at the training temperature. Wall time: {results['wall_seconds']:.0f} s "
        f"({results['workers']} parallel run(s), {results['threads_per_run']} thread(s) each)."
    )
    lines += ["", "## Held-out accuracy (%; mean ± std over seeds)", "", results_table(results), ""]
    comp = comparison_text(results)
    if comp:
        lines += [comp, ""]
    lines += [
        "## Diagnostics (mean over steps and seeds)",
        "",
        diagnostics_table(results),
        "",
        "Methods with α = 0 (GRPO, DAPO and the other baselines) run PSD/BRR in observe-only mode "
        "(`dipo_log_diagnostics=True`): their reallocation counts are what DiPO *would* have reallocated on their "
        "batches; their advantages are untouched (mean abs advantage change 0). n/a: diagnostics off (CDE runs).",
        "",
    ]
    captions = {
        "accuracy": "Held-out mean@k over steps",
        "greedy": "Held-out greedy accuracy over steps",
        "entropy": "Policy entropy",
        "threshold": "τ* (as PPL)",
        "groups": "Fractions of easy / normal / hard groups",
        "realloc": "Reallocated groups per step",
        "quadrants": "Quadrant fractions",
        "ppl": "PPL distributions of correct vs wrong responses, first and last steps",
        "ppl_2": "PPL distributions (more methods)",
        "reward": "Training reward",
    }
    lines += ["## Plots", ""]
    for name, caption in captions.items():
        if name in made:
            lines += [f"**{caption}**", "", f"![{caption}]({plot_prefix}{made[name].name})", ""]
    lines += ["## Methods", ""]
    for name, info in results["methods"].items():
        lines.append(f"- `{name}`: {info['description']}")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
