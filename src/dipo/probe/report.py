"""Probe report: ``probe.json`` (everything), ``probe.md`` (tables and the verdict) and PNG histograms."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dipo.core import MEMBERSHIP_RULES, DiPOCoreConfig
from dipo.probe.analysis import length_edges, scatter_pairs

# Imported inside functions: dipo.reports.plots (numpy, matplotlib), only when plotting.


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def verdict(result: dict[str, Any]) -> str:
    """One sentence: does the premise hold on these samples?"""
    if "error" in result:
        return f"not measurable: {result['error']}"
    judged = result["judgment"]["passed"]
    auc = result.get("auroc")
    sel = result["reallocation"][DiPOCoreConfig.membership]  # the default rule
    acted = sel["hard_if_judged"] + sel["easy_if_judged"]
    mixed = result["groups"]["normal"]
    parts = [
        f"judgment {'passes' if judged else 'fails'} on all {result['num_samples']} samples",
        f"AUROC {_f(auc, 2)}",
        f"{_pct(mixed)} of groups are mixed",
        f"BRR would act on {acted} extreme group(s) (membership {DiPOCoreConfig.membership!r})",
    ]
    separates = judged and auc is not None and auc > 0.5
    if separates and acted > 0:
        head = "premise holds: "
    elif separates:
        head = (
            "premise holds only in part (PPL separates correct from wrong, but BRR has no extreme group to act on): "
        )
    else:
        head = "premise does not hold (PPL does not separate correct from wrong at τ*): "
    return head + "; ".join(parts) + "."


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    """The probe as a markdown page."""
    lines = [f"# dipo probe: {meta.get('model')} on {meta.get('task')} ({meta.get('dataset')})", ""]
    lines += [f"**Verdict.** {verdict(result)}", ""]
    s = meta.get("sampling", {})
    dtype = meta.get("sample_dtype")
    drawn = f", tokens drawn with {dtype} weights (log-probs: the policy as loaded)" if dtype else ""
    lines += [
        f"Sampling: k = {s.get('k')}, temperature {s.get('temperature')}, top-p {s.get('top_p')}, max "
        f"{s.get('max_new_tokens')} new tokens, chat template {meta.get('chat_template_used')}, seed {s.get('seed')}"
        f"{drawn}. "
        "Log-PPL = mean token NLL of the response tokens (EOS included) under the tempered policy softmax(logits/T), "
        "as TRL's sampler / old log-probs. Truncated responses: "
        f"{'included in' if result['config']['truncated'] == 'include' else 'excluded from'} the PPL analysis. "
        f"Hardware: {meta.get('hardware')}; sampling time {meta.get('sampling_seconds', 0):.0f} s.",
        "",
    ]
    if "error" in result:
        return "\n".join(lines) + "\n"
    j = result["judgment"]
    lines += [
        "| quantity | value |",
        "|---|---|",
        f"| prompts × samples | {result['num_prompts']} × {result['k']} |",
        f"| accuracy (mean@{result['k']}) | {_pct(result['accuracy'])} |",
        f"| truncated / with a PPL | {_pct(result['frac_truncated'])} / {_pct(result['frac_with_ppl'])} |",
        f"| mean response tokens | {_f(result['mean_tokens'], 1)} |",
        f"| τ* (PPL) | {_f(result['threshold_ppl'])}"
        + (f" (edge: {result['threshold_at_edge']})" if result["threshold_at_edge"] else "")
        + f"; error {_f(result['threshold_error'])} |",
        f"| judgment (Wilson {j['confidence']}) | **{'pass' if j['passed'] else 'fail'}** |",
        f"| Δ_EiS; Pr(c=1 given s<τ*) interval | {_f(j['delta_eis'])}; [{_f(j['low_interval'][0])}, "
        f"{_f(j['low_interval'][1])}] (n = {j['n_low']}) |",
        f"| Δ_ErS; Pr(c=1 given s>τ*) interval | {_f(j['delta_ers'])}; [{_f(j['high_interval'][0])}, "
        f"{_f(j['high_interval'][1])}] (n = {j['n_high']}) |",
        f"| AUROC of PPL for correctness | **{_f(result['auroc'])}** |",
        f"| mean PPL correct / wrong | {_f(result['mean_ppl_correct'])} / {_f(result['mean_ppl_wrong'])} |",
        "| quadrants CL / CH / EL / EH | "
        + " / ".join(_pct(result["quadrants"][q]) for q in ("CL", "CH", "EL", "EH"))
        + " |",
        f"| groups easy / normal / hard | {_pct(result['groups']['easy'])} / {_pct(result['groups']['normal'])} / "
        f"{_pct(result['groups']['hard'])} |",
        "",
        "BRR at τ* of all samples (counts of extreme groups; `if judged` = what BRR does given the judgment):",
        "",
        "| membership | hard realloc. | easy realloc. | of hard | of easy | of extreme | if judged (hard + easy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["reallocation"].items():
        lines.append(
            f"| {name} | {row['hard']} | {row['easy']} | {_pct(row['frac_of_hard'])} | {_pct(row['frac_of_easy'])} | "
            f"{_pct(row['frac_of_extreme'])} | {row['hard_if_judged']} + {row['easy_if_judged']} |"
        )
    batches = result.get("batches")
    if batches and batches.get("num_steps"):
        lines += [
            "",
            f"Replayed through `dipo.core.DiPO` in steps of {batches['batch_prompts']} prompts (two-batch queue, "
            f"{batches['num_steps']} steps):",
            "",
            "| membership | steps where the judgment passes | realloc. hard / easy | groups per step | of extreme |",
            "|---|---|---|---|---|",
        ]
        for name in MEMBERSHIP_RULES:
            row = batches[name]
            lines.append(
                f"| {name} | {_pct(row['frac_steps_judgment_passed'])} | {row['realloc_hard']} / "
                f"{row['realloc_easy']} | {_f(row['realloc_groups_per_step'], 2)} | {_pct(row['frac_of_extreme'])} |"
            )
    lines += balanced_lines(result.get("balanced"))
    lines += ["", "By response length (responses with a PPL):", "", "| tokens | n | accuracy | PPL correct | "
              "PPL wrong | AUROC |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in result["by_length"]:
        lines.append(
            f"| {row['tokens'][0]}–{row['tokens'][1]} | {row['n']} | {_pct(row['accuracy'])} | "
            f"{_f(row['mean_ppl_correct'])} | {_f(row['mean_ppl_wrong'])} | {_f(row['auroc'])} |"
        )
    lines += ["", "![PPL of correct vs wrong](ppl_hist.png)", "", "![by length](ppl_hist_by_length.png)", ""]
    return "\n".join(lines)


def balanced_lines(block: dict[str, Any] | None) -> list[str]:
    """The class-balanced τ* (``threshold_rule="balanced"``, not the paper's rule) and BRR's reach there, beside the
    paper's tables above."""
    if not block:
        return []
    j = block["judgment"]
    edge = f" (edge: {block['threshold_at_edge']})" if block["threshold_at_edge"] else ""
    lines = [
        "",
        f'At the class-balanced τ* (`threshold_rule="balanced"`, **not the paper\'s rule**): τ* (PPL) '
        f"{_f(block['threshold_ppl'])}{edge}; balanced error {_f(block['balanced_error'])}, plain error "
        f"{_f(block['threshold_error'])}; judgment **{'pass' if j['passed'] else 'fail'}** "
        f"(Δ_EiS {_f(j['delta_eis'])}, Δ_ErS {_f(j['delta_ers'])}, n = {j['n_low']} / {j['n_high']}).",
        "",
        "| membership | hard realloc. | easy realloc. | of extreme | if judged (hard + easy) | replay: steps passed | "
        "replay: hard / easy | replay: of extreme |",
        "|---|---|---|---|---|---|---|---|",
    ]
    replay = block.get("batches") or {}
    for name, row in block["reallocation"].items():
        step = replay.get(name)
        steps = (
            f"{_pct(step['frac_steps_judgment_passed'])} | {step['realloc_hard']} / {step['realloc_easy']} | "
            f"{_pct(step['frac_of_extreme'])}"
            if step
            else "– | – | –"
        )
        lines.append(
            f"| {name} | {row['hard']} | {row['easy']} | {_pct(row['frac_of_extreme'])} | "
            f"{row['hard_if_judged']} + {row['easy_if_judged']} | {steps} |"
        )
    return lines


def plot_panels(
    panels: dict[str, list[tuple[float, float]]], path: Path, title: str, threshold: float | None, bins: int = 30
) -> Path | None:
    """Histograms of PPL (log-scaled axis) of correct vs wrong responses, one panel per entry of ``panels``
    (``(log_ppl, reward)`` pairs, reward >= 0.5 = correct), with τ* marked; drawn with the project's plot helpers."""
    from dipo.reports.plots import pyplot, save_figure

    panels = {name: pairs for name, pairs in panels.items() if pairs}
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 2.9), dpi=90, squeeze=False)
    all_s = np.array([s for pairs in panels.values() for s, _ in pairs], dtype=float)
    edges = np.linspace(float(all_s.min()), max(float(all_s.max()), float(all_s.min()) + 1e-3), bins + 1)
    for ax, (name, pairs) in zip(axes[0], panels.items(), strict=True):
        arr = np.array(pairs, dtype=float).reshape(-1, 2)
        ok = arr[:, 1] >= 0.5
        ax.hist(np.exp(arr[ok, 0]), bins=np.exp(edges), alpha=0.6, label=f"correct ({int(ok.sum())})")
        ax.hist(np.exp(arr[~ok, 0]), bins=np.exp(edges), alpha=0.6, label=f"wrong ({int((~ok).sum())})")
        if threshold is not None:
            ax.axvline(threshold, color="k", ls="--", lw=1, label=f"τ* = {threshold:.2f}")
        ax.set_xscale("log")
        ax.set_xlabel("response PPL (log scale)")
        ax.set_ylabel("responses")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def plot(
    records: Sequence[dict[str, Any]],
    out_dir: Path,
    title: str,
    truncated: str,
    bins: int = 3,
    threshold: float | None = None,
) -> list[Path]:
    """``ppl_hist.png`` (correct vs wrong, the paper's Figure 1) and ``ppl_hist_by_length.png`` (one panel per
    response-length bin)."""
    pairs = scatter_pairs(records, truncated)
    if not pairs:
        return []

    written = [plot_panels({title: [(s, r) for s, r, _ in pairs]}, out_dir / "ppl_hist.png",
                           "PPL of correct vs wrong responses", threshold)]  # fmt: skip
    panels: dict[str, list[tuple[float, float]]] = {}
    lower = 0
    for upper in length_edges(torch.tensor([n for _, _, n in pairs]), bins):
        panels[f"{lower + 1}-{upper} tokens"] = [(s, r) for s, r, n in pairs if lower < n <= upper]
        lower = upper
    written.append(plot_panels(panels, out_dir / "ppl_hist_by_length.png", f"{title}: by response length", threshold))
    return [p for p in written if p is not None]


def write_report(
    result: dict[str, Any], meta: dict[str, Any], records: Sequence[dict[str, Any]], out_dir: Path
) -> list[Path]:
    """Write ``probe.json``, ``probe.md`` and the PNGs into ``out_dir``; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "probe.json", out_dir / "probe.md"]
    paths[0].write_text(json.dumps({"meta": meta, "result": result}, indent=2, default=str))
    paths[1].write_text(markdown(result, meta))
    if "error" not in result:
        title = f"{meta.get('task')} {meta.get('dataset')}"
        config = result["config"]
        paths += plot(records, out_dir, title, config["truncated"], config["length_bins"], result.get("threshold_ppl"))
    return paths
