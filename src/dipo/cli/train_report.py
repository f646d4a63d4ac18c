"""What ``dipo train`` measures around a run: held-out accuracy before / after training, and the run summary.

:func:`heldout_accuracy` samples the held-out prompts like training does (temperature, top-p, max completion length)
and scores them with the task's reward; :func:`run_summary` / :func:`write_summary` write ``<output_dir>/`` and
:data:`SUMMARY_FILE` (settings, held-out metrics, wall times, TRL's ``log_history`` with the per-step ``dipo/*``
diagnostics); :func:`summarize` renders summaries as markdown tables (``dipo train --summarize DIR...``). It reads
the ``real_rl.json`` files of ``scripts/real_rl_arith.py`` (removed after commit 93e18b7) as well.

Imports torch and :mod:`dipo.evaluation` only inside :func:`heldout_accuracy`: ``dipo --help`` imports this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dipo.fileio import read_json

#: The summary ``dipo train`` writes to its output_dir.
SUMMARY_FILE = "train_summary.json"
#: The summary of ``scripts/real_rl_arith.py`` (same layout; its held-out k is ``task.eval_k``).
LEGACY_SUMMARY_FILE = "real_rl.json"
#: Seed of the held-out rows (the training rows use seed 0) and of the held-out sampling.
HELDOUT_ROWS_SEED = 1
HELDOUT_SAMPLING_SEED = 12345
#: A sample counts as correct when its reward is at least this.
CORRECT_REWARD = 0.5

#: Training options recorded in the summary.
SETTINGS = (
    "learning_rate",
    "per_device_train_batch_size",
    "num_generations",
    "max_completion_length",
    "max_steps",
    "temperature",
    "top_p",
    "loss_type",
    "epsilon",
    "epsilon_high",
    "mask_truncated_completions",
    "dipo_alpha",
    "beta",
    "seed",
)


def heldout_accuracy(
    model: Any, tokenizer: Any, rows: list[Any], reward: Any, training_args: Any, k: int, batch_size: int
) -> dict[str, Any]:
    """mean@k (percent), pass@1 / pass@k, the truncated share and 4 example answers on ``rows``, sampled like
    training (``temperature``, ``top_p``, ``max_completion_length`` of ``training_args``) with a fixed seed; a sample
    is correct when ``reward`` gives it at least :data:`CORRECT_REWARD`. The sampling runs in a forked RNG, so it does
    not change the random stream of the training before or after it."""
    from dipo.evaluation import SamplingConfig, aggregate, generate
    from dipo.evaluation.generation import evaluating

    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    # evaluating: the evaluation's own seeding must not change the random stream of the training that follows
    with evaluating(model):
        sampling = SamplingConfig(
            k=k,
            max_new_tokens=training_args.max_completion_length,
            temperature=training_args.temperature,
            top_p=training_args.top_p,
            batch_size=batch_size,
            seed=HELDOUT_SAMPLING_SEED,
        )
        gens = generate(model, tokenizer, [r.prompt for r in rows], sampling)
    tokenizer.padding_side = padding_side
    correct = []
    for row, texts in zip(rows, gens.texts, strict=True):
        columns = {key: [value] * len(texts) for key, value in row.to_dict().items() if key != "prompt"}
        rewards = reward(prompts=[row.prompt] * len(texts), completions=texts, completion_ids=None, **columns)
        correct.append([r >= CORRECT_REWARD for r in rewards])
    metrics: dict[str, Any] = aggregate(correct, None, ks=(1, k))
    metrics["seconds"] = gens.seconds
    metrics["truncated"] = 100.0 * sum(sum(t) for t in gens.truncated) / sum(len(t) for t in gens.truncated)
    metrics["examples"] = [texts[0] for texts in gens.texts[:4]]
    metrics["correct_per_prompt"] = [sum(c) for c in correct]  # for paired per-prompt comparisons between runs
    return metrics


def run_summary(task_args: Any, training_args: Any, model_args: Any, threads: int) -> dict[str, Any]:
    """The settings part of a run's summary (held-out results, times and ``log_history`` are added as they come)."""
    return {
        "task": asdict(task_args),
        "preset": training_args.preset,
        "model": model_args.model_name_or_path,
        "settings": {key: getattr(training_args, key) for key in SETTINGS},
        "use_peft": bool(model_args.use_peft),
        "torch_threads": threads,
    }


def write_summary(output_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as JSON to ``output_dir/`` :data:`SUMMARY_FILE` (through a temporary file) and return the
    path."""
    path = Path(output_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
    return path


#: Columns of the per-step table: label → ``log_history`` key.
STEP_KEYS = (
    ("reward", "reward"),
    ("frac_hard", "dipo/frac_hard"),
    ("frac_easy", "dipo/frac_easy"),
    ("judgment", "dipo/judgment_passed"),
    ("τ* PPL", "dipo/threshold_ppl"),
    ("Δ_EiS", "dipo/delta_eis"),
    ("Δ_ErS", "dipo/delta_ers"),
    ("realloc hard", "dipo/realloc_hard"),
    ("realloc easy", "dipo/realloc_easy"),
    ("no PPL (truncated)", "dipo/frac_rows_no_ppl"),
    ("entropy", "entropy"),
    ("mean length", "completions/mean_length"),
)


def _cell(value: Any) -> str:
    """A number with 3 significant digits; "–" for a missing value or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(number) else f"{number:.3g}"


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary in ``run_dir`` (:data:`SUMMARY_FILE`, else :data:`LEGACY_SUMMARY_FILE`); ``FileNotFoundError``
    naming the folder if it holds neither."""
    for name in (SUMMARY_FILE, LEGACY_SUMMARY_FILE):
        path = Path(run_dir) / name
        if path.is_file():
            return read_json(path)
    raise FileNotFoundError(
        f"--summarize: {str(run_dir)!r} holds no {SUMMARY_FILE} (nor {LEGACY_SUMMARY_FILE}); give output_dirs of "
        "finished dipo train runs"
    )


def _heldout_k(run: dict[str, Any]) -> int | None:
    task = run.get("task", {})
    return task.get("heldout_k") or task.get("eval_k")


def summarize(run_dirs: list[str]) -> str:
    """Markdown: held-out accuracy before / after per run, then the per-step rewards and ``dipo/*`` diagnostics."""
    runs = {d: read_summary(d) for d in run_dirs}
    k = _heldout_k(next(iter(runs.values())))
    lines = [f"| run | preset | held-out mean@{k} before | after | pass@{k} before | after | train s | total s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, run in runs.items():
        before, after = run.get("heldout_before") or {}, run.get("heldout_after") or {}
        lines.append(
            f"| {name} | {run['preset']} | {_cell(before.get(f'mean@{k}'))} | {_cell(after.get(f'mean@{k}'))} | "
            f"{_cell(before.get(f'pass@{k}'))} | {_cell(after.get(f'pass@{k}'))} | {run['train_seconds']:.0f} | "
            f"{run['total_seconds']:.0f} |"
        )
    for name, run in runs.items():
        steps = [row for row in run["log_history"] if "reward" in row]
        lines += ["", f"{name} ({run['preset']}), per step:", "",
                  "| step | " + " | ".join(label for label, _ in STEP_KEYS) + " |",
                  "|---|" + "---|" * len(STEP_KEYS)]  # fmt: skip
        for row in steps:
            lines.append(f"| {row.get('step')} | " + " | ".join(_cell(row.get(key)) for _, key in STEP_KEYS) + " |")
    return "\n".join(lines) + "\n"
