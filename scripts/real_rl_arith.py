"""Real-model RL on CPU: SmolLM2-135M-Instruct on natural-language arithmetic, GRPO / DAPO / DiPO via ``DiPOTrainer``.

``dipo train`` selects its task with ``--task math|toolcall`` (``dipo.cli.train.load_task_rows``), so it cannot take
the ``nl_arithmetic`` task yet; this script builds the same ``DiPOTrainer`` as ``dipo train`` (model, tokenizer and
trainer built as in ``dipo.cli.train.build_trainer``) from the task registry (:mod:`dipo.tasks.registry`). Options
are parsed by TRL's parser over ``RLTaskArguments``, ``dipo.DiPOConfig`` and ``trl.ModelConfig`` (YAML via
``--config``; the command line wins), as in ``dipo train``.

Before and after training it measures held-out accuracy (mean@k over distinct held-out prompts, the same sampling
settings as training) and writes ``<output_dir>/real_rl.json`` with both, the wall times and the per-step ``dipo/*``
diagnostics and rewards from ``trainer_state.json``::

    OMP_NUM_THREADS=1 python scripts/real_rl_arith.py --config recipes/scripts/real_rl_smollm2_nl_arith.yaml \\
        --preset dapo --output_dir runs/real_rl_dapo
    python scripts/real_rl_arith.py --summarize runs/real_rl_dapo runs/real_rl_dipo    # markdown tables of the runs
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("real_rl_arith")


@dataclass
class RLTaskArguments:
    """Task and evaluation options of this script (the rest is ``DiPOConfig`` / ``ModelConfig``)."""

    task: str = field(default="nl_arithmetic", metadata={"help": "A task of dipo.tasks.registry."})
    dataset: str = field(default="add1,mul1", metadata={"help": "Task dataset / levels (nl_arithmetic: levels)."})
    train_prompts: int = field(default=512, metadata={"help": "Number of distinct training prompts."})
    heldout_prompts: int = field(default=64, metadata={"help": "Held-out prompts for mean@k before and after."})
    eval_k: int = field(default=8, metadata={"help": "Samples per held-out prompt."})
    eval_batch_size: int = field(default=8, metadata={"help": "Held-out prompts per generate call."})
    eval_before: bool = field(default=True, metadata={"help": "Measure held-out accuracy before training."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads."})


def heldout_accuracy(model: Any, tokenizer: Any, rows: list[Any], reward: Any, args: Any, task: RLTaskArguments):
    """mean@k (percent) and pass@k on ``rows``, sampled like training (temperature, top-p, max completion length)."""
    import torch

    from dipo.evaluation import SamplingConfig, aggregate, generate

    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    # fork_rng: the evaluation's own seeding must not change the random stream of the training that follows
    with torch.random.fork_rng(devices=[]):
        sampling = SamplingConfig(
            k=task.eval_k,
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            batch_size=task.eval_batch_size,
            seed=12345,
        )
        gens = generate(model, tokenizer, [r.prompt for r in rows], sampling)
    tokenizer.padding_side = padding_side
    model.train(was_training)
    correct = []
    for row, texts in zip(rows, gens.texts, strict=True):
        columns = {key: [value] * len(texts) for key, value in row.to_dict().items() if key != "prompt"}
        rewards = reward(prompts=[row.prompt] * len(texts), completions=texts, completion_ids=None, **columns)
        correct.append([r >= 0.5 for r in rewards])
    metrics = aggregate(correct, None, ks=(1, task.eval_k))
    metrics["seconds"] = gens.seconds
    metrics["truncated"] = 100.0 * sum(sum(t) for t in gens.truncated) / sum(len(t) for t in gens.truncated)
    metrics["examples"] = [texts[0] for texts in gens.texts[:4]]
    metrics["correct_per_prompt"] = [sum(c) for c in correct]  # for paired per-prompt comparisons between runs
    return metrics


def build_trainer(training_args: Any, model_args: Any, rows: list[Any], reward_funcs: list[Any]) -> Any:
    """Model, tokenizer and ``DiPOTrainer`` as ``dipo train`` builds them (chat prompts; LoRA via ``use_peft``)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dipo import DiPOTrainer
    from dipo.tasks.assets import resolve_model

    path = resolve_model(model_args.model_name_or_path)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_config = None
    if model_args.use_peft:
        from trl import get_peft_config

        peft_config = get_peft_config(model_args)
    return DiPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=datasets.Dataset.from_list([row.to_dict() for row in rows]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


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


def summarize(run_dirs: list[str]) -> str:
    """Markdown: held-out accuracy before / after per run, then the per-step rewards and ``dipo/*`` diagnostics."""

    def cell(value: Any) -> str:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return "–"
        return "–" if number != number else f"{number:.3g}"

    runs = {d: json.loads((Path(d) / "real_rl.json").read_text()) for d in run_dirs}
    k = next(iter(runs.values()))["task"]["eval_k"]
    lines = [f"| run | preset | held-out mean@{k} before | after | pass@{k} before | after | train s | total s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, run in runs.items():
        before, after = run.get("heldout_before", {}), run["heldout_after"]
        lines.append(
            f"| {name} | {run['preset']} | {cell(before.get(f'mean@{k}'))} | {cell(after[f'mean@{k}'])} | "
            f"{cell(before.get(f'pass@{k}'))} | {cell(after[f'pass@{k}'])} | {run['train_seconds']:.0f} | "
            f"{run['total_seconds']:.0f} |"
        )
    for name, run in runs.items():
        steps = [row for row in run["log_history"] if "reward" in row]
        lines += ["", f"{name} ({run['preset']}), per step:", "",
                  "| step | " + " | ".join(label for label, _ in STEP_KEYS) + " |",
                  "|---|" + "---|" * len(STEP_KEYS)]  # fmt: skip
        for row in steps:
            lines.append(f"| {row.get('step')} | " + " | ".join(cell(row.get(key)) for _, key in STEP_KEYS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch
    from trl import ModelConfig, TrlParser

    from dipo import DiPOConfig
    from dipo.tasks.registry import get_task

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--summarize":
        print(summarize(argv[1:]))
        return 0
    if not torch.cuda.is_available() and "--bf16" not in argv:
        argv += ["--bf16", "false"]
    parser = TrlParser((RLTaskArguments, DiPOConfig, ModelConfig), prog="real_rl_arith.py")
    task_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    torch.set_num_threads(task_args.threads)
    spec = get_task(task_args.task)
    train_rows = spec.load(dataset=task_args.dataset, split="train", limit=task_args.train_prompts, seed=0)
    heldout_rows = spec.load(dataset=task_args.dataset, split="heldout", limit=task_args.heldout_prompts, seed=1)
    reward = spec.make_reward()
    if training_args.reward_weights is None:
        training_args.reward_weights = [1.0]
    start = time.perf_counter()
    trainer = build_trainer(training_args, model_args, train_rows, [reward])
    tokenizer = trainer.processing_class
    out: dict[str, Any] = {
        "task": asdict(task_args),
        "preset": training_args.preset,
        "model": model_args.model_name_or_path,
        "settings": {
            key: getattr(training_args, key)
            for key in (
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
        },
        "use_peft": bool(model_args.use_peft),
        "torch_threads": torch.get_num_threads(),
    }
    if task_args.eval_before:
        before = heldout_accuracy(trainer.model, tokenizer, heldout_rows, reward, training_args, task_args)
        out["heldout_before"] = before
        logger.info("held-out before: mean@%d = %.2f", task_args.eval_k, before[f"mean@{task_args.eval_k}"])
    train_start = time.perf_counter()
    trainer.train()
    out["train_seconds"] = time.perf_counter() - train_start
    after = heldout_accuracy(trainer.model, tokenizer, heldout_rows, reward, training_args, task_args)
    out["heldout_after"] = after
    logger.info("held-out after: mean@%d = %.2f", task_args.eval_k, after[f"mean@{task_args.eval_k}"])
    trainer.save_state()
    out["log_history"] = trainer.state.log_history
    out["total_seconds"] = time.perf_counter() - start
    path = Path(training_args.output_dir) / "real_rl.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
