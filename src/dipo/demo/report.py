"""``report.md`` + PNG plots of a ``dipo demo`` run (reads the ``results.json`` structure written by the demo).

Lives next to its owner, :mod:`dipo.demo` (it reads the demo's regimes); ``dipo.reports.demo_report`` is a deprecated
alias of this module."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from dipo.demo.regimes import REGIMES
from dipo.reports.plots import plot_metric, plot_panels, plot_ppl_distributions
from dipo.reports.summary import Spread, markdown_table, paired_difference, spread

PLOTS = {
    "accuracy": ("heldout_mean_at_k", "Held-out mean@k over steps", "mean@k"),
    "greedy": ("heldout_greedy", "Held-out greedy accuracy over steps", "greedy accuracy"),
    "reward": ("reward", "Training reward (batch mean)", "reward"),
    "entropy": ("entropy", "Policy entropy (per token)", "entropy"),
    "threshold": ("dipo/threshold_ppl", "τ* as PPL (0 = all responses above the cut)", "τ* (PPL)"),
    "pass": ("heldout_pass_at_k", "Held-out pass@k over steps", "pass@k"),
    "trap": ("heldout_mean_at_k/trap", "Held-out mean@k on trap items over steps", "mean@k (trap items)"),
    "surface_entropy": ("demo/surface_entropy", "Surface entropy (leading space or answer)", "entropy (nats)"),
    "answer_entropy": ("demo/answer_entropy", "Answer-digit entropy", "entropy (nats)"),
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
        smoothing = 5 if key in ("reward", "entropy", "dipo/threshold_ppl") or key.startswith("demo/") else 1
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


def mechanism_text(results: dict[str, Any], a: str = "dipo", b: str = "dapo") -> str | None:
    """In words: what ``a`` changed against ``b`` (paired by seed) where BRR acts — the leading-space rate and the
    surface entropy at the end (the maximum-PPL penalty's target) and the trap items (the maximum-PPL reward's)."""
    runs = _by_method(results)
    if a not in runs or b not in runs:
        return None
    parts = []
    for key, name, scale, unit in [
        ("filler_rate", "leading-space rate", 100.0, "points"),
        ("last:demo/surface_entropy", "surface entropy over the last 10 steps", 1000.0, "×10⁻³ nats"),
        ("trap_mean_at_k", "trap-item mean@k", 100.0, "points"),
    ]:
        diff = paired_difference(
            {r["seed"]: _final_metric(r, key) for r in runs[a]}, {r["seed"]: _final_metric(r, key) for r in runs[b]}
        )
        if diff.n < 2 or not math.isfinite(diff.ci95):
            continue
        lo, hi = (diff.mean - diff.ci95) * scale, (diff.mean + diff.ci95) * scale
        verdict = "beyond the seed noise" if lo > 0 or hi < 0 else "within the seed noise"
        parts.append(f"{name} {diff.mean * scale:+.2f} {unit} (95 % CI [{lo:+.2f}, {hi:+.2f}], {verdict})")
    return f"What {a} changed vs {b} (paired by seed): " + "; ".join(parts) + "." if parts else None


def _final_metric(run: dict[str, Any], key: str) -> float:
    """A scalar of a run's final evaluation: ``mean_at_k``, ``pass_at_k``, ``trap_mean_at_k``, ``L3`` (mean@k of a
    level), or ``solved_share`` / ``first_solve_step`` (items unsolved at step 0, see :func:`first_solves`)."""
    if key.startswith(("mean:", "last:")):  # a per-step metric: mean over all steps, or over the last 10
        vals = [r[key[5:]] for r in run["history"] if math.isfinite(r.get(key[5:], math.nan))]
        vals = vals[-10:] if key.startswith("last:") else vals
        return sum(vals) / len(vals) if vals else math.nan
    final = run["final"]
    if key.startswith("L"):
        return float(final["mean_at_k_by_level"].get(key[1:], math.nan))
    if key in ("solved_share", "first_solve_step"):
        return first_solves(run)[key]
    value = final.get(key, math.nan)
    return math.nan if value is None else float(value)


def first_solves(run: dict[str, Any]) -> dict[str, float]:
    """Held-out items with no correct sample at step 0 (the *hard* items): the share solved (≥ 1 of k samples right)
    at some later evaluation, and the mean step at which they are first solved (unsolved items count as the last
    evaluated step + one evaluation interval)."""
    evals = [e for e in run["evals"] if "item_hits" in e]
    if len(evals) < 2:
        return {"solved_share": math.nan, "first_solve_step": math.nan}
    start = evals[0]["item_hits"]
    hard = [i for i, h in enumerate(start) if h == 0]
    if not hard:
        return {"solved_share": math.nan, "first_solve_step": math.nan}
    interval = evals[-1]["step"] - evals[-2]["step"]
    steps = []
    for i in hard:
        first = next((e["step"] for e in evals[1:] if e["item_hits"][i] > 0), evals[-1]["step"] + interval)
        steps.append(first)
    solved = sum(1 for i in hard if any(e["item_hits"][i] > 0 for e in evals[1:]))
    return {"solved_share": solved / len(hard), "first_solve_step": sum(steps) / len(steps)}


PAIRED_METRICS = [
    ("mean_at_k", "mean@k", 100.0),
    ("pass_at_k", "pass@k", 100.0),
    ("trap_mean_at_k", "trap items mean@k", 100.0),
    ("L3", "L3 mean@k", 100.0),
    ("solved_share", "hard items solved", 100.0),
    ("first_solve_step", "first-solve step", 1.0),
    ("filler_rate", "leading-space rate", 100.0),
    ("last:demo/surface_entropy", "surface entropy, last 10 steps (×10⁻³)", 1000.0),
    ("mean:demo/dH_realloc_hard", "ΔH rewarded hard groups (×10⁻³)", 1000.0),
    ("mean:demo/dH_realloc_easy", "ΔH penalised easy groups (×10⁻³)", 1000.0),
]


def paired_table(results: dict[str, Any], baseline: str = "dapo") -> str | None:
    """Every method minus ``baseline``, paired by seed: mean [95 % CI] of the difference for each final metric."""
    runs = _by_method(results)
    if baseline not in runs:
        return None
    base = {r["seed"]: r for r in runs[baseline]}
    metrics = [m for m in PAIRED_METRICS if any(math.isfinite(_final_metric(r, m[0])) for r in runs[baseline])]
    rows = []
    for method, method_runs in runs.items():
        cells = [method, str(len(method_runs))]
        for key, _, scale in metrics:
            own = spread([_final_metric(r, key) for r in method_runs])
            if method == baseline:
                cells.append(own.fmt(scale))
                continue
            diff = paired_difference(
                {r["seed"]: _final_metric(r, key) for r in method_runs},
                {s: _final_metric(r, key) for s, r in base.items()},
            )
            cells.append(_ci_text(diff, scale))
        rows.append(cells)
    header = ["method", "seeds"] + [f"{name} (Δ vs {baseline} [95 % CI])" for _, name, _ in metrics]
    return markdown_table(header, rows)


DS_BASELINES = ("dipo", "dapo-ds")
"""With dynamic-sampling arms in a run, every method is also compared with these (besides DAPO)."""


def _run_mean(run: dict[str, Any], key: str) -> float:
    values = [row[key] for row in run["history"] if key in row and math.isfinite(row[key])]
    return sum(values) / len(values) if values else math.nan


def _run_share(run: dict[str, Any], part: str, whole: str) -> float:
    total = sum(row.get(whole, 0.0) for row in run["history"] if math.isfinite(row.get(whole, math.nan)))
    hits = sum(row.get(part, 0.0) for row in run["history"] if math.isfinite(row.get(part, math.nan)))
    return hits / total if total else math.nan


def ds_cost_table(results: dict[str, Any]) -> str | None:
    """Dynamic sampling per method (methods that logged ``dipo/ds_rounds``): generation rounds per step, kept and
    dropped groups per step, the share of kept groups kept only because BRR reallocated them, filler groups per
    step, and the run's wall time (mean ± std over seeds; Δ vs DAPO paired by seed)."""
    runs = _by_method(results)
    methods = [m for m, rs in runs.items() if any("dipo/ds_rounds" in row for r in rs for row in r["history"])]
    if not methods:
        return None
    base = {r["seed"]: r.get("seconds", math.nan) for r in runs.get("dapo", [])}
    rows = []
    for method in methods:
        rs = runs[method]
        cells = [method, str(len(rs))]
        for key in ("dipo/ds_rounds", "dipo/ds_kept_groups", "dipo/ds_dropped_groups", "dipo/ds_filler_groups"):
            cells.append(spread([_run_mean(r, key) for r in rs]).fmt(1.0, 2))
        cells.append(spread([_run_share(r, "dipo/ds_kept_reallocated", "dipo/ds_kept_groups") for r in rs]).fmt())
        cells.append(spread([r.get("seconds", math.nan) for r in rs]).fmt(1.0, 0))
        diff = paired_difference({r["seed"]: r.get("seconds", math.nan) for r in rs}, base)
        cells.append(_ci_text(diff, 1.0) if base else "n/a")
        rows.append(cells)
    header = ["method", "seeds", "rounds / step", "kept groups / step", "dropped groups / step"]
    header += ["filler groups / step", "% kept groups reallocated", "run wall time (s)", "Δ wall time vs dapo (s)"]
    return markdown_table(header, rows)


def _ci_text(diff: Spread, scale: float) -> str:
    if diff.n == 0:
        return "n/a"
    if diff.n == 1 or not math.isfinite(diff.ci95):
        return f"{diff.mean * scale:+.2f}"
    lo, hi = (diff.mean - diff.ci95) * scale, (diff.mean + diff.ci95) * scale
    mark = "**" if lo > 0 or hi < 0 else ""
    return f"{mark}{diff.mean * scale:+.2f} [{lo:+.2f}, {hi:+.2f}]{mark}"


def gains_text(results: dict[str, Any]) -> str:
    """In words: does RL raise each method's held-out mean@k above the warm start beyond the seed noise?"""
    parts = []
    for row in summary_rows(results):
        gain = row["gain"]
        if gain.n > 1 and math.isfinite(gain.ci95):
            lo, hi = 100 * (gain.mean - gain.ci95), 100 * (gain.mean + gain.ci95)
            word = "gains" if lo > 0 else "loses" if hi < 0 else "does not move beyond noise"
            parts.append(f"{row['method']} {word} ({100 * gain.mean:+.1f} points, 95 % CI [{lo:+.1f}, {hi:+.1f}])")
        else:
            parts.append(f"{row['method']} {100 * gain.mean:+.1f} points (one seed)")
    return "RL vs the warm start (held-out mean@k): " + "; ".join(parts) + "."


def _activity_totals(runs: list[dict[str, Any]], prompts: int, first: int = 1, last: float = math.inf) -> dict:
    """Sums over the runs' steps ``first..last`` of hard / easy groups, reallocations and judgment passes."""
    tot: dict[str, float] = defaultdict(float)
    keys = ("frac_hard", "frac_easy", "realloc_hard", "realloc_easy", "judgment_passed")
    for run in runs:
        for r in run["history"]:
            vals = {k: r.get(f"dipo/{k}", math.nan) for k in keys}
            if not all(math.isfinite(v) for v in vals.values()) or not first <= r.get("step", 0) <= last:
                continue
            tot["steps"] += 1
            tot["hard"] += vals["frac_hard"] * prompts
            tot["easy"] += vals["frac_easy"] * prompts
            tot["rh"] += vals["realloc_hard"]
            tot["re"] += vals["realloc_easy"]
            tot["judge"] += vals["judgment_passed"]
    return tot


def activity_text(results: dict[str, Any], method: str = "dipo") -> str | None:
    """In words: how often BRR acted in ``method``'s runs (share of extreme groups, by direction)."""
    runs = _by_method(results).get(method)
    prompts = results["config"]["prompts_per_step"]
    tot = _activity_totals(runs or [], prompts)
    if not tot["steps"]:
        return None
    return (
        f"BRR in {method}: {100 * (tot['rh'] + tot['re']) / max(tot['hard'] + tot['easy'], 1):.1f} % of the extreme "
        f"groups reallocated ({tot['rh'] / tot['steps']:.2f} hard groups rewarded and {tot['re'] / tot['steps']:.2f} "
        f"easy groups penalised per step of {prompts} groups; {100 * tot['rh'] / max(tot['hard'], 1):.1f} % of hard "
        f"and {100 * tot['re'] / max(tot['easy'], 1):.1f} % of easy groups)."
    )


def brr_activity_table(results: dict[str, Any], windows: tuple[tuple[int, float], ...] = ((1, math.inf),)) -> str:
    """Per method (and step window): extreme groups per step, the share of them BRR reallocated (hard / easy / both),
    judgment passes. For α = 0 methods (observe-only PSD) these are the groups DiPO *would* have reallocated."""
    prompts = results["config"]["prompts_per_step"]
    rows = []
    for method, runs in _by_method(results).items():
        for first, last in windows:
            label = method if len(windows) == 1 else f"{method}, steps {first}–{'end' if last == math.inf else last}"
            tot = _activity_totals(runs, prompts, first, last)
            if not tot["steps"]:
                rows.append([label] + ["n/a"] * 6)
                continue
            extreme = tot["hard"] + tot["easy"]
            rows.append(
                [
                    label,
                    f"{tot['hard'] / tot['steps']:.1f} / {tot['easy'] / tot['steps']:.1f}",
                    f"{100 * tot['rh'] / max(tot['hard'], 1):.1f}",
                    f"{100 * tot['re'] / max(tot['easy'], 1):.1f}",
                    f"{100 * (tot['rh'] + tot['re']) / max(extreme, 1):.1f}",
                    f"{(tot['rh'] + tot['re']) / tot['steps']:.2f}",
                    f"{100 * tot['judge'] / tot['steps']:.0f}",
                ]
            )
    header = ["method", "hard / easy groups per step", "% hard reallocated", "% easy reallocated",
              "% extreme reallocated", "reallocated groups / step", "% steps judgment passed"]  # fmt: skip
    return markdown_table(header, rows)


ENTROPY_KEYS = [
    ("demo/dH_realloc_hard", "ΔH reallocated hard"),
    ("demo/dH_other_hard", "ΔH other hard"),
    ("demo/dH_realloc_easy", "ΔH reallocated easy"),
    ("demo/dH_other_easy", "ΔH other easy"),
]


def entropy_table(results: dict[str, Any]) -> str | None:
    """Per method: the entropy shift of one update on the responses of reallocated vs other extreme groups (spec §8's
    direction, measured at the prompt's next visit: after − before the update, nats/token, ×1000), and the surface /
    answer entropy split at the start (first 10 steps) and end (last 10 steps) of training."""
    rows = []
    any_value = False
    for method, runs in _by_method(results).items():
        cells = [method]
        for key, _ in ENTROPY_KEYS:
            vals = [r[key] for run in runs for r in run["history"] if math.isfinite(r.get(key, math.nan))]
            any_value |= bool(vals)
            cells.append(f"{1000 * sum(vals) / len(vals):+.2f} (n={len(vals)})" if vals else "n/a")
        for key in ("demo/surface_entropy", "demo/answer_entropy"):
            first, last = [], []
            for run in runs:
                vals = [r[key] for r in run["history"] if math.isfinite(r.get(key, math.nan))]
                first += vals[:10]
                last += vals[-10:]
            cells.append(f"{sum(first) / len(first):.3f} → {sum(last) / len(last):.3f}" if first else "n/a")
        rows.append(cells)
    if not any_value:
        return None
    header = ["method", *[name + " (×10⁻³)" for _, name in ENTROPY_KEYS], "surface entropy", "answer entropy"]
    return markdown_table(header, rows)


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
    lines = [
        *_setup_section(results),
        *_accuracy_section(results),
        *_paired_sections(results),
        *_brr_activity_section(results),
        *_entropy_section(results),
        *_diagnostics_section(results),
        *_plots_section(made, plot_prefix),
        *_methods_section(results),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _setup_section(results: dict[str, Any]) -> list[str]:
    """The title, the setup paragraph (task, model, RL, evaluation, wall time) and the regime."""
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
    regime = cfg.get("regime")
    if regime:
        described = REGIMES[regime].description if regime in REGIMES else ""
        lines += ["", f"Regime `{regime}` (`dipo.demo.regimes`): {described}"]
    return lines


def _accuracy_section(results: dict[str, Any]) -> list[str]:
    """Held-out accuracy table, the comparison and gains texts, BRR activity and mechanism texts."""
    lines = ["", "## Held-out accuracy (%; mean ± std over seeds)", "", results_table(results), ""]
    comp = comparison_text(results)
    if comp:
        lines += [comp, ""]
    lines += [gains_text(results), ""]
    for text in (activity_text(results), mechanism_text(results)):
        if text:
            lines += [text, ""]
    return lines


def _paired_sections(results: dict[str, Any]) -> list[str]:
    """Every method vs DAPO, paired by seed; with dynamic sampling, vs each DS baseline and the DS cost table."""
    lines: list[str] = []
    paired = paired_table(results)
    if paired:
        lines += [
            "## Every method vs DAPO, paired by seed",
            "",
            paired,
            "",
            "The DAPO row gives its own values (mean ± std over seeds); the others the paired difference from DAPO. "
            "ΔH: entropy shift of one update on the groups BRR reallocated (DAPO: the groups it would have "
            "reallocated), mean over steps. "
            "Points (first-solve step: steps); **bold**: the 95 % CI excludes 0. Hard items: held-out items with no "
            "correct sample of k at step 0 (training-time evaluation set); unsolved ones count as solved one "
            "interval after the last evaluation. Trap items: the regime's confident-error items (explore regime).",
            "",
        ]
    methods = set(_by_method(results))
    if methods & {"dapo-ds", "dipo-ds"}:
        lines += _ds_sections(results, methods)
    return lines


def _ds_sections(results: dict[str, Any], methods: set[str]) -> list[str]:
    """Every method vs each dynamic-sampling baseline that ran, and the dynamic-sampling cost table."""
    lines: list[str] = []
    for baseline in DS_BASELINES:
        table = paired_table(results, baseline=baseline) if baseline in methods else None
        if table:
            lines += [f"## Every method vs {baseline}, paired by seed", "", table, ""]
    cost = ds_cost_table(results)
    if cost:
        lines += [
            "## Dynamic sampling: cost and kept groups",
            "",
            cost,
            "",
            "Per step means over the run, then mean ± std over seeds. Rounds: generation rounds per batch (1 = no "
            "refill). % kept groups reallocated: kept groups that had zero reward variance and were kept only "
            "because BRR reallocated them, over all kept groups. Wall time: the whole run, evaluations included "
            "(machine load moves it).",
            "",
        ]
    return lines


def _brr_activity_section(results: dict[str, Any]) -> list[str]:
    """BRR activity over the whole run, then early and late steps."""
    return [
        "## BRR activity (all seeds; whole run, then early and late steps)",
        "",
        brr_activity_table(results),
        "",
        brr_activity_table(results, windows=((1, 20), (21, math.inf))),
        "",
    ]


def _entropy_section(results: dict[str, Any]) -> list[str]:
    """Entropy shifts where DiPO acts (empty if the runs logged none)."""
    lines: list[str] = []
    ent = entropy_table(results)
    if ent:
        lines += [
            "## Entropy where DiPO acts",
            "",
            ent,
            "",
            "ΔH: mean token entropy of a group's responses right after the update minus at sampling time, averaged "
            "over steps (spec §8 predicts > 0 for rewarded hard groups and < 0 for penalised easy groups, relative to "
            "the same groups under DAPO, whose counts are observe-only). Surface entropy: binary entropy of emitting "
            "another leading space before the answer; answer entropy: entropy over digits where a digit is emitted.",
            "",
        ]
    return lines


def _diagnostics_section(results: dict[str, Any]) -> list[str]:
    """PSD/BRR diagnostics, mean over steps and seeds."""
    return [
        "## Diagnostics (mean over steps and seeds)",
        "",
        diagnostics_table(results),
        "",
        "Methods with α = 0 (GRPO, DAPO and the other baselines) run PSD/BRR in observe-only mode "
        "(`dipo_log_diagnostics=True`): their reallocation counts are what DiPO *would* have reallocated on their "
        "batches; their advantages are untouched (mean abs advantage change 0). n/a: diagnostics off (CDE runs).",
        "",
    ]


#: Plot name → caption in the report, in report order (a plot is listed if it was made).
_PLOT_CAPTIONS = {
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
    "pass": "Held-out pass@k over steps",
    "trap": "Held-out mean@k on trap items",
    "surface_entropy": "Surface entropy",
    "answer_entropy": "Answer-digit entropy",
}


def _plots_section(made: dict[str, Path], plot_prefix: str) -> list[str]:
    """The plots that were made, with their captions."""
    lines = ["## Plots", ""]
    for name, caption in _PLOT_CAPTIONS.items():
        if name in made:
            lines += [f"**{caption}**", "", f"![{caption}]({plot_prefix}{made[name].name})", ""]
    return lines


def _methods_section(results: dict[str, Any]) -> list[str]:
    """One line per method: its name and description."""
    lines = ["## Methods", ""]
    for name, info in results["methods"].items():
        lines.append(f"- `{name}`: {info['description']}")
    return lines


__all__ = [
    "ENTROPY_KEYS",
    "PAIRED_METRICS",
    "PLOTS",
    "activity_text",
    "brr_activity_table",
    "comparison_text",
    "diagnostics_table",
    "ds_cost_table",
    "entropy_table",
    "first_solves",
    "gains_text",
    "mechanism_text",
    "paired_table",
    "results_table",
    "summary_rows",
    "write_plots",
    "write_report",
]
