"""The GPU validation report (``scripts/gpu_check.py``): the ``gpu_check.json`` record (:class:`Results`), the
learning summary, the result tables of ``docs/results/gpu.md``, plots and a printed summary (partial records of a
killed run render too)."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

# Imported inside functions: dipo.reports.plots (numpy, matplotlib), only when plotting.


def log(msg: str) -> None:
    """A timestamped progress line of the GPU check."""
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Results:
    """The JSON record ``OUT/gpu_check.json``, rewritten after every update so that a killed run keeps what it
    measured."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"meta": meta, "status": "running"}
        self.save()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=_json_default))
        os.replace(tmp, self.out / "gpu_check.json")


def _json_default(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)  # tensors as lists, paths and the rest as text


def learning_summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: seeds, mean (± std) and per-seed held-out mean@k, mean greedy accuracy."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["method"] for r in runs):
        values = [r["final"]["mean_at_k"] for r in runs if r["method"] == name]
        greedy = [r["final"]["greedy"] for r in runs if r["method"] == name]
        out[name] = {
            "seeds": len(values),
            "mean_at_k": statistics.fmean(values),
            "mean_at_k_std": statistics.stdev(values) if len(values) > 1 else math.nan,
            "mean_at_k_per_seed": values,
            "greedy": statistics.fmean(greedy),
        }
    return out


def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def render_markdown(data: dict[str, Any]) -> str:
    """The result tables of ``docs/results/gpu.md`` filled from a ``gpu_check.json`` record."""
    meta = data.get("meta", {})
    lines = [
        f"Measured {meta.get('date', '?')} on **{meta.get('device_name', '?')}** (`{meta.get('device', '?')}`), "
        f"size `{meta.get('size', '?')}`; torch {meta.get('torch', '?')}, transformers "
        f"{meta.get('transformers', '?')}, trl {meta.get('trl', '?')}, Python {meta.get('python', '?')}.",
        "",
        f"Command: `{meta.get('command', '?')}` (status: {data.get('status', '?')}, "
        f"{fmt(data.get('elapsed_s'), '.0f')} s).",
        "",
    ]
    fg = data.get("fastgen")
    if fg:
        lines += _fastgen_section(fg)
    ov = data.get("overhead")
    if ov:
        lines += _overhead_section(ov)
    le = data.get("learning")
    if le and le.get("warmstart"):
        lines += _learning_section(le)
    return "\n".join(lines)


def _fastgen_section(fg: dict[str, Any]) -> list[str]:
    """Fast rollouts vs TRL's default ``generate``: speeds, then the log-prob and greedy checks if they ran."""
    d, f = fg.get("default", {}), fg.get("fast", {})
    lines = [
        "### Fast rollouts (`fast_generation=True`) vs TRL's default `generate`",
        "",
        f"Policy: {fg.get('weights')}; preset `dipo`; decoding step compiled: {fg.get('compiled')}; new "
        f"compiled graphs after the first fast step: {f.get('new_compiled_graphs_after_first_step')}.",
        "",
        "| path | rollout tokens/s | rollout s | step s | first step s (warm-up) |",
        "|---|---|---|---|---|",
        f"| default | {fmt(d.get('median_rollout_tokens_per_s'), '.0f')} | {fmt(d.get('median_rollout_s'))} | "
        f"{fmt(d.get('median_step_s'))} | {fmt(d.get('first_step_s'), '.1f')} |",
        f"| fast_generation | {fmt(f.get('median_rollout_tokens_per_s'), '.0f')} | "
        f"{fmt(f.get('median_rollout_s'))} | {fmt(f.get('median_step_s'))} | "
        f"{fmt(f.get('first_step_s'), '.1f')} |",
        f"| **speed-up** | **{fmt(fg.get('rollout_speedup'), '.2f')}×** (target ≥ 5) | | "
        f"**{fmt(fg.get('step_speedup'), '.2f')}×** (target ≥ 3) | |",
        "",
    ]
    lp = fg.get("logprob_check")
    if lp:
        lines += [
            "| log-prob check (sampler vs reference forward) | tokens | max \\|Δ\\| | mean \\|Δ\\| |",
            "|---|---|---|---|",
            *[
                f"| {name} | {lp[name]['tokens']} | {fmt(lp[name]['max_abs_diff'], '.2e')} | "
                f"{fmt(lp[name]['mean_abs_diff'], '.2e')} |"
                for name in ("default", "fast")
            ],
            "",
            f"Log-prob check passed: {lp.get('pass')} (fast mean |Δ| ≤ 1.5 × default + 1e-3). Greedy: "
            f"{fmt(fg.get('greedy_check', {}).get('identical_rows'))} of rows identical, mean agreeing prefix "
            f"{fmt(fg.get('greedy_check', {}).get('mean_agreeing_prefix'))}. Generation configs differ only in: "
            f"{', '.join(sorted(fg.get('generation_config_diff', {})))}.",
            "",
        ]
    return lines


def _overhead_section(ov: dict[str, Any]) -> list[str]:
    """DAPO vs DiPO step time on the same policy."""
    return [
        "### Overhead: DAPO vs DiPO, same policy, interleaved",
        "",
        f"Generation path: {ov.get('path')}; {ov.get('note')}.",
        "",
        "| DAPO step s | DiPO step s | ratio (medians) | median per-round ratio | DiPO work ms/step | target |",
        "|---|---|---|---|---|---|",
        f"| {fmt(ov.get('dapo_median_step_s'))} | {fmt(ov.get('dipo_median_step_s'))} | "
        f"**{fmt(ov.get('ratio'))}** | {fmt(ov.get('median_round_ratio'))} | "
        f"{fmt(ov.get('dipo_work_median_ms'), '.1f')} | ≤ 1.02 |",
        "",
    ]


def _learning_section(le: dict[str, Any]) -> list[str]:
    """Held-out accuracy per method of the learning check."""
    ws = le["warmstart"]
    k = le["sizes"].get("k")
    lines = [
        "### Learning: arithmetic demo task, larger from-scratch model",
        "",
        f"Model: Llama, hidden {ws['model']['hidden_size']}, {ws['model']['num_hidden_layers']} layers "
        f"({ws['num_parameters']:,} parameters), warm start {ws['sft']['steps']} SFT steps "
        f"({fmt(ws['sft_seconds'], '.0f')} s); RL {le['sizes'].get('rl_steps')} steps × "
        f"{le['sizes'].get('rl_prompts_per_step')} prompts × G {le['sizes'].get('rl_generations')}. Warm start "
        f"held-out mean@{k} {fmt(ws['heldout']['mean_at_k'])}, greedy {fmt(ws['heldout']['greedy'])}.",
        "",
        f"| method | seeds | held-out mean@{k} (mean ± std) | per seed | greedy |",
        "|---|---|---|---|---|",
    ]
    for name, row in le.get("summary", {}).items():
        lines.append(
            f"| {name} | {row['seeds']} | {fmt(row['mean_at_k'])} ± {fmt(row['mean_at_k_std'])} | "
            f"{', '.join(fmt(v) for v in row['mean_at_k_per_seed'])} | {fmt(row['greedy'])} |"
        )
    if le.get("skipped"):
        lines.append(f"\nSkipped (time budget): {', '.join(le['skipped'])}.")
    lines.append("")
    return lines


def write_plots(data: dict[str, Any], out: Path) -> list[str]:
    from dipo.reports.plots import pyplot, save_figure

    plt = pyplot()

    written = []
    fg = data.get("fastgen")
    if fg and "rollout_speedup" in fg:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        names = ["default", "fast_generation"]
        axes[0].bar(names, [fg["default"]["median_rollout_tokens_per_s"], fg["fast"]["median_rollout_tokens_per_s"]])
        axes[0].set_title(f"rollout tokens/s ({fg['rollout_speedup']:.2f}×)")
        axes[1].bar(names, [fg["default"]["median_step_s"], fg["fast"]["median_step_s"]], color="tab:orange")
        axes[1].set_title(f"step time s ({fg['step_speedup']:.2f}×)")
        save_figure(fig, out / "fastgen.png", dpi=120)
        written.append("fastgen.png")
    ov = data.get("overhead")
    if ov and ov.get("rounds"):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for preset, color in (("dapo", "tab:blue"), ("dipo", "tab:green")):
            xs, ys = [], []
            for i, rnd in enumerate(ov["rounds"]):
                if rnd["preset"] == preset:
                    xs += [i] * len(rnd["step_s"])
                    ys += rnd["step_s"]
            ax.scatter(xs, ys, label=preset, color=color, s=14)
        ax.set_xlabel("round (interleaved)")
        ax.set_ylabel("step s")
        ax.set_title(f"DiPO / DAPO step time: {ov.get('ratio', math.nan):.3f}")
        ax.legend()
        save_figure(fig, out / "overhead.png", dpi=120)
        written.append("overhead.png")
    le = data.get("learning")
    if le and le.get("runs"):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        colors = {"grpo": "tab:blue", "dapo": "tab:orange", "dipo": "tab:green"}
        for run in le["runs"]:
            axes[0].plot(run["train_reward"], color=colors.get(run["method"]), alpha=0.6, lw=1)
        axes[0].set_title("training reward (per run)")
        axes[0].set_xlabel("step")
        for i, (name, row) in enumerate(le.get("summary", {}).items()):
            axes[1].bar(i, row["mean_at_k"], color=colors.get(name))
            axes[1].scatter([i] * len(row["mean_at_k_per_seed"]), row["mean_at_k_per_seed"], color="k", s=10)
        axes[1].set_xticks(range(len(le.get("summary", {}))), list(le.get("summary", {})))
        axes[1].set_title(f"held-out mean@{le['sizes'].get('k')}")
        save_figure(fig, out / "learning.png", dpi=120)
        written.append("learning.png")
    return written


def print_summary(data: dict[str, Any]) -> None:
    log("summary")
    fg, ov, le = data.get("fastgen"), data.get("overhead"), data.get("learning")
    if fg and "rollout_speedup" in fg:
        print(
            f"  fast rollouts: {fg['default']['median_rollout_tokens_per_s']:.0f} -> "
            f"{fg['fast']['median_rollout_tokens_per_s']:.0f} tokens/s ({fg['rollout_speedup']:.2f}×, target ≥ 5); "
            f"step {fg['default']['median_step_s']:.3f} -> {fg['fast']['median_step_s']:.3f} s "
            f"({fg['step_speedup']:.2f}×, target ≥ 3); compiled={fg.get('compiled')}"
        )
        if "logprob_check" in fg:
            lp = fg["logprob_check"]
            print(
                f"  log-probs vs reference: fast max|Δ| {lp['fast']['max_abs_diff']:.2e}, default max|Δ| "
                f"{lp['default']['max_abs_diff']:.2e}, pass={lp['pass']}; greedy identical rows "
                f"{fg['greedy_check']['identical_rows']:.3f}"
            )
    if ov and "ratio" in ov:
        print(
            f"  overhead: DAPO {ov['dapo_median_step_s']:.3f} s, DiPO {ov['dipo_median_step_s']:.3f} s per step, "
            f"ratio {ov['ratio']:.3f} (target ≤ 1.02), DiPO work {ov['dipo_work_median_ms']:.1f} ms/step"
        )
    if le and le.get("summary"):
        for name, row in le["summary"].items():
            print(
                f"  learning: {name}: held-out mean@{le['sizes']['k']} {row['mean_at_k']:.3f} ({row['seeds']} seeds)"
            )
